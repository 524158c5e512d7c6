"""Retries, timeouts, circuit breaker and fallback against a misbehaving fake upstream.

These exercise the network path, not the store, so they run on SQLite only.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import pytest


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


@pytest.fixture
async def llm(platform):  # type: ignore[no-untyped-def]
    svc = platform.services["llm"]
    svc.settings.backoff_base_s = 0.001
    return svc


async def stop_monitor(llm) -> None:  # type: ignore[no-untyped-def]
    llm._monitor.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await llm._monitor
    for pool in llm.pools.values():
        for r in pool.replicas:
            r.healthy = True


def chat(model: str = "m", **extra) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def faults(upstream, **changes) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as c:
        r = await c.post(f"http://127.0.0.1:{upstream.port}/fake/faults", json=changes)
        r.raise_for_status()


async def test_5xx_before_first_byte_is_retried(client, llm, fake, add_model):
    await add_model("m", fake)
    await faults(fake, fail_status=503, fail_count=2)
    r = await client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 200, r.text
    assert fake.stats.requests == 3  # two failures, then the answer


async def test_retries_go_to_another_replica_first(client, llm, fake, fake2, add_model):
    await add_model("m", fake)
    await add_model("m", fake2)
    await faults(fake, fail_status=500)
    await faults(fake2, fail_status=0)
    for _ in range(4):
        r = await client.post("/v1/chat/completions", json=chat())
        assert r.status_code == 200
    assert fake2.stats.completed == 4


async def test_connection_refused_then_breaker_opens_and_fails_fast(client, llm, fake, add_model):
    await add_model("m", fake)
    await stop_monitor(llm)  # its health checks would race the breaker
    await fake.stop()
    llm.settings.retries = 1
    replica = llm.pools["m"].replicas[0]
    statuses = []
    for _ in range(3):  # 2 attempts each: the breaker opens at the fifth failure
        r = await client.post("/v1/chat/completions", json=chat())
        statuses.append(r.status_code)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers["retry-after"] == "1"
    assert statuses == [503] * 3
    assert replica.breaker.state == "open"
    r = await client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 503 and "circuit open" in r.json()["detail"]
    models = (await client.get("/api/llm/models")).json()
    assert models[0]["replicas"][0]["breaker"] == "open"


async def test_health_check_marks_a_dead_replica(client, llm, fake, add_model):
    await add_model("m", fake)
    await stop_monitor(llm)
    await llm.monitor_once(health=True)
    assert llm.pools["m"].replicas[0].healthy
    await fake.stop()
    await llm.monitor_once(health=True)
    assert not llm.pools["m"].replicas[0].healthy
    r = await client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 503 and "healthy" in r.json()["detail"]


async def test_breaker_half_open_trial_closes_it(client, llm, fake, add_model):
    await add_model("m", fake)
    replica = llm.pools["m"].replicas[0]
    replica.breaker.cooldown_s = 0.0
    for _ in range(replica.breaker.failures_to_open):
        replica.breaker.failure(0.0)
    assert replica.breaker.opened_at is not None
    r = await client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 200
    assert replica.breaker.state == "closed"


async def test_read_timeout_is_retried_then_fails(client, llm, fake, add_model):
    await add_model("m", fake)
    await faults(fake, ttft_ms=400)
    llm.settings.read_timeout_s = 0.05
    llm.settings.retries = 1
    r = await client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 503
    assert "timed out" in r.json()["detail"]
    assert fake.stats.requests == 2


async def test_fallback_model_answers_when_primary_fails(client, llm, fake, fake2, add_model):
    await add_model("backup", fake2)
    await add_model("m", fake, fallbacks=["backup"])
    await faults(fake, fail_status=502)
    r = await client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 200
    assert r.json()["model"] == "backup"
    assert fake2.stats.completed == 1
    await platform_drain(llm)


async def platform_drain(llm) -> None:  # type: ignore[no-untyped-def]
    metering = llm.gateway.metering
    await metering.ledger.drain()


async def test_upstream_4xx_is_passed_to_the_client(client, llm, fake, add_model):
    await add_model("m", fake)
    await faults(fake, fail_status=400)
    r = await client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "injected failure"
    assert fake.stats.requests == 1  # a client error is not retried


async def test_vllm_saturation_from_scraped_metrics_queues_then_times_out(client, llm, fake, add_model):
    await add_model("m", fake, kind="vllm")
    await faults(fake, waiting=9)
    await llm.monitor_once()
    replica = llm.pools["m"].replicas[0]
    assert replica.waiting == 9
    llm.scheduler.queue_wait_s = 0.2
    r = await client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 429
    assert r.json()["reason"] == "queue_timeout"
    assert int(r.headers["retry-after-ms"]) >= 1
    # Sheddable work is refused at once under saturation.
    r = await client.post("/v1/chat/completions", json=chat(), headers={"x-garrison-priority": "sheddable"})
    assert r.status_code == 429 and r.json()["reason"] == "shed"
    await faults(fake, waiting=0)
    await llm.monitor_once()
    r = await client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 200


async def test_priority_forwarded_only_to_priority_scheduling_replicas(client, llm, fake, fake2, add_model):
    await add_model("plain", fake, kind="vllm")
    await add_model("prio", fake2, kind="vllm", priority_scheduling=True)
    await faults(fake2, priority_scheduling=True)
    body = chat("plain", priority=-5)
    r = await client.post("/v1/chat/completions", json=body, headers={"x-garrison-priority": "batch"})
    assert r.status_code == 200
    assert "priority" not in fake.stats.last_body  # the client's own value never goes through
    r = await client.post("/v1/chat/completions", json=chat("prio"), headers={"x-garrison-priority": "batch"})
    assert r.status_code == 200
    assert fake2.stats.priorities == [1]
