"""add realtime infrastructure: candles.complete + idx_candles_complete, rt_signals

Kept separate from the base schema (as in the seed's Phase 1) so a store that already holds
candles gains the real-time tables without being rebuilt.

Revision ID: 416360ac63f3
Revises: 5d2e0c8f9a10
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "416360ac63f3"
down_revision: str | None = "5d2e0c8f9a10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("candles") as batch_op:
        batch_op.add_column(sa.Column("complete", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index("idx_candles_complete", ["complete", "end_period_ts"])

    op.create_table(
        "rt_signals",
        sa.Column("ts_utc", sa.DateTime(timezone=True), nullable=False),
        sa.Column("market_ticker", sa.String(length=64), nullable=False),
        sa.Column("city", sa.String(length=32), nullable=False),
        sa.Column("bracket", sa.String(length=16), nullable=False),
        sa.Column("p_model", sa.Float(), nullable=True),
        sa.Column("p_market", sa.Float(), nullable=True),
        sa.Column("p_blend", sa.Float(), nullable=True),
        sa.Column("edge_cents", sa.Float(), nullable=True),
        sa.Column("kelly_fraction", sa.Float(), nullable=True),
        sa.Column("size_fraction", sa.Float(), nullable=True),
        sa.Column("spread_cents", sa.Float(), nullable=True),
        sa.Column("minutes_to_close", sa.Float(), nullable=True),
        sa.Column("model_id", sa.String(length=128), nullable=True),
        sa.Column("wf_window", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["market_ticker"], ["markets.ticker"], name=op.f("fk_rt_signals_market_ticker_markets")
        ),
        sa.PrimaryKeyConstraint("ts_utc", "market_ticker", name=op.f("pk_rt_signals")),
    )
    op.create_index("idx_rt_signals_city_bracket", "rt_signals", ["city", "bracket"])
    op.create_index("idx_rt_signals_ts_utc", "rt_signals", ["ts_utc"])
    op.create_index("idx_rt_signals_edge_cents", "rt_signals", ["edge_cents"])


def downgrade() -> None:
    op.drop_index("idx_rt_signals_edge_cents", table_name="rt_signals")
    op.drop_index("idx_rt_signals_ts_utc", table_name="rt_signals")
    op.drop_index("idx_rt_signals_city_bracket", table_name="rt_signals")
    op.drop_table("rt_signals")
    with op.batch_alter_table("candles") as batch_op:
        batch_op.drop_index("idx_candles_complete")
        batch_op.drop_column("complete")
