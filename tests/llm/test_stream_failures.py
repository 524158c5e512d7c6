"""Streams that break: the upstream mid-stream, or the client going away."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import openai


def chat(**extra):  # type: ignore[no-untyped-def]
    return {"model": "m", "messages": [{"role": "user", "content": "tell me a long story"}], "stream": True,
            **extra}


async def test_upstream_disconnect_mid_stream(client, platform, fake, add_model, garrison_url, admin_key):
    await add_model("m", fake)
    fake.config.disconnect_after_chunks = 3
    async with openai.AsyncOpenAI(base_url=garrison_url + "/v1", api_key=admin_key, max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(model="m", messages=chat()["messages"], stream=True)
        got = []
        try:
            async for chunk in stream:
                got.append(chunk)
            raise AssertionError("the stream should end with an error event")
        except openai.APIError as exc:
            assert "mid-stream" in str(exc)
    assert 1 <= len(got) <= 4
    metering = platform.services["metering"]
    await metering.ledger.drain()
    entries = await metering.entries(None)
    assert entries[0]["status"] == "error" and entries[0]["output_tokens"] >= 1
    replica = platform.services["llm"].pools["m"].replicas[0]
    assert replica.in_flight == 0


async def test_client_disconnect_cancels_upstream_and_settles(client, platform, fake, add_model, garrison_url,
                                                              make_key):
    await add_model("m", fake)
    await client.post("/api/metering/prices", json={"model": "m", "input_per_mtok": "1", "output_per_mtok": "1"})
    fake.config.tokens_per_s = 20  # 8 tokens over ~0.4 s
    key = await make_key(["llm:invoke"], tenant="acme", attributes={"max_parallel": 1})
    acme = (await platform.identity.tenant_by_name("acme"))["id"]
    metering = platform.services["metering"]
    budget = await metering.create_budget(acme, "tenant", acme, "day", Decimal(100))
    async with httpx.AsyncClient(base_url=garrison_url, headers={"authorization": f"Bearer {key}"}) as c:
        async with c.stream("POST", "/v1/chat/completions", json=chat()) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if line.startswith("data: {"):
                    break  # first token seen: hang up
    for _ in range(200):
        if fake.stats.cancelled:
            break
        await asyncio.sleep(0.01)
    assert fake.stats.cancelled == 1 and fake.stats.completed == 0
    replica = platform.services["llm"].pools["m"].replicas[0]
    for _ in range(100):
        if replica.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert replica.in_flight == 0
    await metering.ledger.drain()
    entry = (await metering.entries(acme))[0]
    assert entry["status"] == "cancelled"
    assert budget.reserved == 0 and budget.spent > 0
    # The parallel slot of the key is free again.
    async with httpx.AsyncClient(base_url=garrison_url, headers={"authorization": f"Bearer {key}"}) as c:
        r = await c.post("/v1/chat/completions", json={**chat(), "stream": False})
        assert r.status_code == 200
