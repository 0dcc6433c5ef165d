"""MLflow runs whose process died: found and ended as FAILED.

A killed process (SIGKILL, OOM, a lost host) never ends its MLflow runs, so they stay RUNNING forever and look
like work in progress. kwx tags every run it starts with its host, pid and the process's start, and a RUNNING
kwx run is dead when, on its own host, that process is gone (or the pid now names a younger process). Runs of
other hosts cannot be checked from here: only their age can condemn them.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

HOST_TAG = "kwx.host"
PID_TAG = "kwx.pid"
PROCESS_START_TAG = "kwx.process_start"
END_REASON_TAG = "kwx.end_reason"
_PROC = Path("/proc")


def process_start(pid: int) -> str | None:
    """Boot id and start time (clock ticks since boot) of a live process, from Linux's /proc; None when the
    process is gone or a zombie. Together with the pid it names one process even after the pid is reused."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        boot = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    # The command name in parentheses may hold spaces; the fields after it are fixed.
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else f"{boot}/{fields[19]}"


def process_tags() -> dict[str, str]:
    """The tags that let `kwx runs clean` tell whether this process still runs a run it started."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    started = process_start(os.getpid())
    if started is not None:
        tags[PROCESS_START_TAG] = started
    return tags


def _process_alive(pid: int, started: str | None) -> bool:
    if (_PROC / "self/stat").exists():
        return started is not None and process_start(pid) == started
    # Without /proc (macOS) a pid is all there is to check; a reused pid keeps such a run RUNNING.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class RunVerdict:
    run_id: str
    run_name: str
    kind: str
    dead: bool
    reason: str

    def line(self, dry_run: bool = False) -> str:
        action = ("would fail" if dry_run else "FAILED") if self.dead else "left RUNNING"
        return f"{action} {self.run_id} {self.kind} {self.run_name!r}: {self.reason}"


def running_kwx_runs(client: MlflowClient, experiment_ids: Iterable[str] | None = None) -> list[Run]:
    """RUNNING runs that kwx started (tagged ``kwx.kind``), in every experiment unless ``experiment_ids``."""
    ids = list(experiment_ids) if experiment_ids is not None else [
        e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    runs: list[Run] = []
    token = None
    while ids:
        page = client.search_runs(ids, filter_string="attributes.status = 'RUNNING'", max_results=1000,
                                  page_token=token)
        runs.extend(r for r in page if "kwx.kind" in r.data.tags)
        token = page.token
        if not token:
            break
    return runs


def judge(run: Run, *, host: str, other_hosts_hours: float | None, now: float) -> RunVerdict:
    """Dead or not, with the reason; ``other_hosts_hours=None`` never fails a run of another host."""
    tags = run.data.tags
    kind, name = tags["kwx.kind"], run.info.run_name or ""
    if tags.get(HOST_TAG) == host and PID_TAG in tags:
        pid = int(tags[PID_TAG])
        if _process_alive(pid, tags.get(PROCESS_START_TAG)):
            return RunVerdict(run.info.run_id, name, kind, False, f"its process {pid} is still running")
        return RunVerdict(run.info.run_id, name, kind, True, f"its process {pid} on {host} is gone")
    where = f"host {tags[HOST_TAG]}" if HOST_TAG in tags else "a host it did not record"
    hours = (now - run.info.start_time / 1000) / 3600
    if other_hosts_hours is not None and hours > other_hosts_hours:
        return RunVerdict(run.info.run_id, name, kind, True,
                          f"started {hours:.1f} h ago on {where}, more than {other_hosts_hours:g} h")
    return RunVerdict(run.info.run_id, name, kind, False,
                      f"started {hours:.1f} h ago on {where}, which cannot be checked from {host}")


def clean(client: MlflowClient, experiment_ids: Iterable[str] | None = None, *, other_hosts_hours: float | None,
          dry_run: bool = False) -> list[RunVerdict]:
    """Judge every RUNNING kwx run and end the dead ones as FAILED (unless ``dry_run``), with the reason as the
    ``kwx.end_reason`` tag; returns every verdict, dead runs first."""
    host, now = socket.gethostname(), time.time()
    verdicts = [judge(r, host=host, other_hosts_hours=other_hosts_hours, now=now)
                for r in running_kwx_runs(client, experiment_ids)]
    for verdict in verdicts:
        if verdict.dead and not dry_run:
            client.set_tag(verdict.run_id, END_REASON_TAG, verdict.reason)
            client.set_terminated(verdict.run_id, status="FAILED")
    return sorted(verdicts, key=lambda v: not v.dead)
