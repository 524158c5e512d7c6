"""A thread's state with its subgraphs' (``subgraphs=true``), read with the real ``langgraph-sdk`` client.

The graph (agents/subgraphs): ``prepare`` -> ``plan`` (a compiled subgraph: ``draft`` -> ``review``, itself
a compiled subgraph whose ``ask`` calls ``interrupt()``) -> ``finish``. Interrupted, the thread's state
names the ``plan`` task; like LangGraph Platform, read with ``subgraphs=true`` the task's ``state`` is the
subgraph's own thread state (and the ``review`` task's in it, the sub-subgraph's), read without it the
task's ``checkpoint`` names the subgraph's namespace and its ``state`` is null.

The same checks run on the graph in garrison's process and in its thread's sandbox (bubblewrap).
"""

from __future__ import annotations

from typing import Any

import pytest
from langgraph_sdk import get_client

from garrison.runtime.sessions import manager
from runtime.helpers import deploy
from runtime.test_sandboxed_graph_state import bwrap_env  # noqa: F401 (fixture)
from runtime.test_sessions import deps_cache  # noqa: F401 (fixture)

QUESTION = {"question": "approve the draft?", "draft": "plan for tea"}
PLAN_VALUES = {"topic": "tea", "draft": "plan for tea"}
REVIEW_VALUES = {"draft": "plan for tea"}


@pytest.fixture
async def sdk(live_url: str, admin_key: str) -> Any:
    lg = get_client(url=live_url, headers={"Authorization": f"Bearer {admin_key}"})
    yield lg
    await lg.http.client.aclose()


def _check_nested(state: dict[str, Any], tid: str) -> None:
    """``state`` read with subgraphs: the plan task carries the subgraph's state, which carries the review's."""
    assert state["values"] == {"topic": "tea", "log": ["prepared"]} and state["next"] == ["plan"], state
    [task] = state["tasks"]
    assert task["name"] == "plan" and task["checkpoint"] is None, task
    assert [i["value"] for i in task["interrupts"]] == [QUESTION]
    plan = task["state"]
    assert plan is not None, task
    assert plan["values"] == PLAN_VALUES and plan["next"] == ["review"], plan
    assert plan["checkpoint"]["thread_id"] == tid
    assert plan["checkpoint"]["checkpoint_ns"] == f"plan:{task['id']}", plan["checkpoint"]
    assert plan["checkpoint"]["checkpoint_id"] and plan["metadata"]["parents"][""] == state["checkpoint"][
        "checkpoint_id"]
    [review_task] = plan["tasks"]
    assert review_task["name"] == "review" and review_task["checkpoint"] is None
    review = review_task["state"]
    assert review["values"] == REVIEW_VALUES and review["next"] == ["ask"], review
    assert review["checkpoint"]["checkpoint_ns"] == f"plan:{task['id']}|review:{review_task['id']}"
    [ask] = review["tasks"]
    assert ask["name"] == "ask" and ask["state"] is None and ask["checkpoint"] is None, ask  # a plain node
    assert [i["value"] for i in ask["interrupts"]] == [QUESTION]


async def _check_subgraph_state(sdk: Any) -> str:
    thread = await sdk.threads.create()
    tid = thread["thread_id"]
    first = await sdk.runs.wait(tid, "subgraph_review", input={"topic": "tea", "log": []})
    assert [i["value"] for i in first["__interrupt__"]] == [QUESTION], first

    # Without subgraphs: the task names the subgraph's checkpoint namespace, no state.
    flat = await sdk.threads.get_state(tid)
    [task] = flat["tasks"]
    assert task["state"] is None, task
    assert task["checkpoint"] == {"thread_id": tid, "checkpoint_ns": f"plan:{task['id']}"}, task
    assert flat["next"] == ["plan"] and flat["values"] == {"topic": "tea", "log": ["prepared"]}

    # With subgraphs: the latest state, at its checkpoint id (GET) and at its checkpoint (POST).
    nested = await sdk.threads.get_state(tid, subgraphs=True)
    _check_nested(nested, tid)
    assert nested["checkpoint"] == flat["checkpoint"]
    checkpoint_id = nested["checkpoint"]["checkpoint_id"]
    _check_nested(await sdk.threads.get_state(tid, checkpoint_id=checkpoint_id, subgraphs=True), tid)
    _check_nested(await sdk.threads.get_state(tid, checkpoint={"checkpoint_id": checkpoint_id}, subgraphs=True), tid)
    # The earlier checkpoint (before ``plan`` ran) has no subgraph state to show.
    history = await sdk.threads.get_history(tid, limit=10)
    earlier = next(h for h in history if h["next"] == ["prepare"])
    assert [t["state"] for t in (await sdk.threads.get_state(
        tid, checkpoint_id=earlier["checkpoint"]["checkpoint_id"], subgraphs=True))["tasks"]] == [None]

    # The reference is usable: the subgraph's own state, read by its namespace, nests the review's.
    plan = await sdk.threads.get_state(tid, checkpoint=task["checkpoint"], subgraphs=True)
    assert plan["values"] == PLAN_VALUES and plan["next"] == ["review"], plan
    assert plan["tasks"][0]["state"]["values"] == REVIEW_VALUES, plan["tasks"][0]
    assert (await sdk.threads.get_state(tid, checkpoint=task["checkpoint"]))["tasks"][0]["state"] is None

    # Resumed to the end: no task, nothing nested.
    done = await sdk.runs.wait(tid, "subgraph_review", command={"resume": "yes"})
    assert done == {"topic": "tea", "log": ["prepared", "finished"], "verdict": "plan for tea: yes"}, done
    final = await sdk.threads.get_state(tid, subgraphs=True)
    assert final["tasks"] == [] and final["next"] == [] and final["values"] == done
    # The interrupted checkpoint, read again: its plan task shows the subgraph's latest state (LangGraph's
    # get_state(subgraphs=True) reads the subgraph's namespace, which the resume carried to its end).
    again = await sdk.threads.get_state(tid, checkpoint_id=checkpoint_id, subgraphs=True)
    plan_after = again["tasks"][0]["state"]
    assert plan_after["values"] == {**PLAN_VALUES, "verdict": "plan for tea: yes"}, plan_after
    assert plan_after["next"] == [] and plan_after["tasks"] == [], plan_after
    return str(tid)


