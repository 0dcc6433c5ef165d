"""orders, fills and execution_control: the execution records of paper and live trading

Revision ID: c4d8e2f1a6b3
Revises: a7e3b9c2d5f1
Create Date: 2026-11-30

Positions and P&L are derived from fills, markets' settlements and candles at read time, so they have
no table of their own to drift from the fills. Downgrading drops the three tables with their rows.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "c4d8e2f1a6b3"
down_revision: str | None = "a7e3b9c2d5f1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MODE = "mode IN ('paper', 'live')"
_SIDE = "side IN ('yes', 'no')"
_ACTION = "action IN ('buy', 'sell')"


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("exchange_order_id", sa.String(length=64), nullable=True),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("market_ticker", sa.String(length=64), nullable=False),
        sa.Column("side", sa.String(length=3), nullable=False),
        sa.Column("action", sa.String(length=4), nullable=False),
        sa.Column("limit_price_cents", sa.Float(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("filled_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("remaining_count", sa.Integer(), nullable=False),
        sa.Column("post_only", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("signal_ts_utc", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(_MODE, name=op.f("ck_orders_mode")),
        sa.CheckConstraint("environment IN ('paper', 'demo', 'prod')", name=op.f("ck_orders_environment")),
        sa.CheckConstraint(_SIDE, name=op.f("ck_orders_side")),
        sa.CheckConstraint(_ACTION, name=op.f("ck_orders_action")),
        sa.CheckConstraint("status IN ('pending', 'resting', 'filled', 'cancelled', 'rejected', 'unknown')",
                           name=op.f("ck_orders_status")),
        sa.CheckConstraint("count > 0 AND filled_count >= 0 AND remaining_count >= 0", name=op.f("ck_orders_counts")),
        sa.ForeignKeyConstraint(["market_ticker"], ["markets.ticker"], name=op.f("fk_orders_market_ticker_markets")),
        sa.PrimaryKeyConstraint("client_order_id", name=op.f("pk_orders")),
        sa.UniqueConstraint("exchange_order_id", name=op.f("uq_orders_exchange_order_id")),
    )
    op.create_index("idx_orders_status", "orders", ["status"])
    op.create_index("idx_orders_market_ticker", "orders", ["market_ticker"])
    op.create_index("idx_orders_created_at", "orders", ["created_at"])
    op.create_table(
        "fills",
        sa.Column("fill_id", sa.String(length=64), nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("market_ticker", sa.String(length=64), nullable=False),
        sa.Column("side", sa.String(length=3), nullable=False),
        sa.Column("action", sa.String(length=4), nullable=False),
        sa.Column("price_cents", sa.Float(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("fee_cents", sa.Float(), nullable=False),
        sa.Column("liquidity", sa.String(length=5), nullable=False),
        sa.Column("ts_utc", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.CheckConstraint(_MODE, name=op.f("ck_fills_mode")),
        sa.CheckConstraint(_SIDE, name=op.f("ck_fills_side")),
        sa.CheckConstraint(_ACTION, name=op.f("ck_fills_action")),
        sa.CheckConstraint("liquidity IN ('maker', 'taker')", name=op.f("ck_fills_liquidity")),
        sa.CheckConstraint("count > 0", name=op.f("ck_fills_count")),
        sa.ForeignKeyConstraint(["client_order_id"], ["orders.client_order_id"],
                                name=op.f("fk_fills_client_order_id_orders")),
        sa.ForeignKeyConstraint(["market_ticker"], ["markets.ticker"], name=op.f("fk_fills_market_ticker_markets")),
        sa.PrimaryKeyConstraint("fill_id", name=op.f("pk_fills")),
    )
    op.create_index("idx_fills_client_order_id", "fills", ["client_order_id"])
    op.create_index("idx_fills_market_ticker", "fills", ["market_ticker"])
    op.create_index("idx_fills_ts_utc", "fills", ["ts_utc"])
    op.create_table(
        "execution_control",
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("halted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(length=64), nullable=False),
        sa.Column("cancel_all_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.CheckConstraint(_MODE, name=op.f("ck_execution_control_mode")),
        sa.PrimaryKeyConstraint("mode", name=op.f("pk_execution_control")),
    )


def downgrade() -> None:
    op.drop_table("execution_control")
    op.drop_index("idx_fills_ts_utc", table_name="fills")
    op.drop_index("idx_fills_market_ticker", table_name="fills")
    op.drop_index("idx_fills_client_order_id", table_name="fills")
    op.drop_table("fills")
    op.drop_index("idx_orders_created_at", table_name="orders")
    op.drop_index("idx_orders_market_ticker", table_name="orders")
    op.drop_index("idx_orders_status", table_name="orders")
    op.drop_table("orders")
