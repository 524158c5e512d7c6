"""telemetry: trace index (tenant, trace id -> day range) so a trace lookup on PostgreSQL
touches only the day partitions that hold it, not every partition

Revision ID: telemetry_0003
Revises: telemetry_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "telemetry_0003"
down_revision = "telemetry_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telemetry_traces",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("first_day", sa.Integer, nullable=False),
        sa.Column("last_day", sa.Integer, nullable=False),
    )
    op.create_index("ix_telemetry_traces_last_day", "telemetry_traces", ["last_day"])
    if op.get_bind().dialect.name == "postgresql":  # only the partitioned store keeps it
        op.execute("INSERT INTO telemetry_traces (tenant_id, trace_id, first_day, last_day) "
                   "SELECT tenant_id, trace_id, min(day), max(day) FROM telemetry_spans GROUP BY tenant_id, trace_id")


def downgrade() -> None:
    op.drop_table("telemetry_traces")
