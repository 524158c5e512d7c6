"""GPU scheduling tables: configuration documents and workloads."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Float, Index, Integer, String, Table, Text

from garrison.db import metadata

TS = DateTime(timezone=True)

# Cluster-wide configuration as JSON documents: "inventory" and "queues".
gpu_config = Table(
    "gpu_config",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", TS, nullable=False),
)

gpu_workloads = Table(
    "gpu_workloads",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("principal_id", String(64), nullable=True),
    Column("queue", String(63), nullable=False),
    Column("spec", Text, nullable=False),        # the request as submitted (JSON)
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("reason_code", String(32), nullable=False),
    Column("placement", Text, nullable=False),   # [[gpu id, MiB], ...]
    Column("allocated", Float, nullable=False),
    Column("preemptions", Integer, nullable=False),
    Column("submitted_at", TS, nullable=False),
    Column("started_at", TS, nullable=True),
    Column("first_started_at", TS, nullable=True),
    Column("finished_at", TS, nullable=True),
    Column("metered_until", TS, nullable=True),  # GPU-seconds handed to the meter up to here
    Index("ix_gpu_workloads_tenant_state", "tenant_id", "state"),
    Index("ix_gpu_workloads_tenant_submitted", "tenant_id", "submitted_at"),
)
