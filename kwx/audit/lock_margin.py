"""Lock-margin audit: how far each city's stored observations run from the settled high, and the
``lock_margin_f`` they need.

Loads each city's weather minutes and settled highs (``climate_daily``: the settled markets'
``expiration_value``) over its climate days, runs ``kwx.domain.lock_margin`` and writes one JSON
document (``audit_reports/lock_margin.json`` by default). A city whose margin would have misjudged
a stored day fails the audit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
from rich.table import Table
from sqlalchemy import Engine

from kwx.audit.time_alignment import AUDIT_ROOT, city_periods, nothing_to_audit
from kwx.cities import City
from kwx.data.dataset import load_settlements, load_weather
from kwx.domain.lock_margin import (
    MAX_LOCK_MARGIN_F,
    THIN_SAMPLE_DAYS,
    climate_day_gaps,
    lock_margin_study,
)
from kwx.domain.markets import climate_day_bounds

FILENAME = "lock_margin.json"
# Why the recommendation's rule is the right one (kwx.domain.lock_margin), stated in the document.
MISJUDGED_WHEN = "a lock misjudges a day exactly when the observed maximum reaches the settled high + 0.5 °F + margin"


def _days(frame: pd.DataFrame) -> list[dict]:
    return [{"date": day.isoformat(), "observed_max_f": round(float(r.observed_max_f), 2),
             "settled_f": float(r.settled_f), "gap_f": round(float(r.gap_f), 2)} for day, r in frame.iterrows()]


def _verdict(study: dict) -> str:
    n, margin, recommended = study["days"], study["margin_f"], study["recommended_margin_f"]
    if recommended is None:
        verdict = (f"UNSAFE: {margin:g} °F misjudged {study['misjudged_days']} of {n} days and no margin up to "
                   f"{MAX_LOCK_MARGIN_F:g} °F avoids it (observations up to {study['gap_f']['max']:+.2f} °F above "
                   f"the settled high): they are not the settlement station's, so fix the source")
    elif not study["passed"]:
        verdict = f"UNSAFE: {margin:g} °F misjudged {study['misjudged_days']} of {n} days; raise it to {recommended:g}"
    else:
        verdict = f"safe: {margin:g} °F misjudged none of {n} days"
        if recommended < margin:
            earlier = study["late_days"] - study["recommended_late_days"]
            verdict += (f"; {recommended:g} would have too, and locked the settled high before the close on "
                        f"{earlier} more day(s)")
    if study["thin_sample"]:
        verdict += f"; only {n} days (< {THIN_SAMPLE_DAYS}): a thin sample, re-run as data accrues"
    return verdict


def _rule(study: dict) -> str:
    return (f"the smallest multiple of {study['step_f']:g} °F above the largest overshoot "
            f"({study['gap_f']['max']:+.2f} °F) less 0.5 °F, at least 0 and at most {MAX_LOCK_MARGIN_F:g}")


def audit_city(engine: Engine, city: City, start: date, end: date, *, margin_f: float, step_f: float) -> dict | None:
    """The lock-margin study of one city over climate days [start, end]; None when no settled day there has
    observations."""
    since, _ = climate_day_bounds(start, city)
    _, until = climate_day_bounds(end, city)
    days = climate_day_gaps(load_weather(engine, city, since, until), load_settlements(engine, city, start, end),
                            city)
    if days.empty:
        return None
    study = lock_margin_study(days, margin_f, step_f)
    return {
        "city": city.key, "station": city.station, "timezone": city.timezone,
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "days": study["days"],
        "gap_f": study["gap_f"],
        "rounded": study["rounded"],
        "current": {"margin_f": margin_f, "misjudged_days": study["misjudged_days"],
                    "late_days": study["late_days"], "worst_misjudged": _days(study["worst_misjudged"])},
        "reading_low": {"days": study["reading_low_days"], "lowest": _days(study["reading_low"])},
        "recommendation": {"margin_f": study["recommended_margin_f"], "late_days": study["recommended_late_days"],
                           "grid": {"start_f": 0.0, "step_f": step_f, "stop_f": MAX_LOCK_MARGIN_F},
                           "rule": _rule(study), "thin_sample": study["thin_sample"],
                           "thin_below_days": THIN_SAMPLE_DAYS},
        "verdict": _verdict(study),
        "passed": study["passed"],
    }


@dataclass
class LockMarginAudit:
    path: Path
    margin_f: float
    margin_source: str
    cities: dict[str, dict]
    skipped: dict[str, str]

    @property
    def passed(self) -> bool:
        return all(doc["passed"] for doc in self.cities.values())


def run_audit(engine: Engine, cities: list[str] | None, start: date | None, end: date | None, *, margin_f: float,
              margin_source: str, step_f: float, out: Path = AUDIT_ROOT,
              on_city: Callable[[str], None] | None = None) -> LockMarginAudit:
    """Study each requested city (default: every city with markets) and write the JSON document.

    A city without markets in the range (``city_periods``), or whose settled days there have no
    observations, is listed under ``skipped``; none left raises ``LookupError``.
    """
    periods, skipped = city_periods(engine, cities, start, end)
    documents = {}
    for key in cities or sorted({**periods, **skipped}):
        if key in periods:
            city, lo, hi = periods[key]
            document = audit_city(engine, city, lo, hi, margin_f=margin_f, step_f=step_f)
            if document is None:
                skipped[key] = f"no settled day in {lo}..{hi} has observations"
            else:
                documents[key] = document
        if on_city is not None:
            on_city(key)
    if not documents:
        raise nothing_to_audit(skipped)
    audit = LockMarginAudit(out / FILENAME, margin_f, margin_source, documents, skipped)
    out.mkdir(parents=True, exist_ok=True)
    audit.path.write_text(json.dumps({"margin_f": margin_f, "margin_source": margin_source,
                                      "misjudged_when": MISJUDGED_WHEN, "cities": documents, "skipped": skipped,
                                      "passed": audit.passed}, indent=2, ensure_ascii=False))
    return audit


def summary_table(audit: LockMarginAudit) -> Table:
    """One row per city: the gap's distribution, what the current margin did, the recommendation."""
    table = Table(title=f"lock margin: observed climate-day (LST) maximum − settled high, °F; current margin "
                        f"{audit.margin_f:g} °F ({audit.margin_source})", title_justify="left")
    for column in ("city", "days", "min", "p1", "p50", "p99", "max", "rounded above/equal/below", "misjudged",
                   "late", "read low", "recommended", "status"):
        table.add_column(column, justify="left" if column in ("city", "status") else "right")
    for doc in audit.cities.values():
        gap, rounded, current = doc["gap_f"], doc["rounded"], doc["current"]
        recommended = doc["recommendation"]["margin_f"]
        status = ("[green]SAFE" if doc["passed"] else "[red]UNSAFE") + (
            " [yellow](thin)" if doc["recommendation"]["thin_sample"] else "")
        table.add_row(doc["city"], f"{doc['days']:,}", *(f"{gap[q]:+.2f}" for q in ("min", "p1", "p50", "p99", "max")),
                      f"{rounded['above']:.1%} / {rounded['equal']:.1%} / {rounded['below']:.1%}",
                      str(current["misjudged_days"]), str(current["late_days"]), str(doc["reading_low"]["days"]),
                      "none" if recommended is None else f"{recommended:g}", status)
    return table


def _day_list(days: list[dict]) -> str:
    return ", ".join(f"{d['date']} observed {d['observed_max_f']:g} vs settled {d['settled_f']:g} "
                     f"({d['gap_f']:+.2f})" for d in days)


def city_lines(doc: dict) -> list[str]:
    """The worst days and the recommendation of one city, as console lines."""
    lines = []
    current, low, recommendation = doc["current"], doc["reading_low"], doc["recommendation"]
    if current["worst_misjudged"]:
        lines.append(f"[red]{doc['city']}: misjudged at {current['margin_f']:g} °F[/]: "
                     f"{_day_list(current['worst_misjudged'])}")
    if low["lowest"]:
        lines.append(f"{doc['city']}: read low (locks late) on {low['days']} day(s), lowest: "
                     f"{_day_list(low['lowest'])}")
    recommended = recommendation["margin_f"]
    lines.append(f"[bold]{doc['city']}: recommended lock_margin_f = "
                 f"{'none' if recommended is None else f'{recommended:g} °F'}[/] ({recommendation['rule']}); "
                 f"the current margin is {doc['verdict']}")
    return lines
