"""The dashboard's database reads: each one query or a few, on the indexes the schema has for them.

Only SELECTs, on a read-only engine (``make_read_only_engine``): the page can never change what the loop
reads. Day-scoped reads start from ``idx_markets_city_date`` and reach signals through
``idx_rt_signals_market_ts`` and candles through their (market, time) primary key.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pandas as pd
from sqlalchemy import Connection, Engine, column, exists, func, select, text

from kwx.dashboard.views import HEALTH_SPAN, LADDER_STEP_SECONDS
from kwx.data.schema import Candle, Market, Order, RtSignal, RtTick, WeatherMinute
from kwx.data.store import chunks, rows_frame

MARKET_COLUMNS = ["ticker", "city", "strike_type", "floor_strike", "cap_strike", "result", "expiration_value",
                  "close_time"]
LADDER_SIGNAL_COLUMNS = ["ts_utc", "market_ticker", "p_model", "p_blend", "locked"]
SIGNAL_COLUMNS = ["ts_utc", "market_ticker", "city", "bracket", "p_model", "p_market", "p_blend", "edge_cents",
                  "side", "size_fraction", "skip_reason", "model_id", "wf_window", "minutes_to_close", "locked"]
# How many past days the page's day picker offers.
DAYS_OFFERED = 14
# The days before the shown one whose observations give the usual time of the high.
HIGH_HISTORY_DAYS = 30
UNION_CHUNK = 200
_BRACKET_ORDER = {"less": 0, "between": 1, "greater": 2}


def _frame(conn: Connection, statement, columns: list[str]) -> pd.DataFrame:
    return rows_frame(conn.execute(statement), columns)


def _utc(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def newest_tick_time(engine: Engine) -> datetime | None:
    """When the loop last ticked (any mode), on ``rt_ticks``' primary key."""
    with engine.connect() as conn:
        return conn.execute(select(func.max(RtTick.ts_utc))).scalar()


def recent_ticks(engine: Engine) -> pd.DataFrame:
    """``rt_ticks`` of the hour up to the newest tick (ts_utc, mode, skips, latency_ms), on its primary key."""
    columns = ["ts_utc", "mode", "skips", "latency_ms"]
    newest = newest_tick_time(engine)
    if newest is None:
        return _utc(pd.DataFrame(columns=columns), "ts_utc")
    statement = select(RtTick.ts_utc, RtTick.mode, RtTick.skips, RtTick.latency_ms).where(
        RtTick.ts_utc > newest - HEALTH_SPAN)
    with engine.connect() as conn:
        return _utc(_frame(conn, statement, columns), "ts_utc")


def signal_days(engine: Engine) -> list[date]:
    """The newest event days that have signals, newest first: the markets' days, probed for a signal each
    through ``idx_rt_signals_market_ts``."""
    with engine.connect() as conn:
        newest = conn.execute(select(RtSignal.market_ticker).order_by(RtSignal.ts_utc.desc()).limit(1)).scalar()
        if newest is None:
            return []
        last_day = conn.execute(select(Market.event_date).where(Market.ticker == newest)).scalar()
        signalled = exists().where(RtSignal.market_ticker == Market.ticker)
        statement = (select(Market.event_date).where(Market.event_date <= last_day, signalled).distinct()
                     .order_by(Market.event_date.desc()).limit(DAYS_OFFERED))
        return [d for (d,) in conn.execute(statement).all()]


def day_markets(engine: Engine, day: date, city: str | None = None) -> pd.DataFrame:
    """The day's markets (``MARKET_COLUMNS``), by city, then ladder order (less, between by strike, greater)."""
    statement = select(*(Market.__table__.c[c] for c in MARKET_COLUMNS)).where(Market.event_date == day)
    if city is not None:
        statement = statement.where(Market.city == city)
    with engine.connect() as conn:
        frame = _frame(conn, statement, MARKET_COLUMNS)
    order = frame["strike_type"].map(_BRACKET_ORDER)
    strike = frame["floor_strike"].fillna(frame["cap_strike"])
    return (frame.assign(_order=order, _strike=strike).sort_values(["city", "_order", "_strike", "ticker"])
            .drop(columns=["_order", "_strike"]).reset_index(drop=True))


