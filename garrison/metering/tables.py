"""Metering tables: the append-only usage ledger, daily rollups, prices and budgets."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    UniqueConstraint,
)

from garrison.db import metadata

COST = Numeric(20, 10)

usage_ledger = Table(
    "usage_ledger",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("tenant_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=True),
    Column("user_id", String(200), nullable=True),
    Column("agent", String(200), nullable=True),
    Column("agent_version", String(64), nullable=True),  # the deployed version whose run or session called
    Column("session_id", String(200), nullable=True),
    Column("model", String(200), nullable=False),
    Column("provider", String(64), nullable=True),
    Column("replica", String(40), nullable=True),
    Column("source", String(16), nullable=False),  # gateway | external
    Column("status", String(16), nullable=False),  # ok | error | cancelled
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("cached_tokens", Integer, nullable=False),
    Column("reasoning_tokens", Integer, nullable=False),
    Column("latency_ms", Float, nullable=True),
    Column("ttft_ms", Float, nullable=True),
    Column("cost_usd", COST, nullable=True),  # NULL: unpriced, never $0
    Column("price_version", String(64), nullable=True),
    Column("trace_id", String(32), nullable=True),
    Column("span_id", String(16), nullable=True),
    UniqueConstraint("trace_id", "span_id", name="uq_usage_ledger_trace_span"),
    Index("ix_usage_ledger_tenant_ts", "tenant_id", "ts"),
)

usage_daily = Table(
    "usage_daily",
    metadata,
    Column("day", Date, nullable=False),
    Column("tenant_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=False),  # '' when none
    Column("agent", String(200), nullable=False),
    Column("model", String(200), nullable=False),
    Column("requests", Integer, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("cached_tokens", Integer, nullable=False),
    Column("reasoning_tokens", Integer, nullable=False),
    Column("cost_usd", COST, nullable=False),
    Column("unpriced_requests", Integer, nullable=False),
    UniqueConstraint("day", "tenant_id", "key_id", "agent", "model", name="uq_usage_daily_row"),
)

model_prices = Table(
    "model_prices",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("model", String(200), nullable=False, index=True),
    Column("input_per_mtok", COST, nullable=False),
    Column("output_per_mtok", COST, nullable=False),
    Column("cached_input_per_mtok", COST, nullable=True),
    Column("gpu_second_usd", COST, nullable=True),
    Column("valid_from", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

budgets = Table(
    "budgets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False, index=True),
    Column("scope", String(16), nullable=False),  # tenant | key | user | session | agent
    Column("scope_id", String(200), nullable=False),
    Column("window", String(8), nullable=False),  # day | week | month | total
    Column("limit_usd", COST, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Resources other layers hand off (sandbox CPU-seconds, memory GiB-seconds, GPU-seconds).
resource_usage = Table(
    "resource_usage",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("tenant_id", String(40), nullable=False),
    Column("source", String(64), nullable=False),  # the layer: sandbox, gpus, ...
    Column("resource", String(64), nullable=False),  # cpu | memory | gpu | ...
    Column("quantity", Float, nullable=False),
    Column("unit", String(64), nullable=False),  # cpu_second | gib_second | gpu_second | ...
    Column("attributes", JSON, nullable=False),
    Index("ix_resource_usage_tenant_ts", "tenant_id", "ts"),
)

resource_daily = Table(
    "resource_daily",
    metadata,
    Column("day", Date, nullable=False),
    Column("tenant_id", String(40), nullable=False),
    Column("source", String(64), nullable=False),
    Column("resource", String(64), nullable=False),
    Column("unit", String(64), nullable=False),
    Column("quantity", Float, nullable=False),
    Column("records", Integer, nullable=False),
    UniqueConstraint("day", "tenant_id", "source", "resource", "unit", name="uq_resource_daily_row"),
)
