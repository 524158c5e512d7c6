"""Memory strategies through the real LLM gateway to a fake OpenAI-compatible server on a socket."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import sqlalchemy as sa

from garrison.config import Settings
from garrison.llm.fake_upstream import FakeConfig, FakeUpstream
from garrison.platform import Platform
from garrison.server import create_app


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
        assert job["status"] == "failed" and job["error"] and job["attempts"] == 1  # retrying can't fix it
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


@contextlib.asynccontextmanager
async def _garrison(settings: Settings) -> AsyncIterator[tuple[Platform, httpx.AsyncClient]]:
    plat = Platform(settings)
    await plat.start()
    try:
        key = settings.admin_key_path.read_text().strip()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(platform=plat)),
                                     base_url="http://garrison.test",
                                     headers={"authorization": f"Bearer {key}"}) as c:
            yield plat, c
    finally:
        await plat.stop()


async def _until(client: httpx.AsyncClient, job_id: str, done: Callable[[dict], bool]) -> dict:
    deadline = time.monotonic() + 60
    while True:
        job = (await client.get(f"/api/memory/jobs/{job_id}")).json()
        if done(job) or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.05)


async def test_a_job_queued_before_a_restart_runs_after_it(settings: Settings,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARRISON_MEMORY_JOB_RETRY_S", "0.5")
    monkeypatch.setenv("GARRISON_MEMORY_JOB_POLL_S", "0.1")
    with socket.socket() as s:  # a port nothing listens on yet: the model is down at first
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with _garrison(settings) as (_plat, c):
        r = await c.post("/api/llm/models", json={"model": "tiny", "base_url": f"http://127.0.0.1:{port}/v1"})
        assert r.status_code == 201, r.text
        await c.post("/api/memory/events", json={"actor_id": "alice", "session_id": "s1",
                                                 "payload": {"role": "user", "text": "I'm vegetarian"}})
        ids = []
        for strategy in ("summary", "facts"):
            r = await c.post(f"/api/memory/strategies/{strategy}/run",
                             json={"actor_id": "alice", "session_id": "s1", "model": "tiny"})
            assert r.status_code == 202
            ids.append(r.json()["job_id"])
        for job_id in ids:  # the model is unreachable: a failed attempt, queued again with the error
            job = await _until(c, job_id, lambda j: j["attempts"] >= 1 and j["status"] == "queued")
            assert job["status"] == "queued" and job["attempts"] >= 1 and job["error"], job
            assert job["next_attempt_at"] > job["created_at"]
    # garrison is down. The second job looks like one whose process was killed mid-attempt.
    engine = sa.create_engine(settings.resolved_database_url.replace("+aiosqlite", ""))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE state_memory_jobs SET status = 'running', lease_until = 0 WHERE job_id = :j"),
                     {"j": ids[1]})
    engine.dispose()
    upstream = FakeUpstream(FakeConfig(completion_tokens=12))
    await upstream.start(port=port)
    try:
        async with _garrison(settings) as (_plat, c):
            for job_id in ids:
                job = await _until(c, job_id, lambda j: j["status"] in ("succeeded", "failed"))
                assert job["status"] == "succeeded" and job["attempts"] >= 2 and job["records"], job
                assert job["error"] is None and job["finished_at"]
            rec = (await c.get("/api/memory/records", params={"namespace": "summaries.alice", "key": "s1"})).json()
            assert rec["value"]["strategy"] == "summary"
    finally:
        await upstream.stop()
