"""What `kwx rt status` says about a loop's outages, computed from recorded ticks alone (pure)."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

DATABASE_SKIP = "database unavailable"  # the skip reason prefix of a tick that could not read its data
_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class TickRecord:
    ts_utc: datetime
    mode: str
    skips: str  # rt_ticks.skips: JSON {reason: markets}


def outage_lines(ticks: list[TickRecord]) -> list[str]:
    """Per mode, oldest first: each run of ticks that could not read the database, and each silence (two
    ticks more than twice the typical interval apart: the loop was down, or its ticks were lost)."""
    lines = []
    for mode in sorted({t.mode for t in ticks}):
        series = sorted((t for t in ticks if t.mode == mode), key=lambda t: t.ts_utc)
        gaps = [(b.ts_utc - a.ts_utc).total_seconds() for a, b in pairwise(series)]
        typical = statistics.median(gaps) if gaps else 0.0
        run: list[tuple[TickRecord, str]] = []
        for i, tick in enumerate(series):
            why = next((r for r in json.loads(tick.skips) if r.startswith(DATABASE_SKIP)), None)
            if why is not None:
                run.append((tick, why))
            if run and (why is None or i == len(series) - 1):
                first, last = run[0][0].ts_utc, run[-1][0].ts_utc
                detail = run[-1][1].removeprefix(DATABASE_SKIP).lstrip(": ")
                lines.append(f"{mode}: {DATABASE_SKIP} {first:{_FORMAT}} → {last:{_FORMAT}} UTC, {len(run)} "
                             f"tick{'s' * (len(run) > 1)} skipped ({detail})")
                run = []
            if i and typical > 0 and gaps[i - 1] > 2 * typical:
                lines.append(f"{mode}: no tick for {gaps[i - 1]:.0f} s before {tick.ts_utc:{_FORMAT}} UTC "
                             f"(typically every {typical:g} s)")
    return lines
