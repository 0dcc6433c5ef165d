"""A registered window model as MLflow serves it, and each window's reliability artifacts."""

from __future__ import annotations

import ast
import importlib.metadata
import json
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from mlflow.pyfunc import scoring_server
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE
from sklearn.calibration import CalibratedClassifierCV

from kwx.data.dataset import load_dataset
from kwx.domain.features import feature_columns
from kwx.training.model import predict_yes
from tests.conftest import small_training_run

pytestmark = pytest.mark.integration
MODEL = "kwx-chicago-between"
FEATURES = feature_columns("elasticnet_relative", "between")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    with small_training_run(tmp_path_factory.mktemp("serving")) as run:
        yield run


@pytest.fixture
def client(trained, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["tracking_uri"])
    yield trained["client"]
    mlflow.set_tracking_uri(None)


def _server(uri: str) -> TestClient:
    """`mlflow models serve`'s app for ``uri``, in-process."""
    return TestClient(scoring_server.init(mlflow.pyfunc.load_model(uri)))


def _request(rows: pd.DataFrame) -> dict:
    # Python floats through json: exact round trip; a missing value is null, as a client sends it.
    return {"dataframe_split": {"columns": list(rows.columns),
                                "data": rows.astype(object).where(rows.notna(), None).to_numpy().tolist()}}


def _strict_json(text: str):
    def reject(constant: str):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=reject)


def test_served_model_answers_p_yes_equal_to_predict_yes(trained, client):
    version = client.get_model_version(MODEL, "2")
    uri = f"models:/{MODEL}/{version.version}"
    model = mlflow.sklearn.load_model(uri)  # the sklearn flavor, as the registry cache loads it
    assert isinstance(model, CalibratedClassifierCV)

    test_start, test_end = date.fromisoformat(version.tags["test_start"]), date.fromisoformat(version.tags["test_end"])
    rows = load_dataset(trained["engine"], "chicago", "between", test_start, test_end)[FEATURES].head(4).copy()
    rows.iloc[1, 0] = np.nan  # a feature the live loop could not observe: served as null, imputed
    server = _server(uri)
    response = server.post("/invocations", json=_request(rows))
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [set(p) for p in predictions] == [{"p_yes"}] * len(rows)
    np.testing.assert_allclose([p["p_yes"] for p in predictions], predict_yes(model, rows), rtol=0, atol=1e-12)

    # Every feature column is required (only its values may be null): a request without one is refused.
    response = server.post("/invocations", json=_request(rows.drop(columns=FEATURES[0])))
    assert response.status_code == 400 and FEATURES[0] in response.text


def test_serving_input_example_is_strict_json_that_scores(trained, client):
    uri = f"models:/{MODEL}/1"
    local = Path(mlflow.artifacts.download_artifacts(uri))
    example = _strict_json((local / "serving_input_example.json").read_text())["dataframe_split"]
    # The demo's first training rows miss a feature: what used to be written as a bare NaN.
    assert any(value is None for row in example["data"] for value in row)

    response = _server(uri).post("/invocations", json={"dataframe_split": example})
    assert response.status_code == 200, response.text
    rows = pd.DataFrame(example["data"], columns=example["columns"], dtype=float)
    np.testing.assert_allclose([p["p_yes"] for p in response.json()["predictions"]],
                               predict_yes(mlflow.sklearn.load_model(uri), rows), rtol=0, atol=1e-12)


def test_logged_model_carries_its_loader_and_pypi_requirements(trained, client):
    """What `mlflow models serve --env-manager virtualenv` builds an environment from: kwx is no requirement (it
    is not on PyPI), so the pyfunc loader travels in the model's code/ and imports nothing from kwx
    (tests/training/test_served_env.py serves it in such an environment)."""
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/1"))
    pyfunc = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert pyfunc["loader_module"] == "kwx_pyfunc" and pyfunc["code"] == "code"
    assert sorted(p.name for p in (local / "code").iterdir()) == ["kwx_pyfunc.py"]
    tree = ast.parse((local / "code" / "kwx_pyfunc.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "mlflow", "pandas"}, imported
    requirements = (local / "requirements.txt").read_text().split()
    pinned = {package: importlib.metadata.version(package)
              for package in ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy")}
    assert sorted(requirements) == sorted(f"{package}=={version}" for package, version in pinned.items())


def test_logged_model_says_what_it_predicts_and_its_test_scores_name_the_test_rows(trained, client):
    version = client.get_model_version(MODEL, "2")
    logged = client.get_logged_model(mlflow.models.get_model_info(f"models:/{MODEL}/2").model_id)
    description = logged.tags[MLFLOW_RUN_NOTE]
    assert "P(YES)" in description and "chicago between" in description, description
    assert f"Window {version.tags['window']}" in description and version.tags["test_start"] in description
    assert "elasticnet_relative features" in description and all(f in description for f in FEATURES)

    run = client.get_run(version.run_id)
    # the window's hyperparameters and counts, on its model as on its run
    assert logged.params == run.data.params and {"C", "l1_ratio", "n_train", "window"} <= set(logged.params)
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    datasets = {context: (d.name, d.digest) for context, d in inputs.items()}
    linked = {m.key: (m.dataset_name, m.dataset_digest) for m in logged.metrics}
    for key in ("test_log_loss", "test_unlocked_ece", "market_brier", "test_brier_skill"):
        assert linked[key] == datasets["testing"], key
    # out-of-fold scores on the training rows name those; counts of the search name no rows
    assert linked["cv_calibrated_log_loss"] == datasets["training"]
    assert linked["search_fits"] == (None, None)
    assert len(logged.metrics) == len(linked)  # each metric once: no unlinked copy beside the linked one


def test_window_runs_log_model_and_market_reliability(trained, client):
    windows = client.search_runs([client.get_run(trained["run_id"]).info.experiment_id],
                                 f"tags.`kwx.parent_run_id` = '{trained['run_id']}'")
    assert sorted(r.info.run_name for r in windows) == trained["windows"]
    for run in windows:
        curves = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/reliability.json")
        predictions = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/test_predictions.csv"))
        assert set(curves) == {"model", "market"}
        for curve in curves.values():
            assert len(curve["mean_predicted"]) == len(curve["fraction_positive"]) == len(curve["counts"]) > 0
        # The model's curve covers every test row, the market's the rows it quotes.
        assert sum(curves["model"]["counts"]) == int(run.data.params["n_test"]) == len(predictions)
        assert sum(curves["market"]["counts"]) == predictions["p_market"].notna().sum()
        png = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/reliability.png"))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pooled = {a.path for a in client.list_artifacts(trained["run_id"])}
    assert {"reliability_pooled.json", "reliability_pooled.png"} <= pooled