def observations_before(engine: Engine, station: str, before: datetime) -> pd.DataFrame:
    """The station's temperatures (ts_utc, temp_f) of the ``HIGH_HISTORY_DAYS`` days before ``before``, on
    ``weather_minutes``' (station, time) primary key."""
    statement = select(WeatherMinute.ts_utc, WeatherMinute.temp_f).where(
        WeatherMinute.station == station, WeatherMinute.ts_utc >= before - timedelta(days=HIGH_HISTORY_DAYS),
        WeatherMinute.ts_utc < before)
    with engine.connect() as conn:
        return _utc(_frame(conn, statement, ["ts_utc", "temp_f"]), "ts_utc")


def ladder_rows(engine: Engine, tickers: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The signals (``LADDER_SIGNAL_COLUMNS``) of ``tickers`` at the last tick of each ladder bucket
    (``LADDER_STEP_SECONDS``), and every candle quote of ``tickers``: one city's ladder.

    A market's ~17,600 ticks of 9 s become ~530 points, so only each bucket's last tick is read: the ticks come
    from ``rt_ticks``' key, then each (market, tick) row by its key; no row is read to be thrown away."""
    candle_columns = ["market_ticker", "end_period_ts", "yes_bid_close", "yes_ask_close"]
    with engine.connect() as conn:
        opened, closed = conn.execute(select(func.min(Market.open_time), func.max(Market.close_time))
                                      .where(Market.ticker.in_(tickers))).one()
        ticks = pd.to_datetime(pd.Series([t for (t,) in conn.execute(
            select(RtTick.ts_utc).where(RtTick.ts_utc.between(opened, closed)).distinct())] if opened else [],
            dtype=object), utc=True)
        bucket_ends = ticks.groupby(ticks.dt.floor(f"{LADDER_STEP_SECONDS}s")).max().sort_values()
        chosen = [t.to_pydatetime() for t in bucket_ends]
        frames = [_frame(conn, select(*(RtSignal.__table__.c[c] for c in LADDER_SIGNAL_COLUMNS))
                         .where(RtSignal.market_ticker.in_(tickers), RtSignal.ts_utc.in_(chunk)),
                         LADDER_SIGNAL_COLUMNS) for chunk in chunks(chosen)]
        signals = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=LADDER_SIGNAL_COLUMNS)
        candles = _frame(conn, select(*(Candle.__table__.c[c] for c in candle_columns))
                         .where(Candle.market_ticker.in_(tickers)), candle_columns)
    return _utc(signals, "ts_utc"), candles


# Per market: its newest time is one seek to the end of idx_rt_signals_market_ts (max() on an index prefix), its
# row one primary-key lookup. Written as SQL text: SQLAlchemy's compiler spent ~25 ms building the same UNION of
# ~80 selects on every request, ten times the query itself. Tickers are bound parameters, never formatted in.
_NEWEST_ROW = ("SELECT {columns} FROM rt_signals WHERE market_ticker = :t{i} AND ts_utc = "
               "(SELECT max(ts_utc) FROM rt_signals WHERE market_ticker = :t{i})")


def latest_signals(engine: Engine, tickers: list[str]) -> pd.DataFrame:
    """The newest ``rt_signals`` row of each of ``tickers`` (``SIGNAL_COLUMNS``), one index seek per market.
    A GROUP BY over the markets would read every signal they ever had."""
    typed = [column(c, RtSignal.__table__.c[c].type) for c in SIGNAL_COLUMNS]
    frames = []
    with engine.connect() as conn:
        for chunk in chunks(tickers, UNION_CHUNK):  # SQLite caps a compound select at 500 parts
            sql = " UNION ALL ".join(_NEWEST_ROW.format(columns=", ".join(SIGNAL_COLUMNS), i=i)
                                     for i in range(len(chunk)))
            statement = text(sql).bindparams(**{f"t{i}": t for i, t in enumerate(chunk)}).columns(*typed)
            frames.append(_frame(conn, statement, SIGNAL_COLUMNS))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SIGNAL_COLUMNS)
    return _utc(frame, "ts_utc")


def newest_order_mode(engine: Engine) -> str | None:
    """The mode (paper or live) of the newest order, for a loop configured to write signals only."""
    with engine.connect() as conn:
        return conn.execute(select(Order.mode).order_by(Order.created_at.desc()).limit(1)).scalar()
