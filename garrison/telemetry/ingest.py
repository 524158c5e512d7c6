"""The bounded ingest queue and its single writer.

A request is acknowledged only after its spans are committed, so a crash loses no
span that got a 200. The writer groups queued requests into one transaction (group
commit), which is what makes SQLite fast. The queue is bounded in spans: past the
bound a request gets 503 with Retry-After, and garrison's own spans are dropped
(counted) rather than block the layer that emitted them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from garrison.telemetry import metrics
from garrison.telemetry.store import SpanStore, Written

log = logging.getLogger("garrison.telemetry.ingest")

AfterWrite = Callable[[Written], Awaitable[None]]


class QueueFull(Exception):
    pass


@dataclass(slots=True)
class _Batch:
    rows: list[dict[str, Any]]
    contents: list[dict[str, Any]]
    future: asyncio.Future[int] | None = None
    size: int = field(default=0)


class IngestQueue:
    def __init__(self, store: SpanStore, *, max_spans: int, batch_spans: int, after_write: AfterWrite) -> None:
        self.store = store
        self.max_spans = max_spans
        self.batch_spans = batch_spans
        self.after_write = after_write
        self.pending = 0
        self._queue: asyncio.Queue[_Batch] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._post: set[asyncio.Task[None]] = set()

    def full(self, extra: int = 0) -> bool:
        return self.pending > 0 and self.pending + extra > self.max_spans

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="telemetry-writer")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        if self._post:
            await asyncio.gather(*self._post, return_exceptions=True)

    async def drain(self) -> None:
        """Wait until everything queued is written and its hooks have run."""
        await self._queue.join()
        if self._post:
            await asyncio.gather(*list(self._post), return_exceptions=True)

    def _enqueue(self, batch: _Batch) -> None:
        batch.size = len(batch.rows) + len(batch.contents)
        self.pending += batch.size
        metrics.QUEUE_SPANS.set(self.pending)
        self._queue.put_nowait(batch)

    async def submit(self, rows: list[dict[str, Any]], contents: list[dict[str, Any]]) -> int:
        """Queue spans and wait until they are committed; returns how many were new."""
        if self.full(len(rows) + len(contents)):
            raise QueueFull()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._enqueue(_Batch(rows, contents, fut))
        return await fut

    def offer(self, rows: list[dict[str, Any]]) -> bool:
        """Queue spans without waiting (garrison's own spans); False when the queue is full."""
        if self.full(len(rows)):
            return False
        self._enqueue(_Batch(rows, []))
        return True

    async def _run(self) -> None:
        while True:
            batches = [await self._queue.get()]
            size = batches[0].size
            while size < self.batch_spans and not self._queue.empty():
                b = self._queue.get_nowait()
                batches.append(b)
                size += b.size
            rows = [r for b in batches for r in b.rows]
            contents = [c for b in batches for c in b.contents]
            started = time.perf_counter()
            written = Written([], [])
            try:
                written = await self.store.write(rows, contents)
            except Exception as exc:
                log.exception("writing %d spans failed", len(rows))
                for b in batches:
                    if b.future is not None and not b.future.done():
                        b.future.set_exception(exc)
            else:
                new_rows = written.rows
                metrics.WRITE_SECONDS.observe(time.perf_counter() - started)
                new_keys = {(r["tenant_id"], r["trace_id"], r["span_id"]) for r in new_rows}
                for b in batches:
                    if b.future is not None and not b.future.done():
                        b.future.set_result(sum(
                            1 for r in b.rows if (r["tenant_id"], r["trace_id"], r["span_id"]) in new_keys
                        ))
                metrics.SPANS_STORED.inc(len(new_rows))
                metrics.SPANS_DUPLICATE.inc(len(rows) - len(new_rows))
            finally:
                self.pending -= size
                metrics.QUEUE_SPANS.set(self.pending)
                for _ in batches:
                    self._queue.task_done()
            if written.rows:
                # Metering and forwarding run beside the writer, never ahead of the acknowledgement;
                # when they fall behind the writer waits for them, so their backlog stays bounded.
                if len(self._post) >= 8:
                    await asyncio.wait(self._post, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.create_task(self._after(written))
                self._post.add(task)
                task.add_done_callback(self._post.discard)

    async def _after(self, written: Written) -> None:
        try:
            await self.after_write(written)
        except Exception:
            log.exception("post-write hooks failed for %d spans", len(written.rows))
