"""Model calls inside a durable run's step: a step retried after it lost its worker does not call the
model again; the call it had completed is answered from garrison's journal and counted once."""

from __future__ import annotations

import asyncio

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
