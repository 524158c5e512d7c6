"""The verified-key cache: one database load per key at a time, refresh ahead of expiry,
and revocation by another process still seen once an entry is older than ``CACHE_TTL_S``."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import event, update

from garrison.core.clock import utcnow
from garrison.core.errors import Unauthorized
from garrison.identity import keys as keyfmt
from garrison.identity.service import CACHE_TTL_S, REFRESH_AFTER_S
from garrison.identity.tables import api_keys


def _count_key_reads(platform) -> list[str]:  # type: ignore[no-untyped-def]
    reads: list[str] = []

    def before(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and api_keys.name in statement:
            reads.append(statement)

    event.listen(platform.db.engine.sync_engine, "before_cursor_execute", before)
    return reads


def _age(platform, key: str, seconds: float) -> None:  # type: ignore[no-untyped-def]
    key_id, _ = keyfmt.parse_key(key)  # type: ignore[misc]
    platform.identity._cache[key_id].loaded = time.monotonic() - seconds


async def test_expired_entry_is_loaded_once_for_concurrent_requests(platform, make_key):
    key = await make_key(["registry:read"])
    await platform.identity.authenticate(key)
    _age(platform, key, CACHE_TTL_S + 1)
    reads = _count_key_reads(platform)
    principals = await asyncio.gather(*(platform.identity.authenticate(key) for _ in range(50)))
    assert len({p.id for p in principals}) == 1
    assert len(reads) == 1


async def test_entry_past_half_its_ttl_is_served_and_reloaded_in_background(platform, make_key):
    key = await make_key(["registry:read"])
    await platform.identity.authenticate(key)
    _age(platform, key, REFRESH_AFTER_S + 0.1)
    reads = _count_key_reads(platform)
    await asyncio.gather(*(platform.identity.authenticate(key) for _ in range(20)))
    await asyncio.gather(*platform.identity._loading.values())
    assert len(reads) == 1
    key_id, _ = keyfmt.parse_key(key)  # type: ignore[misc]
    assert time.monotonic() - platform.identity._cache[key_id].loaded < REFRESH_AFTER_S


async def test_revocation_by_another_process_is_seen_once_the_entry_expires(platform, make_key):
    key = await make_key(["registry:read"])
    await platform.identity.authenticate(key)
    key_id, _ = keyfmt.parse_key(key)  # type: ignore[misc]
    async with platform.db.engine.begin() as conn:  # as another replica's revoke would
        await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=utcnow()))
    _age(platform, key, CACHE_TTL_S + 0.01)
    with pytest.raises(Unauthorized, match="revoked"):
        await platform.identity.authenticate(key)


async def test_load_under_way_when_revoked_here_does_not_restore_the_entry(platform, make_key):
    key = await make_key(["registry:read"])
    await platform.identity.authenticate(key)
    key_id, _ = keyfmt.parse_key(key)  # type: ignore[misc]
    _age(platform, key, REFRESH_AFTER_S + 0.1)
    await platform.identity.authenticate(key)  # starts a background reload
    loading = platform.identity._loading[key_id]
    await platform.identity.revoke_key(key_id)
    await asyncio.gather(loading)
    with pytest.raises(Unauthorized, match="revoked"):
        await platform.identity.authenticate(key)
