"""Registry tables: namespaces owned by tenants, server versions, tool lists, health history."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from garrison.db import metadata

TS = DateTime(timezone=True)

registry_namespaces = Table(
    "registry_namespaces",
    metadata,
    Column("namespace", String(200), primary_key=True),
    Column("tenant_id", String(40), nullable=False, index=True),
    Column("created_at", TS, nullable=False),
)

registry_versions = Table(
    "registry_versions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("version", String(255), nullable=False),
    Column("tenant_id", String(40), nullable=False),
    Column("server_json", Text, nullable=False),
    Column("search_text", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_message", Text, nullable=True),
    Column("status_changed_at", TS, nullable=False),
    Column("published_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("is_latest", Boolean, nullable=False),
    UniqueConstraint("name", "version", name="uq_registry_versions_name_version"),
    Index("ix_registry_versions_updated_at", "updated_at"),
    Index("ix_registry_versions_latest_name", "is_latest", "name"),
)

registry_tool_lists = Table(
    "registry_tool_lists",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("version", String(255), primary_key=True),
    Column("tools", JSON, nullable=False),
    Column("recorded_at", TS, nullable=False),
)

registry_health = Table(
    "registry_health",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("version", String(255), nullable=False),
    Column("checked_at", TS, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("latency_ms", Float, nullable=True),
    Column("tool_count", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Index("ix_registry_health_name_checked", "name", "version", "checked_at"),
)
