"""`kwx schedule`: slots on each city's wall clock (DST included), what is due, the failure wrapper, the state
file, the APScheduler service and the command line."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from apscheduler.triggers.interval import IntervalTrigger
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import kwx.cli.schedule as schedule_cli
from kwx.cli import app
from kwx.clock import SimulatedClock
from kwx.config import TrainConfig
from kwx.lifecycle.schedule import (
    JobOutput,
    Schedule,
    ScheduleError,
    ScheduleState,
    due_now,
    job_specs,
    last_slot,
    lifecycle_runner,
    next_slot,
)

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _config(city: str = "chicago", bracket: str = "between", **lifecycle) -> TrainConfig:
    return TrainConfig.model_validate({"city": city, "bracket": bracket, "start": "2025-05-01",
                                       "end": "2025-09-23", "lifecycle": lifecycle})


def _spec(kind: str, city: str = "chicago", **lifecycle):
    specs = {s.kind: s for s in job_specs([_config(city, **lifecycle)])}
    return specs[kind]


def _utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ------------------------------------------------------------------------------------------------ job specs


def test_job_specs_are_a_weekly_retrain_and_a_daily_monitor_per_config():
    specs = job_specs([_config(retrain_weekday="wednesday", retrain_time="05:15", monitor_time="10:45"),
                       _config("la", "less")])
    assert [s.name for s in specs] == ["retrain chicago/between", "monitor chicago/between",
                                       "retrain la/less", "monitor la/less"]
    retrain, monitor = specs[:2]
    assert (retrain.kind, retrain.weekday, retrain.time, retrain.zone.key) == (
        "retrain", "wednesday", "05:15", "America/Chicago")
    assert (monitor.kind, monitor.weekday, monitor.time) == ("monitor", None, "10:45")
    assert specs[2].zone.key == "America/Los_Angeles" and specs[2].cadence == "monday 06:00"


def test_two_configs_of_one_city_and_bracket_are_refused():
    with pytest.raises(ScheduleError, match="chicago/between"):
        job_specs([_config(), _config(retrain_weekday="friday")])


# ------------------------------------------------------------------------------------------------ slots


def test_weekly_retrain_keeps_local_time_across_spring_forward():
    spec = _spec("retrain")  # monday 06:00 America/Chicago
    before = next_slot(spec, _utc(2025, 3, 2, 18))  # a Sunday in standard time
    assert before == _utc(2025, 3, 3, 12) and before.strftime("%a %H:%M %Z") == "Mon 06:00 CST"
    after = next_slot(spec, before)  # DST began on Sunday 2025-03-09
    assert after == _utc(2025, 3, 10, 11) and after.strftime("%a %H:%M %Z") == "Mon 06:00 CDT"


def test_weekly_retrain_keeps_local_time_across_fall_back():
    spec = _spec("retrain")
    assert next_slot(spec, _utc(2025, 10, 28)) == _utc(2025, 11, 3, 12)  # DST ended Sunday 2025-11-02
    assert last_slot(spec, _utc(2025, 11, 2, 12)) == _utc(2025, 10, 27, 11)


@pytest.mark.parametrize(("city", "utc_hour"), [("nyc", 14), ("chicago", 15), ("denver", 16), ("la", 17)])
def test_each_city_runs_on_its_own_zone(city, utc_hour):
    spec = _spec("monitor", city)  # daily 09:00 local, January: standard time
    assert next_slot(spec, _utc(2026, 1, 14, 0)) == _utc(2026, 1, 14, utc_hour)


def test_a_time_skipped_by_spring_forward_runs_an_hour_later_that_day():
    spec = _spec("monitor", monitor_time="02:30")  # 02:30 does not exist in Chicago on 2025-03-09
    slot = next_slot(spec, _utc(2025, 3, 8, 12))
    assert slot == _utc(2025, 3, 9, 8, 30) and slot.strftime("%H:%M %Z") == "03:30 CDT"
    assert next_slot(spec, slot) == _utc(2025, 3, 10, 7, 30)  # 02:30 CDT the day after
    assert last_slot(spec, _utc(2025, 3, 9, 9)) == slot


def test_a_time_repeated_by_fall_back_runs_once():
    spec = _spec("monitor", monitor_time="01:30")  # 01:00-02:00 happens twice in Chicago on 2025-11-02
    first = next_slot(spec, _utc(2025, 11, 1, 12))
    # (compared in UTC: by PEP 495 a time in the repeated hour equals no time of another zone)
    assert first.astimezone(UTC) == _utc(2025, 11, 2, 6, 30) and first.strftime("%H:%M %Z") == "01:30 CDT"
    assert next_slot(spec, first) == _utc(2025, 11, 3, 7, 30)  # not 01:30 CST the same morning
    assert last_slot(spec, _utc(2025, 11, 2, 7, 45)).astimezone(UTC) == first.astimezone(UTC)  # 01:45 CST


def test_slot_boundaries_and_weekdays():
    spec = _spec("retrain", retrain_weekday="sunday", retrain_time="06:00")
    slot = _utc(2025, 1, 5, 12)  # Sunday 06:00 CST
    assert next_slot(spec, slot - timedelta(seconds=1)) == slot
    assert next_slot(spec, slot) == slot + timedelta(days=7)  # strictly after now
    assert last_slot(spec, slot) == slot  # at or before now
    assert last_slot(spec, slot - timedelta(microseconds=1)) == slot - timedelta(days=7)
    for day in range(7):  # from any day of the week the next one is a Sunday
        assert next_slot(spec, slot + timedelta(days=day, hours=1)).strftime("%A") == "Sunday"


def test_slots_need_an_aware_time():
    with pytest.raises(ValueError, match="aware"):
        next_slot(_spec("monitor"), datetime(2025, 1, 1, 12))


@given(moment=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)),
       city=st.sampled_from(["chicago", "nyc", "denver", "la"]),
       kind=st.sampled_from(["retrain", "monitor"]),
       hour=st.sampled_from(["00:00", "01:30", "02:30", "06:00", "23:59"]))
def test_last_and_next_slot_bracket_now_with_no_slot_between(moment, city, kind, hour):
    spec = _spec(kind, city, retrain_time=hour, monitor_time=hour, retrain_weekday="sunday")
    last, following = last_slot(spec, moment).astimezone(UTC), next_slot(spec, moment).astimezone(UTC)
    assert last <= moment < following
    assert next_slot(spec, last).astimezone(UTC) == following
    assert timedelta(0) < following - last <= timedelta(days=7, hours=1)
    local = following.astimezone(spec.zone)
    assert local.minute == int(hour[3:]) and (kind == "monitor" or local.strftime("%A") == "Sunday")


# ------------------------------------------------------------------------------------------------ due now


def test_due_now_runs_each_latest_slot_once():
    retrain, monitor = job_specs([_config()])
    now = _utc(2025, 3, 12, 16)  # Wednesday 11:00 CDT
    assert due_now([retrain, monitor], now, {}) == [(retrain, _utc(2025, 3, 10, 11)),
                                                     (monitor, _utc(2025, 3, 12, 14))]
    done = {retrain.name: _utc(2025, 3, 10, 11, 20), monitor.name: _utc(2025, 3, 12, 14, 5)}
    assert due_now([retrain, monitor], now, done) == []
    # The next morning only the monitor is due again; the retrain waits for Monday.
    assert due_now([retrain, monitor], now + timedelta(days=1), done) == [(monitor, _utc(2025, 3, 13, 14))]
    stale = {**done, retrain.name: _utc(2025, 3, 3, 12, 30)}  # last ran for the week before
    assert [spec for spec, _ in due_now([retrain, monitor], now, stale)] == [retrain]


# ------------------------------------------------------------------------------------------------ the wrapper


def _schedule(tmp_path, job, *, configs=None, clock=None) -> Schedule:
    specs = job_specs(configs or [_config()])
    clock = clock or SimulatedClock(_utc(2025, 3, 12, 16))
    return Schedule(specs, job, ScheduleState(tmp_path / "state.json"), clock)


def _json_lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records
            if r.name == "kwx.schedule" and r.levelno >= logging.INFO]


def test_a_failing_job_is_logged_with_its_reason_recorded_and_retried_next_slot(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("VC_API_KEY", "sekret-key-123456")
    calls = []

    def job(spec, slot):
        calls.append((spec.name, slot))
        if len(calls) == 1:
            raise ValueError("training days 2025-03-01..03 are not settled (key sekret-key-123456)")
        return JobOutput(["promoted v7"])

    clock = SimulatedClock(_utc(2025, 3, 12, 16))
    service = _schedule(tmp_path, job, clock=clock)
    monitor = service.specs[1]
    caplog.set_level(logging.DEBUG, logger="kwx.schedule")
    failed = service.run_job(monitor)
    assert failed.status == "failed" and failed.slot == _utc(2025, 3, 12, 14)
    assert failed.reason == "ValueError: training days 2025-03-01..03 are not settled (key ***)"
    line = _json_lines(caplog)[-1]
    assert line == {"job": "monitor chicago/between", "slot": "2025-03-12T14:00:00+00:00", "status": "failed",
                    "reason": failed.reason, "seconds": line["seconds"], "lines": None}
    # The traceback is there for DEBUG only, never on an INFO or ERROR line.
    assert all(r.exc_info is None for r in caplog.records if r.levelno >= logging.INFO)
    assert any(r.exc_info and r.levelno == logging.DEBUG for r in caplog.records)
    saved = json.loads(service.state.path.read_text())["jobs"]["monitor chicago/between"]
    assert saved["status"] == "failed" and saved["reason"] == failed.reason and saved["last_ok"] is None
    # A failed slot is not due again; the next slot is.
    assert due_now(service.specs, clock.now(), service.state.last_done()) == [
        (service.specs[0], _utc(2025, 3, 10, 11))]
    clock.set(_utc(2025, 3, 13, 14, 1))
    ok = service.run_job(monitor)
    assert ok.status == "ok" and ok.lines == ["promoted v7"] and ok.slot == _utc(2025, 3, 13, 14)
    saved = ScheduleState(service.state.path).jobs["monitor chicago/between"]
    assert saved["status"] == "ok" and saved["last_ok"] == "2025-03-13T14:01:00+00:00"
    assert "sekret" not in service.state.path.read_text() + caplog.text


def test_even_an_unexpected_error_is_a_result_not_a_raise(tmp_path):
    def job(spec, slot):
        raise RuntimeError("boom\nsecond line")

    results = _schedule(tmp_path, job).run_due()
    assert [(r.status, r.reason) for r in results] == [("failed", "RuntimeError: boom second line")] * 2


def test_a_monitor_alarm_is_recorded_as_run(tmp_path):
    service = _schedule(tmp_path, lambda spec, slot: JobOutput(["drift"], alarms=["rolling ECE 0.2 > 0.12"]))
    result = service.run_job(service.specs[1])
    assert result.status == "alarm" and result.reason == "rolling ECE 0.2 > 0.12"
    assert result.line() == "monitor chicago/between (slot 2025-03-12 09:00 CDT): alarm: rolling ECE 0.2 > 0.12"
    assert service.state.jobs["monitor chicago/between"]["last_ok"] is not None


def test_a_state_file_that_cannot_be_written_does_not_stop_the_job(tmp_path, caplog):
    service = _schedule(tmp_path, lambda spec, slot: JobOutput())
    service.state.path = tmp_path / "gone" / "state.json"
    assert service.run_job(service.specs[0]).status == "ok"
    assert "cannot record the run" in caplog.text


# ------------------------------------------------------------------------------------------------ state file


def test_state_is_written_atomically_and_read_back(tmp_path):
    service = _schedule(tmp_path, lambda spec, slot: JobOutput())
    service.run_due()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temporary file left behind
    again = ScheduleState(tmp_path / "state.json")
    assert again.last_done() == {s.name: _utc(2025, 3, 12, 16) for s in service.specs}


@pytest.mark.parametrize("text", ["{not json", '{"jobs": []}', '{"jobs": {"a": {"finished": "2025-03-01T00:00"}}}',
                                  '{"version": 1}', "[]"])
def test_a_corrupt_state_file_counts_as_empty_with_a_warning(tmp_path, caplog, text):
    path = tmp_path / "state.json"
    path.write_text(text)
    assert ScheduleState(path).jobs == {}
    assert "unreadable state file, treated as empty" in caplog.text


def test_a_missing_state_file_counts_as_empty_with_a_warning(tmp_path, caplog):
    assert ScheduleState(tmp_path / "none.json").jobs == {}
    assert "no state file yet" in caplog.text


# ------------------------------------------------------------------------------------------------ real jobs


def test_lifecycle_runner_passes_the_climate_day_promote_and_the_clock():
    seen = {}

    class Outcome:
        def lines(self):
            return ["retrained 2025-03-10"]

    class Report:
        def __init__(self):
            self.alarms = ["drift"]

        def lines(self):
            return ["monitor"]

    def retrain(config, engine, *, as_of, promote=False, dry_run=False, now):
        seen["retrain"] = (config.city, engine, as_of, promote, dry_run, now)
        return Outcome()

    def monitor(client, engine, *, as_of, now, city=None, bracket=None):
        seen["monitor"] = (client, engine, as_of, now, city, bracket)
        return Report()

    clock = SimulatedClock(_utc(2025, 3, 10, 5, 30))
    run = lifecycle_runner(retrain=retrain, monitor=monitor, client="client", engine="engine", clock=clock)
    retrain_spec, monitor_spec = job_specs([_config("la", "less")])
    # 23:30 PDT on the 9th is 22:30 PST: the climate day is still the 9th, the UTC date already the 10th.
    slot = _utc(2025, 3, 10, 6, 30)
    assert run(retrain_spec, slot) == JobOutput(["retrained 2025-03-10"])
    assert seen["retrain"] == ("la", "engine", date(2025, 3, 9), True, False, clock.now())
    assert run(monitor_spec, slot) == JobOutput(["monitor"], alarms=["drift"])
    assert seen["monitor"] == ("client", "engine", date(2025, 3, 9), clock.now(), "la", "less")


# ------------------------------------------------------------------------------------------------ the service


def _serve_in_thread(service: Schedule, stop: threading.Event, **kwargs) -> threading.Thread:
    thread = threading.Thread(target=service.serve, args=(stop,), kwargs=kwargs, daemon=True)
    thread.start()
    return thread


def test_the_service_survives_a_failing_job_and_runs_it_at_the_next_slot(tmp_path, caplog):
    calls: list[str] = []
    second = threading.Event()

    def job(spec, slot):
        calls.append(spec.name)
        if len(calls) == 2:
            second.set()
        if len(calls) == 1:
            raise OSError("database unreachable")
        return JobOutput(["ok"])

    service = _schedule(tmp_path, job, configs=[_config()])
    service.specs = service.specs[1:]  # the monitor only
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="kwx.schedule")
    thread = _serve_in_thread(service, stop, trigger_for=lambda spec: IntervalTrigger(seconds=0.3))
    try:
        assert second.wait(4), f"the job ran {len(calls)} times"
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    statuses = [line["status"] for line in _json_lines(caplog) if line.get("status") in ("ok", "failed")]
    assert statuses[:2] == ["failed", "ok"]
    assert service.state.jobs["monitor chicago/between"]["status"] == "ok"


def test_stopping_waits_for_the_running_job_and_skips_the_queued_ones(tmp_path):
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def job(spec, slot):
        started.set()
        release.wait(3)
        finished.append(spec.name)
        return JobOutput()

    service = _schedule(tmp_path, job)  # retrain and monitor: the second queues behind the first
    stop = threading.Event()
    thread = _serve_in_thread(service, stop, trigger_for=lambda spec: IntervalTrigger(seconds=0.2))
    assert started.wait(3)
    stop.set()
    thread.join(0.5)
    assert thread.is_alive(), "the service stopped before its running job ended"
    release.set()
    thread.join(5)
    assert not thread.is_alive() and len(finished) == 1


# ------------------------------------------------------------------------------------------------ the CLI


def _write_config(directory: Path, name: str = "chi.yaml", **changes) -> Path:
    data = yaml.safe_load((REPO / "configs" / "elasticnet_chi_between.yaml").read_text())
    for dotted, value in changes.items():
        target = data
        *parents, last = dotted.split("__")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    path = directory / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def fake_jobs(monkeypatch):
    """Replaces the real retrain/monitor (and their database and tracking store) with ``outputs[kind]``."""
    outputs: dict[str, object] = {"retrain": JobOutput(["retrained"]), "monitor": JobOutput(["monitored"])}
    ran: list[str] = []

    @contextmanager
    def jobs(db_url, clock):
        def run(spec, slot):
            ran.append(spec.name)
            output = outputs[spec.kind]
            if isinstance(output, Exception):
                raise output
            return output

        yield run

    monkeypatch.setattr(schedule_cli, "_lifecycle_jobs", jobs)
    return outputs, ran


def test_once_runs_what_is_due_then_nothing(tmp_path, fake_jobs):
    _, ran = fake_jobs
    config = _write_config(tmp_path)
    first = runner.invoke(app, ["schedule", "--config", str(config), "--once"])
    assert first.exit_code == 0, first.output
    assert ran == ["retrain chicago/between", "monitor chicago/between"]
    assert first.stdout.count(": ok") == 2 and len(first.stdout.strip().splitlines()) == 2
    assert Path("kwx-schedule-state.json").exists()  # the default --state, in the (temporary) working directory
    again = runner.invoke(app, ["schedule", "--config", str(config), "--once"])
    assert again.exit_code == 0 and again.stdout.startswith("nothing due; next: ")
    assert len(ran) == 2


def test_once_exits_1_when_a_job_fails_without_a_traceback(tmp_path, fake_jobs):
    outputs, _ = fake_jobs
    outputs["retrain"] = ValueError("training days 2025-03-02..03-04 are not settled")
    state = tmp_path / "state.json"
    result = runner.invoke(app, ["schedule", "-c", str(_write_config(tmp_path)), "--once", "--state", str(state)])
    assert result.exit_code == 1
    assert "retrain chicago/between (slot " in result.stdout
    assert "failed: ValueError: training days 2025-03-02..03-04 are not settled" in result.stdout
    assert "monitor chicago/between" in result.stdout and "Traceback" not in result.output
    assert json.loads(state.read_text())["jobs"]["retrain chicago/between"]["status"] == "failed"


def test_once_exits_1_on_a_monitor_alarm(tmp_path, fake_jobs):
    outputs, _ = fake_jobs
    outputs["monitor"] = JobOutput(["drift"], alarms=["rolling Brier 0.31 > 0.25"])
    result = runner.invoke(app, ["schedule", "-c", str(_write_config(tmp_path)), "--once"])
    assert result.exit_code == 1 and "alarm: rolling Brier 0.31 > 0.25" in result.stdout


def test_matrix_schedules_every_member(tmp_path, fake_jobs):
    _, ran = fake_jobs
    _write_config(tmp_path, "a.yaml")
    _write_config(tmp_path, "b.yaml", city="denver")
    (tmp_path / "matrix.yml").write_text("configs: ['*.yaml']\n")  # .yml: the glob must not match itself
    result = runner.invoke(app, ["schedule", "--matrix", str(tmp_path / "matrix.yml"), "--once"])
    assert result.exit_code == 0, result.output
    assert sorted(ran) == ["monitor chicago/between", "monitor denver/between", "retrain chicago/between",
                           "retrain denver/between"]


def test_list_prints_next_slots_and_last_runs_without_running_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(schedule_cli, "_lifecycle_jobs", None)  # --list must not build the jobs
    config = _write_config(tmp_path, lifecycle__retrain_weekday="friday", lifecycle__retrain_time="07:15")
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"version": 1, "jobs": {"monitor chicago/between": {
        "slot": "2025-03-12T14:00:00+00:00", "finished": "2025-03-12T14:03:00+00:00", "status": "failed",
        "reason": "x", "last_ok": None}}}))
    result = runner.invoke(app, ["schedule", "-c", str(config), "--list", "--state", str(state)])
    assert result.exit_code == 0, result.output
    retrain_row = next(line for line in result.stdout.splitlines() if "retrain chicago/between" in line)
    assert "friday 07:15" in retrain_row and "America/Chicago" in retrain_row and " UTC)" in retrain_row
    assert "Fri " in retrain_row and "07:15 C" in retrain_row
    assert "2025-03-12 14:03 UTC failed" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--config", "{bad}"], "lifecycle.retrain_time"),
    (["--config", "{good}", "--config", "{good}"], "two configs schedule chicago/between"),
    (["--config", "{good}", "--matrix", "{good}"], "give --config (repeatable) or --matrix"),
    ([], "give --config (repeatable) or --matrix"),
    (["--config", "{good}", "--once", "--list"], "at most one of --once and --list"),
    (["--config", "{good}", "--once", "--state", "{missing}/state.json"], "does not exist"),
])
def test_bad_input_exits_2_naming_the_problem(tmp_path, fake_jobs, args, message):
    paths = {"bad": _write_config(tmp_path, "bad.yaml", lifecycle__retrain_time="25:00"),
             "good": _write_config(tmp_path), "missing": tmp_path / "missing"}
    result = runner.invoke(app, ["schedule", *(a.format(**paths) for a in args)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert fake_jobs[1] == []


def test_a_bad_matrix_member_exits_2_naming_file_and_field(tmp_path):
    _write_config(tmp_path, "bad.yaml", lifecycle__monitor_time="9am")
    (tmp_path / "m.yml").write_text("configs: ['*.yaml']\n")
    result = runner.invoke(app, ["schedule", "--matrix", str(tmp_path / "m.yml"), "--list"])
    assert result.exit_code == 2 and "bad.yaml: lifecycle.monitor_time" in result.output


_SERVICE_SCRIPT = """
import sys
from contextlib import contextmanager

