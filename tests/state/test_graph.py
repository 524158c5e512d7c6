"""A real LangGraph graph on the saver: interrupt, resume, time travel, subgraphs, SIGKILL recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from langgraph.types import Command

from garrison.state import AsyncGarrisonSaver, GarrisonSaver
from tests.state.graphs import pipeline_graph, review_graph

REPO = Path(__file__).resolve().parents[2]


def test_interrupt_resume_time_travel_and_subgraph(db_url: str) -> None:
    calls: list[str] = []
    with GarrisonSaver.from_conn_string(db_url) as saver:
        graph = review_graph(saver, calls)
        config = {"configurable": {"thread_id": str(uuid.uuid4())}}

        first = graph.invoke({"topic": "tides", "notes": []}, config)
        assert first["__interrupt__"][0].value == {"question": "approve found tides?"}
        assert calls == ["plan", "search", "review"]
        state = graph.get_state(config, subgraphs=True)
        assert state.next == ("research",)
        sub_state = state.tasks[0].state
        assert sub_state is not None and sub_state.next == ("review",)  # the subgraph's own checkpoint
        assert sub_state.config["configurable"]["checkpoint_ns"].startswith("research:")

        done = graph.invoke(Command(resume="yes"), config)
        assert done["verdict"] == "yes"
        assert done["notes"] == ["plan tides", "published with yes"]
        assert done["findings"] == "found tides"
        assert calls == ["plan", "search", "review", "review", "publish"]  # nothing before review re-ran

        # Time travel: replay from the checkpoint taken just after "plan".
        history = list(graph.get_state_history(config))
        after_plan = next(h for h in history if h.next == ("research",) and h.metadata["step"] == 1)
        calls.clear()
        replay = graph.invoke(None, after_plan.config)
        assert calls == ["search", "review"]
        assert replay["__interrupt__"][0].value == {"question": "approve found tides?"}
        forked = graph.invoke(Command(resume="no"), config)
        assert forked["verdict"] == "no"
        assert forked["notes"] == ["plan tides", "published with no"]
        # The original branch is still there to travel back to.
        assert any(h.values.get("verdict") == "yes" for h in graph.get_state_history(config))


async def test_async_graph_with_interrupt(db_url: str) -> None:
    calls: list[str] = []
    async with AsyncGarrisonSaver.from_conn_string(db_url) as saver:
        graph = review_graph(saver, calls)
        config = {"configurable": {"thread_id": str(uuid.uuid4())}}
        first = await graph.ainvoke({"topic": "moons", "notes": []}, config)
        assert "__interrupt__" in first
        done = await graph.ainvoke(Command(resume="ok"), config)
        assert done["notes"][-1] == "published with ok"
        assert calls == ["plan", "search", "review", "review", "publish"]


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"graph process exited early: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.mark.slow
def test_sigkill_mid_run_resumes_without_losing_a_completed_step(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    thread_id = str(uuid.uuid4())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "tests/state/graphs.py"), db_url, thread_id, str(log)],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        # "fast" and "slow" run in one superstep; wait until fast has finished and slow hangs.
        _wait_for(log, "start slow", proc)
        _wait_for(log, "end fast", proc)
        # LangGraph saves a finished task's writes in the background: wait until they are in.
        with GarrisonSaver.from_conn_string(db_url) as watcher:
            deadline = time.monotonic() + 60
            while True:
                tup = watcher.get_tuple({"configurable": {"thread_id": thread_id}})
                if tup is not None and any(w[0] for w in tup.pending_writes or []):
                    break
                assert time.monotonic() < deadline, "the fast task's writes never reached the database"
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = log.read_text().splitlines()
    assert "end step1" in before and "end step2" in before and "end slow" not in before

    with GarrisonSaver.from_conn_string(db_url) as saver:
        graph = pipeline_graph(saver, log, slow_node=None)
        config = {"configurable": {"thread_id": thread_id}}
        state = graph.get_state(config)
        assert state.next == ("slow",)  # only the killed task is left; fast's writes survived
        result = graph.invoke(None, config)
    assert sorted(result["done"]) == sorted(["step1", "step2", "fast", "slow", "step4"])
    after = log.read_text().splitlines()[len(before):]
    assert after == ["start slow", "end slow", "start step4", "end step4"]
