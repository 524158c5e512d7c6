"""Budgets in Redis: garrison processes sharing one Redis cannot overspend together."""

from __future__ import annotations

import asyncio
import json
import sys
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from garrison.core.clock import utcnow
from garrison.core.errors import ServiceUnavailable, TooManyRequests
from garrison.core.ids import new_id
from garrison.metering.ledger import UsageEntry
from garrison.metering.service import MeteringService

# A custom price of $1 per token: a call of 3 prompt tokens and max_tokens 2 reserves $5.
CALL = {"model": "m-shared", "provider": None, "input_tokens": 3, "max_output_tokens": 2}


async def _services(platform, redis_url, n: int, limit: str) -> tuple[list[MeteringService], str]:  # type: ignore[no-untyped-def]
    first = MeteringService(platform.db, None, redis_url=redis_url)
    await first.start()
    await first.set_price("m-shared", input_per_mtok=Decimal(1_000_000), output_per_mtok=Decimal(1_000_000))
    tenant = new_id("ten")
    budget = await first.create_budget(tenant, "tenant", tenant, "day", Decimal(limit))
    services = [first]
    for _ in range(n - 1):  # the others start after the budget exists, as another process would
        s = MeteringService(platform.db, None, redis_url=redis_url)
        await s.start()
        services.append(s)
    assert all(budget.id in s.budgets.by_id for s in services)
    return services, tenant


def _entry(tenant: str, inp: int, out: int) -> UsageEntry:
    return UsageEntry(id=new_id("use"), ts=utcnow(), tenant_id=tenant, model="m-shared",
                      input_tokens=inp, output_tokens=out)


async def test_two_services_share_reservations_and_spend(platform, redis_url):
    (a, b), tenant = await _services(platform, redis_url, 2, "12")
    try:
        held_a = await a.reserve(tenant, **CALL)
        held_b = await b.reserve(tenant, **CALL)
        # Each process alone would still have room for $5 more ($5 of $12 reserved locally).
        for s in (a, b):
            with pytest.raises(TooManyRequests) as refused:
                await s.reserve(tenant, **CALL)
            assert refused.value.headers == {"x-should-retry": "false"}
            assert "spent $0.0000, reserved $10.0000" in refused.value.detail
        # A's call really cost $1: its $5 come back and $1 is spent, for both processes.
        a.record(_entry(tenant, 1, 0), held_a)
        await a.shared.drain()
        again = await b.reserve(tenant, **CALL)  # 1 spent + 5 + 5 reserved <= 12
        (budget,) = await a.list_budgets(tenant)
        assert (budget.spent, budget.reserved) == (Decimal(1), Decimal(10))
        with pytest.raises(TooManyRequests):
            await a.reserve(tenant, **CALL)
        b.release(held_b)
        b.release(again)
        await b.shared.drain()
        (budget,) = await b.list_budgets(tenant)
        assert (budget.spent, budget.reserved) == (Decimal(1), Decimal(0))
    finally:
        for s in (a, b):
            await s.stop()


async def test_a_dead_process_reservations_stop_counting(platform, redis_url):
    (a, dead), tenant = await _services(platform, redis_url, 2, "10")
    try:
        await dead.reserve(tenant, **CALL)
        await dead.reserve(tenant, **CALL)
        with pytest.raises(TooManyRequests):
            await a.reserve(tenant, **CALL)
        # kill -9: no settle, no goodbye; its heartbeat key runs out.
        assert dead.shared is not None and dead.shared._beat is not None
        dead.shared._beat.cancel()
        r = aioredis.from_url(redis_url)
        await r.delete(dead.shared._procs + dead.shared.proc)
        await r.aclose()
        await a.reserve(tenant, **CALL)
    finally:
        await a.stop()


async def test_redis_unreachable_fails_closed(platform):
    s = MeteringService(platform.db, None, redis_url="redis://127.0.0.1:1/0")
    assert s.shared is not None
    s.shared.start = _noop  # type: ignore[method-assign]  # no heartbeat to a Redis that is not there
    await s.start()
    await s.set_price("m-shared", input_per_mtok=Decimal(1), output_per_mtok=Decimal(1))
    tenant = new_id("ten")
    await s.create_budget(tenant, "tenant", tenant, "day", Decimal(100))
    with pytest.raises(ServiceUnavailable, match="Redis"):
        await s.reserve(tenant, **CALL)
    await s.ledger.stop()
    await s.resources.stop()


async def _noop() -> None:
    return None


_WORKER = """
import asyncio, json, sys
from decimal import Decimal
from garrison.core.errors import TooManyRequests
from garrison.db import Database
from garrison.metering.service import MeteringService

async def main(url, redis_url, tenant, n):
    db = Database(url)
    s = MeteringService(db, None, redis_url=redis_url)
    await s.start()
    got = 0
    for _ in range(n):
        try:
            await s.reserve(tenant, model="m-shared", provider=None, input_tokens=3, max_output_tokens=2)
            got += 1
        except TooManyRequests:
            pass
    print(json.dumps({"reserved": got}), flush=True)
    sys.stdin.readline()  # hold the reservations (and stay alive) until the other process is done too
    await s.stop()
    await db.dispose()

asyncio.run(main(*sys.argv[1:4], int(sys.argv[4])))
"""


async def test_two_processes_cannot_overspend_together(platform, redis_url, settings):
    (a,), tenant = await _services(platform, redis_url, 1, "100")  # room for 20 reservations of $5
    await a.stop()
    url = settings.resolved_database_url
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", _WORKER, url, redis_url, tenant, "15",
                                             stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE)
        for _ in range(2)
    ]
    lines = [await asyncio.wait_for(p.stdout.readline(), 120) for p in procs]  # type: ignore[union-attr]
    outs = [await p.communicate(b"done\n") for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1].decode()[-2000:] for o in outs]
    got = [json.loads(line)["reserved"] for line in lines]
    assert sum(got) == 20, got  # 30 tries, and exactly the 20 that fit in $100 got through
