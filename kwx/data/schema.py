"""ORM schema. Alembic migrations in ``alembic/versions`` must match it (a test checks for drift).

High-volume candle rows keep Kalshi's own ``end_period_ts`` in Unix seconds: an integer is
unambiguous, compact and loads into numpy without parsing. Lower-volume tables use UTC
timestamps (``UTCDateTime``), stored as timestamptz on PostgreSQL and as UTC text on SQLite.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out, on every backend; naive datetimes are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; kwx stores aware UTC instants")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Market(Base):
    """One Kalshi market: a city's climate day and bracket (strikes in whole °F), its times and, once settled, its
    result."""

    __tablename__ = "markets"

    ticker: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_ticker: Mapped[str] = mapped_column(String(64), index=True)
    series_ticker: Mapped[str] = mapped_column(String(32))
    city: Mapped[str] = mapped_column(String(32))
    event_date: Mapped[date] = mapped_column(Date)
    strike_type: Mapped[str] = mapped_column(String(16))
    floor_strike: Mapped[float | None] = mapped_column(Float)
    cap_strike: Mapped[float | None] = mapped_column(Float)
    open_time: Mapped[datetime] = mapped_column(UTCDateTime)
    close_time: Mapped[datetime] = mapped_column(UTCDateTime)
    expiration_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str | None] = mapped_column(String(16))
    result: Mapped[str | None] = mapped_column(String(8))
    # Kalshi's names: the settled high (whole °F) the rule was applied to, and what YES paid in cents
    expiration_value: Mapped[float | None] = mapped_column(Float)
    settlement_value: Mapped[float | None] = mapped_column(Float)
    rules_primary: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("idx_markets_city_date", "city", "event_date"),)


class Candle(Base):
    """One-minute candle. Prices in cents (fractional cents allowed); NULL means no quote/trade."""

    __tablename__ = "candles"

    market_ticker: Mapped[str] = mapped_column(
        String(64), ForeignKey("markets.ticker", ondelete="CASCADE"), primary_key=True
    )
    end_period_ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    yes_bid_open: Mapped[float | None] = mapped_column(Float)
    yes_bid_high: Mapped[float | None] = mapped_column(Float)
    yes_bid_low: Mapped[float | None] = mapped_column(Float)
    yes_bid_close: Mapped[float | None] = mapped_column(Float)
    yes_ask_open: Mapped[float | None] = mapped_column(Float)
    yes_ask_high: Mapped[float | None] = mapped_column(Float)
    yes_ask_low: Mapped[float | None] = mapped_column(Float)
    yes_ask_close: Mapped[float | None] = mapped_column(Float)
    price_open: Mapped[float | None] = mapped_column(Float)
    price_high: Mapped[float | None] = mapped_column(Float)
    price_low: Mapped[float | None] = mapped_column(Float)
    price_close: Mapped[float | None] = mapped_column(Float)
    price_mean: Mapped[float | None] = mapped_column(Float)
    volume: Mapped[float | None] = mapped_column(Float)
    open_interest: Mapped[float | None] = mapped_column(Float)
    complete: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (Index("idx_candles_complete", "complete", "end_period_ts"),)


class WeatherMinute(Base):
    """One weather observation of a station (Visual Crossing minute data or the demo's), in °F, % and mph."""

    __tablename__ = "weather_minutes"

    station: Mapped[str] = mapped_column(String(16), primary_key=True)
    ts_utc: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    temp_f: Mapped[float | None] = mapped_column(Float)
    dew_f: Mapped[float | None] = mapped_column(Float)
    humidity_pct: Mapped[float | None] = mapped_column(Float)
    wind_mph: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(32))


class ClimateDaily(Base):
    """The settlement value: NWS daily climate report maximum, whole °F, per station and climate day."""

    __tablename__ = "climate_daily"

    station: Mapped[str] = mapped_column(String(16), primary_key=True)
    climate_date: Mapped[date] = mapped_column(Date, primary_key=True)
    tmax_f: Mapped[int] = mapped_column(Integer)
    source: Mapped[str | None] = mapped_column(String(32))


