"""Budgets shared by every garrison process on one Redis (GARRISON_REDIS_URL).

Each budget window is one Redis hash, ``<prefix>budget:<id>:<window start>``: field
``spent`` and one ``r:<process>`` field per process holding what that process has
reserved. Reserve and settle are Lua scripts, so the check "spent + reserved +
estimate <= limit" and the reservation happen atomically across processes: two
processes cannot both take the last dollar.

A process that dies (kill -9) cannot give its reservations back; its ``r:`` field
counts only while its heartbeat key lives (refreshed every few seconds), after which
the next reservation drops it. Amounts are integers in nano-dollars.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

log = logging.getLogger("garrison.metering")

NANO = Decimal("1e-9")
HEARTBEAT_TTL_S = 15
KEEP_AFTER_WINDOW_S = 2 * 86400

# KEYS: window keys. ARGV: amount, own field, proc key prefix, then per key: limit, seed spent, ttl ms.
# Returns 0 when reserved, else the 1-based index of the first budget that is spent.
_RESERVE = """
local amount = tonumber(ARGV[1])
local own = ARGV[2]
local procs = ARGV[3]
local n = #KEYS
local used = {}
for i = 1, n do
  local h = redis.call('HGETALL', KEYS[i])
  local spent = nil
  local reserved = 0
  for j = 1, #h, 2 do
    local f = h[j]
    if f == 'spent' then
      spent = tonumber(h[j + 1])
    elseif string.sub(f, 1, 2) == 'r:' then
      if f == own or redis.call('EXISTS', procs .. string.sub(f, 3)) == 1 then
        reserved = reserved + tonumber(h[j + 1])
      else
        redis.call('HDEL', KEYS[i], f)
      end
    end
  end
  if spent == nil then spent = tonumber(ARGV[3 + 3 * (i - 1) + 2]) end
  local limit = tonumber(ARGV[3 + 3 * (i - 1) + 1])
  if spent + reserved + amount > limit then return {i, tostring(spent), tostring(reserved)} end
end
for i = 1, n do
  redis.call('HSETNX', KEYS[i], 'spent', ARGV[3 + 3 * (i - 1) + 2])
  redis.call('HINCRBY', KEYS[i], own, amount)
  local ttl = tonumber(ARGV[3 + 3 * (i - 1) + 3])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return {0}
"""

# KEYS[i]: the key a reservation was taken on; KEYS[n + i]: the key of the window it is charged to.
# ARGV: amount, own field, cost, then per key: seed spent, ttl ms.
_SETTLE = """
local amount = tonumber(ARGV[1])
local own = ARGV[2]
local cost = tonumber(ARGV[3])
local n = #KEYS / 2
for i = 1, n do
  if amount > 0 then
    local left = redis.call('HINCRBY', KEYS[i], own, -amount)
    if left <= 0 then redis.call('HDEL', KEYS[i], own) end
  end
  if cost > 0 then
    local k = KEYS[n + i]
    redis.call('HSETNX', k, 'spent', ARGV[3 + 2 * (i - 1) + 1])
    redis.call('HINCRBY', k, 'spent', cost)
    local ttl = tonumber(ARGV[3 + 2 * (i - 1) + 2])
    if ttl > 0 then redis.call('PEXPIRE', k, ttl) end
  end
end
return 1
"""


def nano(amount: Decimal) -> int:
    return int((amount / NANO).to_integral_value(ROUND_CEILING))


def dollars(units: int | str | bytes) -> Decimal:
    return Decimal(int(units)) * NANO


class SharedBudgets:
    def __init__(self, url: str, prefix: str = "garrison:metering:") -> None:
        import redis.asyncio as redis

        self._redis: Any = redis.from_url(url)
        self.prefix = prefix
        self.proc = f"{os.getpid()}-{os.urandom(4).hex()}"
        self.own = "r:" + self.proc
        self._procs = prefix + "proc:"
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._beat: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def key(self, budget_id: str, window_start: datetime) -> str:
        return f"{self.prefix}budget:{budget_id}:{int(window_start.timestamp())}"

    @staticmethod
    def ttl_ms(window_end: datetime | None, now: datetime) -> int:
        if window_end is None:
            return 0  # a "total" budget never expires
        return int(((window_end - now).total_seconds() + KEEP_AFTER_WINDOW_S) * 1000)

    async def start(self) -> None:
        await self._heartbeat_once()
        self._beat = asyncio.create_task(self._heartbeat(), name="metering-budget-heartbeat")

    async def stop(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        with contextlib.suppress(Exception):
            await self._redis.delete(self._procs + self.proc)
        await self._redis.aclose()

    async def _heartbeat_once(self) -> None:
        await self._redis.set(self._procs + self.proc, "1", ex=HEARTBEAT_TTL_S)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_TTL_S / 3)
            try:
                await self._heartbeat_once()
            except Exception:  # Redis away for a moment: the next beat retries
                log.warning("budget heartbeat to Redis failed", exc_info=True)

    async def reserve(self, items: list[tuple[str, int, int, int]], amount: int) -> tuple[int, Decimal, Decimal]:
        """items: (key, limit, seed spent, ttl ms) in nano-dollars. Returns (0, _, _) when
        reserved, else (1-based index of the spent budget, its spent, its reserved)."""
        args: list[Any] = [amount, self.own, self._procs]
        for _, limit, seed, ttl in items:
            args += [limit, seed, ttl]
        result = await self._reserve(keys=[k for k, *_ in items], args=args)
        if int(result[0]) == 0:
            return 0, Decimal(0), Decimal(0)
        return int(result[0]), dollars(result[1]), dollars(result[2])

    async def settle(self, reserved_keys: list[str], charged: list[tuple[str, int, int]], amount: int,
                     cost: int) -> None:
        """Give back `amount` on the reserved keys; charge `cost` to (key, seed, ttl) of `charged`."""
        args: list[Any] = [amount, self.own, cost]
        for _, seed, ttl in charged:
            args += [seed, ttl]
        await self._settle(keys=[*reserved_keys, *[k for k, *_ in charged]], args=args)

    def settle_soon(self, reserved_keys: list[str], charged: list[tuple[str, int, int]], amount: int,
                    cost: int) -> None:
        """From synchronous code on the request path: settle on a task (awaited at stop)."""
        task = asyncio.ensure_future(self._settle_logged(reserved_keys, charged, amount, cost))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle_logged(self, reserved_keys: list[str], charged: list[tuple[str, int, int]], amount: int,
                             cost: int) -> None:
        try:
            await self.settle(reserved_keys, charged, amount, cost)
        except Exception:
            log.exception("settling a budget reservation in Redis failed")

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def read(self, key: str) -> tuple[Decimal | None, Decimal]:
        """(spent or None when Redis has no such window yet, reserved by live processes)."""
        h = await self._redis.hgetall(key)
        spent = None
        reserved = 0
        for f, v in h.items():
            name = f.decode()
            if name == "spent":
                spent = dollars(v)
            elif name.startswith("r:") and (name == self.own or await self._redis.exists(self._procs + name[2:])):
                reserved += int(v)
        return spent, dollars(reserved)
