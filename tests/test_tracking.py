"""kwx.tracking.configure: a SQLite tracking store writes through SQLite's write-ahead log."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing

import mlflow
import pytest

from kwx import tracking


def _journal_mode(path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


def test_a_sqlite_store_switches_to_the_write_ahead_log_and_keeps_it(tmp_path, monkeypatch):
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    tracking.configure()
    assert _journal_mode(store) == "wal"
    with mlflow.start_run(experiment_id=tracking.ensure_experiment("wal")) as run:
        mlflow.log_metric("m", 1.5)
    mlflow.set_tracking_uri(None)
    # a later reader (another process, `mlflow ui`) sees the same file in the same mode
    assert _journal_mode(store) == "wal"
    assert mlflow.MlflowClient(f"sqlite:///{store}").get_run(run.info.run_id).data.metrics == {"m": 1.5}


def test_a_store_that_cannot_switch_keeps_its_journal_and_still_logs(tmp_path, monkeypatch):
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")

    def refused(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    with monkeypatch.context() as patched:
        patched.setattr(tracking.sqlite3, "connect", refused)
        tracking.configure()
    assert _journal_mode(store) == "delete"
    with mlflow.start_run(experiment_id=tracking.ensure_experiment("journal")):
        mlflow.log_metric("m", 2.0)
    mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("uri", ["postgresql://kwx@127.0.0.1:1/mlflow", "http://127.0.0.1:1", "sqlite://",
                                 "sqlite:///:memory:"])
def test_only_a_sqlite_file_is_switched(uri, monkeypatch):
    monkeypatch.setattr(tracking.sqlite3, "connect", lambda *a, **k: pytest.fail(f"{uri} opened as SQLite"))
    tracking.use_write_ahead_log(uri)


def test_at_exit_the_log_is_written_back_so_a_copy_of_the_file_alone_holds_every_run(tmp_path, monkeypatch):
    """MLflow holds its connections to the end of the process, so SQLite never writes the log back on their close;
    kwx does at exit, and a copy of mlflow.db alone (as users share a store) holds every run."""
    at_exit, register = [], tracking.atexit.register

    def recorded(function, *args):  # kwx's own, kept to be called here; anyone else's registered as usual
        return at_exit.append(args) if function is tracking.checkpoint_write_ahead_log else register(function, *args)

    monkeypatch.setattr(tracking.atexit, "register", recorded)
    monkeypatch.setattr(tracking, "_checkpointed_at_exit", set())
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    tracking.configure()
    tracking.configure()  # once per store, however often a process configures it
    with mlflow.start_run(experiment_id=tracking.ensure_experiment("copied")) as run:
        mlflow.log_params({f"p{i}": i for i in range(50)})
    mlflow.set_tracking_uri(None)
    log = tmp_path / "mlflow.db-wal"
    with closing(sqlite3.connect(store)) as still_open:  # as MLflow's connections are at exit
        still_open.execute("SELECT count(*) FROM runs").fetchall()
        assert log.stat().st_size > 0
        assert at_exit == [(str(store),)]
        tracking.checkpoint_write_ahead_log(str(store))
        assert log.stat().st_size == 0
    copy = tmp_path / "copy" / "mlflow.db"
    copy.parent.mkdir()
    shutil.copyfile(store, copy)
    assert len(mlflow.MlflowClient(f"sqlite:///{copy}").get_run(run.info.run_id).data.params) == 50
