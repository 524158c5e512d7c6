"""Telemetry tables: one wide spans table, content apart, a daily usage rollup, exporters.

On PostgreSQL the migration creates ``telemetry_spans`` partitioned by day on
``start_ns`` (retention drops whole partitions); this definition is what queries use.
"""

from __future__ import annotations

import sqlalchemy as sa

from garrison.db import metadata

BIGINT = sa.BigInteger().with_variant(sa.Integer, "sqlite")

spans = sa.Table(
    "telemetry_spans",
    metadata,
    sa.Column("tenant_id", sa.String(40), primary_key=True),
    sa.Column("trace_id", sa.String(32), primary_key=True),
    sa.Column("span_id", sa.String(16), primary_key=True),
    sa.Column("parent_span_id", sa.String(16), nullable=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("otel_kind", sa.SmallInteger, nullable=False),
    sa.Column("service_name", sa.String(128), nullable=True),
    sa.Column("scope", sa.String(128), nullable=False),
    sa.Column("start_ns", sa.BigInteger, nullable=False),
    sa.Column("end_ns", sa.BigInteger, nullable=False),
    sa.Column("day", sa.Integer, nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("status_code", sa.SmallInteger, nullable=False),
    sa.Column("status_message", sa.Text, nullable=False),
    sa.Column("error_class", sa.String(32), nullable=True),
    sa.Column("operation", sa.String(64), nullable=True),
    sa.Column("model", sa.String(128), nullable=True),
    sa.Column("provider", sa.String(64), nullable=True),
    sa.Column("input_tokens", sa.Integer, nullable=False),
    sa.Column("output_tokens", sa.Integer, nullable=False),
    sa.Column("cached_tokens", sa.Integer, nullable=False),
    sa.Column("reasoning_tokens", sa.Integer, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=True),
    sa.Column("tool_name", sa.String(128), nullable=True),
    sa.Column("tool_call_id", sa.String(128), nullable=True),
    sa.Column("session_id", sa.String(256), nullable=True),
    sa.Column("user_id", sa.String(256), nullable=True),
    sa.Column("agent_name", sa.String(128), nullable=True),
    sa.Column("gateway", sa.Boolean, nullable=False),
    sa.Column("flags", sa.String(128), nullable=True),
    sa.Column("attributes", sa.Text, nullable=False),
    sa.Column("resource", sa.Text, nullable=False),
    sa.Column("events", sa.Text, nullable=True),
    sa.Column("stored_bytes", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_telemetry_spans_tenant_start", "tenant_id", "start_ns"),
    sa.Index("ix_telemetry_spans_start", "start_ns"),
    sa.Index("ix_telemetry_spans_tenant_session", "tenant_id", "session_id", "start_ns"),
)

content = sa.Table(
    "telemetry_content",
    metadata,
    sa.Column("id", BIGINT, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("trace_id", sa.String(32), nullable=False),
    sa.Column("span_id", sa.String(16), nullable=True),
    sa.Column("source", sa.String(16), nullable=False),  # span | log
    sa.Column("time_ns", sa.BigInteger, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("stored_bytes", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_telemetry_content_trace", "tenant_id", "trace_id"),
    sa.Index("ix_telemetry_content_time", "time_ns"),
)

usage_daily = sa.Table(
    "telemetry_usage_daily",
    metadata,
    sa.Column("tenant_id", sa.String(40), primary_key=True),
    sa.Column("day", sa.Integer, primary_key=True),
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("provider", sa.String(64), primary_key=True),
    sa.Column("calls", sa.Integer, nullable=False),
    sa.Column("errors", sa.Integer, nullable=False),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("cached_tokens", sa.BigInteger, nullable=False),
    sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
    sa.Column("unpriced_calls", sa.Integer, nullable=False),
    sa.Column("duration_ms_sum", sa.Float, nullable=False),
)

exporters = sa.Table(
    "telemetry_exporters",
    metadata,
    sa.Column("tenant_id", sa.String(40), primary_key=True),
    sa.Column("endpoint", sa.String(1024), nullable=False),
    sa.Column("headers", sa.Text, nullable=False),  # JSON object
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("include_content", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# Bytes stored per hour of span start (spans) or content time: retention by size reads
# this instead of scanning spans. Kept in the write transaction; retention corrects it.
store_bytes = sa.Table(
    "telemetry_store_bytes",
    metadata,
    sa.Column("hour", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("span_bytes", sa.BigInteger, nullable=False),
    sa.Column("content_bytes", sa.BigInteger, nullable=False),
    sa.Column("spans", sa.BigInteger, nullable=False),
    sa.Column("contents", sa.BigInteger, nullable=False),
)

# PostgreSQL only: the days a trace's spans fall in, so finding a trace prunes partitions.
traces = sa.Table(
    "telemetry_traces",
    metadata,
    sa.Column("tenant_id", sa.String(40), primary_key=True),
    sa.Column("trace_id", sa.String(32), primary_key=True),
    sa.Column("first_day", sa.Integer, nullable=False),
    sa.Column("last_day", sa.Integer, nullable=False),
    sa.Index("ix_telemetry_traces_last_day", "last_day"),
)