import kwx.cli.schedule as cli
from kwx.lifecycle.schedule import JobOutput


@contextmanager
def jobs(db_url, clock):
    yield lambda spec, slot: JobOutput(["fake"])


cli._lifecycle_jobs = jobs  # no database or tracking store: this test is about the process and its signals
from kwx.cli import app

app(["schedule", "--config", sys.argv[1], "--state", sys.argv[2]], prog_name="kwx")
"""


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_service_cleanly(tmp_path, sig):
    config = _write_config(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-c", _SERVICE_SCRIPT, str(config), str(tmp_path / "state.json")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watchdog = threading.Timer(20, process.kill)  # a process that never prints its banner fails, not hangs
    watchdog.start()
    try:
        banner = []
        for line in process.stdout:  # the banner is printed once the scheduler is about to start
            banner.append(line)
            if line.startswith("serving "):
                break
        process.send_signal(sig)
        out, err = process.communicate(timeout=10)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "retrain chicago/between" in "".join(banner) and "stopped" in out
    assert "Traceback" not in err


_ONCE_SCRIPT = """
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import kwx.cli.schedule as cli
from kwx.lifecycle.schedule import JobOutput

release = Path(sys.argv[3])


@contextmanager
def jobs(db_url, clock):
    def run(spec, slot):
        print(f"running {spec.name}", flush=True)
        deadline = time.monotonic() + 15
        while not release.exists() and time.monotonic() < deadline:  # the test releases it after signalling
            time.sleep(0.05)
        return JobOutput(["fake"])

    yield run


