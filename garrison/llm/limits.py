"""RPM / TPM limits (GCRA) and parallel-request caps, in process or in Redis.

GCRA keeps one number per key, the theoretical arrival time (TAT): a request of cost
c at a limit of L per minute advances it by c * 60 / L seconds and is allowed while
TAT - now stays within one minute. TPM is charged on an estimate at admission and
reconciled with the real usage afterwards (`adjust`). All checks of one request pass
or fail together, so a refused request consumes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

PERIOD_S = 60.0


@dataclass(frozen=True, slots=True)
class Check:
    key: str
    limit: int  # per minute
    cost: float


class Limiter(Protocol):
    async def acquire(self, checks: list[Check]) -> float | None: ...
    async def adjust(self, key: str, limit: int, delta: float) -> None: ...
    async def enter(self, key: str, limit: int) -> bool: ...
    async def leave(self, key: str) -> None: ...
    async def close(self) -> None: ...


class LocalLimiter:
    """In-process limits: one process, no I/O on the hot path."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._parallel: dict[str, int] = {}

    async def acquire(self, checks: list[Check]) -> float | None:
        """None when allowed; else seconds until it would be."""
        now = time.monotonic()
        new: list[tuple[str, float]] = []
        wait = 0.0
        for c in checks:
            cost = min(c.cost, c.limit)  # a request larger than the limit can pass on a full bucket
            tat = max(self._tat.get(c.key, now), now) + cost * PERIOD_S / c.limit
            over = tat - now - PERIOD_S
            if over > 0:
                wait = max(wait, over)
            new.append((c.key, tat))
        if wait > 0:
            return wait
        for key, tat in new:
            self._tat[key] = tat
        return None

    def adjust_now(self, key: str, limit: int, delta: float) -> None:
        now = time.monotonic()
        self._tat[key] = max(now, self._tat.get(key, now) + delta * PERIOD_S / limit)

    async def adjust(self, key: str, limit: int, delta: float) -> None:
        self.adjust_now(key, limit, delta)

    async def enter(self, key: str, limit: int) -> bool:
        n = self._parallel.get(key, 0)
        if n >= limit:
            return False
        self._parallel[key] = n + 1
        return True

    def leave_now(self, key: str) -> None:
        n = self._parallel.get(key, 0) - 1
        if n <= 0:
            self._parallel.pop(key, None)
        else:
            self._parallel[key] = n

    async def leave(self, key: str) -> None:
        self.leave_now(key)

    async def close(self) -> None:
        return None


_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local period = tonumber(ARGV[1])
local n = #KEYS
local tats = {}
local wait = 0
for i = 1, n do
  local limit = tonumber(ARGV[2 * i])
  local cost = math.min(tonumber(ARGV[2 * i + 1]), limit)
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tat = tat + cost * period / limit
  local over = tat - now - period
  if over > wait then wait = over end
  tats[i] = tat
end
if wait > 0 then return tostring(wait) end
for i = 1, n do
  redis.call('SET', KEYS[i], tostring(tats[i]), 'PX', math.ceil((tats[i] - now + 1) * 1000))
end
return nil
"""

_ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
tat = tat + tonumber(ARGV[1])
if tat < now then tat = now end
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil((tat - now + 1) * 1000))
return 1
"""

_ENTER = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 3600)
if n > tonumber(ARGV[1]) then redis.call('DECR', KEYS[1]) return 0 end
return 1
"""

_LEAVE = """
local n = redis.call('DECR', KEYS[1])
if n <= 0 then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisLimiter:
    """Limits shared by every garrison process that points at the same Redis."""

    def __init__(self, url: str, prefix: str = "garrison:llm:") -> None:
        import redis.asyncio as redis

        self._redis: Any = redis.from_url(url)
        self._prefix = prefix
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._adjust = self._redis.register_script(_ADJUST)
        self._enter = self._redis.register_script(_ENTER)
        self._leave = self._redis.register_script(_LEAVE)

    async def acquire(self, checks: list[Check]) -> float | None:
        if not checks:
            return None
        args: list[Any] = [PERIOD_S]
        for c in checks:
            args += [c.limit, c.cost]
        result = await self._acquire(keys=[self._prefix + "rate:" + c.key for c in checks], args=args)
        return None if result is None else float(result)

    async def adjust(self, key: str, limit: int, delta: float) -> None:
        await self._adjust(keys=[self._prefix + "rate:" + key], args=[delta * PERIOD_S / limit])

    async def enter(self, key: str, limit: int) -> bool:
        return bool(await self._enter(keys=[self._prefix + "par:" + key], args=[limit]))

    async def leave(self, key: str) -> None:
        await self._leave(keys=[self._prefix + "par:" + key])

    async def close(self) -> None:
        await self._redis.aclose()
