"""The openai SDK retries garrison's retryable 429s (rate limits) and gets through; denies
are audited while each allowed call's record is its ledger entry."""

from __future__ import annotations

import asyncio

import openai

from garrison.llm import metrics as m


def _rejections(reason: str) -> float:
    return m.REJECTIONS.labels(reason)._value.get()  # type: ignore[no-any-return]


async def test_openai_sdk_retries_a_429_and_succeeds(add_model, fake, garrison_url, make_key):
    await add_model("m", fake)
    fake.config.ttft_ms = 1500  # each call holds its slot for 1.5 s
    # One request in flight per key: a second one meanwhile is 429 with Retry-After: 1.
    key = await make_key(["llm:invoke"], tenant="acme", attributes={"max_parallel": 1})
    before = _rejections("parallel")
    messages = [{"role": "user", "content": "hello"}]
    async with openai.AsyncOpenAI(base_url=garrison_url + "/v1", api_key=key, max_retries=5) as sdk:
        first = asyncio.create_task(sdk.chat.completions.create(model="m", messages=messages, max_tokens=2))
        while fake.stats.requests == 0:  # noqa: ASYNC110  (the first call holds the only slot)
            await asyncio.sleep(0.01)
        second = await sdk.chat.completions.with_raw_response.create(model="m", messages=messages, max_tokens=2)
        assert (await first).choices and second.parse().choices
    assert second.retries_taken >= 1  # the SDK saw garrison's 429 and retried after Retry-After
    assert _rejections("parallel") >= before + second.retries_taken
    assert fake.stats.requests == 2  # refused attempts never reached the upstream
    async with openai.AsyncOpenAI(base_url=garrison_url + "/v1", api_key=key, max_retries=0) as sdk:
        held = asyncio.create_task(sdk.chat.completions.create(model="m", messages=messages, max_tokens=2))
        while fake.stats.requests == 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        try:
            await sdk.chat.completions.create(model="m", messages=messages, max_tokens=2)
            raise AssertionError("a second parallel call got through")
        except openai.RateLimitError as exc:
            assert float(exc.response.headers["retry-after"]) >= 1
            assert exc.response.headers.get("x-should-retry") != "false"
        await held


async def test_denies_are_audited_and_allowed_calls_are_in_the_ledger(client, platform, fake, add_model,
                                                                      make_key):
    await add_model("m", fake)
    await add_model("other", fake)
    key = await make_key(["llm:invoke"], tenant="acme", attributes={"allowed_models": ["m"]})
    h = {"authorization": f"Bearer {key}"}
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert (await client.post("/v1/chat/completions", json={"model": "m", **body}, headers=h)).status_code == 200
    r = await client.post("/v1/chat/completions", json={"model": "other", **body}, headers=h)
    assert r.status_code == 403 and "may not use model 'other'" in r.json()["detail"]
    await platform.audit.flush()
    acme = (await platform.identity.tenant_by_name("acme"))["id"]
    entries = [e for e in await platform.audit.tail(200, acme) if e["action"] == "llm:invoke"]
    assert [(e["decision"], e["resource"]) for e in entries] == [("deny", "llm_model/other")]
    await platform.services["metering"].ledger.drain()
    ledger = await platform.services["metering"].entries(acme)
    assert [(e["model"], e["status"]) for e in ledger] == [("m", "ok")]
