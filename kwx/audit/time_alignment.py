"""Time-alignment audit: do climate days, candles, market close times and weather line up in LST?

Loads each city's data for a date range, runs the pure checks of ``kwx.domain.alignment`` and
writes one JSON document (``audit_reports/time_alignment.json`` by default). DST transition days
are informational; every other finding is a flag.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
from rich.table import Table
from sqlalchemy import Engine, func, select

from kwx.cities import City, get_city
from kwx.data.dataset import load_candles, load_markets, load_settlements, load_weather
from kwx.data.schema import Market
from kwx.domain import alignment
from kwx.domain.features import epoch_seconds
from kwx.domain.markets import DEFAULT_LOCK_MARGIN_F, climate_day_bounds, climate_days_from_epoch

AUDIT_ROOT = Path("audit_reports")
FILENAME = "time_alignment.json"
# How many offending rows the JSON lists per check (the counts are always complete).
LISTED = 20


def market_date_ranges(engine: Engine) -> dict[str, tuple[date, date]]:
    """First and last event date of each city's markets."""
    statement = select(Market.city, func.min(Market.event_date), func.max(Market.event_date)).group_by(Market.city)
    with engine.connect() as conn:
        return {city: (first, last) for city, first, last in conn.execute(statement).all()}


def city_periods(engine: Engine, cities: list[str] | None, start: date | None,
                 end: date | None) -> tuple[dict[str, tuple[City, date, date]], dict[str, str]]:
    """The climate days to audit per requested city (default: every city with markets), and the cities
    without markets in the range with why. Without ``start`` / ``end`` a city's range is its markets' event
    dates."""
    ranges = market_date_ranges(engine)
    periods, skipped = {}, {}
    for key in cities or sorted(ranges):
        first, last = ranges.get(key, (None, None))
        lo, hi = start or first, end or last
        if first is None or lo > hi or lo > last or hi < first:
            skipped[key] = f"no markets with event dates in {lo or '…'}..{hi or '…'}"
        else:
            periods[key] = (get_city(key), lo, hi)
    return periods, skipped


def nothing_to_audit(skipped: dict[str, str]) -> LookupError:
    """The error of an audit left without a city, naming why each was skipped."""
    return LookupError("no city to audit: " + ("; ".join(f"{k}: {v}" for k, v in skipped.items())
                                               or "the database has no markets"))


def _records(frame: pd.DataFrame, limit: int = LISTED) -> list[dict]:
    """JSON-ready rows: timestamps as ISO 8601 with their offset, dates as YYYY-MM-DD."""
    return json.loads(json.dumps(frame.head(limit).to_dict("records"), default=_iso))


def _iso(value) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _offset_text(offset: timedelta) -> str:
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _climate_days(city: City, start: date, end: date) -> dict:
    days = alignment.clock_days(city, start, end)
    readings = days.groupby("daylight_time")[["climate_day_start_clock", "climate_day_end_clock"]].first()
    return {
        "days": len(days),
        "climate_day_hours": sorted(set(days["climate_day_hours"].tolist())),
        "daylight_time_days": int(days["daylight_time"].sum()),
        # How a climate day reads on the local clock: 00:00-00:00 in standard time, 01:00-01:00 in daylight time.
        "on_the_clock": {("daylight time" if dst else "standard time"): f"{r.climate_day_start_clock} → "
                         f"{r.climate_day_end_clock} (+1 day)" for dst, r in readings.iterrows()},
    }


