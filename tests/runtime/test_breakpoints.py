"""Breakpoints compiled into a graph (``compile(interrupt_before=[...])`` / ``interrupt_after=[...]``) stop a
garrison run as they stop a LangGraph run, in any superstep: the run ends interrupted before (after) the node,
the thread's ``next`` names the node, and a new run on the thread with input ``None`` goes on past it. garrison
runs each superstep as a step of its own with its own ``interrupt_after="*"``; that one stays invisible.
Read with the real ``langgraph-sdk`` client, in garrison's process and in the thread's sandbox.

The graph (agents/breakpoints): a chain a -> b -> c, each node logging its name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_client

from runtime.helpers import as_an_older_runner, deploy
from runtime.test_sandboxed_graph_state import bwrap_env  # noqa: F401 (fixture)
from runtime.test_sessions import deps_cache  # noqa: F401 (fixture)


@pytest.fixture
async def sdk(live_url: str, admin_key: str) -> Any:
    lg = get_client(url=live_url, headers={"Authorization": f"Bearer {admin_key}"})
    yield lg
    await lg.http.client.aclose()


async def _run(sdk: Any, tid: str, assistant: str, graph_input: Any) -> tuple[str, list[str], list[str]]:
    """(the run's status, the thread's log, the thread's next) after a run on ``tid``."""
    run = await sdk.runs.create(tid, assistant, input=graph_input)
    await sdk.runs.join(tid, run["run_id"])
    status = (await sdk.runs.get(tid, run["run_id"]))["status"]
    state = await sdk.threads.get_state(tid)
    return status, state["values"].get("log", []), state["next"]


async def _check(sdk: Any) -> None:
    tid = (await sdk.threads.create())["thread_id"]
    # Before b (reached in the run's second superstep): b does not run.
    assert await _run(sdk, tid, "before_b", {"log": []}) == ("interrupted", ["a"], ["b"])
    assert (await sdk.threads.get(tid))["status"] == "interrupted"
    # A new run with input None goes on past it: b and c run.
    assert await _run(sdk, tid, "before_b", None) == ("success", ["a", "b", "c"], [])
    assert (await sdk.threads.get(tid))["status"] == "idle"
    # Every time it is reached: new input on the thread stops there again.
    assert await _run(sdk, tid, "before_b", {"log": ["new"]}) == ("interrupted", ["a", "b", "c", "new", "a"], ["b"])
    assert await sdk.runs.wait(tid, "before_b", input=None) == {"log": ["a", "b", "c", "new", "a", "b", "c"]}

    # After a (the run's first superstep, where garrison's own interrupt_after="*" also stops).
    tid = (await sdk.threads.create())["thread_id"]
    assert await _run(sdk, tid, "after_a", {"log": []}) == ("interrupted", ["a"], ["b"])
    parts = [p async for p in sdk.runs.stream(tid, "after_a", input=None, stream_mode="updates")]
    assert [list(p.data) for p in parts if p.event == "updates"] == [["b"], ["c"]], parts
    state = await sdk.threads.get_state(tid)
    assert state["values"]["log"] == ["a", "b", "c"] and state["next"] == [], state

    # Before the entry node (the run's first superstep): nothing runs until a run with input None.
    tid = (await sdk.threads.create())["thread_id"]
    assert await _run(sdk, tid, "before_a", {"log": ["in"]}) == ("interrupted", ["in"], ["a"])
    assert await _run(sdk, tid, "before_a", None) == ("success", ["in", "a", "b", "c"], [])


async def test_compiled_breakpoints_stop_a_run(client, sdk):
    await deploy(client, "breakpoints")
    await _check(sdk)


@pytest.mark.slow
async def test_compiled_breakpoints_stop_a_run_in_the_sandbox(bwrap_env, monkeypatch, client, sdk):  # noqa: F811
    monkeypatch.setenv("GARRISON_RUNTIME_GRAPH_ISOLATION", "sandbox")
    await deploy(client, "breakpoints")
    await _check(sdk)


@pytest.mark.slow
async def test_an_older_runner_does_not_stop_at_them(bwrap_env, monkeypatch, client, sdk, platform):  # noqa: F811
    """A template deployed before garrison ended runs at compiled breakpoints: its runner passes a list naming
    no node as a fresh step's interrupt_before and names no breakpoints, so its runs go on as they did (to
    the end, not stopping before the same node over and over)."""
    monkeypatch.setenv("GARRISON_RUNTIME_GRAPH_ISOLATION", "sandbox")
    await deploy(client, "breakpoints")
    as_an_older_runner(Path(platform.services["sandbox"].templates.root), 'req.get("breakpoints")', 'None', 2)
    for assistant in ("before_b", "after_a"):
        tid = (await sdk.threads.create())["thread_id"]
        assert await _run(sdk, tid, assistant, {"log": []}) == ("success", ["a", "b", "c"], []), assistant
