"""series_fees: each Kalshi series' fee type and multiplier, from the time it takes effect

Revision ID: b6d2f8a4c1e7
Revises: f3c9a1d7e2b4
Create Date: 2026-12-06

Fees are priced per series and time from this table (kwx.domain.fees.FeeBook), so a backtest pays the fees
that applied then and the live loop a change from the minute it takes effect.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "b6d2f8a4c1e7"
down_revision: str | None = "f3c9a1d7e2b4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "series_fees",
        sa.Column("series_ticker", sa.String(32), nullable=False),
        sa.Column("effective_ts", sa.BigInteger(), nullable=False),
        sa.Column("fee_type", sa.String(32), nullable=False),
        sa.Column("fee_multiplier", sa.Float(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("fetched_ts", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("fee_multiplier >= 0", name=op.f("ck_series_fees_fee_multiplier")),
        sa.PrimaryKeyConstraint("series_ticker", "effective_ts", name=op.f("pk_series_fees")),
    )


def downgrade() -> None:
    op.drop_table("series_fees")
