"""Admission: strict priority bands, weighted fair queuing across tenants, replica slots.

Each model pool has one queue. A request that finds a free replica slot and nobody
waiting goes straight through. Otherwise it waits in its band; bands are served in
strict order (interactive, batch, sheddable) and inside a band tenants are served by
weighted fair queuing (start-time tags: a tenant's next request is tagged
max(band virtual time, its previous tag) + 1 / weight and the smallest tag goes
first), so a light tenant is never starved by a heavy one. Sheddable work is refused
at once when the pool is saturated; the queue is bounded and waits are capped, both
answered 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from garrison.core.errors import TooManyRequests
from garrison.llm.upstreams import ModelPool, Replica

BANDS = ("interactive", "batch", "sheddable")
BAND_INDEX = {name: i for i, name in enumerate(BANDS)}


class QueueRejected(TooManyRequests):
    def __init__(self, detail: str, reason: str, retry_after_s: float) -> None:
        super().__init__(detail, retry_after_s=retry_after_s, slug="llm-overloaded", reason=reason)
        self.reason = reason


class NoReplica(Exception):
    """No replica of the pool can serve at all (none, unhealthy, circuit open): do not queue."""


@dataclass(eq=False)
class Waiter:
    tenant: str
    band: int
    fut: asyncio.Future[Replica]
    done: bool = False


@dataclass
class _Band:
    heap: list[tuple[float, int, Waiter]] = field(default_factory=list)
    vtime: float = 0.0
    last_tag: dict[str, float] = field(default_factory=dict)


class PoolQueue:
    def __init__(self) -> None:
        self.bands = [_Band() for _ in BANDS]
        self.size = 0
        self._seq = itertools.count()

    def push(self, waiter: Waiter, weight: float) -> None:
        band = self.bands[waiter.band]
        tag = max(band.vtime, band.last_tag.get(waiter.tenant, 0.0)) + 1.0 / weight
        band.last_tag[waiter.tenant] = tag
        heapq.heappush(band.heap, (tag, next(self._seq), waiter))
        self.size += 1

    def pop(self) -> Waiter | None:
        for band in self.bands:
            while band.heap:
                tag, _, waiter = heapq.heappop(band.heap)
                if waiter.done:
                    continue
                band.vtime = tag
                if len(band.last_tag) > 4096:  # forget tenants that fell behind the clock
                    band.last_tag = {t: v for t, v in band.last_tag.items() if v > band.vtime}
                return waiter
        return None

    def forget(self, waiter: Waiter) -> None:
        if not waiter.done:
            waiter.done = True
            self.size -= 1


class Scheduler:
    def __init__(
        self,
        *,
        queue_max: int,
        queue_wait_s: float,
        available: Callable[[Replica, float], bool],
        usable: Callable[[Replica, float], bool] = lambda replica, now: True,
        weight_of: Callable[[str], float] = lambda tenant: 1.0,
    ) -> None:
        self.queue_max = queue_max
        self.queue_wait_s = queue_wait_s
        self._available = available
        self._usable = usable
        self._weight_of = weight_of
        self.queues: dict[str, PoolQueue] = {}
        self._rr = itertools.count()
        self.on_wait: Callable[[str, float], None] | None = None  # metrics hook

    def depth(self, model: str) -> int:
        q = self.queues.get(model)
        return q.size if q else 0

    def pick(self, pool: ModelPool, exclude: Iterable[str] = ()) -> Replica | None:
        """Least outstanding requests among replicas that can take one more."""
        now = time.monotonic()
        best: Replica | None = None
        replicas = pool.replicas
        n = len(replicas)
        if n == 0:
            return None
        start = next(self._rr) % n  # rotate ties
        for i in range(n):
            r = replicas[(start + i) % n]
            if r.id in exclude or not self._available(r, now):
                continue
            if best is None or r.in_flight < best.in_flight:
                best = r
        return best

    def _take(self, replica: Replica) -> Replica:
        replica.in_flight += 1
        replica.breaker.on_dispatch(time.monotonic())
        return replica

    async def acquire(
        self, pool: ModelPool, tenant: str, band: int, exclude: Iterable[str] = ()
    ) -> Replica:
        queue = self.queues.get(pool.name)
        if queue is None:
            queue = self.queues[pool.name] = PoolQueue()
        if queue.size == 0 or exclude:
            replica = self.pick(pool, exclude)
            if replica is not None:
                return self._take(replica)
        now = time.monotonic()
        if not any(self._usable(r, now) for r in pool.replicas):
            raise NoReplica(f"no replica of model {pool.name} is healthy (unreachable or circuit open)")
        if band == BAND_INDEX["sheddable"]:
            raise QueueRejected(
                f"model {pool.name} is saturated and sheddable requests are not queued; retry later",
                "shed",
                self._retry_after(queue, pool),
            )
        if queue.size >= self.queue_max:
            raise QueueRejected(
                f"the queue for model {pool.name} is full ({self.queue_max} waiting); retry later",
                "queue_full",
                self._retry_after(queue, pool),
            )
        waiter = Waiter(tenant, band, asyncio.get_running_loop().create_future())
        queue.push(waiter, self._weight_of(tenant))
        self.dispatch(pool)  # a slot may have freed while the queue was busy
        started = time.monotonic()
        try:
            replica = await asyncio.wait_for(asyncio.shield(waiter.fut), self.queue_wait_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            queue.forget(waiter)
            if waiter.fut.done() and not waiter.fut.cancelled():
                self.release(pool, waiter.fut.result())  # dispatched as we gave up
            else:
                waiter.fut.cancel()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise QueueRejected(
                f"waited {self.queue_wait_s:.0f}s in the queue for model {pool.name}; retry later",
                "queue_timeout",
                self._retry_after(queue, pool),
            ) from None
        if self.on_wait is not None:
            self.on_wait(pool.name, time.monotonic() - started)
        return replica

    def _retry_after(self, queue: PoolQueue, pool: ModelPool) -> float:
        capacity = max(1, sum(r.max_concurrency for r in pool.replicas))
        return min(self.queue_wait_s, max(1.0, queue.size / capacity))

    def release(self, pool: ModelPool, replica: Replica) -> None:
        replica.in_flight -= 1
        self.dispatch(pool)

    def dispatch(self, pool: ModelPool) -> None:
        """Hand free slots to waiters, best first."""
        queue = self.queues.get(pool.name)
        if queue is None:
            return
        while queue.size > 0:
            replica = self.pick(pool)
            if replica is None:
                return
            waiter = queue.pop()
            if waiter is None:
                queue.size = 0
                return
            queue.forget(waiter)
            waiter.fut.set_result(self._take(replica))
