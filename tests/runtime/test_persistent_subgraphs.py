"""Persistent subgraphs (compiled with ``checkpointer=True``) keep their own state across a thread's runs,
in garrison's process and in the thread's sandbox alike, read with the real ``langgraph-sdk`` client.

The graph (agents/persistent): ``call`` invokes a persistent subgraph from its function (namespace
``call``), ``keep`` is one added as a node (namespace ``keep``), both in the run's first superstep, then
``plan``, an ordinary subgraph (namespace ``plan:<task id>``, fresh each run). The expected values are what LangGraph gives with an InMemorySaver:
the second run on a thread sees the first run's notes; another thread starts from nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_client

from garrison.runtime.sessions import manager
from runtime.helpers import as_an_older_runner, deploy
from runtime.test_sandboxed_graph_state import bwrap_env  # noqa: F401 (fixture)
from runtime.test_sessions import deps_cache  # noqa: F401 (fixture)

FIRST = {"topic": "tea", "called": ["tea"], "kept": ["tea"], "drafted": "draft tea", "log": ["call tea: 1"]}
SECOND = {"topic": "chess", "called": ["tea", "chess"], "kept": ["tea", "chess"], "drafted": "draft chess",
          "log": ["call tea: 1", "call chess: 2"]}


@pytest.fixture
async def sdk(live_url: str, admin_key: str) -> Any:
    lg = get_client(url=live_url, headers={"Authorization": f"Bearer {admin_key}"})
    yield lg
    await lg.http.client.aclose()


async def _latest(platform: Any, tid: str, ns: str) -> Any:
    tenant = platform.identity.default_tenant_id
    return await platform.services["state"].saver(tenant).aget_tuple(
        {"configurable": {"thread_id": tid, "checkpoint_ns": ns}})


async def _check_accumulates(sdk: Any, platform: Any) -> str:
    tid = (await sdk.threads.create())["thread_id"]
    assert await sdk.runs.wait(tid, "persistent_memo", input={"topic": "tea"}) == FIRST
    assert await sdk.runs.wait(tid, "persistent_memo", input={"topic": "chess"}) == SECOND
    state = await sdk.threads.get_state(tid)
    assert state["values"] == SECOND and state["next"] == [], state

    # garrison's checkpointer holds each persistent subgraph's own state, carried from run to run.
    for ns in ("call", "keep"):
        tup = await _latest(platform, tid, ns)
        assert tup is not None, ns
        values = tup.checkpoint["channel_values"]
        assert values["notes"] == ["tea", "chess"] and values["count"] == 2, (ns, values)

    # Only the persistent subgraphs' namespaces are what a sandboxed step sends in beyond the root's (not plan's).
    saver = platform.services["state"].saver(platform.identity.default_tenant_id)
    spaces = {t.config["configurable"]["checkpoint_ns"] async for t in saver.alist({"configurable": {"thread_id": tid}})}
    assert sum(ns.startswith("plan:") for ns in spaces) == 2 and {"", "call", "keep"} <= spaces, spaces
    assert await saver.apersistent_namespaces(tid) == ["call", "keep"]

    # Another thread: its own subgraph state, from nothing.
    other = (await sdk.threads.create())["thread_id"]
    got = await sdk.runs.wait(other, "persistent_memo", input={"topic": "go"})
    assert got == {"topic": "go", "called": ["go"], "kept": ["go"], "drafted": "draft go", "log": ["call go: 1"]}
    # The first thread kept its own.
    third = await sdk.runs.wait(tid, "persistent_memo", input={"topic": "tennis"})
    assert third["called"] == ["tea", "chess", "tennis"] and third["log"][-1] == "call tennis: 3", third
    assert await saver.apersistent_namespaces(other) == ["call", "keep"]
    assert await saver.apersistent_namespaces("no-such-thread") == []
    return str(tid)


def _asked(values: dict[str, Any]) -> list[Any]:
    return [i["value"] for i in values.get("__interrupt__") or []]


async def _check_interrupted(sdk: Any) -> str:
    """A persistent subgraph that interrupts, resumed in a later run: its notes carry over, across runs."""
    tid = (await sdk.threads.create())["thread_id"]
    first = await sdk.runs.wait(tid, "persistent_asking", input={"topic": "tea"})
    assert _asked(first) == [{"question": "note tea?", "notes": []}], first
    done = await sdk.runs.wait(tid, "persistent_asking", command={"resume": "yes"})
    assert done == {"topic": "tea", "kept": ["tea: yes"], "log": []}, done
    second = await sdk.runs.wait(tid, "persistent_asking", input={"topic": "chess"})
    assert _asked(second) == [{"question": "note chess?", "notes": ["tea: yes"]}], second
    done = await sdk.runs.wait(tid, "persistent_asking", command={"resume": "no"})
    assert done == {"topic": "chess", "kept": ["tea: yes", "chess: no"], "log": []}, done
    return str(tid)


def _sessions(platform: Any, tid: str) -> list[Any]:
    return [s for s in manager(platform.services["runtime"]).sessions.values() if s.session_id == tid]


async def test_persistent_subgraphs_keep_their_state_in_process(client, sdk, platform):
    await deploy(client, "persistent")
    tid = await _check_accumulates(sdk, platform)
    assert _sessions(platform, tid) == []  # no sandbox: the graph ran in garrison's process
    tid = await _check_interrupted(sdk)
    assert _sessions(platform, tid) == []


@pytest.mark.slow
async def test_persistent_subgraphs_keep_their_state_in_the_sandbox(bwrap_env, monkeypatch, client, sdk,  # noqa: F811
                                                                    platform):
    monkeypatch.setenv("GARRISON_RUNTIME_GRAPH_ISOLATION", "sandbox")
    await deploy(client, "persistent")
    tid = await _check_accumulates(sdk, platform)
    [sess] = _sessions(platform, tid)  # the graph ran in the thread's sandbox
    assert sess.sandboxes_started == 1 and sess.alive()
    tid = await _check_interrupted(sdk)
    [sess] = _sessions(platform, tid)
    assert sess.sandboxes_started == 1 and sess.alive()


async def test_a_persistent_subgraph_after_the_first_superstep(client, sdk):
    """garrison runs each superstep as a step of its own (``astream(None, ...)``, which LangGraph takes for a
    resume): a later superstep that runs for the first time tells LangGraph it does not resume, so the
    persistent subgraph takes its input, as in one ``ainvoke`` (runtime/fresh_steps.py)."""
    await _check_later(client, sdk)


@pytest.mark.slow
async def test_a_persistent_subgraph_after_the_first_superstep_in_the_sandbox(bwrap_env, monkeypatch,  # noqa: F811
                                                                             client, sdk):
    monkeypatch.setenv("GARRISON_RUNTIME_GRAPH_ISOLATION", "sandbox")
    await _check_later(client, sdk)


async def _values(sdk: Any, tid: str, assistant: str, topic: str) -> list[Any]:
    """The ``values`` events of a run on ``tid`` (each superstep's state, the input's first)."""
    parts = [p async for p in sdk.runs.stream(tid, assistant, input={"topic": topic}, stream_mode="values")]
    assert [p.event for p in parts if p.event not in ("metadata", "values")] == [], parts
    return [p.data for p in parts if p.event == "values"]


async def _check_later(client: Any, sdk: Any) -> None:
    await deploy(client, "persistent")
    for assistant in ("persistent_later",):
        tid = (await sdk.threads.create())["thread_id"]
        first = await sdk.runs.wait(tid, assistant, input={"topic": "tea"})
        assert first == {"topic": "tea", "kept": ["tea"], "log": ["prepared tea"]}, (assistant, first)
        # What one ainvoke per run gives (LangGraph with an InMemorySaver), not the subgraph's last state (topic
        # "tea"); each superstep's state once (the first state of a later step is its own, none dropped).
        assert await _values(sdk, tid, assistant, "chess") == [
            {"topic": "chess", "kept": ["tea"], "log": ["prepared tea"]},
            {"topic": "chess", "kept": ["tea"], "log": ["prepared tea", "prepared chess"]},
            {"topic": "chess", "kept": ["tea", "chess"], "log": ["prepared tea", "prepared chess"]}], assistant
        state = await sdk.threads.get_state(tid)
        assert state["values"]["kept"] == ["tea", "chess"] and state["next"] == [], state
    # With a breakpoint compiled in before the persistent subgraph: the run stops there (the fresh step stops
    # before its tasks once, and ends the run); a run with input None goes on, and the subgraph takes its input.
    tid = (await sdk.threads.create())["thread_id"]
    run = await sdk.runs.create(tid, "persistent_stopped", input={"topic": "tea"})
    await sdk.runs.join(tid, run["run_id"])
    assert (await sdk.runs.get(tid, run["run_id"]))["status"] == "interrupted"
    state = await sdk.threads.get_state(tid)
    assert state["values"] == {"topic": "tea", "log": ["prepared tea"]} and state["next"] == ["keep"], state
    assert await sdk.runs.wait(tid, "persistent_stopped", input=None) == {
        "topic": "tea", "kept": ["tea"], "log": ["prepared tea"]}


@pytest.mark.slow
async def test_an_older_runner_ignores_the_fresh_mark(bwrap_env, monkeypatch, client, sdk, platform):  # noqa: F811
    """A template deployed before garrison ran later supersteps fresh: its runner ignores ``"fresh"`` and
    resumes, so the subgraph hands back its last state as before, and its stream is what a fresh step's
    is (the state it resumed from, which such a runner streams first, is not published)."""
    monkeypatch.setenv("GARRISON_RUNTIME_GRAPH_ISOLATION", "sandbox")
    await deploy(client, "persistent")
    as_an_older_runner(Path(platform.services["sandbox"].templates.root), 'if req.get("fresh"):', 'if False:', 1)
    tid = (await sdk.threads.create())["thread_id"]
    assert await _values(sdk, tid, "persistent_later", "tea") == [
        {"topic": "tea", "log": []}, {"topic": "tea", "log": ["prepared tea"]},
        {"topic": "tea", "kept": ["tea"], "log": ["prepared tea"]}]
    assert await _values(sdk, tid, "persistent_later", "chess") == [
        {"topic": "chess", "kept": ["tea"], "log": ["prepared tea"]},
        {"topic": "chess", "kept": ["tea"], "log": ["prepared tea", "prepared chess"]},
        {"topic": "tea", "kept": ["tea"], "log": ["prepared tea", "prepared chess"]}]


async def test_persistent_namespaces_are_those_without_a_task_id(platform):
    """What a sandboxed step reads to find the persistent subgraphs' checkpoints: every namespace of the thread
    with no ``:task id`` in any part, whatever sorts between them, on each saver path."""
    from langgraph.checkpoint.base import empty_checkpoint

    from garrison.state.checkpoint.saver import AsyncGarrisonSaver

    saver = platform.services["state"].saver(platform.identity.default_tenant_id)
    spaces = ["", "call", "call|1", "plan:x1", "plan:x2|inner:y", "plan|inner", "plan2", "a:b", "a", "z:q|w", "zz",
              "plan:", "é", "ü:1"]
    for ns in spaces:
        await saver.aput({"configurable": {"thread_id": "t1", "checkpoint_ns": ns}}, empty_checkpoint(), {}, {})
    await saver.aput({"configurable": {"thread_id": "t2", "checkpoint_ns": "other"}}, empty_checkpoint(), {}, {})
    want = ["a", "call", "call|1", "plan2", "plan|inner", "zz", "é"]
    assert await saver.apersistent_namespaces("t1") == want
    assert await saver.apersistent_namespaces("t2") == ["other"]
    assert await saver.apersistent_namespaces("t3") == []
    # Without the driver connections (the statements through SQLAlchemy): the same.
    plain = AsyncGarrisonSaver(saver.engine, tenant_id=saver.tenant_id)
    assert await plain.apersistent_namespaces("t1") == want
    other_tenant = saver.for_tenant("someone-else")
    assert await other_tenant.apersistent_namespaces("t1") == []
