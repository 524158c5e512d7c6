"""The append-only usage ledger, written in batches off the request path.

Each entry is first appended to a local journal file (one `os.write`, no fsync: the
page cache survives a kill -9 of the process), then inserted in batches with the
daily rollups in one transaction. A journal file is deleted only once every entry in
it is committed; on start, left-over journals are replayed (inserts ignore ids that
are already there), so no entry of a completed request is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.dialects import postgresql, sqlite

from garrison.core.clock import aware
from garrison.db import Database
from garrison.metering.tables import usage_daily, usage_ledger

log = logging.getLogger("garrison.metering")


@dataclass(slots=True)
class UsageEntry:
    id: str
    ts: datetime
    tenant_id: str
    model: str
    source: str = "gateway"
    status: str = "ok"
    key_id: str | None = None
    user_id: str | None = None
    agent: str | None = None
    agent_version: str | None = None
    session_id: str | None = None
    provider: str | None = None
    replica: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cost_usd: Decimal | None = None
    price_version: str | None = None
    trace_id: str | None = None
    span_id: str | None = None

    def to_json(self) -> bytes:
        # Field by field: dataclasses.asdict deep-copies, and this runs once per model call.
        doc = {f: getattr(self, f) for f in _ENTRY_FIELDS}
        doc["ts"] = self.ts.isoformat()
        doc["cost_usd"] = None if self.cost_usd is None else str(self.cost_usd)
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, raw: bytes) -> UsageEntry:
        doc = orjson.loads(raw)
        doc["ts"] = aware(datetime.fromisoformat(doc["ts"]))
        doc["cost_usd"] = None if doc["cost_usd"] is None else Decimal(doc["cost_usd"])
        return cls(**doc)


_ENTRY_FIELDS = tuple(UsageEntry.__dataclass_fields__)


@dataclass
class _Journal:
    path: Path
    fd: int
    pending: int = 0
    ids: set[str] = field(default_factory=set)


class LedgerWriter:
    """Journal + batcher for usage entries; subclasses change the entry type, the journal
    name and `_insert` (the resource meter does)."""

    journal_prefix = "journal"

    def __init__(
        self,
        db: Database,
        journal_dir: Path | None,
        *,
        flush_interval_s: float = 0.05,
        batch_size: int = 500,
    ) -> None:
        self.db = db
        self.journal_dir = journal_dir
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self._queue: list[Any] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[None] | None = None
        self._journal: _Journal | None = None
        self._seq = 0
        self.written = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stmts: tuple[Any, ...] | None = None

    # ---- journal ---------------------------------------------------------------------

    def _open_journal(self) -> _Journal | None:
        if self.journal_dir is None:
            return None
        self._seq += 1
        path = self.journal_dir / f"{self.journal_prefix}-{os.getpid()}-{self._seq}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return _Journal(path, fd)

    async def replay(self) -> int:
        """Commit entries left in journals by a process that died before flushing them."""
        if self.journal_dir is None:
            return 0
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        replayed = 0
        for path in sorted(self.journal_dir.glob(f"{self.journal_prefix}-*.jsonl")):
            entries = []
            for line in path.read_bytes().splitlines():
                with contextlib.suppress(Exception):  # a torn last line is what kill -9 leaves
                    entries.append(self._from_json(line))
            if entries:
                replayed += await self._insert(entries)
            path.unlink()
        return replayed

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.replay()
        self._journal = self._open_journal()
        self._task = asyncio.create_task(self._run(), name="metering-ledger")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inflight is not None:  # the batch the cancel found being written ends first
            with contextlib.suppress(Exception):
                await self._inflight
        await self._flush()
        if self._journal is not None:
            os.close(self._journal.fd)
            if self._journal.pending == 0:
                self._journal.path.unlink(missing_ok=True)

    def _from_json(self, raw: bytes) -> Any:
        return UsageEntry.from_json(raw)

    def append(self, entry: Any) -> None:
        """On the request path: one journal write, then the batcher takes it."""
        if self._journal is not None:
            os.write(self._journal.fd, entry.to_json() + b"\n")
            self._journal.pending += 1
        self._queue.append(entry)
        self._idle.clear()
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until everything appended so far is committed (tests, shutdown, reports)."""
        if not self._idle.is_set():  # entries queued, or a batch being written
            self._wake.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            # Shielded: a cancel (stop()) inside the INSERT would leave the aiosqlite connection
            # holding SQLite's write lock, and stop()'s own flush then waited out the busy timeout.
            self._inflight = asyncio.ensure_future(self._flush())
            try:
                await asyncio.shield(self._inflight)
            except Exception:  # keep the entries; the next round retries
                log.exception("usage ledger flush failed; retrying")
                await asyncio.sleep(0.5)

    async def _flush(self) -> None:
        if not self._queue:
            self._idle.set()
            return
        batch, self._queue = self._queue, []
        old = self._journal
        # New entries go to a fresh journal; the old one goes once its batch is in.
        if old is not None and old.pending:
            self._journal = self._open_journal()
        try:
            await self._insert(batch)
        except Exception:
            self._queue = batch + self._queue
            raise
        if old is not None and old is not self._journal:
            os.close(old.fd)
            old.path.unlink(missing_ok=True)
        self.written += len(batch)
        if not self._queue:
            self._idle.set()

    def _statements(self) -> tuple[Any, ...]:
        """The plain insert, the insert that says which rows went in, and the rollup upsert,
        built once (they are the same every batch)."""
        if self._stmts is None:
            dialect = postgresql if self.db.dialect == "postgresql" else sqlite
            plain = dialect.insert(usage_ledger).on_conflict_do_nothing()
            ins = dialect.insert(usage_daily)
            upsert = ins.on_conflict_do_update(
                index_elements=["day", "tenant_id", "key_id", "agent", "model"],
                set_={c: usage_daily.c[c] + ins.excluded[c] for c in _SUMMED},
            )
            self._stmts = (plain, plain.returning(usage_ledger.c.id), upsert, self._driver_insert())
        return self._stmts

    def _driver_insert(self) -> tuple[str, list[tuple[str, Any]]] | None:
        """SQLite: the plain insert as driver SQL, with each column's own bind processor.

        SQLAlchemy's executemany prepares every row's parameters on the event loop (about 30 us
        a row, most of the ledger's loop time); applying the same processors here (a timestamp's
        storage format, a cost's number) stores exactly the same values for a tenth of that.
        PostgreSQL keeps the compiled statement (its drivers' row counts differ)."""
        if self.db.dialect != "sqlite":
            return None
        dialect = self.db.engine.dialect
        columns = [(c.name, c.type.dialect_impl(dialect).bind_processor(dialect)) for c in usage_ledger.columns]
        names = ", ".join(name for name, _ in columns)
        marks = ", ".join("?" for _ in columns)
        return f"INSERT INTO usage_ledger ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING", columns

    async def _insert(self, entries: list[Any]) -> int:
        """Insert new entries; ids already stored (a replay) and repeated spans are skipped,
        and only what was inserted is added to the rollups.

        A batch is usually all new rows: an executemany of one single-row statement, whose row
        count says so. With RETURNING, a batch is one statement holding every row's parameters,
        which SQLite compiles into a program of tens of MB on the connection's thread (that
        thread's malloc arena keeps the peak); it is used only when a row was skipped."""
        plain, returning, upsert, driver = self._statements()
        rows = [_row(e) for e in entries]
        try:
            async with self.db.engine.begin() as conn:
                # In pieces: a whole 200 ms batch prepared at once held the event loop for several
                # ms, which a model call arriving then waited out (the gateway's p99). Between
                # pieces the loop serves requests while the connection's thread writes.
                stored = 0
                for i in range(0, len(rows), _PIECE):
                    piece = rows[i:i + _PIECE]
                    if driver is None:
                        stored += (await conn.execute(plain, piece)).rowcount
                    else:
                        sql, columns = driver
                        params = [tuple([r[n] if p is None else p(r[n]) for n, p in columns]) for r in piece]
                        stored += (await conn.exec_driver_sql(sql, params)).rowcount
                if stored != len(rows):
                    raise _Skipped  # rolls the batch back; done again below, row by row known
                rollups = _rollups(rows)
                if rollups:
                    await conn.execute(upsert, rollups)
                return len(rows)
        except _Skipped:
            pass
        async with self.db.engine.begin() as conn:
            inserted = {row[0] for row in await conn.execute(returning, rows)}
            rollups = _rollups([r for r in rows if r["id"] in inserted])
            if rollups:
                await conn.execute(upsert, rollups)
            return len(inserted)


# Rows per INSERT execution of a batch (see _insert).
_PIECE = 64


class _Skipped(Exception):
    """A row of the batch was already stored."""


_SUMMED = ("requests", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "cost_usd",
           "unpriced_requests")
def _row(e: UsageEntry) -> dict[str, Any]:
    return {f: getattr(e, f) for f in _ENTRY_FIELDS}


def _rollups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    acc: dict[tuple[date, str, str, str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["ts"].date(), r["tenant_id"], r["key_id"] or "", r["agent"] or "", r["model"])
        row = acc.get(key)
        if row is None:
            row = acc[key] = {
                "day": key[0],
                "tenant_id": key[1],
                "key_id": key[2],
                "agent": key[3],
                "model": key[4],
                "requests": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "cached_tokens": 0,
                "reasoning_tokens": 0,
                "cost_usd": Decimal(0),
                "unpriced_requests": 0,
            }
        row["requests"] += 1
        for c in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"):
            row[c] += r[c]
        if r["cost_usd"] is None:
            row["unpriced_requests"] += 1
        else:
            row["cost_usd"] += r["cost_usd"]
    return list(acc.values())
