"""Usage of a run's model calls is attributed to its agent, session (thread) and user, and a repeated
step neither calls the model again nor publishes its events again (real Temporal reset of the run)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest

from runtime.helpers import deploy


async def _until(predicate, what: str, within: float = 30.0):  # type: ignore[no-untyped-def]
    for _ in range(int(within / 0.05)):
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _usage_by_agent(client) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    r = await client.get("/api/usage", params={"by": "agent"})
    assert r.status_code == 200, r.text
    return {row["agent"]: row for row in r.json()["rows"] if row.get("agent")}


async def _events(runtime, run_id: str) -> Counter:  # type: ignore[no-untyped-def]
    return Counter((e.event, e.step) for e in await runtime.events.read(run_id))


async def test_model_calls_of_a_run_are_attributed_and_never_counted_twice(client, platform, live_url, admin_key,
                                                                          monkeypatch):
    from garrison.llm.fake_upstream import FakeConfig, FakeUpstream

    runtime = platform.services["runtime"]
    async with FakeUpstream(FakeConfig(completion_tokens=8)) as upstream:
        r = await client.post("/api/llm/models", json={"model": "fake-model", "base_url": upstream.base_url})
        assert r.status_code == 201, r.text
        monkeypatch.setenv("AGENT_LLM_BASE_URL", live_url + "/v1")
        monkeypatch.setenv("AGENT_LLM_KEY", "not-used: the run's own token is")
        await deploy(client, "assistant")
        tid = (await client.post("/threads", json={})).json()["thread_id"]
        run = (await client.post(f"/threads/{tid}/runs", json={
            "assistant_id": "assistant", "input": {"question": "What is garrison?"}, "stream_mode": ["updates"],
            "hold_for_input_s": 120})).json()

        async def interrupted():  # type: ignore[no-untyped-def]
            return (await client.get(f"/threads/{tid}")).json()["status"] == "interrupted"

        await _until(interrupted, "the run to wait for review")
        assert upstream.stats.completed == 1
        usage = await _until(lambda: _usage_by_agent(client), "the model call in the ledger")
        assert usage["assistant"]["requests"] == 1 and usage["assistant"]["output_tokens"] == 8
        entries = (await client.get("/api/usage/entries")).json()["entries"]
        mine = [e for e in entries if e["agent"] == "assistant"]
        owner = await platform.identity.authenticate(admin_key)
        assert len(mine) == 1 and mine[0]["session_id"] == tid  # the run's thread is the session
        assert mine[0]["user_id"] == owner.id  # the user who started the run, not the agent's own key
        published = await _events(runtime, run["run_id"])
        assert published[("updates", 0)] >= 1

        # Temporal re-executes the run from its first workflow task (a reset): the steps had completed,
        # so none calls the model again nor republishes its events.
        temporal = await runtime.engine.client()
        handle = temporal.get_workflow_handle(run["run_id"])
        first_task = [e.event_id async for e in handle.fetch_history_events()
                      if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED][0]
        await temporal.workflow_service.reset_workflow_execution(ResetWorkflowExecutionRequest(
            namespace=temporal.namespace, workflow_execution=WorkflowExecution(workflow_id=run["run_id"]),
            reason="test: repeat completed steps", workflow_task_finish_event_id=first_task,
            request_id=str(uuid.uuid4())))

        async def replayed():  # type: ignore[no-untyped-def]
            kinds = [e.event_type async for e in temporal.get_workflow_handle(run["run_id"]).fetch_history_events()]
            if EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in kinds:  # the reset's mark
                return False
            # The repeated first step found the run further on (waiting for review), said so, and the
            # workflow waits for input again.
            after_reset = kinds[kinds.index(EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED):]
            return EventType.EVENT_TYPE_MARKER_RECORDED in after_reset and EventType.EVENT_TYPE_TIMER_STARTED in after_reset

        await _until(replayed, "the reset run to repeat its steps")
        r = await client.post(f"/api/runtime/runs/{run['run_id']}/input", json={"value": "approved"})
        assert r.status_code == 202, r.text
        final = await runtime.runs.wait_final(run["run_id"], timeout_s=30)
        assert final["status"] == "success"
        state = (await client.get(f"/threads/{tid}/state")).json()["values"]
        assert state["verdict"] == "approved"
        assert upstream.stats.completed == 1  # the repeated step did not call the model again
        await asyncio.sleep(0.3)
        assert (await _usage_by_agent(client))["assistant"]["requests"] == 1  # nor was anything counted twice
        after = await _events(runtime, run["run_id"])
        assert all(after[key] == count for key, count in published.items()), (published, after)  # nothing republished



async def test_a_run_and_its_model_calls_join_the_callers_trace(client, platform, live_url, monkeypatch):
    # One trace per invocation: the request that starts a background run carries a traceparent; the
    # run's steps (on Temporal's worker) and the model calls they make through the gateway join it.
    from garrison.llm.fake_upstream import FakeConfig, FakeUpstream

    trace_id = uuid.uuid4().hex
    async with FakeUpstream(FakeConfig(completion_tokens=4)) as upstream:
        r = await client.post("/api/llm/models", json={"model": "fake-model", "base_url": upstream.base_url})
        assert r.status_code == 201, r.text
        monkeypatch.setenv("AGENT_LLM_BASE_URL", live_url + "/v1")
        monkeypatch.setenv("AGENT_LLM_KEY", "not-used: the run's own token is")
        await deploy(client, "assistant")
        tid = (await client.post("/threads", json={})).json()["thread_id"]
        r = await client.post(f"/threads/{tid}/runs", json={
            "assistant_id": "assistant", "input": {"question": "traced?"}, "hold_for_input_s": 120},
            headers={"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"})
        assert r.status_code == 200, r.text

        async def interrupted():  # type: ignore[no-untyped-def]
            return (await client.get(f"/threads/{tid}")).json()["status"] == "interrupted"

        await _until(interrupted, "the run to wait for review")
        assert upstream.stats.completed == 1

        async def names():  # type: ignore[no-untyped-def]
            await platform.services["telemetry"].flush()
            r = await client.get(f"/api/traces/{trace_id}")
            found: dict[str, dict] = {}
            stack = list(r.json()["spans"]) if r.status_code == 200 else []
            while stack:  # the trace is a tree: roots (and orphans) with their children
                span = stack.pop()
                found[span["name"]] = span
                stack.extend(span.get("children") or [])
            return found if "runtime.run_step" in found and any(n.startswith("chat") for n in found) else None

        found = await _until(names, "the run's step and its model call in the caller's trace")
        step, chat = found["runtime.run_step"], found["chat fake-model"]
        assert chat["parent_span_id"] == step["span_id"]  # the model call is the step's child
        assert step["attributes"]["garrison.tenant_id"]
