"""The MLproject entry points run as `mlflow run . -e NAME --env-manager local`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]


def _mlflow_run(entry: str, params: dict[str, str], env: dict[str, str], experiment: str, artifacts: Path):
    # Artifacts under the test's tmp dir: the entry point runs in the repository, which tests never write to.
    MlflowClient(env["MLFLOW_TRACKING_URI"]).create_experiment(experiment, artifact_location=artifacts.as_uri())
    # The entry points call `kwx`: the interpreter's bin directory must be on PATH, as in an activated venv.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    command = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local",
               "--experiment-name", experiment]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, **env, "PATH": path})


def test_train_entry_point_makes_one_parent_and_a_child_per_window(promoted, tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = "start=2025-07-01,end=2025-07-24,train_days=12,test_days=4,step_days=4,trials=1,cv_splits=3"
    done = _mlflow_run("train", {"config": str(REPO / "configs" / "elasticnet_chi_between.yaml"),
                                 "overrides": overrides, "workers": "1"},
                       {"MLFLOW_TRACKING_URI": tracking, "KWX_DATABASE_URL": promoted["db"]}, "kwx-chicago-between",
                       tmp_path / "artifacts")
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("kwx-chicago-between").experiment_id
    runs = client.search_runs([experiment])
    parents = [r for r in runs if r.data.tags.get("kwx.kind") == "train"]
    windows = [r for r in runs if r.data.tags.get("kwx.kind") == "window"]
    assert len(parents) == 1 and len(windows) == 3
    assert {w.data.tags["mlflow.parentRunId"] for w in windows} == {parents[0].info.run_id}
    assert len(client.search_model_versions("name = 'kwx-chicago-between'")) == 3


def test_backtest_entry_point_logs_the_grid(promoted, tmp_path):
    done = _mlflow_run("backtest", {"start": "2025-07-13", "end": "2025-07-24", "blend_grid": "0.6:0.8:0.1",
                                    "config": str(REPO / "configs" / "rt.yaml")},
                       {"MLFLOW_TRACKING_URI": promoted["tracking_uri"], "KWX_DATABASE_URL": promoted["db"]},
                       "kwx-backtests-mlproject", tmp_path / "artifacts")
    assert done.returncode == 0, done.stderr[-3000:]
    client = promoted["client"]
    experiment = client.get_experiment_by_name("kwx-backtests-mlproject").experiment_id
    runs = client.search_runs([experiment])
    parent = next(r for r in runs if r.data.tags.get("kwx.kind") == "backtest")
    assert parent.data.params["blend_grid"] == "0.6:0.8:0.1"  # the entry point's own parameter
    assert "best_blend_weight" in parent.data.metrics and "model_only_total_pnl" in parent.data.metrics
    assert sum(r.data.tags.get("kwx.kind") == "backtest_weight" for r in runs) == 3
