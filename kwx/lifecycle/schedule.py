"""`kwx schedule`: the weekly retrain and the daily monitor of every config, on each city's wall clock.

The pure part turns configs into job specs and answers "when is the next slot" and "what is due now" for
aware datetimes. The IO part, ``Schedule``, runs a job inside one wrapper that never lets a failure escape
(it is logged with its reason and recorded in a small JSON state file; the next slot retries it), runs what is
due now (``--once``, for cron users) and serves the specs on APScheduler.

APScheduler 3 rather than cron in the container: the jobs run in-process with kwx's config validation and
logging (secret redaction included), each city's IANA zone and its DST changes are the trigger's own business,
``--once`` computes slots with the same triggers the service uses, and the image needs no cron daemon.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

from kwx.cities import get_city
from kwx.clock import Clock
from kwx.config import WEEKDAYS, TrainConfig
from kwx.domain.markets import climate_day
from kwx.secrets import RedactingFilter, redact

log = logging.getLogger("kwx.schedule")
# On the logger itself, not only on the handlers configure_logging sets up: a failed job's traceback may quote a
# key, and this logger's records are masked whichever handler writes them.
log.addFilter(RedactingFilter())

JobKind = Literal["retrain", "monitor"]
JobStatus = Literal["ok", "alarm", "failed", "skipped"]
# Jobs run one at a time (a retrain uses every core), so the retrains of one zone's configs queue behind each
# other; a slot may start this late, later it waits for its next slot.
MISFIRE_GRACE = timedelta(hours=6)
# The longest gap between two slots of a job (a week) plus room for a DST shift: last_slot looks back this far.
_LOOKBACK = timedelta(days=8)
_REASON_CHARS = 500
_STOPPING = "kwx was told to stop before this job started; it is still due"
_STATE_VERSION = 1


class ScheduleError(ValueError):
    """Configs that cannot be scheduled together."""


@dataclass(frozen=True)
class JobSpec:
    """One scheduled job: the weekly retrain (``weekday`` set) or the daily monitor (``weekday`` None) of a
    config, at ``time`` (HH:MM) on the wall clock of ``zone``."""

    name: str
    kind: JobKind
    config: TrainConfig
    zone: ZoneInfo
    time: str
    weekday: str | None = None

    @property
    def cadence(self) -> str:
        return f"{self.weekday} {self.time}" if self.weekday else f"daily {self.time}"

    def trigger(self) -> WallClockTrigger:
        hour, minute = (int(part) for part in self.time.split(":"))
        return WallClockTrigger(hour, minute, WEEKDAYS.index(self.weekday) if self.weekday else None, self.zone)


class WallClockTrigger(BaseTrigger):
    """Fires once per wall-clock slot: ``hour``:``minute`` on every day (or on ``weekday``, Monday = 0) of
    ``zone``'s calendar.

    A time the fall-back day repeats fires once, at its first occurrence, as cron does; a time the spring-forward
    jump skips (02:30) fires at that instant on the old offset, 03:30 daylight time. Computed from the calendar
    rather than by APScheduler's CronTrigger, which on a spring-forward day skips the next day's midnight
    (from 2024-03-10 00:00 CST it gave 03-12, not 03-11).
    """

    def __init__(self, hour: int, minute: int, weekday: int | None, zone: ZoneInfo):
        self.hour, self.minute, self.weekday, self.zone = hour, minute, weekday, zone

    def slot_on(self, day: date) -> datetime:
        # fold=0: the first of a repeated time, and the old offset for a skipped one
        return _local(datetime.combine(day, dt_time(self.hour, self.minute), tzinfo=self.zone), self.zone)

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        """The first slot at or after ``now``; with ``previous_fire_time``, the first after it (CronTrigger's
        contract: a run missed since then is still returned, for the scheduler's misfire rule to judge)."""
        start = now if previous_fire_time is None else previous_fire_time + timedelta(microseconds=1)
        start = start.astimezone(UTC)
        day = start.astimezone(self.zone).date() - timedelta(days=1)  # the day before: its slot may still be ahead
        while True:
            if self.weekday is None or day.weekday() == self.weekday:
                slot = self.slot_on(day)
                if slot.astimezone(UTC) >= start:
                    return slot
            day += timedelta(days=1)


def job_specs(configs: Iterable[TrainConfig]) -> list[JobSpec]:
    """One weekly retrain and one daily monitor per config, in config order."""
    specs: list[JobSpec] = []
    seen: set[tuple[str, str]] = set()
    for config in configs:
        key = (config.city, config.bracket)
        if key in seen:
            # Two retrains of one city/bracket would promote into one registered model in turn.
            raise ScheduleError(f"two configs schedule {config.city}/{config.bracket}: keep one per city/bracket")
        seen.add(key)
        zone = get_city(config.city).zone
        life = config.lifecycle
        pair = f"{config.city}/{config.bracket}"
        specs.append(JobSpec(f"retrain {pair}", "retrain", config, zone, life.retrain_time, life.retrain_weekday))
        specs.append(JobSpec(f"monitor {pair}", "monitor", config, zone, life.monitor_time))
    return specs


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"slots need an aware datetime, got {now!r}")
    return now


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    # Through UTC: astimezone to the moment's own zone is a no-op, and would keep a skipped 02:30 as it is.
    return moment.astimezone(UTC).astimezone(zone)


