"""What the dashboard shows, computed from query results: pure functions of frames and a ``now``.

Every function returns JSON-ready Python (``None`` for missing values, ISO-8601 UTC strings for instants,
epoch seconds on chart axes), so the Starlette layer only serialises. The page shows instants on the city's clock:
local *standard* time, the settlement's (``city_clock`` gives it the offset); only banner text is formatted here.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from kwx.cities import City
from kwx.domain.markets import climate_day_bounds
from kwx.domain.positions import SOURCE_LABELS, SOURCES

# Ladder points sit on a five-minute grid: a market trades ~44 hours, 17,600 ticks of 9 s, where a chart a few
# hundred pixels wide shows ~530 points at most; the grid keeps each bucket's last signal and candle, so the
# newest point is always the newest tick. (bench/dashboard.py: a one-minute grid took the ladder over 200 ms.)
LADDER_STEP_SECONDS = 300
LADDER_SERIES = ("model", "blend", "bid", "ask", "mid")
SIGNAL_COLUMNS = ["ts", "ticker", "city", "bracket", "label", "p_model", "p_market", "p_blend", "edge_cents", "side",
                  "size_fraction", "skip_reason", "model_id", "wf_window", "minutes_to_close", "locked"]
# Latency and skips cover the hour up to the newest tick: while the loop runs that is the last hour, and a
# replayed or stopped loop still shows how its last hour went.
HEALTH_SPAN = timedelta(hours=1)
_EPOCH = pd.Timestamp(0, tz="UTC")


def bracket_label(strike_type: str, floor: float | None, cap: float | None) -> str:
    """Kalshi's wording of a bracket in whole °F, by the settlement rule (``settlement_outcomes``): between is
    floor..cap inclusive, greater is above the floor, less is below the cap."""
    if strike_type == "between":
        return f"{floor:g}–{cap:g}°"
    if strike_type == "greater":
        return f"{floor + 1:g}° or above"
    if strike_type == "less":
        return f"{cap - 1:g}° or below"
    raise ValueError(f"unknown strike type {strike_type!r}")


def city_clock(city: City) -> dict:
    """The city's settlement clock, local standard time all year: ``{"zone": "CST", "utc_offset_seconds": -21600,
    "label": "CST (UTC−6)"}``; the page formats every instant with it."""
    offset = int(city.standard_offset.total_seconds())
    january = datetime(2001, 1, 15, 12, tzinfo=city.zone)
    hours, minutes = divmod(abs(offset) // 60, 60)
    sign = "−" if offset < 0 else "+"
    return {"zone": january.tzname(), "utc_offset_seconds": offset,
            "label": f"{january.tzname()} (UTC{sign}{hours}{f':{minutes:02d}' if minutes else ''})"}


def local_time(ts: datetime, city: City) -> str:
    """An instant on the city's clock in the page's one timestamp format: ``07-18 14:50 CST``."""
    return f"{(ts.astimezone(UTC) + city.standard_offset):%m-%d %H:%M} {city_clock(city)['zone']}"


def day_axis(city: City, day, close_time: datetime | None, observations: pd.DataFrame) -> dict:
    """The ladder's time axis in epoch seconds: the climate day (00:00 to 24:00 on the city's clock), when the
    markets close, and the usual time of the high (``usual_high``) on this day."""
    start, end = climate_day_bounds(day, city)
    usual = usual_high(observations, city)
    return {"day_start": int(start.timestamp()), "day_end": int(end.timestamp()),
            "close": int(close_time.timestamp()) if close_time is not None else None,
            "usual_high": None if usual is None else int(start.timestamp()) + usual}


def usual_high(observations: pd.DataFrame, city: City) -> int | None:
    """Seconds after the climate day's start at which the high usually comes: the median, over the days of
    ``observations`` (ts_utc, temp_f), of when each day first reached its maximum; None without observations."""
    frame = observations.dropna(subset=["temp_f"])
    if frame.empty:
        return None
    local = pd.to_datetime(frame["ts_utc"], utc=True).dt.tz_localize(None) + city.standard_offset
    days = pd.DataFrame({"day": local.dt.floor("D"), "seconds": (local - local.dt.floor("D")).dt.total_seconds(),
                         "temp_f": frame["temp_f"].to_numpy()}).sort_values("seconds")
    first_max = days.loc[days.groupby("day")["temp_f"].idxmax(), "seconds"]  # idxmax: the first of equal maxima
    # to five minutes: the read-out of a median over a month of days, not a forecast
    return int(round(float(first_max.median()) / 300) * 300)


def iso(ts) -> str | None:
    """An aware instant as ISO-8601 UTC; None for a missing one."""
    if ts is None or pd.isna(ts):
        return None
    return pd.Timestamp(ts).tz_convert(UTC).isoformat()


def json_values(frame: pd.DataFrame) -> list[list]:
    """Rows of ``frame`` as JSON-ready lists: missing values None, instants ISO strings, numpy scalars native."""
    out = frame.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.DatetimeTZDtype):
            out[column] = out[column].map(iso, na_action="ignore")
        elif out[column].dtype == object:
            out[column] = out[column].map(lambda v: v.isoformat() if hasattr(v, "isoformat") else v,
                                          na_action="ignore")
    return missing_as_none(out).tolist()


def missing_as_none(frame: pd.DataFrame) -> np.ndarray:
    """``frame``'s values as an object array with None wherever pandas sees a missing value (JSON null)."""
    values = frame.to_numpy(dtype=object, copy=True)  # copy: under copy-on-write the array may be read-only
    values[frame.isna().to_numpy(dtype=bool)] = None
    return values