def audit_city(engine: Engine, city: City, start: date, end: date, *, max_gap: timedelta,
               close_tolerance: timedelta, lock_margin_f: float = DEFAULT_LOCK_MARGIN_F) -> dict:
    """Every check for one city over climate days [start, end]; ``flags`` lists what failed."""
    since, _ = climate_day_bounds(start, city)
    _, until = climate_day_bounds(end, city)
    markets = load_markets(engine, city.key, None, start, end)
    candles = load_candles(engine, markets["ticker"].tolist())
    # The clock and UTC day cuts reach up to a day past the climate days at either end.
    weather = load_weather(engine, city, since - timedelta(days=1), until + timedelta(days=1))
    settlements = load_settlements(engine, city, start, end)
    flags: list[str] = []

    dst = alignment.dst_transition_days(city, start, end)
    mismatched = alignment.close_time_mismatches(markets, city, close_tolerance)
    if len(mismatched):
        worst = mismatched["offset_minutes"].abs().idxmax()
        flags.append(f"{len(mismatched)} market(s) close off the end of their climate day (LST); largest offset "
                     f"{mismatched.loc[worst, 'offset_minutes']:+.0f} min ({mismatched.loc[worst, 'ticker']})")

    candle_check = alignment.candle_alignment(candles, markets, city)
    for key, what in (("after_close", "after their market's close"), ("before_open", "at/before their market's open")):
        if candle_check[key]:
            flags.append(f"{candle_check[key]:,} candle(s) stamped {what} "
                         f"({len(candle_check['offenders'])} market(s))")

    stamps = weather["ts_utc"]
    in_period = weather[(stamps >= since) & (stamps < until)]
    gaps = alignment.weather_gaps(in_period["ts_utc"], max_gap, since=since, until=until)
    if len(gaps):
        g = gaps.iloc[0]
        flags.append(f"{len(gaps)} weather gap(s) longer than {max_gap.total_seconds() / 60:.0f} min; largest "
                     f"{g['minutes']:.0f} min from {g['gap_start']:%Y-%m-%d %H:%M} to {g['gap_end']:%H:%M} UTC")
    per_day = pd.Series(climate_days_from_epoch(epoch_seconds(in_period["ts_utc"]), city)).value_counts()
    per_day = per_day.reindex(pd.date_range(start, end, freq="D").to_numpy().astype("datetime64[D]"), fill_value=0)

    agreement_days = alignment.settlement_agreement(weather, settlements, city)
    agreement = alignment.agreement_rates(agreement_days)
    if agreement["days"] == 0:
        flags.append("no settled day has observations under every day cut: settlement agreement not measured")
    elif not agreement["passed"]:
        flags.append(f"settlement agrees with the LST day maximum on {agreement['exact']['lst']:.1%} of days, "
                     f"less than the {agreement['best']} day ({agreement['exact'][agreement['best']]:.1%})")
    lst_misses = agreement_days[agreement_days["lst"] != agreement_days["settlement"]].reset_index()
    lock = alignment.lock_margin_evidence(weather, settlements, city, lock_margin_f)
    if not lock["passed"]:
        flags.append(f"lock margin {lock_margin_f:g} °F is too small: the observed maximum ran "
                     f"{lock['max_above_settlement_f']:g} °F above the settlement; set lock_margin_f above "
                     f"{lock['margin_needed_f']:g}")

    return {
        "city": city.key, "station": city.station, "timezone": city.timezone,
        "local_standard_time": _offset_text(city.standard_offset),
        "period": {"start": start.isoformat(), "end": end.isoformat(), "since_utc": since.isoformat(),
                   "until_utc": until.isoformat()},
        "climate_days": _climate_days(city, start, end),
        "dst_days": _records(dst[["date", "change", "clock_day_hours", "climate_day_hours", "climate_day_start_clock",
                                  "climate_day_end_clock"]], limit=len(dst)),
        "market_close": {"markets": len(markets), "mismatched": len(mismatched),
                         "tolerance_minutes": close_tolerance.total_seconds() / 60,
                         "mismatches": _records(mismatched), "passed": mismatched.empty},
        "candles": {"candles": candle_check["candles"], "after_close": candle_check["after_close"],
                    "before_open": candle_check["before_open"],
                    "by_climate_day_offset": {str(k): v for k, v in candle_check["climate_day_offset"].items()},
                    "offending_markets": _records(candle_check["offenders"]),
                    "passed": not (candle_check["after_close"] or candle_check["before_open"])},
        "weather": {"observations": len(in_period),
                    "per_climate_day": {"min": int(per_day.min()), "median": float(per_day.median()),
                                        "max": int(per_day.max())},
                    "max_gap_minutes": max_gap.total_seconds() / 60, "gaps": len(gaps),
                    "largest_gaps": _records(gaps, limit=10), "passed": gaps.empty},
        "settlement_agreement": {**agreement, "rounding": "maximum of the observations, whole °F rounded half up",
                                 "lst_disagreements": _records(lst_misses)},
        "lock_margin": lock,
        "flags": flags, "passed": not flags,
    }


@dataclass
class TimeAudit:
    path: Path
    cities: dict[str, dict]
    skipped: dict[str, str]

    @property
    def flags(self) -> list[str]:
        return [f"{city}: {flag}" for city, doc in self.cities.items() for flag in doc["flags"]]

    @property
    def passed(self) -> bool:
        return not self.flags


