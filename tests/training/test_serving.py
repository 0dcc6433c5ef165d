"""A registered window model as MLflow serves it, and each window's reliability artifacts."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow.pyfunc import scoring_server
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
