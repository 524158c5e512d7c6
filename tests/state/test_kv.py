"""Hot session state: TTL and compare-and-set, in process and on the real Redis server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from garrison.state.checkpoint.errors import InvalidConfig, ValueTooLarge
from garrison.state.kv import InProcessKV, RedisKV, SessionKV


@pytest.fixture(params=["inprocess", "redis"])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[SessionKV]:
    if request.param == "inprocess":
        store: SessionKV = InProcessKV()
    else:
        url = request.getfixturevalue("redis_url")
        store = RedisKV(url, prefix=f"garrison-test:{uuid.uuid4().hex}")
    yield store
    await store.close()


async def test_set_get_versions_and_delete(kv: SessionKV) -> None:
    assert await kv.get("t1", "s1", "cart") is None
    assert await kv.set("t1", "s1", "cart", {"items": [1, 2]}) == 1
    assert await kv.set("t1", "s1", "cart", {"items": [1, 2, 3]}) == 2
    got = await kv.get("t1", "s1", "cart")
    assert got is not None and got.value == {"items": [1, 2, 3]} and got.version == 2
    assert await kv.get("t2", "s1", "cart") is None  # tenants are separate
    assert await kv.get("t1", "s2", "cart") is None
    assert await kv.delete("t1", "s1", "cart") is True
    assert await kv.delete("t1", "s1", "cart") is False
    assert await kv.get("t1", "s1", "cart") is None


async def test_compare_and_set(kv: SessionKV) -> None:
    assert await kv.compare_and_set("t", "s", "step", 1, expected_version=None) == 1
    assert await kv.compare_and_set("t", "s", "step", 99, expected_version=None) is None  # exists already
    assert await kv.compare_and_set("t", "s", "step", 2, expected_version=5) is None
    assert await kv.compare_and_set("t", "s", "step", 2, expected_version=1) == 2
    got = await kv.get("t", "s", "step")
    assert got is not None and (got.value, got.version) == (2, 2)


async def test_compare_and_set_lets_exactly_one_concurrent_writer_win(kv: SessionKV) -> None:
    await kv.set("t", "s", "lock", "free")
    results = await asyncio.gather(*[kv.compare_and_set("t", "s", "lock", f"w{i}", expected_version=1)
                                     for i in range(20)])
    assert sorted(r for r in results if r is not None) == [2]
    assert results.count(None) == 19


async def test_ttl_expires_entries(kv: SessionKV) -> None:
    await kv.set("t", "s", "short", "x", ttl_s=1.5)
    await kv.set("t", "s", "long", "y")
    assert (await kv.get("t", "s", "short")) is not None
    await asyncio.sleep(1.8)
    assert await kv.get("t", "s", "short") is None
    assert await kv.get("t", "s", "long") is not None
    # A write without TTL makes an expiring entry permanent again.
    await kv.set("t", "s", "k", 1, ttl_s=0.2)
    await kv.set("t", "s", "k", 2)
    await asyncio.sleep(0.3)
    assert (await kv.get("t", "s", "k")) is not None


async def test_bad_input(kv: SessionKV) -> None:
    with pytest.raises(InvalidConfig):
        await kv.set("", "s", "k", 1)
    with pytest.raises(InvalidConfig):
        await kv.set("t", "s", "k" * 300, 1)
    with pytest.raises(InvalidConfig, match="ttl_s"):
        await kv.set("t", "s", "k", 1, ttl_s=0)
    with pytest.raises(InvalidConfig, match="JSON"):
        await kv.set("t", "s", "k", object())
    with pytest.raises(ValueTooLarge):
        await kv.set("t", "s", "k", "x" * (2 * 1024 * 1024))
    assert await kv.get("t", "s", "k") is None
