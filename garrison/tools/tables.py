"""Gateway tables: upstreams (with sealed credentials) and virtual servers, per tenant."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Float, String, Table, Text, UniqueConstraint

from garrison.db import metadata

TS = DateTime(timezone=True)

tools_upstreams = Table(
    "tools_upstreams",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False, index=True),
    Column("name", String(40), nullable=False),
    Column("kind", String(16), nullable=False),  # mcp | openapi
    Column("url", Text, nullable=False),
    Column("registry_name", String(200), nullable=True),
    Column("auth_kind", String(32), nullable=False),
    Column("auth_header", String(128), nullable=True),
    Column("auth_secret", Text, nullable=True),  # Fernet ciphertext, never the plain secret
    Column("oauth_token_url", Text, nullable=True),
    Column("oauth_client_id", String(256), nullable=True),
    Column("oauth_scope", String(512), nullable=True),
    Column("timeout_s", Float, nullable=True),
    Column("idempotent_tools", JSON, nullable=False),
    Column("openapi_doc", Text, nullable=True),
    Column("tool_list", JSON, nullable=True),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    UniqueConstraint("tenant_id", "name", name="uq_tools_upstreams_tenant_name"),
)

tools_virtual_servers = Table(
    "tools_virtual_servers",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("description", Text, nullable=False),
    Column("tools", JSON, nullable=False),
    Column("rate_limit_per_min", Float, nullable=True),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    UniqueConstraint("tenant_id", "name", name="uq_tools_virtual_servers_tenant_name"),
)
