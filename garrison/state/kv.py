"""Hot session state: a small key-value store for active sessions, with TTL and compare-and-set.

In process by default (a dict under a lock: well under a microsecond per call); in
Redis when ``GARRISON_REDIS_URL`` is set, so that several garrison processes share
it. Every entry carries a version that grows by one per write; ``compare_and_set``
writes only when the caller saw the current version (``None``: only if absent).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from garrison.state.checkpoint.errors import InvalidConfig, ValueTooLarge

MAX_VALUE_BYTES = 1024 * 1024
MAX_NAME_CHARS = 256


@dataclass(frozen=True)
class Entry:
    value: Any
    version: int


class SessionKV(Protocol):
    async def get(self, tenant: str, session: str, key: str) -> Entry | None: ...
    async def set(self, tenant: str, session: str, key: str, value: Any, *, ttl_s: float | None = None) -> int: ...
    async def compare_and_set(self, tenant: str, session: str, key: str, value: Any, *,
                              expected_version: int | None, ttl_s: float | None = None) -> int | None: ...
    async def delete(self, tenant: str, session: str, key: str) -> bool: ...
    async def close(self) -> None: ...


def _encode(value: Any) -> bytes:
    try:
        data = orjson.dumps(value)
    except TypeError as exc:
        raise InvalidConfig(f"session values must be JSON-serializable: {exc}") from exc
    if len(data) > MAX_VALUE_BYTES:
        raise ValueTooLarge(f"the value is {len(data)} bytes, over the limit of {MAX_VALUE_BYTES}")
    return data


def _check(tenant: str, session: str, key: str, ttl_s: float | None) -> None:
    for what, name in (("tenant", tenant), ("session", session), ("key", key)):
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
            raise InvalidConfig(f"{what} must be a string of 1 to {MAX_NAME_CHARS} characters")
    if ttl_s is not None and not ttl_s > 0:
        raise InvalidConfig("ttl_s must be a positive number of seconds")


class InProcessKV:
    """Entries in a dict; expiry checked on access and swept when the dict grows."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._data: dict[tuple[str, str, str], tuple[bytes, int, float | None]] = {}
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def _live(self, k: tuple[str, str, str], now: float) -> tuple[bytes, int, float | None] | None:
        item = self._data.get(k)
        if item is not None and item[2] is not None and item[2] <= now:
            del self._data[k]
            return None
        return item

    async def get(self, tenant: str, session: str, key: str) -> Entry | None:
        _check(tenant, session, key, None)
        with self._lock:
            item = self._live((tenant, session, key), time.monotonic())
        return Entry(orjson.loads(item[0]), item[1]) if item else None

    def _write(self, k: tuple[str, str, str], data: bytes, ttl_s: float | None,
               expected: int | None, check: bool) -> int | None:
        now = time.monotonic()
        with self._lock:
            item = self._live(k, now)
            current = item[1] if item else None
            if check and current != expected:
                return None
            if item is None and len(self._data) >= self.max_entries:
                self._sweep(now)
                if len(self._data) >= self.max_entries:
                    raise ValueTooLarge(f"the in-process session store is full ({self.max_entries} entries)")
            version = (current or 0) + 1
            self._data[k] = (data, version, now + ttl_s if ttl_s else None)
            return version

    def _sweep(self, now: float) -> None:
        for k in [k for k, v in self._data.items() if v[2] is not None and v[2] <= now]:
            del self._data[k]

    async def set(self, tenant: str, session: str, key: str, value: Any, *, ttl_s: float | None = None) -> int:
        _check(tenant, session, key, ttl_s)
        version = self._write((tenant, session, key), _encode(value), ttl_s, None, False)
        assert version is not None
        return version

    async def compare_and_set(self, tenant: str, session: str, key: str, value: Any, *,
                              expected_version: int | None, ttl_s: float | None = None) -> int | None:
        _check(tenant, session, key, ttl_s)
        return self._write((tenant, session, key), _encode(value), ttl_s, expected_version, True)

    async def delete(self, tenant: str, session: str, key: str) -> bool:
        _check(tenant, session, key, None)
        with self._lock:
            return self._data.pop((tenant, session, key), None) is not None

    async def close(self) -> None:
        self._data.clear()


# KEYS[1] entry hash; ARGV: value, ttl ms (0: none), check (1/0), expected version ('' = absent).
_WRITE_LUA = """
local cur = redis.call('HGET', KEYS[1], 'v')
if ARGV[3] == '1' then
  if ARGV[4] == '' then
    if cur then return -1 end
  elseif cur ~= ARGV[4] then
    return -1
  end
end
local ver = (tonumber(cur) or 0) + 1
redis.call('HSET', KEYS[1], 'd', ARGV[1], 'v', ver)
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('PERSIST', KEYS[1])
end
return ver
"""


class RedisKV:
    """Entries as Redis hashes (``d`` data, ``v`` version); writes are one Lua script, so atomic."""

    def __init__(self, url: str, *, prefix: str = "garrison:kv") -> None:
        import redis.asyncio as aredis

        self._redis = aredis.Redis.from_url(url)
        self._prefix = prefix
        self._script = self._redis.register_script(_WRITE_LUA)

    def _key(self, tenant: str, session: str, key: str) -> str:
        # Lengths first, so no choice of names can make two keys collide.
        return f"{self._prefix}:{len(tenant)}:{len(session)}:{tenant}:{session}:{key}"

    async def get(self, tenant: str, session: str, key: str) -> Entry | None:
        _check(tenant, session, key, None)
        data, version = await self._redis.hmget(self._key(tenant, session, key), ["d", "v"])
        if data is None or version is None:
            return None
        return Entry(orjson.loads(data), int(version))

    async def _write(self, k: str, data: bytes, ttl_s: float | None, check: bool, expected: int | None) -> int:
        ttl_ms = int(ttl_s * 1000) if ttl_s else 0
        if ttl_s and ttl_ms < 1:
            ttl_ms = 1
        args: list[bytes | int | str] = [data, ttl_ms, "1" if check else "0", "" if expected is None else str(expected)]
        return int(await self._script(keys=[k], args=args))

    async def set(self, tenant: str, session: str, key: str, value: Any, *, ttl_s: float | None = None) -> int:
        _check(tenant, session, key, ttl_s)
        return await self._write(self._key(tenant, session, key), _encode(value), ttl_s, False, None)

    async def compare_and_set(self, tenant: str, session: str, key: str, value: Any, *,
                              expected_version: int | None, ttl_s: float | None = None) -> int | None:
        _check(tenant, session, key, ttl_s)
        version = await self._write(self._key(tenant, session, key), _encode(value), ttl_s, True, expected_version)
        return None if version < 0 else version

    async def delete(self, tenant: str, session: str, key: str) -> bool:
        _check(tenant, session, key, None)
        return bool(await self._redis.delete(self._key(tenant, session, key)))

    async def close(self) -> None:
        await self._redis.aclose()


def session_kv(redis_url: str | None) -> SessionKV:
    """Redis when a URL is configured, else in process."""
    return RedisKV(redis_url) if redis_url else InProcessKV()
