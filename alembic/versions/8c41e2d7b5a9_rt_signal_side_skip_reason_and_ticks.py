"""rt_signals.side and skip_reason (every skipped market records why); rt_ticks for `kwx rt status`

Revision ID: 8c41e2d7b5a9
Revises: 416360ac63f3
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "8c41e2d7b5a9"
down_revision: str | None = "416360ac63f3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rt_signals") as batch_op:
        batch_op.add_column(sa.Column("side", sa.String(length=4), nullable=True))
        batch_op.add_column(sa.Column("skip_reason", sa.String(length=200), nullable=True))
    op.create_table(
        "rt_ticks",
        sa.Column("ts_utc", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("markets", sa.Integer(), nullable=False),
        sa.Column("signals", sa.Integer(), nullable=False),
        sa.Column("skips", sa.Text(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("ts_utc", "mode", name=op.f("pk_rt_ticks")),
    )


def downgrade() -> None:
    op.drop_table("rt_ticks")
    with op.batch_alter_table("rt_signals") as batch_op:
        batch_op.drop_column("skip_reason")
        batch_op.drop_column("side")
