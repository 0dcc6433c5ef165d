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


def _mlflow_run(entry: str, params: dict[str, str], env: dict[str, str], experiment: str, artifacts: Path, *,
                launch_in_experiment: bool = True):
    """``launch_in_experiment=False`` launches without --experiment-name, in the Default experiment."""
    # Artifacts under the test's tmp dir: the entry point runs in the repository, which tests never write to.
    MlflowClient(env["MLFLOW_TRACKING_URI"]).create_experiment(experiment, artifact_location=artifacts.as_uri())
    # The entry points call `kwx`: the interpreter's bin directory must be on PATH, as in an activated venv.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    command = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local"]
    if launch_in_experiment:
        command += ["--experiment-name", experiment]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, **env, "PATH": path})


def test_train_entry_point_trains_in_its_own_experiment_and_the_launch_links_there(promoted, tmp_path,
                                                                                     monkeypatch):
    # Launched as the project is used, without --experiment-name: MLflow's run lands in Default, whose
    # artifact root is the working directory's ./mlruns.
    monkeypatch.chdir(tmp_path)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = "start=2025-07-01,end=2025-07-24,train_days=12,test_days=4,step_days=4,trials=1,cv_splits=3"
    done = _mlflow_run("train", {"config": str(REPO / "configs" / "elasticnet_chi_between.yaml"),
                                 "overrides": overrides, "workers": "1"},
                       {"MLFLOW_TRACKING_URI": tracking, "KWX_DATABASE_URL": promoted["db"]}, "kwx-chicago-between",
                       tmp_path / "artifacts", launch_in_experiment=False)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("kwx-chicago-between").experiment_id
    runs = client.search_runs([experiment])
    parents = [r for r in runs if r.data.tags.get("kwx.kind") == "train"]
    windows = [r for r in runs if r.data.tags.get("kwx.kind") == "window"]
    assert len(runs) == 4 and len(parents) == 1 and len(windows) == 3
    parent = parents[0]
    assert {w.data.tags["mlflow.parentRunId"] for w in windows} == {parent.info.run_id}
    assert len(client.search_model_versions("name = 'kwx-chicago-between'")) == 3

    [launch] = client.search_runs([client.get_experiment_by_name("Default").experiment_id])
    assert launch.info.status == "FINISHED" and launch.data.tags["mlflow.source.type"] == "PROJECT"
    assert launch.data.tags["kwx.training_run_ids"] == parent.info.run_id
    note = launch.data.tags["mlflow.note.content"]
    assert f"(#/experiments/{experiment}/runs/{parent.info.run_id})" in note and "kwx-chicago-between" in note
    assert parent.data.tags["kwx.launched_by_run_id"] == launch.info.run_id
    assert launch.info.run_id in parent.data.tags["mlflow.note.content"]
    # The launch's source tags describe how the training was started.
    assert parent.data.tags["mlflow.project.entryPoint"] == "train"
    assert parent.data.tags["mlflow.source.name"] == launch.data.tags["mlflow.source.name"]


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
