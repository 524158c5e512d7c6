"""Temporal specifics: lazy embedded start and clean stop, human input as a signal, continue-as-new,
payloads kept out of workflow history."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from garrison.config import Settings
from garrison.platform import Platform
from garrison.runtime.settings import RuntimeSettings
from garrison.server import create_app
from runtime.helpers import deploy


@pytest.fixture
def db_url(tmp_path):  # type: ignore[no-untyped-def]
    """SQLite only: Temporal behaviour does not depend on the database; test_runs.py covers both stores."""
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


def _proc(pid: int, name: str) -> bytes:
    path = Path(f"/proc/{pid}/{name}")
    return path.read_bytes() if path.exists() else b""


async def _client(platform: Platform) -> httpx.AsyncClient:
    key = platform.settings.admin_key_path.read_text().strip()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(platform=platform)),
                             base_url="http://garrison.test", headers={"authorization": f"Bearer {key}"})


@pytest.mark.slow
async def test_embedded_temporal_starts_on_first_run_and_stops_with_the_platform(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", audit_flush_ms=20, temporal_address=None)
    platform = Platform(settings)
    await platform.start()
    runtime = platform.services["runtime"]
    try:
        assert runtime._engine is None  # nothing started, not even imported, for a platform that runs nothing
        async with await _client(platform) as client:
            await deploy(client, "steps")
            tid = (await client.post("/threads", json={})).json()["thread_id"]
            r = await client.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "steps", "input": {"log": []}})
            assert r.json() == {"log": ["first", "second", "third"]}
            status = (await client.get("/api/runtime/status")).json()["temporal"]
        assert status["mode"] == "embedded" and status["started"] and status["address"].startswith("127.0.0.1:")
        pid = int((settings.data_dir / "temporal" / "temporal.pid").read_text())
        assert (settings.data_dir / "temporal" / "temporal.db").exists()
        cmdline = _proc(pid, "cmdline").split(b"\0")
        assert b"journal_mode=wal" in cmdline and b"synchronous=normal" in cmdline and b"--headless" in cmdline
    finally:
        await platform.stop()
    stat = _proc(pid, "stat")
    assert not stat or stat.split()[2] == b"Z"  # gone (or a zombie awaiting its reaper)
    assert not (settings.data_dir / "temporal" / "temporal.pid").exists()


async def test_human_input_arrives_as_a_signal(client, platform):
    await deploy(client, "steps")
    tid = (await client.post("/threads", json={})).json()["thread_id"]
    run = (await client.post(f"/threads/{tid}/runs", json={"assistant_id": "approval", "input": {"log": []},
                                                          "hold_for_input_s": 60})).json()
    runtime = platform.services["runtime"]
    for _ in range(300):
        if (await client.get(f"/threads/{tid}")).json()["status"] == "interrupted":
            break
        await asyncio.sleep(0.02)
    assert (await client.get(f"/threads/{tid}/runs/{run['run_id']}")).json()["status"] == "running"
    r = await client.post(f"/api/runtime/runs/{run['run_id']}/input", json={"value": "signed"})
    assert r.status_code == 202, r.text
    final = await runtime.runs.wait_final(run["run_id"], timeout_s=30)
    assert final["status"] == "success"
    state = (await client.get(f"/threads/{tid}/state")).json()
    assert state["values"]["log"] == ["proposed", "approved:signed"]
    # The signal carried an id, not the value: the value stayed in garrison's store.
    history = await (await runtime.runs.handle(run["run_id"])).fetch_history()
    assert b"signed" not in history.to_json().encode()
    # A finished run takes no more input.
    assert (await client.post(f"/api/runtime/runs/{run['run_id']}/input", json={"value": 1})).status_code == 409


async def test_long_runs_continue_as_new_and_payloads_stay_out_of_history(client, platform):
    runtime = platform.services["runtime"]
    runtime.settings = RuntimeSettings(continue_as_new_after_steps=2)
    await deploy(client, "steps")
    tid = (await client.post("/threads", json={})).json()["thread_id"]
    big = "x" * 3_000_000  # above Temporal's 2 MB payload cap: only the run id travels
    r = await client.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "steps", "input": {"log": [big]}})
    assert r.status_code == 200 and r.json()["log"][1:] == ["first", "second", "third"]
    run_id = r.headers["content-location"].split("/")[-1]
    handle = await runtime.runs.handle(run_id)
    described = await handle.describe()
    # The chain has more than one execution: the first continued-as-new after two steps.
    assert described.run_id != described.raw_description.workflow_execution_info.first_run_id
    history = await handle.fetch_history()
    assert len(history.to_json()) < 50_000


@pytest.mark.parametrize("mode", ["local", "activity"])
async def test_step_modes_local_activities_by_default_or_regular_activities(client, platform, tmp_path, monkeypatch,
                                                                           mode):
    log = tmp_path / "steps.log"
    monkeypatch.setenv("STEPS_LOG", str(log))
    runtime = platform.services["runtime"]
    if mode == "activity":
        runtime.settings = RuntimeSettings(step_mode="activity")
    assert runtime.settings.step_mode == mode
    await deploy(client, "steps")
    r = await client.post("/runs/wait", json={"assistant_id": "steps", "input": {"log": []}})
    assert r.json() == {"log": ["first", "second", "third"]}
    assert log.read_text().split() == ["first", "second", "third"]
    run_id = r.headers["content-location"].split("/")[-1]
    handle = await runtime.runs.handle(run_id)
    # /runs/wait answers once the run's outcome is stored; the workflow task that records the
    # local activities' markers may complete a moment later: wait for the workflow to finish.
    await asyncio.wait_for(handle.result(), 30)
    history = await handle.fetch_history()
    kinds = [event.WhichOneof("attributes") for event in history.events]
    if mode == "local":
        assert "activity_task_scheduled_event_attributes" not in kinds  # local activities leave markers instead
        assert kinds.count("marker_recorded_event_attributes") == 3  # one per step, still in the history
    else:
        assert kinds.count("activity_task_scheduled_event_attributes") == 3
