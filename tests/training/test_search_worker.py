"""Distributed search: a `kwx search-worker` process and the coordinator share PostgreSQL Optuna studies."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from kwx import tracking
from kwx.config import TrainConfig
from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.data.demo import load_demo
from kwx.training import runner
from kwx.training.search import WORKER_ATTR, make_storage

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

CONFIG = {"city": "chicago", "bracket": "between", "start": "2025-07-01", "end": "2025-07-24", "train_days": 12,
          "test_days": 4, "step_days": 4, "trials": 8, "cv_splits": 3, "seed": 5}
PROCESSES = 2  # the coordinator and one worker
KWX = Path(sys.executable).with_name("kwx")


def _worker_trials(storage: str, pid: int) -> int:
    return sum(t.user_attrs.get(WORKER_ATTR, "").endswith(f":{pid}") for name in optuna.get_all_study_names(storage)
               for t in optuna.load_study(study_name=name, storage=storage).trials)


def _wait_for_first_worker_trial(worker: subprocess.Popen, storage: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _worker_trials(storage, worker.pid) == 0:
        if worker.poll() is not None:
            out, err = worker.communicate()
            pytest.fail(f"search worker exited with {worker.returncode} before any trial:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"search worker ran no trial within {timeout:.0f} s")
        time.sleep(0.2)


def test_worker_and_coordinator_share_each_window_study(tmp_path, postgres_url, monkeypatch):
    data_url = f"sqlite:///{tmp_path / 'kwx.db'}"
    migrations.upgrade(data_url)
    engine = make_engine(data_url)
    load_demo(engine, ["chicago"], date(2025, 7, 1), date(2025, 7, 24), seed=2)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    config = TrainConfig.model_validate(CONFIG)
    tracking_uri = f"sqlite:///{tmp_path / 'coordinator' / 'mlflow.db'}"
    (tmp_path / "coordinator").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    # Data loaded and the MLflow store created before the worker starts, so the coordinator joins the
    # studies while the worker is still in them.
    prepared = runner.prepare(config, engine)
    tracking.configure()
    make_storage(postgres_url)  # Optuna's tables exist before anyone polls them

    worker_dir = tmp_path / "worker"
    worker_dir.mkdir()
    worker = subprocess.Popen(
        [str(KWX), "search-worker", "--config", str(config_path), "--optuna-storage", postgres_url],
        cwd=worker_dir, env={**os.environ, "KWX_DATABASE_URL": data_url}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        # The worker's first trial before the coordinator starts: otherwise a fast coordinator could finish
        # every study alone on a loaded machine and the test would prove nothing about sharing.
        _wait_for_first_worker_trial(worker, postgres_url, timeout=120)
        summary = runner.train(config, engine, workers=1, optuna_storage_spec=postgres_url, prepared=prepared)
        out, err = worker.communicate(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
        engine.dispose()
        mlflow.set_tracking_uri(None)
    assert worker.returncode == 0, err
    assert "trial(s) over 3 window(s)" in out
    assert list(worker_dir.iterdir()) == []  # the worker wrote no MLflow store, no artifacts

    windows = list(summary.versions)
    assert len(windows) == 3
    prefix = runner.search_study_prefix(config)
    assert sorted(optuna.get_all_study_names(postgres_url)) == [f"{prefix}-{w}" for w in windows]
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([summary.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == summary.parent_run_id]
    assert len(runs) == 1 + len(windows) and sorted(r.data.tags["kwx.window"] for r in children) == windows
    versions = client.search_model_versions(f"name='{summary.model_name}'")
    assert sorted(v.tags["window"] for v in versions) == windows

    contributed = 0
    for child in children:
        window = child.data.tags["kwx.window"]
        trials = optuna.load_study(study_name=f"{prefix}-{window}", storage=postgres_url).trials
        assert CONFIG["trials"] <= len(trials) <= CONFIG["trials"] + PROCESSES - 1
        assert sorted(t.number for t in trials) == list(range(len(trials)))
        assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
        contributed += sum(t.user_attrs[WORKER_ATTR].endswith(f":{worker.pid}") for t in trials)
        # The window's logged trials table is the whole study, each trial once, with who ran it.
        logged = pd.read_csv(client.download_artifacts(child.info.run_id, "optuna_trials.csv", str(tmp_path)))
        assert sorted(logged["number"]) == sorted(t.number for t in trials)
        assert set(logged["worker"]) == {t.user_attrs[WORKER_ATTR] for t in trials}
    assert contributed >= 1
