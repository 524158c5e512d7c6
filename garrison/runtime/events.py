"""Event streams (per run, per session): publish, read from an offset, wait for more.

The store backend keeps events in ``runtime_events``; writers in this process wake
readers at once, and readers poll so that events written by another process show up too.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from garrison.core.clock import utcnow
from garrison.core.inputs import INT32_MAX
from garrison.db import Database
from garrison.runtime import serde
from garrison.runtime.tables import events

# runtime_events.seq is an INTEGER column: 32 bits on PostgreSQL (64 on SQLite). A larger
# offset is bad input, not a 500 (2**63 - 1 still failed on PostgreSQL: "integer out of range").
MAX_SEQ = INT32_MAX
# Built once: every step of every run appends with it (see runtime/store.py).
_APPEND = insert(events)


@dataclass(frozen=True)
class Event:
    seq: int
    event: str
    data: Any
    step: int | None = None  # the run step that published it (None: published outside a step)


class StoreEvents:
    """Events in the platform database; ``seq`` starts at 1 and has no gaps per stream."""

    def __init__(self, db: Database, poll_s: float = 0.25) -> None:
        self.db = db
        self.poll_s = poll_s
        self._wakeups: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        # Last seq this process wrote per stream: a run's events have one writer at a time, so the
        # next seq is known without a query; a clash (another writer) falls back to the table.
        self._last: dict[str, int] = {}

    async def publish(self, stream: str, event: str, data: Any, step: int | None = None) -> int:
        text = serde.dumps(data)
        for _ in range(20):
            known = self._last.get(stream)
            try:
                async with self.db.engine.begin() as conn:
                    if known is None:
                        top = (await conn.execute(select(func.max(events.c.seq))
                                                  .where(events.c.stream == stream))).scalar()
                        known = int(top or 0)
                    seq = known + 1
                    await conn.execute(_APPEND, {"stream": stream, "seq": seq, "event": event, "data": text,
                                                 "step": step, "created_at": utcnow()})
                self._last[stream] = seq
                if len(self._last) > 10_000:
                    self._last.pop(next(iter(self._last)))
                break
            except IntegrityError:
                self._last.pop(stream, None)  # another writer took this seq; ask the table
                continue
        else:
            raise RuntimeError(f"could not append to event stream {stream}")
        self.wake(stream)
        return seq

    async def publish_many(self, stream: str, items: list[tuple[str, Any]], step: int | None = None,
                           also: Callable[[Any], Awaitable[None]] | None = None) -> None:
        """Append ``items`` (event, data) in one transaction, with ``also(conn)`` (an idempotent write) in it."""
        texts = [(event, serde.dumps(data)) for event, data in items]
        for _ in range(20):
            known = self._last.get(stream)
            try:
                async with self.db.engine.begin() as conn:
                    if known is None and texts:
                        top = (await conn.execute(select(func.max(events.c.seq))
                                                  .where(events.c.stream == stream))).scalar()
                        known = int(top or 0)
                    if texts:
                        now = utcnow()
                        await conn.execute(_APPEND, [
                            {"stream": stream, "seq": (known or 0) + i, "event": event, "data": text, "step": step,
                             "created_at": now} for i, (event, text) in enumerate(texts, 1)])
                    if also is not None:
                        await also(conn)
                if texts:
                    self._last[stream] = (known or 0) + len(texts)
                break
            except IntegrityError:
                self._last.pop(stream, None)  # another writer took these seqs; ask the table
                continue
        else:
            raise RuntimeError(f"could not append to event stream {stream}")
        if texts:
            self.wake(stream)

    def fresh(self, stream: str, last: int = 0) -> None:
        """``stream`` was just created here with ``last`` events: its next publish needs no look-up of the last seq."""
        self._last[stream] = last

    async def count_step(self, stream: str, step: int) -> int:
        """How many events ``step`` has published already (a retried step skips that many)."""
        async with self.db.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(events).where(
                and_(events.c.stream == stream, events.c.step == step)))).scalar() or 0)

    def waited(self, stream: str) -> bool:
        """Whether a reader in this process waits for more of ``stream`` now."""
        return stream in self._wakeups

    def wake(self, stream: str) -> None:
        """Wake this process's readers of ``stream`` (a run changed status)."""
        wake = self._wakeups.pop(stream, None)
        if wake is not None:
            wake.set()

    async def read(self, stream: str, after: int = 0, limit: int = 1000) -> list[Event]:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(select(events.c.seq, events.c.event, events.c.data, events.c.step)
                                       .where(and_(events.c.stream == stream, events.c.seq > after))
                                       .order_by(events.c.seq).limit(limit))).all()
        return [Event(r[0], r[1], serde.loads(r[2]), r[3]) for r in rows]

    async def wait(self, stream: str) -> None:
        """Return when this process publishes to ``stream``, or after the poll interval."""
        wake = self._wakeups[stream]
        try:
            await asyncio.wait_for(wake.wait(), self.poll_s)
        except TimeoutError:
            pass

    async def drop(self, stream: str) -> None:
        self._last.pop(stream, None)
        async with self.db.engine.begin() as conn:
            await conn.execute(delete(events).where(events.c.stream == stream))

    async def close(self) -> None:
        return None