def next_slot(spec: JobSpec, now: datetime) -> datetime | None:
    """The first slot strictly after ``now``, in the job's zone.

    Compare slots in UTC: by PEP 495 a time in the hour a fall-back repeats equals no time of another zone.
    """
    fire = spec.trigger().get_next_fire_time(None, _aware(now) + timedelta(microseconds=1))
    return None if fire is None else _local(fire, spec.zone)


def last_slot(spec: JobSpec, now: datetime) -> datetime | None:
    """The latest slot at or before ``now``, in the job's zone (the trigger's own rule, walked forward)."""
    trigger = spec.trigger()
    # In UTC: PEP 495 makes a time in a repeated hour unequal to any time of another zone.
    now = _aware(now).astimezone(UTC)
    latest = None
    fire = trigger.get_next_fire_time(None, now - _LOOKBACK)
    while fire is not None and fire.astimezone(UTC) <= now:
        latest = fire
        fire = trigger.get_next_fire_time(fire, fire)
    return None if latest is None else _local(latest, spec.zone)


def due_now(specs: Iterable[JobSpec], now: datetime,
            last_done: dict[str, datetime]) -> list[tuple[JobSpec, datetime]]:
    """(spec, slot) of every job whose latest slot at or before ``now`` is newer than its last recorded run."""
    due = []
    for spec in specs:
        slot = last_slot(spec, now)
        done = last_done.get(spec.name)
        if slot is not None and (done is None or done.astimezone(UTC) < slot.astimezone(UTC)):
            due.append((spec, slot))
    return due


def slot_day(spec: JobSpec, slot: datetime) -> date:
    """The climate day (local standard time) a slot works on."""
    return climate_day(slot, get_city(spec.config.city))


# --------------------------------------------------------------------------------------------------------- IO


@dataclass(frozen=True)
class JobOutput:
    """What a job reports: its lines, and the alarms of a monitor pass (a run with alarms exits 1)."""

    lines: list[str] = field(default_factory=list)
    alarms: list[str] = field(default_factory=list)


JobRunner = Callable[[JobSpec, datetime], JobOutput]


@dataclass(frozen=True)
class JobResult:
    spec: JobSpec
    slot: datetime
    status: JobStatus
    reason: str = ""
    lines: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        head = f"{self.spec.name} (slot {self.slot:%Y-%m-%d %H:%M %Z}): {self.status}"
        return f"{head}: {self.reason}" if self.reason else head


def lifecycle_runner(*, retrain: Callable[..., Any], monitor: Callable[..., Any], client: Any, engine: Any,
                     clock: Clock) -> JobRunner:
    """The real jobs, given the retrain and monitor functions (the CLI imports them, so this module does not).

    A retrain promotes what passes its gates; both work on the slot's climate day.
    """

    def run(spec: JobSpec, slot: datetime) -> JobOutput:
        as_of = slot_day(spec, slot)
        if spec.kind == "retrain":
            outcome = retrain(spec.config, engine, as_of=as_of, promote=True, now=clock.now())
            return JobOutput(lines=list(outcome.lines()))
        report = monitor(client, engine, as_of=as_of, now=clock.now(), city=spec.config.city,
                         bracket=spec.config.bracket)
        return JobOutput(lines=list(report.lines()), alarms=list(report.alarms))

    return run


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _log_json(level: int, **fields: Any) -> None:
    log.log(level, json.dumps(fields, default=str, ensure_ascii=False))


def _reason(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    text = redact(text)
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 1] + "…"


