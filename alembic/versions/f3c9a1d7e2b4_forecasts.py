"""forecasts: weather-model forecasts of each climate day's high, stamped with when they became public

Revision ID: f3c9a1d7e2b4
Revises: e5b1f7c3a9d2
Create Date: 2026-12-06

Point-in-time data for the forecast features: a row enters a feature row at t only if its available_ts <= t.
The primary key (city, climate_date, model, member, run_ts) serves the as-of loads (one city's days, every
run); idx_forecasts_city_available serves "the newest forecast per city".
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "f3c9a1d7e2b4"
down_revision: str | None = "e5b1f7c3a9d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "forecasts",
        sa.Column("city", sa.String(32), nullable=False),
        sa.Column("climate_date", sa.Date(), nullable=False),
        sa.Column("model", sa.String(32), nullable=False),
        sa.Column("member", sa.SmallInteger(), nullable=False),
        sa.Column("run_ts", sa.BigInteger(), nullable=False),
        sa.Column("available_ts", sa.BigInteger(), nullable=False),
        sa.Column("lead_days", sa.SmallInteger(), nullable=False),
        sa.Column("high_f", sa.Float(), nullable=False),
        sa.Column("ensemble", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.CheckConstraint("lead_days >= 0", name=op.f("ck_forecasts_lead_days")),
        sa.CheckConstraint("available_ts >= run_ts", name=op.f("ck_forecasts_available_after_run")),
        sa.PrimaryKeyConstraint("city", "climate_date", "model", "member", "run_ts", name=op.f("pk_forecasts")),
    )
    op.create_index("idx_forecasts_city_available", "forecasts", ["city", "available_ts"])


def downgrade() -> None:
    op.drop_index("idx_forecasts_city_available", table_name="forecasts")
    op.drop_table("forecasts")
