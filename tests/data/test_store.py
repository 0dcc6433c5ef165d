"""Bulk upserts: idempotent, all-or-nothing, and they leave columns they were not given alone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select, update

from kwx.data.schema import Base, Candle, Market, WeatherMinute
from kwx.data.store import driver_records, driver_rows, upsert_columns, upsert_frame, upsert_frames, upsert_rows

pytestmark = pytest.mark.integration


def _markets():
    return pd.DataFrame({
        "ticker": ["KXHIGHCHI-25JUL15-B85.5", "KXHIGHCHI-25JUL15-T80"], "event_ticker": "KXHIGHCHI-25JUL15",
        "series_ticker": "KXHIGHCHI", "city": "chicago", "event_date": [date(2025, 7, 15)] * 2,
        "strike_type": ["between", "less"], "floor_strike": [85.0, None], "cap_strike": [86.0, 80.0],
        "open_time": pd.to_datetime(["2025-07-14 15:00"], utc=True).repeat(2),
        "close_time": pd.to_datetime(["2025-07-16 06:00"], utc=True).repeat(2),
    })


def _candles(bid=40.0):
    return pd.DataFrame({"market_ticker": "KXHIGHCHI-25JUL15-B85.5", "end_period_ts": [1752595260, 1752595320],
                         "yes_bid_close": [bid, None], "yes_ask_close": [42.0, 43.0], "volume": [3.0, 0.0]})


def _count(engine, model):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def test_upsert_is_idempotent_and_updates_values(engine):
    assert upsert_frames(engine, {"markets": _markets(), "candles": _candles()}) == {"markets": 2, "candles": 2}
    upsert_frames(engine, {"markets": _markets(), "candles": _candles()})
    assert _count(engine, Market) == 2 and _count(engine, Candle) == 2
    upsert_frames(engine, {"candles": _candles(bid=41.0)})
    with engine.connect() as conn:
        bids = conn.execute(select(Candle.yes_bid_close).order_by(Candle.end_period_ts)).scalars().all()
        market = conn.execute(select(Market).where(Market.ticker == "KXHIGHCHI-25JUL15-T80")).one()
    assert bids == [41.0, None]  # missing stays NULL
    assert market.floor_strike is None and market.event_date == date(2025, 7, 15)
    assert market.open_time == datetime(2025, 7, 14, 15, tzinfo=UTC)


def test_columns_not_given_are_left_alone(engine):
    upsert_frames(engine, {"markets": _markets(), "candles": _candles()})
    with engine.begin() as conn:
        conn.execute(update(Candle).values(complete=True))
    upsert_frames(engine, {"candles": _candles(bid=39.0)})
    with engine.connect() as conn:
        assert conn.execute(select(Candle.complete)).scalars().all() == [True, True]


def test_a_failing_table_rolls_back_the_whole_batch(engine):
    orphan = _candles().assign(market_ticker="KXHIGHCHI-25JUL15-B99.5")  # violates the foreign key
    with pytest.raises(Exception, match=r"(?i)foreign key"):
        upsert_frames(engine, {"markets": _markets(), "candles": orphan})
    assert _count(engine, Market) == 0 and _count(engine, Candle) == 0


def test_timestamps_round_trip_through_bulk_and_orm_alike(engine):
    frame = pd.DataFrame({"station": "KMDW", "ts_utc": pd.to_datetime(["2025-07-15 18:05:00"], utc=True),
                          "temp_f": [84.2], "source": "test"})
    with engine.begin() as conn:
        upsert_frame(conn, "weather_minutes", frame)
        upsert_frame(conn, "weather_minutes", frame)
    with engine.connect() as conn:
        stored = conn.execute(select(WeatherMinute.ts_utc)).scalar_one()
        found = conn.execute(select(func.count()).where(
            WeatherMinute.ts_utc == datetime(2025, 7, 15, 18, 5, tzinfo=UTC))).scalar_one()
    assert stored == datetime(2025, 7, 15, 18, 5, tzinfo=UTC) and found == 1


def test_rejects_frames_without_the_primary_key(engine):
    with engine.begin() as conn, pytest.raises(KeyError, match="primary key"):
        upsert_frame(conn, "candles", _candles().drop(columns="end_period_ts"))


def _stored_text(engine, table: str, key: str) -> list[tuple]:
    """Every column as the database holds it, as text: what a bulk write stored, before any type handling."""
    with engine.connect() as conn:
        columns = [c.name for c in Base.metadata.tables[table].columns]
        cast = ", ".join(f"CAST({c} AS TEXT)" for c in columns)
        return [tuple(row) for row in conn.exec_driver_sql(f"SELECT {cast} FROM {table} ORDER BY {key}")]


def _market_rows() -> list[dict]:
    """``_markets()`` as Python rows, with the values a loop holds: aware and naive times, numpy scalars, NaN."""
    rows = [{k: (v.to_pydatetime() if isinstance(v, pd.Timestamp) else v) for k, v in row.items()}
            for row in _markets().to_dict("records")]
    rows[0]["floor_strike"] = np.float64(85.0)
    rows[1]["floor_strike"] = float("nan")
    rows[1]["close_time"] = rows[1]["close_time"].astimezone(timezone(timedelta(hours=-5)))  # the same instant
    rows[0]["open_time"] = rows[0]["open_time"].replace(tzinfo=None)  # naive is UTC, as in a frame
    return rows


def test_rows_are_stored_exactly_as_the_same_frame_is(engine, tmp_path):
    """``upsert_rows`` (the loops' few rows at a time) and ``upsert_frame`` write the same text for every kind of
    column: times, dates, booleans, numbers and missing values."""
    with engine.begin() as conn:
        upsert_frame(conn, "markets", _markets())
    framed = _stored_text(engine, "markets", "ticker")
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM markets")
        duplicate = {**_market_rows()[0], "cap_strike": 99.0}  # the last row of a key is the one written
        assert upsert_rows(conn, "markets", [duplicate, *_market_rows()]) == 2
    assert _stored_text(engine, "markets", "ticker") == framed
    orders = [{"client_order_id": "o-1", "mode": "paper", "environment": "paper",
               "market_ticker": "KXHIGHCHI-25JUL15-B85.5", "side": "yes", "action": "buy", "limit_price_cents": 39.0,
               "count": np.int64(5), "filled_count": 0, "remaining_count": 5, "post_only": np.True_,
               "status": "resting", "created_at": datetime(2025, 7, 15, 12, 0, 0, 250_000, tzinfo=UTC),
               "updated_at": datetime(2025, 7, 15, 12, 1, tzinfo=UTC), "cancelled_at": None, "reason": None}]
    with engine.begin() as conn:
        upsert_rows(conn, "orders", orders)
    from_rows = _stored_text(engine, "orders", "client_order_id")
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM orders")
        upsert_frame(conn, "orders", pd.DataFrame(orders))
    assert _stored_text(engine, "orders", "client_order_id") == from_rows


def test_columns_are_stored_exactly_as_the_same_frame_is(engine):
    """``upsert_columns`` (the loop's batch of signal ticks, as arrays) writes what ``upsert_frame`` writes of the
    same rows framed: times from ``datetime64``, text and missing text, numbers and NaN, booleans."""
    from kwx.rt.engine import SignalRows

    with engine.begin() as conn:
        upsert_frame(conn, "markets", _markets())
    tickers = _markets()["ticker"].to_numpy(dtype=object)
    signals = SignalRows({
        "ts_utc": np.array([1752595260, 1752595260, 1752595269, 1752595269]),
        "market_ticker": tickers[[0, 1, 0, 1]], "city": np.full(4, "chicago", dtype=object),
        "bracket": np.array(["between", "less"] * 2, dtype=object), "p_model": np.array([0.25, np.nan, 0.5, 1.0]),
        "edge_cents": np.array([3.5, np.nan, -1.0, 0.0]), "side": np.array(["yes", None, None, "no"], dtype=object),
        "skip_reason": np.array([None, "no two-sided quote", "edge below 2c", None], dtype=object),
        "locked": np.array([False, False, True, False])})
    with engine.begin() as conn:
        assert upsert_columns(conn, "rt_signals", signals.stored()) == 4
    written = _stored_text(engine, "rt_signals", "ts_utc, market_ticker")
    assert [row[:2] for row in written][2][1] == tickers[0] and written[1][4] is None  # NaN is NULL
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM rt_signals")
        upsert_frame(conn, "rt_signals", signals.frame())
    assert _stored_text(engine, "rt_signals", "ts_utc, market_ticker") == written
    with engine.begin() as conn:
        assert upsert_columns(conn, "rt_signals", signals.take([]).stored()) == 0


def test_rows_keep_the_stored_ones_on_request_and_need_the_primary_key(engine):
    upsert_frames(engine, {"markets": _markets()})
    renamed = [{**row, "city": "elsewhere"} for row in _market_rows()]
    with engine.begin() as conn:
        assert upsert_rows(conn, "markets", renamed, on_conflict="nothing") == 2
        assert upsert_rows(conn, "markets", []) == 0
        with pytest.raises(KeyError, match="primary key"):
            upsert_rows(conn, "markets", [{"city": "chicago"}])
        with pytest.raises(ValueError, match="on_conflict"):
            upsert_rows(conn, "markets", renamed, on_conflict="replace")
    with engine.connect() as conn:
        assert set(conn.execute(select(Market.city)).scalars()) == {"chicago"}


def test_records_are_the_driver_s_rows_as_an_array(engine):
    """``driver_records`` (COPY and pandas' parser on PostgreSQL) gives what the driver's tuples give: every value
    exact, NULL as NaN, nothing for no rows; a parameter with a quote in it is quoted, not run."""
    quoted = "KXHIGHCHI-25JUL15-B85.5' OR '1'='1"
    candles = pd.DataFrame({"market_ticker": ["KXHIGHCHI-25JUL15-B85.5"] * 3 + ["KXHIGHCHI-25JUL15-T80"],
                            "end_period_ts": [1752595260, 1752595320, 1752595380, 1752595260],
                            "yes_bid_close": [40.0, None, 0.1 + 0.2, 1e-9], "yes_ask_close": [42.0, 43.0, 99.99, None],
                            "volume": [3.0, 0.0, 123456789.0, 7.0]})
    upsert_frames(engine, {"markets": _markets(), "candles": candles})
    dtype = np.dtype([("end_period_ts", np.int64), ("yes_bid_close", float), ("yes_ask_close", float),
                      ("volume", float)])

    def statement(ticker):
        return (select(Candle.end_period_ts, Candle.yes_bid_close, Candle.yes_ask_close, Candle.volume)
                .where(Candle.market_ticker.in_([ticker, "KXHIGHCHI-25JUL15-T80"]))
                .order_by(Candle.market_ticker, Candle.end_period_ts))

    records = driver_records(engine, statement("KXHIGHCHI-25JUL15-B85.5"), dtype)
    expected = np.concatenate([np.fromiter(rows, dtype=dtype, count=len(rows))
                               for rows in driver_rows(engine, statement("KXHIGHCHI-25JUL15-B85.5"))])
    assert records.dtype == dtype and len(records) == 4
    for name in dtype.names:
        assert np.array_equal(records[name], expected[name], equal_nan=True), name
    assert records["yes_bid_close"][2] == 0.1 + 0.2 and np.isnan(records["yes_bid_close"][1])
    assert records["volume"].tolist() == [3.0, 0.0, 123456789.0, 7.0]
    assert driver_records(engine, statement(quoted), dtype)["end_period_ts"].tolist() == [1752595260]
    assert len(driver_records(engine, statement("nothing").where(Candle.volume < 0), dtype)) == 0
