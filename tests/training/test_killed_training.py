"""A `kwx train --workers 2` killed with SIGKILL: its workers exit, its runs end FAILED, nothing half-logged
is registered, and `kwx report` names what is missing instead of crashing."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from kwx import runs
from kwx.config import TrainConfig
from kwx.data.db import make_engine
from kwx.registry.versions import register_window_version
from kwx.training import runner
from tests.conftest import demo_database
from tests.test_runs import dead_process_tags

pytestmark = pytest.mark.integration

KWX = Path(sys.executable).with_name("kwx")
# Six windows of 20 trials: the run is still busy when the first window has been logged.
CONFIG = {"city": "chicago", "bracket": "between", "start": "2025-07-01", "end": "2025-07-24", "train_days": 12,
          "test_days": 2, "step_days": 2, "trials": 20, "cv_splits": 3, "seed": 3}


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2:].split()


def _descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid``: pid -> start time (clock ticks since boot), to tell a reused pid apart."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = {}, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        fields = _stat(child)
        if fields is not None:
            found[child] = fields[19]
            todo.extend(children.get(child, []))
    return found


def _alive(pid: int, started: str) -> bool:
    fields = _stat(pid)
    # A zombie is gone in every way that matters (no memory, no work); only its exit status waits for a reaper.
    return fields is not None and fields[19] == started and fields[0] != "Z"


def _window_runs(client: MlflowClient) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string="tags.`kwx.kind` = 'window'")


def _logging_a_later_window(client: MlflowClient) -> bool:
    """One window is registered (its run FINISHED) and the next one's run is being logged: a kill now leaves
    both a version to check and a half-logged window."""
    statuses = {r.info.status for r in _window_runs(client)}
    return {"FINISHED", "RUNNING"} <= statuses


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
def test_killed_training_leaves_no_workers_no_running_runs_and_no_half_logged_versions(tmp_path):
    db = demo_database(tmp_path, ["chicago"], date(2025, 7, 1), date(2025, 7, 24), seed=2)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    env = {**os.environ, "KWX_DATABASE_URL": db, "MLFLOW_TRACKING_URI": tracking_uri}
    client = MlflowClient(tracking_uri)
    client.search_experiments()  # creates the store's tables now, not racing kwx train to create them
    # Its own session, so the finally clause can kill whatever is left of it even when an assertion fails.
    log = tmp_path / "train.log"
    with log.open("w") as out:
        train = subprocess.Popen([str(KWX), "train", "--config", str(config), "--workers", "2"], cwd=tmp_path,
                                 env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not _logging_a_later_window(client):
            if train.poll() is not None:
                pytest.fail(f"kwx train exited with {train.returncode} before the kill:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail("no window was registered while a later one was being logged within 90 s")
            time.sleep(0.05)
        workers = _descendants(train.pid)
        assert workers, "kwx train --workers 2 started no worker process"
        os.kill(train.pid, signal.SIGKILL)
        train.wait(timeout=10)

        deadline = time.monotonic() + 5
        while (alive := [pid for pid, started in workers.items() if _alive(pid, started)]) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive, f"processes of the killed kwx train still alive 5 s later: {alive}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(train.pid, signal.SIGKILL)
        train.wait(timeout=10)

    parent_id = _window_runs(client)[0].data.tags["kwx.parent_run_id"]
    running = [r.info.run_id for r in client.search_runs([client.get_run(parent_id).info.experiment_id],
                                                         filter_string="attributes.status = 'RUNNING'")]
    assert parent_id in running
    incomplete = [r.data.tags["kwx.window"] for r in _window_runs(client) if r.info.status != "FINISHED"]
    assert incomplete

    clean = subprocess.run([str(KWX), "runs", "clean"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=60, check=False)
    assert clean.returncode == 0, clean.stderr
    assert sorted(line.split()[1] for line in clean.stdout.splitlines() if line.startswith("FAILED")) == \
        sorted(running)
    assert {client.get_run(run_id).info.status for run_id in running} == {"FAILED"}

    versions = client.search_model_versions("name = 'kwx-chicago-between'")
    assert versions
    for version in versions:
        artifacts = {a.path for a in client.list_artifacts(version.run_id)}
        assert {"test_predictions.csv", "reliability.png"} <= artifacts, f"version {version.version}: {artifacts}"

    report = subprocess.run([str(KWX), "report", "--run-id", parent_id], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert report.returncode == 2
    assert len(report.stderr.strip().splitlines()) == 1, report.stderr
    assert parent_id in report.stderr
    assert all(window in report.stderr for window in incomplete), report.stderr


def test_train_fails_its_experiments_dead_runs_and_registers_windows_last(tmp_path, monkeypatch):
    db = demo_database(tmp_path, ["chicago"], date(2025, 7, 1), date(2025, 7, 24), seed=2)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("kwx-chicago-between")
    elsewhere = {"kwx.kind": "train", runs.HOST_TAG: "elsewhere", runs.PID_TAG: "1"}
    dead = client.create_run(experiment, tags={"kwx.kind": "train", **dead_process_tags()}).info.run_id
    other_host = client.create_run(experiment, tags=elsewhere, start_time=int((time.time() - 7 * 86400) * 1000))
    at_registration = []

    def register(client, name, model_uri, run_id, tags, **kwargs):
        at_registration.append({a.path for a in client.list_artifacts(run_id)})
        return register_window_version(client, name, model_uri, run_id, tags, **kwargs)

    monkeypatch.setattr(runner, "register_window_version", register)
    engine = make_engine(db)
    try:
        summary = runner.train(TrainConfig.model_validate({**CONFIG, "test_days": 4, "step_days": 4, "trials": 2}),
                               engine)
    finally:
        engine.dispose()
        mlflow.set_tracking_uri(None)
    assert client.get_run(dead).info.status == "FAILED"
    assert client.get_run(other_host.info.run_id).info.status == "RUNNING"  # cannot be checked from this host
    assert len(at_registration) == len(summary.versions) == 3
    assert all({"test_predictions.csv", "optuna_trials.csv", "reliability.json", "reliability.png"} <= logged
               for logged in at_registration)
    parent = client.get_run(summary.parent_run_id)
    assert parent.data.tags[runs.PID_TAG] == str(os.getpid())
    assert parent.data.tags[runs.HOST_TAG] == socket.gethostname()
