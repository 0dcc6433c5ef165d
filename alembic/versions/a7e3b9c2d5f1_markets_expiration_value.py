"""markets.expiration_value (the settled high) beside settlement_value (YES payout in cents), as Kalshi names them

Revision ID: a7e3b9c2d5f1
Revises: 3f7a9c1d2e4b
Create Date: 2026-11-29

Until now ``settlement_value`` held the settled temperature, which Kalshi calls ``expiration_value``;
Kalshi's ``settlement_value`` is what YES paid. Existing temperatures move to the new column and the
payout is derived from ``result`` (yes 100¢, no 0¢, anything else unknown). Downgrading restores the
temperature to ``settlement_value``; the payout is dropped, ``result`` still says it.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "a7e3b9c2d5f1"
down_revision: str | None = "3f7a9c1d2e4b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("markets") as batch_op:
        batch_op.add_column(sa.Column("expiration_value", sa.Float(), nullable=True))
    op.execute("UPDATE markets SET expiration_value = settlement_value, settlement_value = CASE result "
               "WHEN 'yes' THEN 100 WHEN 'no' THEN 0 ELSE NULL END")


def downgrade() -> None:
    op.execute("UPDATE markets SET settlement_value = expiration_value")
    with op.batch_alter_table("markets") as batch_op:
        batch_op.drop_column("expiration_value")
