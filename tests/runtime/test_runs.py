"""Durable runs through the LangGraph Platform API paths: every run is a Temporal workflow."""

from __future__ import annotations

import asyncio

import pytest
from temporalio import activity

from garrison.runtime.executor import RunExecutor
from garrison.runtime.workflows import STEP_ACTIVITY, StepOutcome, StepParams
from runtime.helpers import deploy, sse_events


@pytest.fixture
async def steps_agent(client):
    return await deploy(client, "steps")


async def new_thread(client) -> str:
    r = await client.post("/threads", json={"metadata": {"purpose": "test"}})
    assert r.status_code == 200, r.text
    return r.json()["thread_id"]


async def test_wait_runs_every_step_once_and_checkpoints_each(client, steps_agent, tmp_path, monkeypatch):
    log = tmp_path / "steps.log"
    monkeypatch.setenv("STEPS_LOG", str(log))
    tid = await new_thread(client)
    r = await client.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "steps", "input": {"log": []}})
    assert r.status_code == 200, r.text
    assert r.json() == {"log": ["first", "second", "third"]}
    assert log.read_text().split() == ["first", "second", "third"]
    runs = (await client.get(f"/threads/{tid}/runs")).json()
    assert [run["status"] for run in runs] == ["success"]
    detail = (await client.get(f"/api/runtime/runs/{runs[0]['run_id']}")).json()
    assert detail["steps"] == 3 and detail["error"] is None
    history = (await client.post(f"/threads/{tid}/history", json={"limit": 20})).json()
    # input checkpoint + one per superstep
    assert len(history) == 5 and history[0]["values"]["log"] == ["first", "second", "third"]
    thread = (await client.get(f"/threads/{tid}")).json()
    assert thread["status"] == "idle" and thread["metadata"]["graph_id"] == "steps"
    # A stateless run leaves no thread behind.
    r = await client.post("/runs/wait", json={"assistant_id": "steps", "input": {"log": ["x"]}})
    assert r.json() == {"log": ["x", "first", "second", "third"]}
    assert [t["thread_id"] for t in (await client.post("/threads/search", json={})).json()] == [tid]


async def test_stream_frames_and_reconnect_with_last_event_id(client, steps_agent):
    tid = await new_thread(client)
    async with client.stream("POST", f"/threads/{tid}/runs/stream",
                             json={"assistant_id": "steps", "input": {"log": []},
                                   "stream_mode": ["values", "updates"]}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        location = r.headers["location"]
        assert location.endswith("/stream") and r.headers["content-location"] in location
        events = await sse_events(r)
    assert events[0]["event"] == "metadata"
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    updates = [e["data"] for e in events if e["event"] == "updates"]
    assert updates == [{"first": {"log": ["first"]}}, {"second": {"log": ["second"]}}, {"third": {"log": ["third"]}}]
    values = [e["data"]["log"] for e in events if e["event"] == "values"]
    assert values == [[], ["first"], ["first", "second"], ["first", "second", "third"]]
    assert not any(e["event"] == "end" for e in events)
    # Reconnect: only what came after the given id is replayed.
    async with client.stream("GET", location, headers={"Last-Event-ID": events[3]["id"]}) as r:
        again = await sse_events(r)
    assert again == events[4:]
    r = await client.get(location, headers={"Last-Event-ID": "not-a-number"})
    assert r.status_code == 400


async def test_interrupt_then_resume_with_command(client, steps_agent):
    tid = await new_thread(client)
    r = await client.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "approval", "input": {"log": []}})
    assert r.status_code == 200
    assert r.json()["__interrupt__"][0]["value"] == {"question": "approve the plan?"}
    thread = (await client.get(f"/threads/{tid}")).json()
    assert thread["status"] == "interrupted" and thread["interrupts"]
    state = (await client.get(f"/threads/{tid}/state")).json()
    assert state["next"] == ["approve"] and state["tasks"][0]["interrupts"][0]["value"]["question"]
    r = await client.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "approval",
                                                             "command": {"resume": "yes"}})
    assert r.json() == {"log": ["proposed", "approved:yes"]}
    statuses = [run["status"] for run in (await client.get(f"/threads/{tid}/runs")).json()]
    assert statuses == ["success", "interrupted"]


async def test_background_run_join_and_reject_strategy(client, steps_agent, monkeypatch):
    monkeypatch.setenv("STEP_SLEEP_S", "0.5")
    tid = await new_thread(client)
    r = await client.post(f"/threads/{tid}/runs", json={"assistant_id": "steps", "input": {"log": []}})
    assert r.status_code == 200
    run = r.json()
    assert run["status"] == "pending" and r.headers["content-location"] == f"/threads/{tid}/runs/{run['run_id']}"
    busy = await client.post(f"/threads/{tid}/runs", json={"assistant_id": "steps", "input": {"log": []},
                                                           "multitask_strategy": "reject"})
    assert busy.status_code == 409
    joined = await client.get(f"/threads/{tid}/runs/{run['run_id']}/join")
    assert joined.json() == {"log": ["first", "second", "third"]}
    assert (await client.get(f"/threads/{tid}/runs/{run['run_id']}")).json()["status"] == "success"
    # Enqueued (the default strategy): the second run starts when the first has finished.
    first = (await client.post(f"/threads/{tid}/runs", json={"assistant_id": "steps", "input": {"log": []}})).json()
    second = (await client.post(f"/threads/{tid}/runs", json={"assistant_id": "steps",
                                                              "input": {"log": ["again"]}})).json()
    await client.get(f"/threads/{tid}/runs/{second['run_id']}/join")
    state = (await client.get(f"/threads/{tid}/state")).json()
    assert state["values"]["log"] == ["first", "second", "third"] * 2 + ["again", "first", "second", "third"]
    for queued in (first, second):
        assert (await client.get(f"/threads/{tid}/runs/{queued['run_id']}")).json()["status"] == "success"


