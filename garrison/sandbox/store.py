"""Persistence of sandbox records: one row per sandbox, written at create and at its end."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, select, update

from garrison.core.clock import aware
from garrison.db import Database
from garrison.sandbox.tables import sandboxes

RESTART_REASON = "garrison_restart"


@dataclass
class SandboxRecord:
    """A sandbox as stored: what get/list return for one that is not running here."""

    id: str
    tenant_id: str
    principal_id: str | None
    template: str
    backend: str
    isolation: str
    limits: dict[str, Any]
    metadata: dict[str, str]
    pooled: bool
    state: str
    killed_reason: str | None
    owner: str
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None
    usage: dict[str, float] = field(default_factory=dict)


def _record(row: Any) -> SandboxRecord:
    m = row._mapping
    usage = {k: m[k] for k in ("cpu_seconds", "memory_peak_mib", "memory_gib_seconds") if m[k] is not None}
    return SandboxRecord(
        id=m["id"], tenant_id=m["tenant_id"], principal_id=m["principal_id"], template=m["template"],
        backend=m["backend"], isolation=m["isolation"], limits=json.loads(m["limits"]),
        metadata=json.loads(m["metadata"]), pooled=bool(m["pooled"]), state=m["status"],
        killed_reason=m["killed_reason"], owner=m["owner"], created_at=_ts(m["created_at"]),
        expires_at=_ts(m["expires_at"]), ended_at=aware(m["ended_at"]), usage=usage)


def _ts(value: datetime) -> datetime:
    out = aware(value)
    assert out is not None  # NOT NULL columns
    return out


def owner_token(instance: str) -> str:
    """host:pid:instance: which garrison process runs a sandbox."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{instance}"


class SandboxStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, rec: SandboxRecord) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(sandboxes).values(
                id=rec.id, tenant_id=rec.tenant_id, principal_id=rec.principal_id, template=rec.template,
                backend=rec.backend, isolation=rec.isolation, limits=json.dumps(rec.limits),
                metadata=json.dumps(rec.metadata), pooled=rec.pooled, status=rec.state,
                killed_reason=rec.killed_reason, owner=rec.owner, created_at=rec.created_at,
                expires_at=rec.expires_at, ended_at=rec.ended_at))

    async def set_expiry(self, sandbox_id: str, expires_at: datetime) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(update(sandboxes).where(sandboxes.c.id == sandbox_id).values(expires_at=expires_at))

    async def finish(self, sandbox_id: str, reason: str, ended_at: datetime, cpu_seconds: float,
                     memory_peak_mib: float, memory_gib_seconds: float) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(update(sandboxes).where(sandboxes.c.id == sandbox_id).values(
                status="killed", killed_reason=reason[:32], ended_at=ended_at, cpu_seconds=cpu_seconds,
                memory_peak_mib=memory_peak_mib, memory_gib_seconds=memory_gib_seconds))

    async def get(self, sandbox_id: str) -> SandboxRecord | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(sandboxes).where(sandboxes.c.id == sandbox_id))).first()
        return _record(row) if row is not None else None

    async def list_for(self, tenant_id: str, include_ended: bool, limit: int = 1000) -> list[SandboxRecord]:
        q = select(sandboxes).where(sandboxes.c.tenant_id == tenant_id)
        if not include_ended:
            q = q.where(sandboxes.c.status == "running")
        q = q.order_by(sandboxes.c.created_at.desc()).limit(limit)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return sorted((_record(r) for r in rows), key=lambda r: r.id)

    async def end_orphans(self, mine: str, alive: Callable[[int], bool], now: datetime) -> list[tuple[str, str]]:
        """Marks killed (``garrison_restart``) the running sandboxes of garrison processes on
        this host that are gone, or of an earlier instance in this process. Rows of another
        host, or of a live garrison process here, are left alone."""
        host, pid, _ = mine.split(":", 2)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(select(sandboxes.c.id, sandboxes.c.owner, sandboxes.c.tenant_id).where(
                and_(sandboxes.c.status == "running", sandboxes.c.owner.like(f"{host}:%"))))).all()
        gone: list[tuple[str, str]] = []
        for sid, owner, tenant in rows:
            parts = owner.split(":", 2)
            # LIKE treats '_' in a host name as a wildcard: compare the host exactly.
            if len(parts) != 3 or owner == mine or parts[0] != host:
                continue
            other_pid = int(parts[1]) if parts[1].isdigit() else 0
            if other_pid == int(pid) or not alive(other_pid):
                gone.append((sid, tenant))
        if gone:
            async with self.db.engine.begin() as conn:
                ids = [sid for sid, _ in gone]
                for i in range(0, len(ids), 500):
                    await conn.execute(update(sandboxes).where(and_(
                        sandboxes.c.id.in_(ids[i:i + 500]), sandboxes.c.status == "running")).values(
                        status="killed", killed_reason=RESTART_REASON, ended_at=now))
        return gone
