"""metering: resource usage (CPU-seconds, memory GiB-seconds, GPU-seconds) and daily rollups

Revision ID: metering_0002
Revises: metering_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "metering_0002"
down_revision = "metering_0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "resource_usage",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("ts", TS, nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Float, nullable=False),
        sa.Column("unit", sa.String(64), nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
    )
    op.create_index("ix_resource_usage_tenant_ts", "resource_usage", ["tenant_id", "ts"])
    op.create_table(
        "resource_daily",
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(64), nullable=False),
        sa.Column("unit", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Float, nullable=False),
        sa.Column("records", sa.Integer, nullable=False),
        sa.UniqueConstraint("day", "tenant_id", "source", "resource", "unit", name="uq_resource_daily_row"),
    )


def downgrade() -> None:
    op.drop_table("resource_daily")
    op.drop_index("ix_resource_usage_tenant_ts", "resource_usage")
    op.drop_table("resource_usage")
