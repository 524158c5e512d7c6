"""Sandbox records: what ran, for whom, under which limits, and how it ended.

Kept after a sandbox ends (and across garrison restarts) so get/list show history.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, Float, Index, String, Table, Text

from garrison.db import metadata

TS = DateTime(timezone=True)

sandboxes = Table(
    "sandboxes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("principal_id", String(64), nullable=True),
    Column("template", String(40), nullable=False),
    Column("backend", String(16), nullable=False),
    Column("isolation", String(16), nullable=False),
    # JSON: memory_mib, cpus, pids, workspace_mib, output_cap_bytes, network, timeout_s
    Column("limits", Text, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("pooled", Boolean, nullable=False),
    Column("status", String(16), nullable=False),  # running | killed
    Column("killed_reason", String(32), nullable=True),
    # host:pid:instance of the garrison process that runs it (restart clean-up)
    Column("owner", String(160), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("ended_at", TS, nullable=True),
    Column("cpu_seconds", Float, nullable=True),
    Column("memory_peak_mib", Float, nullable=True),
    Column("memory_gib_seconds", Float, nullable=True),
    Index("ix_sandboxes_tenant_created", "tenant_id", "created_at"),
    Index("ix_sandboxes_status", "status"),
)