class Forecast(Base):
    """One weather model's forecast of one climate day's high, as published: point-in-time data.

    A value may enter a feature row at time t only if ``available_ts <= t``. ``available_ts`` is when the
    value became public (conservatively late: the run's time plus its publication delay, never earlier), so
    a later run of the same model is a new row and never rewrites what an earlier row saw. Times are Unix
    seconds (as candles' ``end_period_ts``): the as-of joins run on integers, and a year of 7 cities × 2
    deterministic models + 2 ensembles (31 and 51 members) × 4 runs a day is millions of rows.
    """

    __tablename__ = "forecasts"

    city: Mapped[str] = mapped_column(String(32), primary_key=True)
    # the local-standard-time climate day the high is for, as settlement counts it
    climate_date: Mapped[date] = mapped_column(Date, primary_key=True)
    # e.g. gfs_seamless, ecmwf_ifs025, gfs025 (an ensemble), nws; the source's own model name
    model: Mapped[str] = mapped_column(String(32), primary_key=True)
    # ensemble member number (0 = control); 0 for a deterministic model
    member: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    # the run's initialisation (NWS: its issuance), Unix seconds UTC
    run_ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    available_ts: Mapped[int] = mapped_column(BigInteger)
    # climate_date minus the run's date, both in the city's local standard time (0 = same-day run)
    lead_days: Mapped[int] = mapped_column(SmallInteger)
    # the forecast daily high over the climate day, °F (from hourly values where the source gives hourly)
    high_f: Mapped[float] = mapped_column(Float)
    ensemble: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    source: Mapped[str] = mapped_column(String(16))  # open-meteo, nws, demo

    __table_args__ = (
        # "the newest forecast per city" (rt status, the dashboard) without scanning every climate day
        Index("idx_forecasts_city_available", "city", "available_ts"),
        CheckConstraint("lead_days >= 0", name="lead_days"),
        CheckConstraint("available_ts >= run_ts", name="available_after_run"),
    )


class SeriesFeeRecord(Base):
    """A series' Kalshi fee type and multiplier from ``effective_ts`` on: the exchange's announced changes
    (``GET /series/fee_changes``, keyed by their scheduled time) and, where the series' current fee differs from
    what the stored changes say, the fee as read (keyed by when it was read). Unix seconds, as candles."""

    __tablename__ = "series_fees"

    series_ticker: Mapped[str] = mapped_column(String(32), primary_key=True)
    effective_ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    fee_type: Mapped[str] = mapped_column(String(32))  # quadratic | quadratic_with_maker_fees | flat
    fee_multiplier: Mapped[float] = mapped_column(Float)
    # fee_change (announced by the exchange), series (read from the series itself) or demo
    source: Mapped[str] = mapped_column(String(16))
    fetched_ts: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (CheckConstraint("fee_multiplier >= 0", name="fee_multiplier"),)


class RtSignal(Base):
    """One market's signal at one loop tick: model, market and blended probabilities, the edge and the Kelly size,
    or why it was skipped. Prices and edges in cents."""

    __tablename__ = "rt_signals"

    ts_utc: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    market_ticker: Mapped[str] = mapped_column(String(64), ForeignKey("markets.ticker"), primary_key=True)
    city: Mapped[str] = mapped_column(String(32))
    bracket: Mapped[str] = mapped_column(String(16))
    p_model: Mapped[float | None] = mapped_column(Float)
    p_market: Mapped[float | None] = mapped_column(Float)
    p_blend: Mapped[float | None] = mapped_column(Float)
    edge_cents: Mapped[float | None] = mapped_column(Float)
    kelly_fraction: Mapped[float | None] = mapped_column(Float)
    size_fraction: Mapped[float | None] = mapped_column(Float)
    spread_cents: Mapped[float | None] = mapped_column(Float)
    minutes_to_close: Mapped[float | None] = mapped_column(Float)
    model_id: Mapped[str | None] = mapped_column(String(128))
    wf_window: Mapped[str | None] = mapped_column(String(32))
    side: Mapped[str | None] = mapped_column(String(4))
    skip_reason: Mapped[str | None] = mapped_column(String(200))
    # the settlement rule already decided the market (p_model is exactly 1 or 0, no model asked)
    locked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    # Every index is written with each of a day's ~630 k rows: only the one the dashboard's per-market reads seek.
    # The primary key's leading ts_utc serves time ranges.
    __table_args__ = (Index("idx_rt_signals_market_ts", "market_ticker", "ts_utc"),)


