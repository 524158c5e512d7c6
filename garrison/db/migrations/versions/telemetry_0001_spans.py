"""telemetry: spans (day-partitioned on PostgreSQL), content, daily usage, exporters

Revision ID: telemetry_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "telemetry_0001"
down_revision = None
branch_labels = ("telemetry",)
depends_on = "foundation_0001"

SPAN_COLUMNS_PG = """
    tenant_id varchar(40) NOT NULL,
    trace_id varchar(32) NOT NULL,
    span_id varchar(16) NOT NULL,
    parent_span_id varchar(16),
    name varchar(256) NOT NULL,
    kind varchar(16) NOT NULL,
    otel_kind smallint NOT NULL,
    service_name varchar(128),
    scope varchar(128) NOT NULL,
    start_ns bigint NOT NULL,
    end_ns bigint NOT NULL,
    day integer NOT NULL,
    duration_ms double precision NOT NULL,
    status_code smallint NOT NULL,
    status_message text NOT NULL,
    error_class varchar(32),
    operation varchar(64),
    model varchar(128),
    provider varchar(64),
    input_tokens integer NOT NULL,
    output_tokens integer NOT NULL,
    cached_tokens integer NOT NULL,
    reasoning_tokens integer NOT NULL,
    cost_usd double precision,
    tool_name varchar(128),
    tool_call_id varchar(128),
    session_id varchar(256),
    user_id varchar(256),
    agent_name varchar(128),
    gateway boolean NOT NULL,
    flags varchar(128),
    attributes text NOT NULL,
    resource text NOT NULL,
    events text,
    PRIMARY KEY (tenant_id, trace_id, span_id, start_ns)
"""


ADDED_LATER = frozenset({"stored_bytes"})  # telemetry_0002


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Partitions (one per UTC day) are created by the store as spans arrive.
        op.execute(f"CREATE TABLE telemetry_spans ({SPAN_COLUMNS_PG}) PARTITION BY RANGE (start_ns)")
    else:
        from garrison.telemetry.tables import spans

        # Columns that later revisions add are left to them.
        op.create_table(
            "telemetry_spans",
            *[sa.Column(c.name, c.type, nullable=c.nullable) for c in spans.columns if c.name not in ADDED_LATER],
            sa.PrimaryKeyConstraint("tenant_id", "trace_id", "span_id", name="pk_telemetry_spans"),
        )
    op.create_index("ix_telemetry_spans_tenant_start", "telemetry_spans", ["tenant_id", "start_ns"])
    op.create_index("ix_telemetry_spans_start", "telemetry_spans", ["start_ns"])
    op.create_index(
        "ix_telemetry_spans_tenant_session", "telemetry_spans", ["tenant_id", "session_id", "start_ns"]
    )
    op.create_table(
        "telemetry_content",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("span_id", sa.String(16), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("time_ns", sa.BigInteger, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_telemetry_content_trace", "telemetry_content", ["tenant_id", "trace_id"])
    op.create_index("ix_telemetry_content_time", "telemetry_content", ["time_ns"])
    op.create_table(
        "telemetry_usage_daily",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_tokens", sa.BigInteger, nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("unpriced_calls", sa.Integer, nullable=False),
        sa.Column("duration_ms_sum", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "day", "model", "provider", name="pk_telemetry_usage_daily"),
    )
    op.create_table(
        "telemetry_exporters",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("endpoint", sa.String(1024), nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("telemetry_exporters")
    op.drop_table("telemetry_usage_daily")
    op.drop_table("telemetry_content")
    op.drop_table("telemetry_spans")
