"""Model calls inside a durable run's step: a step retried after it lost its worker does not call the
model again; the call it had completed is answered from garrison's journal and counted once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy import func, select

from garrison.runtime.tables import calls
from runtime.helpers import deploy


async def _usage(client) -> dict:  # type: ignore[no-untyped-def]
    r = await client.get("/api/usage", params={"by": "agent"})
    assert r.status_code == 200, r.text
    return {row["agent"]: row for row in r.json()["rows"] if row.get("agent")}


async def test_a_retried_step_gets_its_completed_model_call_from_the_journal(client, platform, live_url,
                                                                            monkeypatch, tmp_path):
    from garrison.llm.fake_upstream import FakeConfig, FakeUpstream

    marker = tmp_path / "lost"
    async with FakeUpstream(FakeConfig(completion_tokens=8)) as upstream:
        r = await client.post("/api/llm/models", json={"model": "fake-model", "base_url": upstream.base_url})
        assert r.status_code == 201, r.text
        monkeypatch.setenv("AGENT_LLM_BASE_URL", live_url + "/v1")
        monkeypatch.setenv("AGENT_LLM_KEY", "not-used: the run's own token is")
        monkeypatch.setenv("JOURNAL_MARKER", str(marker))
        await deploy(client, "journaled")
        tid = (await client.post("/threads", json={})).json()["thread_id"]
        r = await client.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "journaled",
                                                                 "input": {"question": "What is garrison?"}})
        assert r.status_code == 200, r.text
        final = r.json()
        assert marker.exists()  # the step lost its worker once after the model had answered, and was retried
        assert final["draft"] and final["replayed"] is True  # the retry's call was answered from the journal
        assert upstream.stats.completed == 1  # the model was called once
        runs = (await client.get(f"/threads/{tid}/runs")).json()
        assert [run["status"] for run in runs] == ["success"]
        for _ in range(200):  # the ledger is written off the request path
            usage = await _usage(client)
            if "journaled" in usage:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        usage = await _usage(client)
        assert usage["journaled"]["requests"] == 1 and usage["journaled"]["output_tokens"] == 8
        # The run has ended: its steps are not retried any more, so its journal is gone.
        async with platform.db.engine.connect() as conn:
            left = (await conn.execute(select(func.count()).select_from(calls))).scalar()
        assert left == 0


async def test_the_same_request_from_another_run_is_a_new_call(client, platform, live_url, monkeypatch, tmp_path):
    # Only a retry of the same step of the same run is answered from the journal.
    from garrison.llm.fake_upstream import FakeConfig, FakeUpstream

    marker = tmp_path / "lost"
    marker.write_text("already lost: no failure this time")
    async with FakeUpstream(FakeConfig(completion_tokens=3)) as upstream:
        r = await client.post("/api/llm/models", json={"model": "fake-model", "base_url": upstream.base_url})
        assert r.status_code == 201, r.text
        monkeypatch.setenv("AGENT_LLM_BASE_URL", live_url + "/v1")
        monkeypatch.setenv("AGENT_LLM_KEY", "not-used: the run's own token is")
        monkeypatch.setenv("JOURNAL_MARKER", str(marker))
        await deploy(client, "journaled")
        for _ in range(2):  # two runs, one identical call each: both go upstream
            r = await client.post("/runs/wait", json={"assistant_id": "journaled", "input": {"question": "same"}})
            assert r.status_code == 200 and r.json()["replayed"] is False, r.text
        assert upstream.stats.completed == 2


async def test_a_retried_step_gets_its_completed_tool_call_from_the_journal(client, platform, live_url,
                                                                           monkeypatch, tmp_path):
    # The fixture MCP server on a real socket, behind a layer that counts the tools/call requests it gets.
    from tests.tools.servers import failing_upstream

    marker = tmp_path / "lost"
    with failing_upstream({}) as (url, upstream_calls):
        r = await client.post("/api/tools/upstreams", json={"name": "fixture", "url": url})
        assert r.status_code == 201, r.text
        r = await client.post("/api/tools/virtual-servers", json={
            "name": "agents", "tools": [{"upstream": "fixture", "tool": "*"}]})
        assert r.status_code in (200, 201), r.text
        monkeypatch.setenv("AGENT_MCP_URL", live_url + "/mcp/agents")
        monkeypatch.setenv("JOURNAL_MARKER", str(marker))
        await deploy(client, "journaled-tool")
        tid = (await client.post("/threads", json={})).json()["thread_id"]
        r = await client.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "journaled-tool", "input": {"a": 41}})
        assert r.status_code == 200, r.text
        final = r.json()
        assert marker.exists()  # the step lost its worker once after the tool had answered, and was retried
        assert upstream_calls == {"add": 1}  # the upstream MCP server ran the tool once
        assert final["total"] == "42" and final["replayed"] is True  # the retry's call came from the journal
        assert [run["status"] for run in (await client.get(f"/threads/{tid}/runs")).json()] == ["success"]
    # One call audited as made, one as replayed (not a second call).
    await platform.audit.flush()
    r = await client.get("/api/audit", params={"limit": 500})
    audited = [e for e in r.json() if e["action"] == "tools:call" and e["resource"] == "tool/agents/fixture__add"]
    assert sorted(e["reason"] for e in audited) == ["ok", "replayed"], audited
    async with platform.db.engine.connect() as conn:
        left = (await conn.execute(select(func.count()).select_from(calls))).scalar()
    assert left == 0  # the run has ended: its journal is gone


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])  # the SDK's session path and garrison's fast path
async def test_the_tools_gateway_replays_a_step_call_only_to_its_caller(platform, live_url, admin_key, make_key,
                                                                       client, mode):
    from garrison.runtime.calls import CallJournal
    from tests.tools.servers import failing_upstream

    async def call(key: str, attempt: str, a: int) -> Any:  # one execution of step 3 of run_x
        headers = {"Authorization": f"Bearer {key}", "x-garrison-run": "run_x", "x-garrison-step": f"3/{attempt}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with Client(streamable_http_client(live_url + "/mcp/agents", http_client=http), mode=mode) as mcp:
                return await mcp.call_tool("fixture__add", {"a": a, "b": 1})

    platform.services["tools"].call_journal = CallJournal(platform.db)
    with failing_upstream({}) as (url, upstream_calls):
        r = await client.post("/api/tools/upstreams", json={"name": "fixture", "url": url})
        assert r.status_code == 201, r.text
        r = await client.post("/api/tools/virtual-servers", json={
            "name": "agents", "tools": [{"upstream": "fixture", "tool": "*"}]})
        assert r.status_code == 201, r.text
        first = await call(admin_key, "first", 1)
        assert not (first.meta or {}).get("garrison/replayed") and upstream_calls == {"add": 1}
        again = await call(admin_key, "retry", 1)  # the step retried: same request, another attempt
        assert again.meta["garrison/replayed"] is True and again.content == first.content
        assert upstream_calls == {"add": 1}
        assert not ((await call(admin_key, "retry", 2)).meta or {}).get("garrison/replayed")  # another request
        other = await make_key(["tools:call"], principal="someone-else")
        assert not ((await call(other, "retry", 1)).meta or {}).get("garrison/replayed")  # not theirs to read
        assert upstream_calls == {"add": 3}
    fast = platform.services["tools"].gateway.fast.served
    assert fast == (0 if mode == "legacy" else 4)  # each path was taken: a new legacy session's first call is the SDK's
