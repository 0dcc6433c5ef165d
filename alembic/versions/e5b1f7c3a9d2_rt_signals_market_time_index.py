"""rt_signals(market_ticker, ts_utc): a market's signals in time order, for the dashboard's ladder and latest rows

Revision ID: e5b1f7c3a9d2
Revises: c4d8e2f1a6b3
Create Date: 2026-11-28

The primary key (ts_utc, market_ticker) serves "every market at one tick"; the dashboard asks the other way
round ("this day's markets, through the day", "each market's newest signal"), which without this index scans
every signal ever written.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "e5b1f7c3a9d2"
down_revision: str | None = "c4d8e2f1a6b3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("idx_rt_signals_market_ts", "rt_signals", ["market_ticker", "ts_utc"])


def downgrade() -> None:
    op.drop_index("idx_rt_signals_market_ts", table_name="rt_signals")