cli._lifecycle_jobs = jobs  # no database or tracking store: this test is about the process and its signals
from kwx.cli import app

app(["schedule", "--config", sys.argv[1], "--state", sys.argv[2], "--once"], prog_name="kwx")
"""


def _once_in_a_subprocess(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    """`kwx schedule --once` whose first job runs until ``release`` exists; returned once that job has started."""
    config, state, release = _write_config(tmp_path), tmp_path / "state.json", tmp_path / "release"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-c", _ONCE_SCRIPT, str(config), str(state), str(release)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = process.stdout.readline()
    assert first.startswith("running retrain chicago/between"), (first, process.stderr.read())
    return process, state, release


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_once_finishes_the_running_job_records_it_and_leaves_the_rest_due(tmp_path, sig):
    process, state, release = _once_in_a_subprocess(tmp_path)
    try:
        process.send_signal(sig)
        time.sleep(0.5)  # the signal lands while the job still runs
        release.touch()
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, (process.returncode, out, err)
    lines = out.strip().splitlines()
    assert lines[0].startswith("retrain chicago/between (slot ") and lines[0].endswith(": ok"), out
    assert "running monitor" not in out  # the job queued behind it is left for the next run
    assert lines[1].startswith("monitor chicago/between (slot ") and ": skipped: " in lines[1], out
    assert lines[2:] == [f"stopped by {signal.Signals(sig).name}"], out
    assert "Traceback" not in err
    assert list(json.loads(state.read_text())["jobs"]) == ["retrain chicago/between"]


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_during_once_kills_at_once_and_the_job_stays_due(tmp_path, sig):
    process, state, _release = _once_in_a_subprocess(tmp_path)  # never released: only the kill ends the job
    try:
        process.send_signal(sig)
        time.sleep(0.5)
        process.send_signal(sig)
        out, _err = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -sig, out
    assert not state.exists()
