"""Memory strategies through the real LLM gateway to a fake OpenAI-compatible server on a socket."""

from __future__ import annotations

import asyncio

import httpx

from garrison.llm.fake_upstream import FakeConfig, FakeUpstream
from garrison.platform import Platform


async def _job(client: httpx.AsyncClient, platform: Platform, job_id: str) -> dict:
    await platform.services["state"].strategies.wait()
    r = await client.get(f"/api/memory/jobs/{job_id}")
    assert r.status_code == 200
    return r.json()


async def test_summary_and_facts_become_records(client: httpx.AsyncClient, platform: Platform) -> None:
    async with FakeUpstream(FakeConfig(completion_tokens=12)) as upstream:
        r = await client.post("/api/llm/models", json={"model": "tiny", "base_url": upstream.base_url})
        assert r.status_code == 201, r.text
        for text in ("I'm vegetarian", "I live in Lyon", "Book me a window seat"):
            await client.post("/api/memory/events", json={"actor_id": "alice", "session_id": "s1",
                                                          "payload": {"role": "user", "text": text}})
        r = await client.post("/api/memory/strategies/summary/run",
                              json={"actor_id": "alice", "session_id": "s1", "model": "tiny"})
        assert r.status_code == 202 and r.json()["status"] in ("queued", "running")
        job = await _job(client, platform, r.json()["job_id"])
        assert job["status"] == "succeeded", job
        assert job["records"] == [{"namespace": ["summaries", "alice"], "key": "s1"}]
        rec = (await client.get("/api/memory/records", params={"namespace": "summaries.alice", "key": "s1"})).json()
        assert rec["value"]["strategy"] == "summary" and rec["value"]["text"]  # the model's reply
        assert rec["value"]["model"] == "tiny"

        r = await client.post("/api/memory/strategies/facts/run",
                              json={"actor_id": "alice", "session_id": "s1", "model": "tiny"})
        job = await _job(client, platform, r.json()["job_id"])
        assert job["status"] == "succeeded" and job["records"]
        assert all(x["namespace"] == ["facts", "alice"] for x in job["records"])

        # Failures are reported on the job: unknown model, empty session.
        r = await client.post("/api/memory/strategies/summary/run",
                              json={"actor_id": "alice", "session_id": "s1", "model": "no-such-model"})
        job = await _job(client, platform, r.json()["job_id"])
        assert job["status"] == "failed" and job["error"]
        r = await client.post("/api/memory/strategies/summary/run",
                              json={"actor_id": "bob", "session_id": "empty", "model": "tiny"})
        job = await _job(client, platform, r.json()["job_id"])
        assert job["status"] == "failed" and "no events" in job["error"]


async def test_strategy_bad_input(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/memory/strategies/poetry/run", json={"actor_id": "a", "session_id": "s",
                                                                     "model": "m"})
    assert r.status_code == 400 and "unknown strategy" in r.json()["detail"]
    r = await client.post("/api/memory/strategies/summary/run", json={"actor_id": "a"})
    assert r.status_code == 422
    r = await client.get("/api/memory/jobs/mjb_nope")
    assert r.status_code == 404
    await asyncio.sleep(0)
