"""Time-alignment checks: climate days, market close times, candles and weather in local standard time.

Pure: every function takes frames (or a city and dates) and returns frames or dicts; the audit in
``kwx.audit.time_alignment`` loads the data and reports. All comparisons are vectorised.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from kwx.cities import City
from kwx.domain import lock_margin
from kwx.domain.features import epoch_seconds
from kwx.domain.markets import climate_days_from_epoch

_DAY = 86_400
CANDLE_SECONDS = 60
# The three ways of cutting observations into days that the settlement check compares.
DAY_METHODS = ("lst", "clock", "utc")


def _day_numbers(dates) -> np.ndarray:
    """Days since 1970-01-01 of calendar dates."""
    return pd.to_datetime(pd.Series(np.asarray(dates))).to_numpy().astype("datetime64[D]").astype(np.int64)


def _utc(epoch: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(np.asarray(epoch, dtype=np.int64), unit="s", utc=True))


def clock_days(city: City, start: date, end: date) -> pd.DataFrame:
    """Every day in [start, end]: the clock day's and the climate day's length, and the climate day on the clock.

    The clock day is midnight to midnight local time (23 h / 25 h on DST transition days); the
    climate day is midnight to midnight local *standard* time, always 24 h, which reads 01:00-01:00
    on the clock while daylight time is in force.
    """
    midnights = pd.date_range(start, end + timedelta(days=1), freq="D")
    # US zones switch at 02:00, so midnight always exists once; the arguments only make this total.
    local = midnights.tz_localize(city.zone, nonexistent="shift_forward", ambiguous=False)
    climate_start = (midnights - city.standard_offset).tz_localize("UTC")
    start_on_clock = climate_start[:-1].tz_convert(city.zone)
    utc_offset = start_on_clock.tz_localize(None) - climate_start[:-1].tz_localize(None)
    frame = pd.DataFrame({
        "date": midnights[:-1].date,
        "clock_day_hours": (local[1:] - local[:-1]).total_seconds().to_numpy() / 3600,
        "climate_day_hours": (climate_start[1:] - climate_start[:-1]).total_seconds().to_numpy() / 3600,
        "climate_day_start_utc": climate_start[:-1],
        "climate_day_start_clock": start_on_clock.strftime("%H:%M %Z"),
        "climate_day_end_clock": climate_start[1:].tz_convert(city.zone).strftime("%H:%M %Z"),
        "daylight_time": np.asarray(utc_offset != city.standard_offset),
    })
    frame["change"] = np.select([frame["clock_day_hours"] < 24, frame["clock_day_hours"] > 24],
                                ["spring forward", "fall back"], default="")
    return frame


def dst_transition_days(city: City, start: date, end: date) -> pd.DataFrame:
    """The days of [start, end] whose clock day is not 24 h (their climate day still is)."""
    days = clock_days(city, start, end)
    return days[days["clock_day_hours"] != 24].reset_index(drop=True)


def close_time_mismatches(markets: pd.DataFrame, city: City, tolerance: timedelta = timedelta(0)) -> pd.DataFrame:
    """Markets whose ``close_time`` is not the end of their event's climate day (LST) within ``tolerance``.

    Columns: ticker, event_date, close_time, expected_close (UTC) and offset_minutes (positive: late).
    """
    expected = (pd.to_datetime(pd.Series(markets["event_date"].to_numpy())) + pd.Timedelta(days=1)
                - city.standard_offset).dt.tz_localize("UTC")
    offset = epoch_seconds(markets["close_time"]) - epoch_seconds(expected)
    bad = np.abs(offset) > tolerance.total_seconds()
    return pd.DataFrame({
        "ticker": markets["ticker"].to_numpy()[bad],
        "event_date": markets["event_date"].to_numpy()[bad],
        "close_time": pd.to_datetime(pd.Series(markets["close_time"].to_numpy()[bad]), utc=True),
        "expected_close": expected.to_numpy()[bad],
        "offset_minutes": offset[bad] / 60,
    })


def candle_alignment(candles: pd.DataFrame, markets: pd.DataFrame, city: City) -> dict[str, object]:
    """Candles against their market's trading hours and event day.

    A candle is stamped with its period's end (``end_period_ts``, Unix seconds): one stamped after
    its market's ``close_time`` or at/before its ``open_time`` lies outside the market's life.
    ``climate_day_offset`` counts candles by the climate day (LST) of their minute's start relative
    to the event date: markets trade the event day (0) and, after they open, the day before (-1).
    Returns counts, the offset histogram and the offending markets (a frame, worst first).
    """
    by_ticker = markets.set_index("ticker")
    per_market = pd.DataFrame({
        "open": epoch_seconds(by_ticker["open_time"]),
        "close": epoch_seconds(by_ticker["close_time"]),
        "event_day": _day_numbers(by_ticker["event_date"]),
    }, index=by_ticker.index)
    ticker = candles["market_ticker"]
    end = candles["end_period_ts"].to_numpy(dtype=np.int64)
    # One hash lookup per candle (Series.map), not a merge of the wide market frame.
    open_s, close_s, event_day = (ticker.map(per_market[c]).to_numpy(dtype=np.int64) for c in per_market.columns)
    after, before = end > close_s, end <= open_s
    offset_days = climate_days_from_epoch(end - CANDLE_SECONDS, city).astype(np.int64) - event_day
    days, counts = np.unique(offset_days, return_counts=True)
    outside = after | before
    offenders = pd.DataFrame({
        "ticker": ticker.to_numpy()[outside], "after_close": after[outside], "before_open": before[outside],
        "seconds_after_close": np.where(after, end - close_s, 0)[outside],
    }).groupby("ticker", as_index=False).agg(after_close=("after_close", "sum"), before_open=("before_open", "sum"),
                                             max_seconds_after_close=("seconds_after_close", "max"))
    offenders = offenders.sort_values(["after_close", "before_open"], ascending=False, ignore_index=True)
    return {
        "candles": len(candles),
        "after_close": int(after.sum()),
        "before_open": int(before.sum()),
        "climate_day_offset": {int(d): int(n) for d, n in zip(days, counts, strict=True)},
        "offenders": offenders,
    }


def weather_gaps(ts_utc: pd.Series, max_gap: timedelta, *, since=None, until=None) -> pd.DataFrame:
    """Stretches longer than ``max_gap`` without an observation, largest first.

    ``since`` / ``until`` (UTC instants) make a missing start or end of the audited period count as a gap.
    """
    stamps = np.sort(epoch_seconds(ts_utc))
    if since is not None:
        stamps = np.r_[epoch_seconds([since]), stamps]
    if until is not None:
        stamps = np.r_[stamps, epoch_seconds([until])]
    steps = np.diff(stamps)
    idx = np.flatnonzero(steps > max_gap.total_seconds())
    gaps = pd.DataFrame({"gap_start": _utc(stamps[idx]), "gap_end": _utc(stamps[idx + 1]),
                         "minutes": steps[idx] / 60})
    return gaps.sort_values("minutes", ascending=False, ignore_index=True, kind="stable")


def whole_degrees(temp_f) -> np.ndarray:
    """Round half up to whole °F, as the NWS daily climate report (and the settlement) does."""
    return np.floor(np.asarray(temp_f, dtype=float) + 0.5)


def daily_maxima(weather: pd.DataFrame, city: City) -> pd.DataFrame:
    """The station's maximum temperature per day, with days cut three ways.

    ``lst``: the climate day (local standard time, the settlement's day); ``clock``: the local clock
    day (shifted an hour while daylight time is in force); ``utc``: the UTC calendar day. Indexed by
    the day's date, maxima in whole °F.
    """
    observed = weather[weather["temp_f"].notna()]
    epoch = epoch_seconds(observed["ts_utc"])
    temp = observed["temp_f"].to_numpy(dtype=float)
    clock = pd.to_datetime(pd.Series(observed["ts_utc"].to_numpy()), utc=True).dt.tz_convert(city.zone)
    labels = {
        "lst": climate_days_from_epoch(epoch, city),
        "clock": clock.dt.tz_localize(None).to_numpy().astype("datetime64[D]"),
        "utc": (epoch // _DAY).astype("datetime64[D]"),
    }
    maxima = {method: pd.Series(temp).groupby(day).max() for method, day in labels.items()}
    frame = pd.DataFrame(maxima, columns=list(DAY_METHODS))
    index = pd.Index(frame.index.to_numpy().astype("datetime64[D]").astype(object), name="date")
    return pd.DataFrame(whole_degrees(frame.to_numpy()), index=index, columns=frame.columns)


def lock_margin_evidence(weather: pd.DataFrame, settlements: pd.Series, city: City, margin_f: float) -> dict:
    """How far the stored observations' climate-day maximum runs above the settlement, and the lock margin
    that needs.

    A lock trusts the running maximum less ``margin_f`` rounded half up (``locked_outcomes``), which
    can only overstate the report's high T when the raw maximum reaches T + 0.5 + margin: a margin
    above ``max(raw maximum − T) − 0.5`` never locked wrongly on these days. ``kwx audit lock-margin``
    studies both directions and recommends a margin (``kwx.domain.lock_margin``).
    """
    days = lock_margin.climate_day_gaps(weather, settlements, city)
    excess = days["gap_f"]
    if excess.empty:
        return {"days": 0, "margin_f": margin_f, "passed": True}
    wrong = lock_margin.misjudged(days, margin_f)
    needed = max(0.0, float(excess.max()) - 0.5)
    return {"days": len(excess), "max_above_settlement_f": round(float(excess.max()), 3),
            "p99_above_settlement_f": round(float(excess.quantile(0.99)), 3),
            "mean_above_settlement_f": round(float(excess.mean()), 3),
            "margin_needed_f": round(needed, 3), "margin_f": margin_f,
            "days_a_lock_would_misjudge": int(wrong.sum()), "passed": not wrong.any()}


def settlement_agreement(weather: pd.DataFrame, settlements: pd.Series, city: City) -> pd.DataFrame:
    """Per settled day: the settlement value and the rounded observed maximum under each day cut.

    Only days where every cut has observations are kept, so the three rates share one denominator.
    """
    maxima = daily_maxima(weather, city)
    frame = pd.DataFrame({"settlement": pd.Series(settlements, dtype=float)}).join(maxima, how="inner")
    return frame.dropna().rename_axis("date")


def agreement_rates(frame: pd.DataFrame) -> dict[str, object]:
    """Exact and within-1 °F agreement rates of each day cut with the settlement value.

    ``passed`` holds when the climate day (LST) agrees at least as often as each other cut.
    ``decisive`` looks only at the days where a cut's maximum differs from the LST one: how often
    the settlement sided with LST and how often with the other cut (the sharpest evidence, since
    on most days every cut contains the afternoon peak and they all agree).
    """
    days = len(frame)
    if days == 0:
        return {"days": 0, "exact": {}, "within_1f": {}, "mean_difference_f": {}, "decisive": {}, "best": None,
                "passed": False}
    settled = frame["settlement"].to_numpy()
    diff = {m: frame[m].to_numpy() - settled for m in DAY_METHODS}
    exact = {m: float(np.mean(d == 0)) for m, d in diff.items()}
    differs = {m: frame[m].to_numpy() != frame["lst"].to_numpy() for m in DAY_METHODS if m != "lst"}
    return {
        "days": days,
        "exact": exact,
        "within_1f": {m: float(np.mean(np.abs(d) <= 1)) for m, d in diff.items()},
        "mean_difference_f": {m: float(np.mean(d)) for m, d in diff.items()},
        "decisive": {m: {"days": int(mask.sum()), "lst_matches": int((diff["lst"][mask] == 0).sum()),
                         f"{m}_matches": int((diff[m][mask] == 0).sum())} for m, mask in differs.items()},
        "best": max(DAY_METHODS, key=lambda m: (exact[m], m == "lst")),
        "passed": all(exact["lst"] >= exact[m] for m in DAY_METHODS),
    }