def table(frame: pd.DataFrame, columns: list[str] | None = None) -> dict:
    """``{"columns": [...], "rows": [[...]]}``: the generic table the page renders."""
    columns = list(frame.columns) if columns is None else columns
    return {"columns": columns, "rows": json_values(frame[columns])}


def pnl_split(totals: pd.DataFrame, fills: pd.DataFrame) -> dict:
    """The day's P&L per source (``kwx.domain.positions.source_totals`` rows) with its fills and contracts
    (``fills`` with ``source``): ``{source: {label, realized_cents, unrealized_cents, fees_cents, total_cents,
    positions, fills, contracts}}`` for each of ``SOURCES``; the sources' figures sum to the day's."""
    out = {}
    for source in SOURCES:
        row, mine = totals.loc[source], fills[fills["source"] == source]
        out[source] = {"label": SOURCE_LABELS[source], "realized_cents": float(row["realized_cents"]),
                       "unrealized_cents": float(row["unrealized_cents"]), "fees_cents": float(row["fees_cents"]),
                       "total_cents": float(row["pnl_cents"]), "positions": int(row["positions"]),
                       "fills": len(mine), "contracts": int(mine["count"].sum())}
    return out


@dataclass(frozen=True)
class TickHealth:
    newest_tick: datetime | None
    mode: str | None
    age_seconds: float | None
    max_age_seconds: float
    stale: bool
    ticks_last_hour: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    skips: dict[str, int]

    def as_json(self) -> dict:
        return {"newest_tick": iso(self.newest_tick), "mode": self.mode, "age_seconds": self.age_seconds,
                "max_age_seconds": self.max_age_seconds, "stale": self.stale, "ticks_last_hour": self.ticks_last_hour,
                "latency_p50_ms": self.latency_p50_ms, "latency_p99_ms": self.latency_p99_ms, "skips": self.skips}


def tick_health(ticks: pd.DataFrame, now: datetime, max_age_seconds: float) -> TickHealth:
    """Loop health from ``rt_ticks`` rows (ts_utc, mode, skips, latency_ms) of the hour up to the newest tick:
    its age against ``now`` (stale beyond ``max_age_seconds``, or when there is no tick at all), latency
    percentiles and the markets skipped per reason, summed over the ticks."""
    if ticks.empty:
        return TickHealth(None, None, None, max_age_seconds, True, 0, None, None, {})
    newest = ticks.loc[ticks["ts_utc"].idxmax()]
    newest_ts = pd.Timestamp(newest["ts_utc"]).to_pydatetime()
    hour = ticks[ticks["ts_utc"] > newest["ts_utc"] - HEALTH_SPAN]
    age = (now - newest_ts).total_seconds()
    p50, p99 = np.percentile(hour["latency_ms"].to_numpy(dtype=float), [50, 99])
    skips: Counter[str] = Counter()
    for text in hour["skips"]:  # one small JSON object per tick, at most an hour of them
        skips.update(json.loads(text or "{}"))
    return TickHealth(newest_ts, str(newest["mode"]), age, max_age_seconds, age > max_age_seconds, len(hour),
                      round(float(p50), 2), round(float(p99), 2), dict(skips.most_common()))


