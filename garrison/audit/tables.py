from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from garrison.db import metadata

# Times are stored as RFC 3339 text so the hashed form round-trips byte for byte.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=False),
    Column("ts", String(40), nullable=False),
    Column("tenant_id", String(40), nullable=True),
    Column("principal_id", String(64), nullable=True),
    Column("action", String(128), nullable=False),
    Column("resource", String(512), nullable=False),
    Column("decision", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("context", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_log_tenant_ts", "tenant_id", "ts"),
)
