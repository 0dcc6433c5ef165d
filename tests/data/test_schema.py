"""The schema contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.data.schema import Base, Candle, Market, RtSignal

EXECUTION_TABLES = {"orders", "fills", "execution_control"}
ALL_TABLES = {"markets", "candles", "weather_minutes", "climate_daily", "forecasts", "series_fees", "rt_signals",
              "rt_ticks", *EXECUTION_TABLES}
LATER = {"forecasts", "series_fees"}  # the tables of the revisions after e5b1f7c3a9d2


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _drift(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_creates_every_table_and_index(db_url):
    migrations.upgrade(db_url)
    assert _tables(db_url) == ALL_TABLES
    engine = make_engine(db_url)
    insp = inspect(engine)
    candle_indexes = {ix["name"]: ix["column_names"] for ix in insp.get_indexes("candles")}
    assert candle_indexes["idx_candles_complete"] == ["complete", "end_period_ts"]
    # rt_signals keeps one secondary index: every other one cost each signal row a B-tree insert no query used
    signal_indexes = {ix["name"]: ix["column_names"] for ix in insp.get_indexes("rt_signals")}
    assert signal_indexes == {"idx_rt_signals_market_ts": ["market_ticker", "ts_utc"]}
    assert insp.get_pk_constraint("rt_signals")["constrained_columns"] == ["ts_utc", "market_ticker"]
    assert insp.get_pk_constraint("candles")["constrained_columns"] == ["market_ticker", "end_period_ts"]
    fks = insp.get_foreign_keys("rt_signals")
    assert [(fk["referred_table"], fk["referred_columns"]) for fk in fks] == [("markets", ["ticker"])]
    engine.dispose()
    assert migrations.is_at_head(db_url)


def test_no_drift_between_orm_and_migrations(db_url):
    migrations.upgrade(db_url)
    assert _drift(db_url) == []


def test_downgrade_to_base_and_up_again(db_url):
    migrations.upgrade(db_url)
    migrations.downgrade(db_url, "base")
    assert _tables(db_url) == set()
    migrations.upgrade(db_url)
    assert _tables(db_url) == ALL_TABLES
    assert _drift(db_url) == []


def test_realtime_migration_is_separate_from_base(db_url):
    migrations.upgrade(db_url, "5d2e0c8f9a10")
    assert _tables(db_url) == ALL_TABLES - {"rt_signals", "rt_ticks"} - LATER - EXECUTION_TABLES
    engine = make_engine(db_url)
    assert "complete" not in {c["name"] for c in inspect(engine).get_columns("candles")}
    engine.dispose()
    migrations.upgrade(db_url)
    migrations.downgrade(db_url, "f3c9a1d7e2b4")
    assert _tables(db_url) == ALL_TABLES - {"series_fees"}
    migrations.downgrade(db_url, "e5b1f7c3a9d2")
    assert _tables(db_url) == ALL_TABLES - LATER
    migrations.downgrade(db_url, "a7e3b9c2d5f1")
    assert _tables(db_url) == ALL_TABLES - EXECUTION_TABLES - LATER
    migrations.downgrade(db_url, "416360ac63f3")
    assert _tables(db_url) == ALL_TABLES - {"rt_ticks"} - LATER - EXECUTION_TABLES
    migrations.downgrade(db_url, "-1")
    assert _tables(db_url) == ALL_TABLES - {"rt_signals", "rt_ticks"} - LATER - EXECUTION_TABLES


def test_expiration_value_migration_moves_the_high_and_derives_the_payout(db_url):
    """Before a7e3b9c2d5f1 settlement_value held the settled high; after it, the high is expiration_value and
    settlement_value the YES payout in cents (from result); downgrading puts the high back."""
    migrations.upgrade(db_url, "3f7a9c1d2e4b")
    engine = make_engine(db_url)
    rows = [("KXHIGHCHI-25NOV28-B33.5", "yes", 34.0), ("KXHIGHCHI-25NOV28-B35.5", "no", 34.0),
            ("KXHIGHCHI-25NOV29-B35.5", None, None)]
    with engine.begin() as conn:
        for ticker, result, high in rows:
            conn.execute(text(
                "INSERT INTO markets (ticker, event_ticker, series_ticker, city, event_date, strike_type, "
                "open_time, close_time, result, settlement_value) VALUES (:ticker, 'E', 'KXHIGHCHI', 'chicago', "
                "'2025-11-28', 'between', '2025-11-27 15:00:00', '2025-11-28 06:00:00', :result, :high)"),
                {"ticker": ticker, "result": result, "high": high})
    migrations.upgrade(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT ticker, expiration_value, settlement_value FROM markets "
                                 "ORDER BY ticker")).all() == [
            ("KXHIGHCHI-25NOV28-B33.5", 34.0, 100.0), ("KXHIGHCHI-25NOV28-B35.5", 34.0, 0.0),
            ("KXHIGHCHI-25NOV29-B35.5", None, None)]
    migrations.downgrade(db_url, "3f7a9c1d2e4b")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT ticker, settlement_value FROM markets ORDER BY ticker")).all() == [
            (ticker, high) for ticker, _result, high in rows]
        assert "expiration_value" not in {c["name"] for c in inspect(conn).get_columns("markets")}
    engine.dispose()


def test_dropping_the_unused_signal_indexes_keeps_the_rows_and_downgrades(db_url):
    migrations.upgrade(db_url, "b6d2f8a4c1e7")
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO markets (ticker, event_ticker, series_ticker, city, event_date, strike_type, "
                          "open_time, close_time) VALUES ('KXHIGHCHI-25NOV28-B33.5', 'E', 'KXHIGHCHI', 'chicago', "
                          "'2025-11-28', 'between', '2025-11-27 15:00:00', '2025-11-28 06:00:00')"))
        conn.execute(text("INSERT INTO rt_signals (ts_utc, market_ticker, city, bracket, edge_cents) VALUES "
                          "('2025-11-28 12:00:00', 'KXHIGHCHI-25NOV28-B33.5', 'chicago', 'between', 3.5)"))
    migrations.upgrade(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT market_ticker, edge_cents FROM rt_signals")).all() == [
            ("KXHIGHCHI-25NOV28-B33.5", 3.5)]
        assert {ix["name"] for ix in inspect(conn).get_indexes("rt_signals")} == {"idx_rt_signals_market_ts"}
    migrations.downgrade(db_url, "b6d2f8a4c1e7")
    with engine.connect() as conn:
        assert {ix["name"]: ix["column_names"] for ix in inspect(conn).get_indexes("rt_signals")} == {
            "idx_rt_signals_market_ts": ["market_ticker", "ts_utc"], "idx_rt_signals_city_bracket": ["city", "bracket"],
            "idx_rt_signals_ts_utc": ["ts_utc"], "idx_rt_signals_edge_cents": ["edge_cents"]}
    engine.dispose()


def _market(ticker: str = "KXHIGHCHI-25NOV28-B33.5") -> Market:
    opened = datetime(2025, 11, 27, 15, tzinfo=UTC)
    return Market(
        ticker=ticker, event_ticker="KXHIGHCHI-25NOV28", series_ticker="KXHIGHCHI", city="chicago",
        event_date=date(2025, 11, 28), strike_type="between", floor_strike=33, cap_strike=34,
        open_time=opened, close_time=opened + timedelta(days=1),
    )


def test_round_trips_aware_utc_and_defaults_complete_false(db_url):
    migrations.upgrade(db_url)
    engine = make_engine(db_url)
    eastern = timezone(timedelta(hours=-5))
    with Session(engine) as session:
        market = _market()
        market.open_time = datetime(2025, 11, 27, 10, tzinfo=eastern)
        session.add(market)
        session.flush()  # no ORM relationship orders the inserts, so the parent goes first explicitly
        session.add(Candle(market_ticker=market.ticker, end_period_ts=1764288000, yes_bid_close=41.5))
        session.commit()
    with Session(engine) as session:
        stored = session.get(Market, "KXHIGHCHI-25NOV28-B33.5")
        assert stored.open_time == datetime(2025, 11, 27, 15, tzinfo=UTC)
        assert stored.open_time.tzinfo is not None
        candle = session.scalars(select(Candle)).one()
        assert candle.complete is False
        assert candle.yes_ask_close is None  # missing stays NULL, never a made-up price
    engine.dispose()


def test_naive_datetimes_are_refused(db_url):
    migrations.upgrade(db_url)
    engine = make_engine(db_url)
    with Session(engine) as session:
        market = _market()
        market.open_time = datetime(2025, 11, 27, 15)
        session.add(market)
        with pytest.raises(Exception, match="naive datetime"):
            session.commit()
    engine.dispose()


def test_signals_need_a_known_market(db_url):
    migrations.upgrade(db_url)
    engine = make_engine(db_url)
    with Session(engine) as session:
        session.add(RtSignal(ts_utc=datetime(2025, 11, 28, tzinfo=UTC), market_ticker="KXHIGHCHI-25NOV28-B99.5",
                             city="chicago", bracket="between"))
        with pytest.raises(IntegrityError):
            session.commit()
    engine.dispose()