def _sessions(platform: Any, tid: str) -> list[Any]:
    return [s for s in manager(platform.services["runtime"]).sessions.values() if s.session_id == tid]


async def test_subgraph_state_of_an_in_process_graph(client, sdk, platform):
    await deploy(client, "subgraphs")
    tid = await _check_subgraph_state(sdk)
    assert _sessions(platform, tid) == []  # no sandbox: the graph ran (and was read) in garrison's process


@pytest.mark.slow
async def test_subgraph_state_of_a_sandboxed_graph(bwrap_env, monkeypatch, client, sdk, platform):  # noqa: F811
    monkeypatch.setenv("GARRISON_RUNTIME_GRAPH_ISOLATION", "sandbox")
    await deploy(client, "subgraphs")
    tid = await _check_subgraph_state(sdk)
    [sess] = _sessions(platform, tid)  # the graph ran, and its state was read, in the thread's sandbox
    assert sess.sandboxes_started == 1 and sess.alive()


async def test_hostile_subgraphs_and_checkpoints_are_4xx(client):
    await deploy(client, "subgraphs")
    tid = (await client.post("/threads", json={})).json()["thread_id"]
    r = await client.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "subgraph_review",
                                                               "input": {"topic": "tea", "log": []}})
    assert r.status_code == 200, r.text
    for params in ({"subgraphs": "notabool"}, {"subgraphs": ""}, {"subgraphs": "2"}):
        r = await client.get(f"/threads/{tid}/state", params=params)
        assert r.status_code == 422, (params, r.text)
        r = await client.get(f"/threads/{tid}/state/1f0000000000000000000000000000", params=params)
        assert r.status_code == 422, (params, r.text)
    for body in ({"subgraphs": "yes"}, {"subgraphs": 1}, {"subgraphs": []}, {"subgraphs": {}},
                 {"checkpoint": "nope", "subgraphs": True}, {"checkpoint": [1], "subgraphs": True}):
        r = await client.post(f"/threads/{tid}/state/checkpoint", json=body)
        assert r.status_code == 400, (body, r.text)
        assert "subgraphs" in r.text or "checkpoint" in r.text, r.text
    # A namespace or checkpoint that names nothing: an empty state, not an error.
    for checkpoint in ({"checkpoint_ns": "nosuch:00000000-0000-0000-0000-000000000000"},
                       {"checkpoint_ns": "plan:not-a-task|x:|||"},
                       {"checkpoint_id": "not-a-checkpoint"}):
        r = await client.post(f"/threads/{tid}/state/checkpoint", json={"checkpoint": checkpoint, "subgraphs": True})
        assert r.status_code == 200, (checkpoint, r.text)
        assert r.json()["values"] == {} and r.json()["tasks"] == [], r.json()
    r = await client.get(f"/threads/{tid}/state/not-a-checkpoint", params={"subgraphs": "true"})
    assert r.status_code == 200 and r.json()["values"] == {}, r.text
    r = await client.get("/threads/00000000-0000-0000-0000-000000000000/state", params={"subgraphs": "true"})
    assert r.status_code == 404, r.text
