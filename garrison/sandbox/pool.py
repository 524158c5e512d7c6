"""Warm pools: started sandboxes waiting, keyed by a fingerprint of everything that
shapes them (template, limits, network, backend).

A pooled sandbox has never run anything; it is handed out once, to one tenant, and
never returns to a pool. A claim re-checks that the sandbox's enforced limits are
the ones asked for, so a pool can never hand out a sandbox under another policy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("garrison.sandbox.pool")
REFILL_DELAY_S = 0.05


@dataclass(frozen=True)
class Shape:
    template_fingerprint: str
    backend: str
    memory_bytes: int
    cpus: float
    pids: int
    workspace_bytes: int
    tmp_bytes: int
    output_cap: int
    network: str = "none"

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class Warm:
    runtime: Any  # a started SandboxRuntime with a ready agent
    shape: Shape
    born: float


class WarmPool:
    def __init__(self, shape: Shape, size: int, make: Callable[[Shape], Awaitable[Any]],
                 discard: Callable[[Any, str], Coroutine[Any, Any, None]], max_age_s: float) -> None:
        self.shape = shape
        self.key = shape.fingerprint()
        self.size = size
        self.make = make
        self.discard = discard
        self.max_age_s = max_age_s
        self.ready: deque[Warm] = deque()
        self.filling = 0
        self.claims = 0
        self.misses = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.last_error: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._fill_loop(), name=f"sandbox-pool-{self.key}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        while self.ready:
            await self.discard(self.ready.popleft().runtime, "pool_shutdown")

    def claim(self) -> Any | None:
        """O(1): the oldest ready sandbox whose shape matches, or None."""
        while self.ready:
            warm = self.ready.popleft()
            self._wake.set()
            if warm.shape != self.shape or not warm.runtime.alive():
                asyncio.get_running_loop().create_task(self.discard(warm.runtime, "pool_invalid"))
                continue
            self.claims += 1
            return warm.runtime
        self.misses += 1
        self._wake.set()
        return None

    async def _fill_loop(self) -> None:
        backoff = 0.5
        while True:
            now = time.monotonic()
            while self.ready and now - self.ready[0].born > self.max_age_s:
                await self.discard(self.ready.popleft().runtime, "pool_recycled")
            if len(self.ready) < self.size:
                try:
                    runtime = await self.make(self.shape)
                    self.ready.append(Warm(runtime, self.shape, time.monotonic()))
                    self.last_error = None
                    backoff = 0.5
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # keep serving cold creates; retry later
                    self.last_error = str(exc)[:300]
                    log.warning("warm pool %s could not start a sandbox: %s", self.key, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30)
                    continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=min(self.max_age_s, 30))
                # Refill a moment after a claim: starting a sandbox forks the server process,
                # which would stall the claimant's first call on the same event loop.
                await asyncio.sleep(REFILL_DELAY_S)
            except TimeoutError:
                pass

    def describe(self) -> dict[str, Any]:
        return {"key": self.key, "backend": self.shape.backend, "size": self.size, "ready": len(self.ready),
                "claims": self.claims, "misses": self.misses, "last_error": self.last_error,
                "memory_mib": self.shape.memory_bytes // (1024 * 1024), "cpus": self.shape.cpus,
                "pids": self.shape.pids}