def run_audit(engine: Engine, cities: list[str] | None, start: date | None, end: date | None, *,
              max_gap: timedelta = timedelta(minutes=30), close_tolerance: timedelta = timedelta(0),
              lock_margin_f: float = DEFAULT_LOCK_MARGIN_F, out: Path = AUDIT_ROOT,
              on_city: Callable[[str], None] | None = None) -> TimeAudit:
    """Audit each requested city (default: every city with markets) and write the JSON document.

    A requested city without markets in the range (see ``city_periods``) is listed under ``skipped``;
    none left raises ``LookupError``.
    """
    periods, skipped = city_periods(engine, cities, start, end)
    documents = {}
    for key in cities or sorted({**periods, **skipped}):
        if key in periods:
            city, lo, hi = periods[key]
            documents[key] = audit_city(engine, city, lo, hi, max_gap=max_gap, close_tolerance=close_tolerance,
                                        lock_margin_f=lock_margin_f)
        if on_city is not None:
            on_city(key)
    if not documents:
        raise nothing_to_audit(skipped)
    audit = TimeAudit(out / FILENAME, documents, skipped)
    out.mkdir(parents=True, exist_ok=True)
    audit.path.write_text(json.dumps({"cities": documents, "skipped": skipped, "flags": audit.flags,
                                      "passed": audit.passed}, indent=2, default=_iso, ensure_ascii=False))
    return audit


def _status(passed: bool) -> str:
    return "[green]OK" if passed else "[red]FLAG"


def city_table(doc: dict) -> Table:
    """One city's checks as a console table: what was measured and whether it lines up."""
    table = Table(title=f"{doc['city']} ({doc['station']}, {doc['timezone']}, LST = {doc['local_standard_time']}) "
                        f"{doc['period']['start']}..{doc['period']['end']}", title_justify="left")
    for column in ("check", "measured", "status"):
        table.add_column(column)
    days = doc["climate_days"]
    hours = ", ".join(f"{h:g}" for h in days["climate_day_hours"])
    clock = "; ".join(f"{k} {v}" for k, v in days["on_the_clock"].items())
    table.add_row("climate days (LST)", f"{days['days']} days of {hours} h; on the clock: {clock}", "[cyan]INFO")
    for d in doc["dst_days"]:
        table.add_row(f"DST {d['change']}", f"{d['date']}: clock day {d['clock_day_hours']:g} h, climate day "
                      f"{d['climate_day_hours']:g} h ({d['climate_day_start_clock']} → {d['climate_day_end_clock']})",
                      "[cyan]INFO")
    close = doc["market_close"]
    matched = close["markets"] - close["mismatched"]
    table.add_row("market close = end of climate day", f"{matched:,}/{close['markets']:,} markets",
                  _status(close["passed"]))
    c = doc["candles"]
    offsets = ", ".join(f"day {k}: {v:,}" for k, v in c["by_climate_day_offset"].items())
    table.add_row("candles inside open..close", f"{c['candles']:,} candles; after close {c['after_close']:,}, before "
                  f"open {c['before_open']:,}; by climate day vs event ({offsets})", _status(c["passed"]))
    w = doc["weather"]
    largest = f"; largest {w['largest_gaps'][0]['minutes']:.0f} min" if w["largest_gaps"] else ""
    table.add_row(f"weather gaps > {w['max_gap_minutes']:g} min", f"{w['observations']:,} obs "
                  f"({w['per_climate_day']['min']}-{w['per_climate_day']['max']} per climate day); "
                  f"{w['gaps']} gap(s){largest}", _status(w["passed"]))
    a = doc["settlement_agreement"]
    if a["days"]:
        names = {"lst": "LST", "clock": "clock", "utc": "UTC"}
        rates = " | ".join(f"{names[m]} {a['exact'][m]:.1%}" for m in alignment.DAY_METHODS)
        decisive = "; ".join(f"{names[m]} ≠ LST on {v['days']} d: settled as LST {v['lst_matches']}, as {names[m]} "
                             f"{v[f'{m}_matches']}" for m, v in a["decisive"].items())
        measured = f"{a['days']} days agree exactly: {rates}; {decisive}"
    else:
        measured = "no comparable days"
    table.add_row("settlement = day max (whole °F)", measured, _status(a["passed"]))
    lock = doc["lock_margin"]
    if lock["days"]:
        table.add_row(f"lock margin {lock['margin_f']:g} °F", f"{lock['days']} days: observed max above the "
                      f"settlement by up to {lock['max_above_settlement_f']:g} °F (p99 "
                      f"{lock['p99_above_settlement_f']:g}); locks need a margin above {lock['margin_needed_f']:g}",
                      _status(lock["passed"]))
    return table
