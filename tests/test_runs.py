"""Runs whose process died: judged by host, pid and process start; ended FAILED by `kwx runs clean`; and
`kwx report` names an incomplete run instead of crashing on it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from kwx import runs
from kwx.cli import app
from kwx.report import IncompleteRunError, require_complete, window_runs

HOURS = 3600 * 1000  # MLflow times are milliseconds


def dead_process_tags() -> dict[str, str]:
    """Tags of a process of this host that has exited since."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    tags = {runs.HOST_TAG: socket.gethostname(), runs.PID_TAG: str(child.pid)}
    started = runs.process_start(child.pid)
    if started is not None:
        tags[runs.PROCESS_START_TAG] = started
    child.kill()
    child.wait()
    return tags


def _run(client: MlflowClient, name: str, tags: dict[str, str], *, hours_ago: float = 0.0) -> str:
    experiment = client.get_experiment_by_name("e") or client.get_experiment(client.create_experiment("e"))
    start = int(time.time() * 1000 - hours_ago * HOURS)
    return client.create_run(experiment.experiment_id, start_time=start, tags=tags, run_name=name).info.run_id


def _status(client: MlflowClient, run_id: str) -> str:
    return client.get_run(run_id).info.status


@pytest.fixture
def store(tracking):
    here = runs.process_tags()
    kwx = {"kwx.kind": "train"}
    ids = {
        "dead": _run(tracking, "dead", kwx | dead_process_tags()),
        "alive": _run(tracking, "alive", kwx | here),
        "other_new": _run(tracking, "other_new", kwx | {runs.HOST_TAG: "elsewhere", runs.PID_TAG: "1"}, hours_ago=1),
        "other_old": _run(tracking, "other_old", kwx | {runs.HOST_TAG: "elsewhere", runs.PID_TAG: "1"},
                          hours_ago=72),
        "unrecorded_old": _run(tracking, "unrecorded_old", kwx, hours_ago=72),
        "not_kwx": _run(tracking, "not_kwx", {}, hours_ago=72),
    }
    if runs.PROCESS_START_TAG in here:
        # This process's pid, but a process that started at another time: the pid was reused.
        ids["reused"] = _run(tracking, "reused", kwx | here | {runs.PROCESS_START_TAG: "another-boot/1"})
    finished = _run(tracking, "finished", kwx | dead_process_tags())
    tracking.set_terminated(finished, "FINISHED")
    ids["finished"] = finished
    return ids


def test_only_runs_whose_process_is_gone_are_failed(tracking, store):
    verdicts = {v.run_name: v for v in runs.clean(tracking, other_hosts_hours=48)}
    failed = {"dead", "other_old", "unrecorded_old"} | ({"reused"} & set(store))
    assert {name for name, v in verdicts.items() if v.dead} == failed
    assert set(verdicts) == failed | {"alive", "other_new"}  # neither a non-kwx run nor a finished one
    for name, run_id in store.items():
        assert _status(tracking, run_id) == ("FAILED" if name in failed else "RUNNING" if name != "finished"
                                           else "FINISHED"), name
    reason = tracking.get_run(store["dead"]).data.tags[runs.END_REASON_TAG]
    assert reason == f"its process {tracking.get_run(store['dead']).data.tags[runs.PID_TAG]} on " \
                     f"{socket.gethostname()} is gone"
    assert "more than 48 h" in verdicts["other_old"].reason
    assert "cannot be checked" in verdicts["other_new"].reason


def test_without_an_age_other_hosts_runs_are_left_alone(tracking, store):
    failed = {v.run_name for v in runs.clean(tracking, other_hosts_hours=None) if v.dead}
    assert failed == {"dead"} | ({"reused"} & set(store))
    assert _status(tracking, store["other_old"]) == "RUNNING"


def test_cli_clean_dry_run_then_clean(tracking, store):
    cli = CliRunner()
    dry = cli.invoke(app, ["runs", "clean", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"would fail {store['dead']} train 'dead': its process" in dry.output
    assert _status(tracking, store["dead"]) == "RUNNING"
    done = cli.invoke(app, ["runs", "clean", "--other-hosts-hours", "100"])
    assert done.exit_code == 0, done.output
    failed = [line.split()[1] for line in done.output.splitlines() if line.startswith("FAILED")]
    assert sorted(failed) == sorted(store[n] for n in ("dead", "reused") if n in store)
    assert f"left RUNNING {store['other_old']}" in done.output
    assert _status(tracking, store["dead"]) == "FAILED" and _status(tracking, store["other_old"]) == "RUNNING"
    again = cli.invoke(app, ["runs", "clean", "--other-hosts-hours", "100"])
    assert again.exit_code == 0 and "FAILED" not in again.output
    assert "no RUNNING kwx run is dead" in again.output


def test_cli_clean_help():
    result = CliRunner().invoke(app, ["runs", "clean", "--help"])
    assert result.exit_code == 0 and "--dry-run" in result.output and "--other-hosts-hours" in result.output
    infinite = CliRunner().invoke(app, ["runs", "clean", "--other-hosts-hours", "inf"])
    assert infinite.exit_code == 2 and "--other-hosts-hours: must be a finite number" in infinite.output


def test_report_names_the_incomplete_window(tracking):
    parent = _run(tracking, "train chicago/between", {"kwx.kind": "train"})
    done = _run(tracking, "win_20250701_20250714", {"kwx.kind": "window", "kwx.window": "win_20250701_20250714",
                                                   "mlflow.parentRunId": parent})
    tracking.log_param(done, "test_start", "2025-07-13")
    tracking.set_terminated(done, "FINISHED")
    # Killed before it logged its params: no test_start to sort by.
    _run(tracking, "win_20250703_20250716", {"kwx.kind": "window", "kwx.window": "win_20250703_20250716",
                                            "mlflow.parentRunId": parent})
    windows = window_runs(tracking, parent)
    with pytest.raises(IncompleteRunError, match=f"training run {parent} is incomplete: window "
                                                 "win_20250703_20250716 never finished"):
        require_complete(tracking.get_run(parent), windows)
    with pytest.raises(IncompleteRunError, match=f"{parent} is RUNNING, not FINISHED"):
        require_complete(tracking.get_run(parent), windows[1:])
    tracking.set_terminated(parent, "FINISHED")
    require_complete(tracking.get_run(parent), windows[1:])
