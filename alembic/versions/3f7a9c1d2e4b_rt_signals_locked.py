"""rt_signals.locked: the settlement rule already decided the market (p_model exactly 1 or 0)

Revision ID: 3f7a9c1d2e4b
Revises: 8c41e2d7b5a9
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "3f7a9c1d2e4b"
down_revision: str | None = "8c41e2d7b5a9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rt_signals") as batch_op:
        batch_op.add_column(sa.Column("locked", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("rt_signals") as batch_op:
        batch_op.drop_column("locked")
