"""A registered kwx model loaded where kwx is not installed: a fresh virtualenv holding only the model's
requirements.txt from PyPI, as `mlflow models serve --env-manager virtualenv` and `mlflow models build-docker`
build one.

Slow (pip installs MLflow and its dependencies: about 35 s from a warm pip cache, plus the shared `promoted`
training): one venv for the module, pip's own cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pytest

from kwx.data.dataset import load_dataset
from kwx.domain.features import feature_columns
from kwx.training.model import predict_yes

pytestmark = [pytest.mark.integration, pytest.mark.long(seconds=70)]
MODEL_URI = "models:/kwx-chicago-between@production"
FEATURES = feature_columns("elasticnet_relative", "between")
# Runs in the fresh venv: kwx must not be importable there, else the test proves nothing.
PREDICT = """
import importlib.util, json, sys
import mlflow.pyfunc, pandas as pd
assert importlib.util.find_spec("kwx") is None, "kwx is importable"
rows = json.loads(sys.stdin.read())
frame = pd.DataFrame(rows["data"], columns=rows["columns"], dtype=float)
print(json.dumps(mlflow.pyfunc.load_model(sys.argv[1]).predict(frame)["p_yes"].tolist()))
"""


@pytest.fixture(scope="module")
def fresh_env(promoted, tmp_path_factory) -> dict:
    """The python of a new venv (kwx's interpreter) with the promoted model's requirements.txt installed."""
    root = tmp_path_factory.mktemp("served_env")
    # a models:/ URI resolves in the registry of the current tracking URI (not download_artifacts' tracking_uri),
    # which an earlier test on this worker may have pointed elsewhere
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", promoted["tracking_uri"])
        model_dir = Path(mlflow.artifacts.download_artifacts(MODEL_URI, dst_path=str(root / "model")))
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    # --no-compile: byte-compiling MLflow's dependencies would take half the install's time
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check",
                    "-r", str(model_dir / "requirements.txt")], check=True)
    return {"python": python, "root": root}


def test_a_registered_model_predicts_the_same_in_a_venv_without_kwx(promoted, fresh_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", promoted["tracking_uri"])
    version = promoted["client"].get_model_version_by_alias("kwx-chicago-between", "production")
    test_start, test_end = date.fromisoformat(version.tags["test_start"]), date.fromisoformat(version.tags["test_end"])
    rows = load_dataset(promoted["engine"], "chicago", "between", test_start, test_end)[FEATURES].head(5).copy()
    rows.iloc[2, 0] = np.nan  # an unobserved feature: imputed, there as here

    # Neither kwx's environment nor its repository: the venv sees only the model and PyPI's packages.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHON", "VIRTUAL_ENV"))}
    served = subprocess.run(
        [str(fresh_env["python"]), "-c", PREDICT, MODEL_URI], input=json.dumps(rows.to_dict(orient="split")),
        capture_output=True, text=True, cwd=fresh_env["root"], check=False,
        env={**env, "MLFLOW_TRACKING_URI": promoted["tracking_uri"]})
    assert served.returncode == 0, served.stderr
    p_served = json.loads(served.stdout.splitlines()[-1])

    here = mlflow.pyfunc.load_model(MODEL_URI).predict(rows)["p_yes"].to_numpy()
    np.testing.assert_allclose(p_served, here, rtol=0, atol=1e-9)
    np.testing.assert_allclose(p_served, predict_yes(mlflow.sklearn.load_model(MODEL_URI), rows), rtol=0, atol=1e-9)