class ScheduleState:
    """The JSON state file: per job, its last slot, when that run finished, its status and reason.

    Written whole and atomically (a temporary file, then os.replace), so a crash mid-write leaves the previous
    state. A missing or unreadable file counts as empty, with a warning: every job is then due.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.jobs: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            _log_json(logging.WARNING, state=str(self.path), warning="no state file yet: every job counts as never run")
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            jobs = data["jobs"]
            if not isinstance(jobs, dict):
                raise TypeError("jobs is not a mapping")
            # Every entry must carry a readable finish time, or due_now would miss it.
            for record in jobs.values():
                _finished(record)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _log_json(logging.WARNING, state=str(self.path),
                      warning=f"unreadable state file, treated as empty: {_reason(exc)}")
            return {}
        return jobs

    def last_done(self) -> dict[str, datetime]:
        """When each job's last run (ok, alarm or failed) finished: a failed slot waits for the next one."""
        with self._lock:
            return {name: _finished(record) for name, record in self.jobs.items()}

    def record(self, result: JobResult, finished: datetime) -> None:
        with self._lock:
            previous = self.jobs.get(result.spec.name, {})
            entry = {"slot": _iso(result.slot), "finished": _iso(finished), "status": result.status,
                     "reason": result.reason,
                     "last_ok": _iso(finished) if result.status != "failed" else previous.get("last_ok")}
            self.jobs[result.spec.name] = entry
            self._write()

    def check_writable(self) -> None:
        """Raise OSError now, at start-up, rather than after the first job ran."""
        directory = self.path.parent.resolve()
        if not directory.is_dir():
            raise OSError(f"the directory {directory} of the state file does not exist")
        if not os.access(directory, os.W_OK):
            raise OSError(f"the directory {directory} of the state file is not writable")

    def _write(self) -> None:
        text = json.dumps({"version": _STATE_VERSION, "jobs": self.jobs}, indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _finished(record: Any) -> datetime:
    moment = datetime.fromisoformat(record["finished"])
    if moment.tzinfo is None:
        raise ValueError(f"finished time {record['finished']!r} has no UTC offset")
    return moment


class Schedule:
    """The specs, the job runner, the state file and a clock: run one job, what is due, or serve them all."""

    def __init__(self, specs: list[JobSpec], runner: JobRunner, state: ScheduleState, clock: Clock):
        self.specs = specs
        self.runner = runner
        self.state = state
        self.clock = clock
        self._stopping = threading.Event()

    def upcoming(self) -> list[tuple[JobSpec, datetime | None]]:
        now = self.clock.now()
        return [(spec, next_slot(spec, now)) for spec in self.specs]

    def run_job(self, spec: JobSpec, slot: datetime | None = None) -> JobResult:
        """Run one job for ``slot`` (default: its latest slot now); any failure becomes a result, never a raise."""
        slot = slot or last_slot(spec, self.clock.now()) or self.clock.now().astimezone(spec.zone)
        started = time.perf_counter()
        _log_json(logging.INFO, job=spec.name, slot=_iso(slot), status="started")
        try:
            output = self.runner(spec, slot)
        except Exception as exc:
            result = JobResult(spec, slot, "failed", _reason(exc), seconds=time.perf_counter() - started)
            # The reason is the one line a user reads; the traceback is for whoever turns DEBUG on.
            log.debug("traceback of %s", spec.name, exc_info=True)
        else:
            status: JobStatus = "alarm" if output.alarms else "ok"
            result = JobResult(spec, slot, status, redact("; ".join(output.alarms)), list(output.lines),
                               time.perf_counter() - started)
        _log_json(logging.ERROR if result.status == "failed" else logging.INFO, job=spec.name, slot=_iso(slot),
                  status=result.status, reason=result.reason or None, seconds=round(result.seconds, 2),
                  lines=[redact(line) for line in result.lines] or None)
        try:
            self.state.record(result, self.clock.now())
        except OSError as exc:
            _log_json(logging.ERROR, job=spec.name, state=str(self.state.path),
                      error=f"cannot record the run: {_reason(exc)}")
        return result

    def run_due(self, stop: threading.Event | None = None) -> list[JobResult]:
        """``--once``: every job due now, one after another. Once ``stop`` is set the rest are skipped, and not
        recorded, so they stay due."""
        results = []
        for spec, slot in due_now(self.specs, self.clock.now(), self.state.last_done()):
            if stop is not None and stop.is_set():
                _log_json(logging.INFO, job=spec.name, slot=_iso(slot), status="skipped", reason=_STOPPING)
                results.append(JobResult(spec, slot, "skipped", _STOPPING))
            else:
                results.append(self.run_job(spec, slot))
        return results

    def _scheduled(self, spec: JobSpec) -> None:
        # A job queued behind the running one when the service was told to stop is left for its next slot.
        if self._stopping.is_set():
            _log_json(logging.INFO, job=spec.name, status="skipped", reason=_STOPPING)
            return
        self.run_job(spec)

    def serve(self, stop: threading.Event, *,
              trigger_for: Callable[[JobSpec], BaseTrigger] | None = None) -> None:
        """Run every spec at its slots until ``stop`` is set; the running job finishes first.

        ``trigger_for`` replaces the specs' wall-clock triggers (tests fire jobs a second apart).
        """
        scheduler = BackgroundScheduler(
            timezone=UTC,
            # One job at a time: a retrain already uses every core, and the state file has one writer.
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": int(MISFIRE_GRACE.total_seconds())})
        scheduler.add_listener(self._missed, EVENT_JOB_MISSED)
        for spec in self.specs:
            trigger = trigger_for(spec) if trigger_for else spec.trigger()
            scheduler.add_job(self._scheduled, trigger, args=[spec], id=spec.name, name=spec.name)
        self._stopping.clear()
        scheduler.start()
        try:
            while not stop.wait(1.0):
                pass
        finally:
            self._stopping.set()
            scheduler.shutdown(wait=True)

    def _missed(self, event: JobExecutionEvent) -> None:
        _log_json(logging.WARNING, job=event.job_id, slot=_iso(event.scheduled_run_time), status="missed",
                  reason=f"could not start within {MISFIRE_GRACE} of its slot; it runs at the next one")


def quiet_apscheduler() -> None:
    """APScheduler logs every job start and end at INFO; kwx logs each run itself, as one JSON line."""
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