class RtTick(Base):
    """One row per loop tick: what `kwx rt status` shows."""

    __tablename__ = "rt_ticks"

    ts_utc: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    mode: Mapped[str] = mapped_column(String(16), primary_key=True)
    markets: Mapped[int] = mapped_column(Integer)
    signals: Mapped[int] = mapped_column(Integer)
    skips: Mapped[str] = mapped_column(Text)
    latency_ms: Mapped[float] = mapped_column(Float)


class Order(Base):
    """One order kwx decided to place, paper or live; its status follows the exchange's answers.

    ``client_order_id`` is kwx's own deterministic id, so a retried or restarted loop finds the order it
    already placed instead of placing it twice. Prices are cents of the order's own side.
    """

    __tablename__ = "orders"

    client_order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    exchange_order_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    mode: Mapped[str] = mapped_column(String(8))
    environment: Mapped[str] = mapped_column(String(8))
    market_ticker: Mapped[str] = mapped_column(String(64), ForeignKey("markets.ticker"))
    side: Mapped[str] = mapped_column(String(3))
    action: Mapped[str] = mapped_column(String(4))
    limit_price_cents: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer)
    filled_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    remaining_count: Mapped[int] = mapped_column(Integer)
    post_only: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(String(200))
    # With market_ticker, the rt_signals row the order came from. No foreign key: the loop may buffer signal
    # rows while the database is unreachable, and an order must still be recorded the moment it is sent.
    signal_ts_utc: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("idx_orders_status", "status"),
        Index("idx_orders_market_ticker", "market_ticker"),
        Index("idx_orders_created_at", "created_at"),
        # The values every reader relies on; a typo in a writer fails at once instead of hiding an order.
        CheckConstraint("mode IN ('paper', 'live')", name="mode"),
        CheckConstraint("environment IN ('paper', 'demo', 'prod')", name="environment"),
        CheckConstraint("side IN ('yes', 'no')", name="side"),
        CheckConstraint("action IN ('buy', 'sell')", name="action"),
        CheckConstraint("status IN ('pending', 'resting', 'filled', 'cancelled', 'rejected', 'unknown')",
                        name="status"),
        CheckConstraint("count > 0 AND filled_count >= 0 AND remaining_count >= 0", name="counts"),
    )


class Fill(Base):
    """One execution of (part of) an order: the only source of positions and P&L, with markets' settlements."""

    __tablename__ = "fills"

    # The exchange's fill id (paper fills get a deterministic one), so a fill reported twice is stored once.
    fill_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(64), ForeignKey("orders.client_order_id"))
    market_ticker: Mapped[str] = mapped_column(String(64), ForeignKey("markets.ticker"))
    side: Mapped[str] = mapped_column(String(3))
    action: Mapped[str] = mapped_column(String(4))
    price_cents: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer)
    fee_cents: Mapped[float] = mapped_column(Float)
    liquidity: Mapped[str] = mapped_column(String(5))
    ts_utc: Mapped[datetime] = mapped_column(UTCDateTime)
    mode: Mapped[str] = mapped_column(String(8))

    __table_args__ = (
        Index("idx_fills_client_order_id", "client_order_id"),
        Index("idx_fills_market_ticker", "market_ticker"),
        Index("idx_fills_ts_utc", "ts_utc"),
        CheckConstraint("mode IN ('paper', 'live')", name="mode"),
        CheckConstraint("side IN ('yes', 'no')", name="side"),
        CheckConstraint("action IN ('buy', 'sell')", name="action"),
        CheckConstraint("liquidity IN ('maker', 'taker')", name="liquidity"),
        CheckConstraint("count > 0", name="count"),
    )


class ExecutionControl(Base):
    """The kill switch, one row per mode: in the database so a halt survives restarts of the loop."""

    __tablename__ = "execution_control"

    mode: Mapped[str] = mapped_column(String(8), primary_key=True)
    halted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    reason: Mapped[str | None] = mapped_column(String(200))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    changed_by: Mapped[str] = mapped_column(String(64))
    # the loop cancels every resting order at its next tick, then clears the request
    cancel_all_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (CheckConstraint("mode IN ('paper', 'live')", name="mode"),)