def forecast_ages(newest: pd.DataFrame, as_of: datetime) -> list[dict]:
    """Per city: its newest forecast public by ``as_of``, how many hours old it was then, and its models."""
    return [{"city": row.city, "newest_public": iso(datetime.fromtimestamp(int(row.available_ts), UTC)),
             "age_hours": round((as_of.timestamp() - int(row.available_ts)) / 3600, 2), "models": row.models}
            for row in newest.itertuples(index=False)]


def ladder(markets: pd.DataFrame, signals: pd.DataFrame, candles: pd.DataFrame) -> dict:
    """One city's ladder for a day. ``markets``: ticker, strike_type, floor_strike, cap_strike, result,
    expiration_value (ordered low to high); ``signals``: ts_utc, market_ticker, p_model, p_blend, locked;
    ``candles``: market_ticker, end_period_ts, yes_bid_close, yes_ask_close (cents).

    Per market, on a grid of ``LADDER_STEP_SECONDS`` (points at each bucket's start): the model and blended
    probability (the bucket's last signal) and the YES bid, ask and mid (its last candle), as probabilities;
    when the outcome locked (the first locked signal) and which way; the settlement once known."""
    step = LADDER_STEP_SECONDS
    # "last" means latest: rows may come in any order (PostgreSQL returns them as stored)
    signals = signals.sort_values("ts_utc", kind="stable")
    candles = candles.sort_values("end_period_ts", kind="stable")
    modelled = pd.DataFrame({
        "ticker": signals["market_ticker"].to_numpy(),
        "t": ((signals["ts_utc"] - _EPOCH) // pd.Timedelta(seconds=step)).to_numpy(dtype="int64") * step,
        "model": signals["p_model"].to_numpy(dtype=float), "blend": signals["p_blend"].to_numpy(dtype=float),
    }).groupby(["ticker", "t"], sort=False).last()
    bid, ask = candles["yes_bid_close"].to_numpy(dtype=float), candles["yes_ask_close"].to_numpy(dtype=float)
    quoted = pd.DataFrame({
        "ticker": candles["market_ticker"].to_numpy(),
        "t": candles["end_period_ts"].to_numpy(dtype="int64") // step * step,
        "bid": bid / 100, "ask": ask / 100, "mid": (bid + ask) / 200,
    }).groupby(["ticker", "t"], sort=False).last()
    grid = modelled.join(quoted, how="outer").sort_index()
    locks = _locks(signals)
    series, rows = {}, []
    for market in markets.itertuples(index=False):
        ticker = market.ticker
        points = grid.loc[ticker] if ticker in grid.index.get_level_values(0) else grid.iloc[:0].droplevel(0)
        # four decimals are a hundredth of a cent: below what a chart or a trader can tell apart, a third of the JSON
        values = missing_as_none(points[list(LADDER_SERIES)].round(4))
        series[ticker] = {"t": points.index.to_numpy(dtype="int64").tolist(),
                          **{name: values[:, i].tolist() for i, name in enumerate(LADDER_SERIES)}}
        locked_at, outcome = locks.get(ticker, (None, None))
        rows.append({"ticker": ticker, "label": bracket_label(market.strike_type, market.floor_strike,
                                                              market.cap_strike),
                     "strike_type": market.strike_type, "floor": _number(market.floor_strike),
                     "cap": _number(market.cap_strike), "result": market.result or None,
                     "locked_at": iso(locked_at), "locked_outcome": outcome})
    settled = markets[markets["expiration_value"].notna()]
    winners = markets.loc[markets["result"] == "yes", "ticker"]
    return {"markets": rows, "series": series,
            "settlement": {"tmax_f": _number(settled["expiration_value"].iloc[0]) if len(settled) else None,
                           "winner": winners.iloc[0] if len(winners) else None}}


def _locks(signals: pd.DataFrame) -> dict[str, tuple[pd.Timestamp, str]]:
    """Each market's first locked signal: when, and whether YES (p_model 1) or NO (0) was decided."""
    locked = signals[signals["locked"].astype(bool)]
    if locked.empty:
        return {}
    first = locked.sort_values("ts_utc").groupby("market_ticker", sort=False).first()
    return {ticker: (row.ts_utc, "yes" if row.p_model >= 0.5 else "no") for ticker, row in first.iterrows()}


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def latest_signals(signals: pd.DataFrame, labels: dict[str, str]) -> dict:
    """The newest signal of each market (``rt_signals`` rows), strongest edge first, as the page's table."""
    if signals.empty:
        return {"ts": None, **table(pd.DataFrame(columns=SIGNAL_COLUMNS))}
    newest = signals.sort_values("ts_utc").groupby("market_ticker", sort=False).tail(1)
    frame = newest.rename(columns={"ts_utc": "ts", "market_ticker": "ticker"}).assign(
        label=lambda f: f["ticker"].map(labels), locked=lambda f: f["locked"].astype(bool))
    frame = frame.sort_values("edge_cents", ascending=False, na_position="last", key=lambda s: s.abs())
    return {"ts": iso(newest["ts_utc"].max()), **table(frame, SIGNAL_COLUMNS)}


@dataclass(frozen=True)
class ModelRow:
    """The model that trades one family on the day, or why none does."""

    city: str
    bracket: str
    model: str | None = None
    version: str | None = None
    window: str | None = None
    test_start: str | None = None
    test_end: str | None = None
    stale_days: int | None = None
    stage: str | None = None
    aliases: str = ""
    run_id: str | None = None
    run_url: str | None = None
    problem: str | None = None

    COLUMNS = ("city", "bracket", "model", "version", "window", "test_start", "test_end", "stale_days", "stage",
               "aliases", "run_id", "problem")


def models_table(rows: list[ModelRow]) -> dict:
    return {"columns": list(ModelRow.COLUMNS), "rows": [[getattr(r, c) for c in ModelRow.COLUMNS] for r in rows],
            "links": [r.run_url for r in rows]}


def banners(health: TickHealth, models: list[ModelRow], *, max_stale_days: int, halted: str | None, city: City,
            registry_problem: str | None = None) -> list[dict]:
    """What must catch the operator's eye, worst first: a stale loop, an unreachable registry, families without a
    usable model, stale models, a halt. Times are on ``city``'s clock (the page's)."""
    out = []
    if health.newest_tick is None:
        out.append(_banner("error", "stale_tick", "the loop has not recorded a tick yet: is `kwx serve-rt` running?"))
    elif health.stale:
        out.append(_banner("error", "stale_tick",
                           f"newest tick ({health.mode}) is {human_age(health.age_seconds)} old, at "
                           f"{local_time(health.newest_tick, city)} (--max-age {health.max_age_seconds:g} s)"))
    if registry_problem:
        out.append(_banner("error", "registry", registry_problem))
    for row in models:
        family = f"{row.city}/{row.bracket}"
        if row.problem is not None:
            out.append(_banner("error", "no_model", f"{family}: no model trades this day ({row.problem})"))
        elif row.stale_days:
            beyond = row.stale_days > max_stale_days
            what = "beyond max_stale_days, the loop skips it" if beyond else "the loop still trades it"
            out.append(_banner("error" if beyond else "warning", "stale_model",
                               f"{family}: {row.window} (v{row.version}) is {row.stale_days} day(s) past its test "
                               f"period ({what})"))
    if halted:
        out.append(_banner("error", "halted", halted))
    return out


def _banner(level: str, kind: str, text: str) -> dict:
    return {"level": level, "kind": kind, "text": text}


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"
