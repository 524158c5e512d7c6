"""Every call lands in the ledger, priced; budgets refuse with 429 x-should-retry: false."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from decimal import Decimal

import openai
from typer.testing import CliRunner

from garrison.cli.main import app as cli
from garrison.core.ids import new_id
from garrison.metering.ledger import LedgerWriter, UsageEntry


def chat(model: str = "m", **extra):  # type: ignore[no-untyped-def]
    return {"model": model, "messages": [{"role": "user", "content": "count my tokens please"}], **extra}


async def test_calls_are_recorded_priced_and_reported(client, platform, fake, add_model, make_key):
    metering = platform.services["metering"]
    await add_model("m", fake)
    r = await client.post("/api/metering/prices", json={"model": "m", "input_per_mtok": "1000000",
                                                         "output_per_mtok": "2000000"})
    assert r.status_code == 201, r.text
    prices = (await client.get("/api/metering/prices")).json()
    assert [(p["model"], p["output_per_mtok"]) for p in prices] == [("m", "2000000")]
    bad = await client.post("/api/metering/prices", json={"model": "m", "input_per_mtok": "-1",
                                                          "output_per_mtok": "1"})
    assert bad.status_code == 422
    key = await make_key(["llm:invoke", "usage:read"], tenant="acme", attributes={"agent": "planner"})
    h = {"authorization": f"Bearer {key}"}
    for _ in range(2):
        assert (await client.post("/v1/chat/completions", json=chat(max_tokens=3), headers=h)).status_code == 200
    await add_model("unpriced-model", fake)
    assert (await client.post("/v1/chat/completions", json=chat("unpriced-model"), headers=h)).status_code == 200
    await metering.ledger.drain()
    rows = (await client.get("/api/usage/entries", headers=h)).json()["entries"]
    assert len(rows) == 3
    priced = [e for e in rows if e["model"] == "m"]
    # fake tokenizer: 4 words + 3 per message = 7 in; 3 out -> 7 * $1 + 3 * $2
    assert {e["input_tokens"] for e in priced} == {7} and {e["output_tokens"] for e in priced} == {3}
    assert {Decimal(e["cost_usd"]) for e in priced} == {Decimal(13)}
    assert all(e["agent"] == "planner" and e["status"] == "ok" and e["trace_id"] for e in rows)
    unpriced = [e for e in rows if e["model"] == "unpriced-model"][0]
    assert unpriced["cost_usd"] is None
    report = (await client.get("/api/usage", params={"by": "model"}, headers=h)).json()["rows"]
    by_model = {r["model"]: r for r in report}
    assert by_model["m"]["requests"] == 2 and Decimal(by_model["m"]["cost_usd"]) == 26
    assert by_model["unpriced-model"]["unpriced_requests"] == 1
    # The admin's own tenant has no usage; the operator admin can see acme's.
    assert (await client.get("/api/usage")).json()["rows"] == []
    assert len((await client.get("/api/usage", params={"tenant": "*", "by": "tenant"})).json()["rows"]) == 1
    other = await make_key(["usage:read"], tenant="acme")
    r = await client.get("/api/usage", params={"tenant": "*"}, headers={"authorization": f"Bearer {other}"})
    assert r.status_code == 403


async def test_budget_exhausted_is_429_that_the_sdk_does_not_retry(
    client, platform, fake, add_model, make_key, garrison_url
):
    await add_model("m", fake)
    await client.post("/api/metering/prices", json={"model": "m", "input_per_mtok": "1000000",
                                                    "output_per_mtok": "1000000"})
    key = await make_key(["llm:invoke"], tenant="acme")
    acme = (await platform.identity.tenant_by_name("acme"))["id"]
    r = await client.post("/api/metering/budgets", json={"scope": "tenant", "window": "day", "limit_usd": "35",
                                                         "tenant_id": acme})
    assert r.status_code == 201, r.text
    budget = r.json()
    async with openai.AsyncOpenAI(base_url=garrison_url + "/v1", api_key=key, max_retries=3) as sdk:
        # Each call costs 7 + 3 tokens at $1 (10 dollars) and reserves its estimate (13 dollars):
        # after three calls 30 are spent, and 30 + 13 passes the limit of 35.
        for _ in range(3):
            await sdk.chat.completions.create(model="m", messages=chat()["messages"], max_tokens=3)
        before = fake.stats.requests
        try:
            await sdk.chat.completions.create(model="m", messages=chat()["messages"], max_tokens=3)
            raise AssertionError("the budget should have refused")
        except openai.RateLimitError as exc:
            assert exc.response.headers["x-should-retry"] == "false"
            assert "budget" in exc.message
        assert fake.stats.requests == before  # refused before the upstream, and not retried
    listed = (await client.get("/api/metering/budgets")).json()
    mine = [b for b in listed if b["id"] == budget["id"]][0]
    assert Decimal(mine["spent_usd"]) == 30 and Decimal(mine["reserved_usd"]) == 0


async def test_concurrent_calls_cannot_overspend(client, platform, fake, add_model, make_key):
    await add_model("m", fake)
    await client.post("/api/metering/prices", json={"model": "m", "input_per_mtok": "1000000",
                                                    "output_per_mtok": "1000000"})
    key = await make_key(["llm:invoke"], tenant="acme")
    acme = (await platform.identity.tenant_by_name("acme"))["id"]
    await client.post("/api/metering/budgets", json={"scope": "tenant", "window": "total", "limit_usd": "55",
                                                     "tenant_id": acme})
    h = {"authorization": f"Bearer {key}"}
    results = await asyncio.gather(
        *[client.post("/v1/chat/completions", json=chat(max_tokens=3), headers=h) for _ in range(20)]
    )
    ok = sum(r.status_code == 200 for r in results)
    # Reservations of 13 each: at least four fit at once; real costs of 10 allow at most five.
    assert 4 <= ok <= 5 and sum(r.status_code == 429 for r in results) == 20 - ok
    await platform.services["metering"].ledger.drain()
    total = (await client.get("/api/usage", params={"tenant": acme, "by": "tenant"})).json()["rows"][0]
    assert Decimal(total["cost_usd"]) <= 55


async def test_external_usage_is_deduplicated_by_span(client, platform):
    metering = platform.services["metering"]
    tenant = platform.identity.default_tenant_id
    for _ in range(3):
        await metering.record_external_usage(
            tenant, model="gpt-4o", provider="openai", input_tokens=1000, output_tokens=100,
            ts=datetime(2026, 3, 1, tzinfo=UTC), trace_id="a" * 32, span_id="b" * 16,
        )
    await metering.ledger.drain()
    rows = (await client.get("/api/usage", params={"by": "model"})).json()["rows"]
    assert rows == [{"model": "gpt-4o", "requests": 1, "input_tokens": 1000, "output_tokens": 100,
                     "cached_tokens": 0, "reasoning_tokens": 0, "cost_usd": "0.003500",
                     "unpriced_requests": 0}]


async def test_journal_survives_a_crash_before_the_flush(platform, tmp_path):
    """Entries written to the journal but never flushed (kill -9) are committed on the next start."""
    journal = tmp_path / "journal"
    journal.mkdir()
    dead = LedgerWriter(platform.db, journal)
    dead._journal = dead._open_journal()  # started, but its flusher never ran
    tenant = platform.identity.default_tenant_id
    ids = [new_id("use") for _ in range(5)]
    for i in ids:
        dead.append(UsageEntry(id=i, ts=datetime.now(UTC), tenant_id=tenant, model="crash", input_tokens=1))
    os.write(dead._journal.fd, b'{"torn": ')  # what a kill in the middle of a write leaves
    fresh = LedgerWriter(platform.db, journal)
    assert await fresh.replay() == 5
    assert await fresh.replay() == 0
    assert not list(journal.glob("*.jsonl"))
    rows = await platform.services["metering"].report(by="model", tenant_id=tenant)
    assert rows[0]["model"] == "crash" and rows[0]["requests"] == 5


async def test_usage_and_budget_cli(client, platform, fake, add_model, garrison_url, admin_key):
    await add_model("m", fake)
    assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
    await platform.services["metering"].ledger.drain()
    runner = CliRunner()
    base = ["--url", garrison_url, "--key", admin_key]
    out = await asyncio.to_thread(runner.invoke, cli, ["usage", "--by", "model", "--format", "json", *base])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[0]["model"] == "m"
    out = await asyncio.to_thread(runner.invoke, cli, ["usage", "--by", "day", "--format", "csv", *base])
    assert out.exit_code == 0 and out.output.splitlines()[0].startswith("day,requests")
    out = await asyncio.to_thread(runner.invoke, cli, ["budgets", "create", "tenant", "--limit-usd", "5", *base])
    assert out.exit_code == 0, out.output
    out = await asyncio.to_thread(runner.invoke, cli, ["budgets", "list", "--format", "json", *base])
    assert json.loads(out.output)[0]["limit_usd"].startswith("5")
    out = await asyncio.to_thread(runner.invoke, cli, ["usage", "--by", "nonsense", *base])
    assert out.exit_code != 0
