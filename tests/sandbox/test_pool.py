"""Warm pools: claimed once, never across tenants, never under another policy."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from garrison.core.principal import Principal
from garrison.sandbox.config import PoolConfig, SandboxSettings
from garrison.sandbox.schemas import CreateIn, LimitsIn
from garrison.sandbox.service import SandboxService
from tests.sandbox.helpers import make_backend

SCOPES = frozenset({"sandbox:create", "sandbox:read", "sandbox:exec", "sandbox:write", "sandbox:delete"})


async def ready(pool, n: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(1000):
        if len(pool.ready) >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"pool did not fill: {pool.describe()}")


@pytest.fixture
async def service(platform, tmp_path: Path):  # type: ignore[no-untyped-def]
    make_backend("bubblewrap", tmp_path)
    svc = SandboxService(platform, SandboxSettings(pools=[PoolConfig(backend="bubblewrap", size=2)], self_test=False),
                         data_dir=tmp_path / "pooled")
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


async def principal(platform, tenant: str) -> Principal:  # type: ignore[no-untyped-def]
    row = await platform.identity.tenant_by_name(tenant) or await platform.identity.create_tenant(tenant)
    return Principal(id=f"prn_{tenant}", tenant_id=row["id"], kind="service", scopes=SCOPES)


async def test_pooled_sandboxes_are_used_once_and_per_tenant(service: SandboxService, platform) -> None:  # type: ignore[no-untyped-def]
    pool = next(iter(service.pools.values()))
    await ready(pool, 2)
    warm_ids = {w.runtime.spec.sandbox_id for w in pool.ready}
    alice, bob = await principal(platform, "default"), await principal(platform, "bobco")
    a = await service.create(alice, CreateIn(backend="bubblewrap", envs={"WHO": "alice"}))
    b = await service.create(bob, CreateIn(backend="bubblewrap"))
    assert a.pooled and b.pooled and a.id != b.id and {a.id, b.id} == warm_ids
    out = await service.run_code(alice, a.id, "import os\nopen('mine.txt', 'w').write('secret')\nos.environ['WHO']")
    assert out["text"] == "'alice'"
    listing = await service.list_files(bob, b.id, "")
    assert listing == []  # bob's pooled sandbox never saw alice's work
    await service.kill(alice, a.id)
    await ready(pool, 2)
    assert a.id not in {w.runtime.spec.sandbox_id for w in pool.ready}  # never handed out again


async def test_other_limits_never_get_a_pooled_sandbox(service: SandboxService, platform) -> None:  # type: ignore[no-untyped-def]
    pool = next(iter(service.pools.values()))
    await ready(pool, 2)
    alice = await principal(platform, "default")
    other = await service.create(alice, CreateIn(backend="bubblewrap", limits=LimitsIn(memory_mib=128)))
    assert not other.pooled and other.runtime.spec.memory_bytes == 128 * 1024 * 1024
    got = await asyncio.to_thread(other.runtime.handle.cgroup.read_limits)
    assert got.memory_bytes == 128 * 1024 * 1024
    assert len(pool.ready) == 2


async def test_a_tampered_pool_entry_is_discarded_not_handed_out(service: SandboxService, platform) -> None:  # type: ignore[no-untyped-def]
    pool = next(iter(service.pools.values()))
    await ready(pool, 2)
    alice = await principal(platform, "default")
    small = await service.create(alice, CreateIn(backend="bubblewrap", limits=LimitsIn(pids=32)))
    bad_runtime = small.runtime
    service.sandboxes.pop(small.id)
    pool.ready.clear()
    from garrison.sandbox.pool import Warm

    pool.ready.append(Warm(bad_runtime, pool.shape, 0.0))  # claims to fit the pool's shape, but does not
    got = await service.create(alice, CreateIn(backend="bubblewrap"))
    assert got.runtime is not bad_runtime and got.runtime.spec.pids == 256
