"""base market and weather schema: markets, candles, weather_minutes, climate_daily

Revision ID: 5d2e0c8f9a10
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "5d2e0c8f9a10"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PRICE_COLUMNS = [
    f"{side}_{stat}" for side in ("yes_bid", "yes_ask") for stat in ("open", "high", "low", "close")
] + ["price_open", "price_high", "price_low", "price_close", "price_mean", "volume", "open_interest"]


def upgrade() -> None:
    op.create_table(
        "markets",
        sa.Column("ticker", sa.String(length=64), nullable=False),
        sa.Column("event_ticker", sa.String(length=64), nullable=False),
        sa.Column("series_ticker", sa.String(length=32), nullable=False),
        sa.Column("city", sa.String(length=32), nullable=False),
        sa.Column("event_date", sa.Date(), nullable=False),
        sa.Column("strike_type", sa.String(length=16), nullable=False),
        sa.Column("floor_strike", sa.Float(), nullable=True),
        sa.Column("cap_strike", sa.Float(), nullable=True),
        sa.Column("open_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("close_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expiration_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("result", sa.String(length=8), nullable=True),
        sa.Column("settlement_value", sa.Float(), nullable=True),
        sa.Column("rules_primary", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("ticker", name=op.f("pk_markets")),
    )
    op.create_index("idx_markets_city_date", "markets", ["city", "event_date"])
    op.create_index(op.f("ix_markets_event_ticker"), "markets", ["event_ticker"])

    op.create_table(
        "candles",
        sa.Column("market_ticker", sa.String(length=64), nullable=False),
        sa.Column("end_period_ts", sa.BigInteger(), nullable=False),
        *[sa.Column(name, sa.Float(), nullable=True) for name in _PRICE_COLUMNS],
        sa.ForeignKeyConstraint(
            ["market_ticker"], ["markets.ticker"],
            name=op.f("fk_candles_market_ticker_markets"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("market_ticker", "end_period_ts", name=op.f("pk_candles")),
    )

    op.create_table(
        "weather_minutes",
        sa.Column("station", sa.String(length=16), nullable=False),
        sa.Column("ts_utc", sa.DateTime(timezone=True), nullable=False),
        sa.Column("temp_f", sa.Float(), nullable=True),
        sa.Column("dew_f", sa.Float(), nullable=True),
        sa.Column("humidity_pct", sa.Float(), nullable=True),
        sa.Column("wind_mph", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("station", "ts_utc", name=op.f("pk_weather_minutes")),
    )

    op.create_table(
        "climate_daily",
        sa.Column("station", sa.String(length=16), nullable=False),
        sa.Column("climate_date", sa.Date(), nullable=False),
        sa.Column("tmax_f", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("station", "climate_date", name=op.f("pk_climate_daily")),
    )


def downgrade() -> None:
    op.drop_table("climate_daily")
    op.drop_table("weather_minutes")
    op.drop_table("candles")
    op.drop_index(op.f("ix_markets_event_ticker"), table_name="markets")
    op.drop_index("idx_markets_city_date", table_name="markets")
    op.drop_table("markets")
