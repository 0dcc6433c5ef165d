"""`kwx schedule`: the lifecycle service — each config's weekly retrain and daily monitor on its city's clock."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kwx.cli.common import (
    DbUrlOption,
    TrackingUriOption,
    _tracking_or_fail,
    app,
    console,
    err_console,
    fail,
    load_or_fail,
    open_engine,
)

if TYPE_CHECKING:
    from kwx.clock import Clock
    from kwx.config import TrainConfig
    from kwx.lifecycle.schedule import JobRunner, JobSpec, Schedule, ScheduleState

DEFAULT_STATE = Path("kwx-schedule-state.json")


@app.command("schedule")
def schedule(
    config: Annotated[list[Path] | None, typer.Option(
        "--config", "-c", help="Train config YAML whose city/bracket to retrain and monitor; repeat it for several.",
        show_default=False)] = None,
    matrix: Annotated[Path | None, typer.Option(
        help="Matrix YAML (configs/matrix.yaml): schedule every config it lists.")] = None,
    once: Annotated[bool, typer.Option(
        "--once", help="Run the jobs due now (latest slot newer than their last run in --state), one line each, "
        "and exit: 1 when one failed or raised an alarm, else 0. For cron. SIGTERM or Ctrl-C lets the running job "
        "finish and be recorded, skips the rest (still due next time) and exits the same way; a second signal "
        "kills at once, leaving that job due.")] = False,
    list_jobs: Annotated[bool, typer.Option(
        "--list", help="Print every job, its next slot (local and UTC) and its last run, and exit.")] = False,
    state: Annotated[Path, typer.Option(
        "--state", help="JSON file recording each job's last run; written atomically.")] = DEFAULT_STATE,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Also log the full traceback of a failed job (secrets masked).")] = False,
    db_url: DbUrlOption = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """The lifecycle service: per config, a weekly retrain (lifecycle.retrain_weekday at lifecycle.retrain_time)
    that promotes what passes its gates, and a daily monitor pass (lifecycle.monitor_time), both on the city's
    local wall clock. A job that fails is logged (one JSON line on stderr) with its reason and retried at its
    next slot; it never stops the service. SIGTERM or Ctrl-C stops it after the running job (exit 0); a second
    signal kills it at once, and that job, never recorded, runs at its next slot."""
    import logging

    from kwx.clock import SystemClock
    from kwx.lifecycle.schedule import Schedule, ScheduleError, ScheduleState, job_specs, quiet_apscheduler
    from kwx.secrets import configure_logging

    if once and list_jobs:
        raise fail("give at most one of --once and --list")
    configs = _load_configs(config, matrix)
    try:
        specs = job_specs(configs)
    except ScheduleError as exc:
        raise fail(str(exc)) from None
    configure_logging(logging.INFO)
    # Only kwx's own tracebacks: DEBUG on the root logger would let every library's chatter through.
    logging.getLogger("kwx.schedule").setLevel(logging.DEBUG if debug else logging.INFO)
    quiet_apscheduler()
    clock = SystemClock()
    records = ScheduleState(state)
    if list_jobs:
        _print_jobs(specs, records, clock, title="jobs")
        return
    try:
        records.check_writable()
    except OSError as exc:
        raise fail(f"--state {state}: {exc}") from None
    with _lifecycle_jobs(db_url, clock) as runner:
        service = Schedule(specs, runner, records, clock)
        if once:
            _run_once(service)
        else:
            _serve(service)


def _load_configs(paths: list[Path] | None, matrix: Path | None) -> list[TrainConfig]:
    from kwx.config import ConfigError, MatrixConfig, TrainConfig, load_config

    if bool(paths) == (matrix is not None):
        raise fail("give --config (repeatable) or --matrix")
    if paths:
        return [load_or_fail(path, TrainConfig) for path in paths]
    try:
        members = load_config(matrix, MatrixConfig).load_members()
    except ConfigError as exc:
        err_console.print(f"[bold red]invalid matrix[/] {exc.source}:", highlight=False)
        for problem in exc.problems:
            err_console.print(f"  - {problem}", highlight=False)
        raise typer.Exit(2) from None
    return [member for _, member in members]


@contextmanager
def _lifecycle_jobs(db_url: str | None, clock: Clock) -> Iterator[JobRunner]:
    """The real retrain and monitor jobs on one engine and one MLflow client, disposed at the end.

    They are imported here, so `kwx --help`, `kwx schedule --list` and the scheduler module do without them.
    """
    from kwx.lifecycle.monitor import monitor
    from kwx.lifecycle.retrain import retrain
    from kwx.lifecycle.schedule import lifecycle_runner

    client = _tracking_or_fail()
    engine = open_engine(db_url)
    try:
        yield lifecycle_runner(retrain=retrain, monitor=monitor, client=client, engine=engine, clock=clock)
    finally:
        engine.dispose()


class _StopSignals:
    """While active, the first SIGTERM or SIGINT sets ``stop`` and kwx finishes its running job; a second one
    gets the signal's default action and kills the process at once.

    Finishing rather than abandoning the job: a retrain cut short leaves nothing worth recording, and the
    supervisor that sent the signal bounds the wait itself (its stop timeout, then SIGKILL). The state file is
    written atomically, so a kill at any point leaves the last complete one, and the job stays due.
    """

    def __init__(self):
        self.stop = threading.Event()
        self.received: str | None = None

    def __enter__(self) -> _StopSignals:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *_exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame) -> None:
        self.received = signal.Signals(signum).name
        self.stop.set()
        for sig in self._previous:
            signal.signal(sig, signal.SIG_DFL)


def _run_once(service: Schedule) -> None:
    with _StopSignals() as signals:
        results = service.run_due(signals.stop)
    if not results:
        upcoming = [(spec, slot) for spec, slot in service.upcoming() if slot is not None]
        spec, slot = min(upcoming, key=lambda pair: pair[1])
        console.print(f"nothing due; next: {spec.name} at {_when(slot)}", highlight=False)
        return
    for result in results:
        console.print(result.line(), highlight=False, markup=False)
    if signals.received:
        console.print(f"stopped by {signals.received}", highlight=False)
    if any(result.status in ("failed", "alarm") for result in results):
        raise typer.Exit(1)


def _serve(service: Schedule) -> None:
    import sys

    with _StopSignals() as signals:
        _print_jobs(service.specs, service.state, service.clock, title="kwx schedule: next slots")
        console.print(f"serving {len(service.specs)} jobs; SIGTERM or Ctrl-C stops after the running job",
                      highlight=False)
        sys.stdout.flush()  # a container's log shows the banner now, not when the buffer fills
        service.serve(signals.stop)
    console.print("stopped", highlight=False)


def _when(slot) -> str:
    from datetime import UTC

    return f"{slot:%a %Y-%m-%d %H:%M %Z} ({slot.astimezone(UTC):%H:%M} UTC)"


def _print_jobs(specs: list[JobSpec], state: ScheduleState, clock: Clock, *, title: str) -> None:
    """Every job, its next slot and its last run: `--list` needs neither the database nor the tracking store."""
    from datetime import UTC, datetime

    from rich.table import Table

    from kwx.lifecycle.schedule import next_slot

    now = clock.now()
    table = Table(title=title)
    for column in ("job", "when (local)", "zone", "next slot", "last run"):
        table.add_column(column)
    for spec in specs:
        slot = next_slot(spec, now)
        record = state.jobs.get(spec.name)
        last = "-"
        if record is not None:
            finished = datetime.fromisoformat(record["finished"]).astimezone(UTC)
            last = f"{finished:%Y-%m-%d %H:%M} UTC {record['status']}"
        table.add_row(spec.name, spec.cadence, spec.zone.key, "-" if slot is None else _when(slot), last)
    console.print(table)