async def _until_logged(log, name: str, within_s: float) -> bool:
    for _ in range(int(within_s / 0.02)):
        if log.exists() and name in log.read_text().split():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_cancel_interrupts_a_running_run(client, steps_agent, monkeypatch, tmp_path):
    log = tmp_path / "steps.log"
    monkeypatch.setenv("STEPS_LOG", str(log))
    monkeypatch.setenv("STEP_SLEEP_S", "3")  # the cancel lands in the slow second step, or just before it
    tid = await new_thread(client)
    run = (await client.post(f"/threads/{tid}/runs", json={"assistant_id": "steps", "input": {"log": []}})).json()
    assert await _until_logged(log, "first", 60), "the first step never ran"
    r = await client.post(f"/threads/{tid}/runs/{run['run_id']}/cancel", params={"wait": 1})
    assert r.status_code == 202
    assert (await client.get(f"/threads/{tid}/runs/{run['run_id']}")).json()["status"] == "interrupted"
    # A node running in a thread cannot be stopped: "second" may still finish, but nothing runs after it.
    await _until_logged(log, "second", 10)
    await asyncio.sleep(0.5)
    assert "third" not in log.read_text().split()
    assert (await client.get(f"/threads/{tid}/runs/{run['run_id']}")).json()["status"] == "interrupted"


async def test_cancel_between_two_steps_stops_the_run_before_its_next_step(client, steps_agent, platform,
                                                                          monkeypatch, tmp_path):
    # The other window a cancel can land in: no step of the run is running. The workflow starts the
    # next local step before it sees the cancel signal (it arrives with the next workflow task): that
    # step must end the run instead of running.
    log = tmp_path / "steps.log"
    monkeypatch.setenv("STEPS_LOG", str(log))
    between, asked = asyncio.Event(), asyncio.Event()

    def activities(self):  # type: ignore[no-untyped-def]
        cancel_local = self.cancel_local

        def asking(run_id: str) -> bool:
            asked.set()
            return cancel_local(run_id)

        self.cancel_local = asking

        @activity.defn(name=STEP_ACTIVITY)
        async def run_step(params: StepParams) -> StepOutcome:
            if params.step == 1 and not between.is_set():
                between.set()  # step 0 is done, step 1 has not begun: hold it until garrison was asked
                await asyncio.wait_for(asked.wait(), 60)
            return await self.run_step(params)
        return [run_step, self.finish_run]

    assert platform.services["runtime"]._engine is None  # the worker is built with the activities below
    monkeypatch.setattr(RunExecutor, "activities", activities)
    tid = await new_thread(client)
    run = (await client.post(f"/threads/{tid}/runs", json={"assistant_id": "steps", "input": {"log": []}})).json()
    await asyncio.wait_for(between.wait(), 60)
    r = await client.post(f"/threads/{tid}/runs/{run['run_id']}/cancel", params={"wait": 1})
    assert r.status_code == 202
    assert (await client.get(f"/threads/{tid}/runs/{run['run_id']}")).json()["status"] == "interrupted"
    await asyncio.sleep(0.3)
    assert log.read_text().split() == ["first"]
    assert (await client.get(f"/threads/{tid}/runs/{run['run_id']}")).json()["status"] == "interrupted"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # input validation: one store suffices
async def test_unknown_assistant_and_bad_bodies_are_4xx(client, steps_agent):
    tid = await new_thread(client)
    cases = [
        ({"assistant_id": "nope", "input": {}}, 404),
        ({"assistant_id": "steps", "input": {}, "stream_mode": "bogus"}, 400),
        ({"assistant_id": "steps", "input": {}, "command": {"resume": 1}}, 400),
        ({"assistant_id": "steps", "command": {"explode": 1}}, 400),
        ({"assistant_id": "steps", "input": {}, "multitask_strategy": "chaos"}, 400),
        ({"assistant_id": "steps", "input": {}, "interrupt_before": ["second"]}, 400),
        ({"assistant_id": "steps", "input": {}, "after_seconds": -1}, 400),
    ]
    for body, status in cases:
        r = await client.post(f"/threads/{tid}/runs", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert (await client.post(f"/threads/{tid}/runs", content=b"[1,2", headers={"content-type": "application/json"})
            ).status_code == 422
    assert (await client.post("/threads/00000000-0000-0000-0000-000000000000/runs",
                              json={"assistant_id": "steps"})).status_code == 404
    # The store API refuses malformed items with what to fix.
    for method, body, status in (("PUT", {"namespace": "users", "key": "k", "value": {}}, 400),
                                 ("PUT", {"namespace": ["a.b"], "key": "k", "value": {}}, 400),
                                 ("PUT", {"namespace": ["a"], "key": "", "value": {}}, 400),
                                 ("PUT", {"namespace": ["a"], "key": "k", "value": [1]}, 400),
                                 ("PUT", {"namespace": ["a\x00b"], "key": "k", "value": {}}, 400),
                                 ("PUT", {"namespace": ["a"], "key": "k\x00", "value": {}}, 400),
                                 ("DELETE", {"namespace": [], "key": "k"}, 400)):
        r = await client.request(method, "/store/items", json=body)
        assert r.status_code == status, (body, r.text)
    assert (await client.get("/store/items", params={"namespace": "a", "key": "missing"})).status_code == 404
    # NUL cannot be stored in PostgreSQL text: a clear 400, not a 500 (found by schemathesis).
    assert (await client.get("/store/items", params={"namespace": "a\x00", "key": "k"})).status_code == 400
    assert (await client.post("/store/items/search", json={"limit": 0})).status_code == 400
