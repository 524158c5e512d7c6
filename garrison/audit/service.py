"""The audit log service: batched appends off the request path, synchronous when it matters.

Sequence numbers and hashes are assigned at flush time from the last row actually
stored, so a crash loses only entries that were never flushed and the stored chain
is always a valid prefix. Another garrison process appending to the same database
shows up as a primary-key conflict: the batch is re-chained on the new tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from sqlalchemy import desc, insert, select
from sqlalchemy.exc import IntegrityError

from garrison.audit.chain import GENESIS, Entry, canonical, seal
from garrison.audit.checkpoints import CheckpointFile
from garrison.audit.tables import audit_log
from garrison.core.clock import rfc3339, utcnow
from garrison.core.principal import Principal
from garrison.db import Database

log = logging.getLogger("garrison.audit")
MAX_FIELD = 4096


def _clip(value: str, limit: int = MAX_FIELD) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


class AuditLog:
    def __init__(self, db: Database, directory: Path, *, flush_ms: int = 50,
                 checkpoint_every: int = 1000, checkpoint_seconds: float = 10.0) -> None:
        self.db = db
        self.checkpoints = CheckpointFile(directory)
        self.flush_s = flush_ms / 1000
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self._pending: list[Entry] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[None] | None = None
        self._last_seq = 0
        self._last_hash = GENESIS
        self._last_cp_seq = 0
        self._last_cp_time = time.monotonic()
        self._key = self.checkpoints.signer()
        self.flushed_total = 0

    async def start(self) -> None:
        await self._load_tail()
        cps = [c for c in self.checkpoints.read() if c.seq >= 0]
        self._last_cp_seq = cps[-1].seq if cps else 0
        self._task = asyncio.create_task(self._flusher(), name="garrison-audit-flusher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._inflight is not None:  # the flusher's write the cancel found under way ends first
            with contextlib.suppress(Exception):
                await self._inflight
        for attempt in range(3):
            try:
                await self.flush()
                break
            except Exception:
                log.exception("audit flush at shutdown failed (attempt %d)", attempt + 1)
                await asyncio.sleep(0.2)
        await self._checkpoint(force=True)

    # -- recording ---------------------------------------------------------------------------
    def record(self, principal: Principal | None, action: str, resource: str, decision: str = "allow",
               reason: str = "", context: dict[str, Any] | None = None, *, tenant_id: str | None = None) -> None:
        """Queue an entry; it is stored within the flush interval (100 ms at most)."""
        self._pending.append(Entry(
            ts=rfc3339(utcnow()) or "",
            tenant_id=tenant_id or (principal.tenant_id if principal else None),
            principal_id=principal.id if principal else None,
            action=_clip(action, 128), resource=_clip(resource, 512), decision=decision,
            reason=_clip(reason), context=_clip(canonical(context or {}), 16384),
        ))
        if len(self._pending) >= 512:
            self._wake.set()

    async def record_now(self, principal: Principal | None, action: str, resource: str,
                         decision: str = "allow", reason: str = "", context: dict[str, Any] | None = None,
                         *, tenant_id: str | None = None) -> None:
        """Store the entry (and everything queued before it) before returning."""
        self.record(principal, action, resource, decision, reason, context, tenant_id=tenant_id)
        await self.flush()

    # -- flushing ----------------------------------------------------------------------------
    async def _flusher(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_s)
            self._wake.clear()
            # Shielded: stop() cancels this loop, and a cancel that lands inside the INSERT leaves
            # the aiosqlite connection holding SQLite's write lock, so every later write (stop's
            # own flushes, three tries) waited out the 10 s busy timeout and failed: 30 s stops.
            self._inflight = asyncio.ensure_future(self._flush_and_checkpoint())
            try:
                await asyncio.shield(self._inflight)
            except Exception:  # keep the flusher alive; entries stay pending for the next try
                log.exception("audit flush failed; will retry")
                await asyncio.sleep(0.5)

    async def _flush_and_checkpoint(self) -> None:
        await self.flush()
        await self._checkpoint()

    async def flush(self) -> None:
        async with self._lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, []
            try:
                await self._write(batch)
            except BaseException:
                self._pending[:0] = batch  # nothing is lost: retry on the next flush
                raise

    async def _write(self, batch: list[Entry]) -> None:
        for attempt in range(5):
            seq, prev = self._last_seq, self._last_hash
            for e in batch:
                seq += 1
                seal(e, seq, prev)
                prev = e.hash
            try:
                async with self.db.engine.begin() as conn:
                    await conn.execute(insert(audit_log), [e.row() for e in batch])
            except IntegrityError:
                if attempt == 4:
                    raise
                await self._load_tail()  # another process appended: chain onto its tail
                continue
            self._last_seq, self._last_hash = seq, prev
            self.flushed_total += len(batch)
            return

    async def _load_tail(self) -> None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(
                select(audit_log.c.seq, audit_log.c.hash).order_by(desc(audit_log.c.seq)).limit(1)
            )).first()
        self._last_seq, self._last_hash = (row[0], row[1]) if row else (0, GENESIS)

    async def _checkpoint(self, force: bool = False) -> None:
        if self._last_seq <= self._last_cp_seq:
            return
        due = (self._last_seq - self._last_cp_seq >= self.checkpoint_every
               or time.monotonic() - self._last_cp_time >= self.checkpoint_seconds)
        if not (due or force):
            return
        seq, hash_ = self._last_seq, self._last_hash
        await asyncio.to_thread(self.checkpoints.append, self._key, seq, hash_, rfc3339(utcnow()) or "")
        self._last_cp_seq = seq
        self._last_cp_time = time.monotonic()

    # -- reading -----------------------------------------------------------------------------
    async def tail(self, limit: int = 50, tenant_id: str | None = None) -> list[dict[str, Any]]:
        await self.flush()
        q = select(audit_log).order_by(desc(audit_log.c.seq)).limit(limit)
        if tenant_id:
            q = q.where(audit_log.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        return [dict(r) for r in reversed(rows)]
