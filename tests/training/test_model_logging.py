"""What a training run does once for all its window models, not once per model (issue 27: MLflow's cost per window)."""

from __future__ import annotations

import importlib.metadata
import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import utils as model_utils
from mlflow.utils import environment

from kwx.config import Calibration
from kwx.registry.versions import pip_requirements
from kwx.training.model import ModelParams, fit_calibrated
from kwx.training.serving import RunModelLogging

pytestmark = pytest.mark.integration


def _model(seed: int):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=240), "b": rng.normal(size=240)})
    X.loc[::7, "b"] = np.nan
    y = (X["a"] + rng.normal(size=240) > 0).astype(int).to_numpy()
    groups = np.repeat(np.arange(12), 20)
    model, _, _ = fit_calibrated(X, y, groups, ModelParams("elasticnet", 1.0, 0.5, "none"), Calibration(), 3, seed)
    return model, X.head(5)


def test_a_run_validates_the_serving_input_once_and_never_checks_its_own_environment(tracking, monkeypatch):
    validated, checked = [], []
    validate = model_utils._validate_serving_input
    monkeypatch.setattr(model_utils, "_validate_serving_input",
                        lambda *a, **k: validated.append(1) or validate(*a, **k))
    for module in (environment, mlflow.pyfunc):  # where a model is saved and where its example is checked
        check = module.warn_dependency_requirement_mismatches
        monkeypatch.setattr(module, "warn_dependency_requirement_mismatches",
                            lambda requirements, check=check: checked.append(requirements) or check(requirements))
    logging = RunModelLogging()
    with mlflow.start_run():
        infos = []
        for seed in range(3):
            model, example = _model(seed)
            infos.append(logging.log_model(model, f"w{seed}", example))
    assert len(validated) == 1 and checked == []
    # MLflow's own check is back once the run's logging is done
    assert environment.warn_dependency_requirement_mismatches.__name__ == "<lambda>"
    assert mlflow.pyfunc.warn_dependency_requirement_mismatches.__name__ == "<lambda>"
    for info in infos:  # pinned to this environment, as the skipped check would have found
        requirements = (Path(mlflow.artifacts.download_artifacts(info.model_uri)) / "requirements.txt").read_text()
        assert sorted(requirements.split()) == sorted(
            [*pip_requirements(), f"mlflow=={importlib.metadata.version('mlflow')}"])
    loaded = [mlflow.models.get_model_info(info.model_uri) for info in infos]
    assert len({str(info.signature) for info in loaded}) == 1
    assert [c.name for c in loaded[0].signature.inputs.inputs] == ["a", "b"]
    assert all(c.required for c in loaded[0].signature.inputs.inputs)
    for info, seed in zip(infos, range(3), strict=True):  # each model still answers as itself
        model, example = _model(seed)
        served = mlflow.pyfunc.load_model(info.model_uri).predict(example)
        np.testing.assert_allclose(served["p_yes"], model.predict_proba(example)[:, 1])


def test_a_window_s_files_are_written_where_it_trained_and_only_uploaded_by_the_logger():
    """The diagram and CSVs are made in the worker (``train_window``), off the one process that logs every window."""
    from kwx.training.walkforward import ScoredRows, window_artifacts

    trials = pd.DataFrame({"number": [0, 1], "value": [0.3, 0.2], "C": [0.1, 1.0]})
    curves = {"model": {"mean_predicted": [0.2, 0.7], "fraction_positive": [0.25, 0.6], "counts": [40, 10]}}
    predictions = pd.DataFrame({"market_ticker": ["T-1", "T-1"], "p_model": [0.2, 0.7], "label": [0, 1]})
    files = window_artifacts(trials, ScoredRows({}, predictions, curves), "chicago/between", "win_x")
    assert sorted(files) == ["optuna_trials.csv", "reliability.json", "reliability.png", "test_predictions.csv"]
    assert files["reliability.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert pd.read_csv(io.BytesIO(files["optuna_trials.csv"]))["C"].tolist() == [0.1, 1.0]
    assert json.loads(files["reliability.json"]) == curves
    # a forward window, whose week is ahead, has its trials only
    assert sorted(window_artifacts(trials, None, "chicago/between", "win_x")) == ["optuna_trials.csv"]


@pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer")  # MLflow's, for the int column
@pytest.mark.parametrize("rows", [0, 1, 300])
def test_a_run_s_rows_schema_is_the_one_mlflow_infers_from_every_row(rows):
    """Two rows stand in for the run's rows (``rows_schema``): the same types, and optional exactly where a value
    is missing anywhere, including past the first row and in a column with no value at all."""
    from mlflow.models import infer_signature

    from kwx.training.runner import rows_schema

    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"full": rng.normal(size=rows), "late_gap": rng.normal(size=rows),
                          "first_gap": rng.normal(size=rows), "empty": np.full(rows, np.nan),
                          "count": rng.integers(0, 9, rows), "flag": rng.random(rows) < 0.5,
                          "label": (rng.random(rows) < 0.3).astype(float)})
    if rows > 1:
        frame.loc[rows - 1, "late_gap"] = np.nan
        frame.loc[0, "first_gap"] = np.nan
    features = [c for c in frame.columns if c != "label"]
    assert rows_schema(frame, features) == infer_signature(frame).inputs
