"""Shared Optuna studies: workers fill a study to `trials`, the coordinator waits for running trials."""

from __future__ import annotations

import threading
import time

import numpy as np
import optuna
import pandas as pd
import pytest
import sqlalchemy.exc
from typer.testing import CliRunner

from kwx.cli import app
from kwx.config import TrainConfig
from kwx.data import migrations
from kwx.training import search
from kwx.training.search import SearchTimeoutError, join_search, make_storage, run_search, wait_for_running_trials

# The tests play other workers' trials with study.ask(), which Optuna flags on a heartbeat storage.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")


def _config(**overrides) -> TrainConfig:
    return TrainConfig.model_validate({"city": "chicago", "bracket": "between", "start": "2025-01-01",
                                       "end": "2025-06-01", "trials": 5, "cv_splits": 3, "seed": 3} | overrides)


def _data():
    rng = np.random.default_rng(0)
    days = np.repeat(pd.date_range("2025-01-01", periods=9).date, 30)
    X = pd.DataFrame({"a": rng.normal(size=days.size), "b": rng.normal(size=days.size)})
    y = (X["a"] + rng.normal(scale=0.7, size=days.size) > 0).to_numpy(dtype=int)
    return X, y, days


@pytest.fixture
def storage_url(tmp_path):
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def test_a_worker_fills_the_study_and_the_coordinator_reads_every_trial(storage_url):
    X, y, groups = _data()
    config = _config()
    ran = join_search(X, y, groups, config, storage=make_storage(storage_url), study_name="s")
    assert ran == 5
    result = run_search(X, y, groups, config, storage=make_storage(storage_url), study_name="s")
    assert result.fits == 0  # the study was already full: the coordinator only reads it
    # the worker's best C, swept along its path, reaches the coordinator through the storage
    assert result.best.C in search.c_path(config.search)
    assert result.trials.loc[result.trials["value"].idxmin(), "C"] == result.best.C
    assert sorted(result.trials["number"]) == [0, 1, 2, 3, 4]
    assert result.trials["worker"].str.fullmatch(r".+:\d+").all()
    # A worker joining a full study runs nothing, rather than one more trial.
    assert join_search(X, y, groups, config, storage=make_storage(storage_url), study_name="s") == 0


def test_in_memory_search_runs_exactly_the_configured_trials():
    X, y, groups = _data()
    config = _config(trials=4)
    result = run_search(X, y, groups, config)
    assert len(result.trials) == 4 and result.fits <= 4 * 3 * config.search.C_path_points


def test_workers_draw_different_start_up_trials(storage_url, monkeypatch):
    """One seed in every process would make their random start-up trials identical."""
    X, y, groups = _data()
    config = _config(trials=2)
    join_search(X, y, groups, config, storage=make_storage(storage_url), study_name="a")
    monkeypatch.setattr(search, "worker_id", lambda: "other-host:1")
    join_search(X, y, groups, config, storage=make_storage(storage_url), study_name="b")
    first = [optuna.load_study(study_name=name, storage=storage_url).trials[0].params for name in ("a", "b")]
    assert first[0] != first[1]


def test_wait_returns_once_another_workers_trial_finishes(storage_url):
    study = optuna.create_study(study_name="w", storage=make_storage(storage_url))
    trial = study.ask()
    trial.set_user_attr(search.WORKER_ATTR, "other-host:7")
    finisher = threading.Timer(0.6, lambda: study.tell(trial, 0.5))
    started = time.monotonic()
    finisher.start()
    try:
        wait_for_running_trials(study, timeout_seconds=30, poll_seconds=0.05)
    finally:
        finisher.join()
    assert time.monotonic() - started >= 0.5
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE


def test_wait_times_out_naming_the_running_trial_and_its_worker(storage_url):
    study = optuna.create_study(study_name="stuck", storage=make_storage(storage_url))
    study.ask().set_user_attr(search.WORKER_ATTR, "other-host:7")
    with pytest.raises(SearchTimeoutError, match=r"stuck.*still running after 0 s: #0 \(other-host:7\)"):
        wait_for_running_trials(study, timeout_seconds=0.2, poll_seconds=0.05)


def test_a_dead_workers_trial_is_failed_after_the_heartbeat_grace(storage_url, monkeypatch):
    monkeypatch.setattr(search, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(search, "HEARTBEAT_GRACE_SECONDS", 1)
    storage = make_storage(storage_url)
    study = optuna.create_study(study_name="dead", storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)  # the worker beat once, then died
    wait_for_running_trials(study, timeout_seconds=30, poll_seconds=0.2)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL


def test_storage_creation_retries_a_table_creation_race(storage_url, monkeypatch):
    real = optuna.storages.RDBStorage
    calls = []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # another process created the tables first
            raise sqlalchemy.exc.IntegrityError("CREATE TABLE studies", {}, Exception("duplicate key"))
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(search.time, "sleep", lambda _s: None)
    assert isinstance(make_storage(storage_url), real) and len(calls) == 2
    calls.clear()
    monkeypatch.setattr(search, "STORAGE_ATTEMPTS", 1)
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        make_storage(storage_url)


def test_search_worker_cli_refuses_mlflows_database(sqlite_url, tmp_path, monkeypatch):
    migrations.upgrade(sqlite_url)
    config = tmp_path / "config.yaml"
    config.write_text("city: chicago\nbracket: between\nstart: 2025-07-01\nend: 2025-07-24\ntrain_days: 12\n"
                      "test_days: 4\n")
    tracking_db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_db)
    cli = CliRunner()
    assert "--optuna-storage" in cli.invoke(app, ["search-worker", "--help"]).output
    result = cli.invoke(app, ["search-worker", "--config", str(config), "--optuna-storage", tracking_db,
                              "--db-url", sqlite_url])
    assert result.exit_code == 2 and "must not be MLflow's tracking database" in result.output
