"""Real LangGraph graphs for the saver tests (also run as a script by the SIGKILL test)."""

from __future__ import annotations

import operator
import sys
import time
from pathlib import Path
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt


class ReviewState(TypedDict, total=False):
    topic: str
    notes: Annotated[list[str], operator.add]
    findings: str
    verdict: str


def review_graph(checkpointer: object, calls: list[str]):  # type: ignore[no-untyped-def]
    """plan -> research (a subgraph: search -> review, which interrupts) -> publish."""

    def search(state: ReviewState) -> ReviewState:
        calls.append("search")
        return {"findings": f"found {state['topic']}"}

    def review(state: ReviewState) -> ReviewState:
        calls.append("review")
        answer = interrupt({"question": f"approve {state['findings']}?"})
        return {"verdict": str(answer)}

    class SubState(TypedDict, total=False):  # shares topic/findings/verdict, not the notes list
        topic: str
        findings: str
        verdict: str

    sub = StateGraph(SubState)
    sub.add_node("search", search)
    sub.add_node("review", review)
    sub.add_edge(START, "search")
    sub.add_edge("search", "review")
    sub.add_edge("review", END)

    def plan(state: ReviewState) -> ReviewState:
        calls.append("plan")
        return {"notes": [f"plan {state['topic']}"]}

    def publish(state: ReviewState) -> ReviewState:
        calls.append("publish")
        return {"notes": [f"published with {state['verdict']}"]}

    g = StateGraph(ReviewState)
    g.add_node("plan", plan)
    g.add_node("research", sub.compile())
    g.add_node("publish", publish)
    g.add_edge(START, "plan")
    g.add_edge("plan", "research")
    g.add_edge("research", "publish")
    g.add_edge("publish", END)
    return g.compile(checkpointer=checkpointer)


class RunState(TypedDict, total=False):
    done: Annotated[list[str], operator.add]


def pipeline_graph(checkpointer: object, log: Path, slow_node: str | None):  # type: ignore[no-untyped-def]
    """step1 -> step2 -> (fast | slow in one superstep) -> step4; each node logs when it finishes."""

    def node(name: str):  # type: ignore[no-untyped-def]
        def run(state: RunState) -> RunState:
            with log.open("a") as f:
                f.write(f"start {name}\n")
            if name == slow_node:
                time.sleep(60)  # killed here
            with log.open("a") as f:
                f.write(f"end {name}\n")
            return {"done": [name]}
        return run

    g = StateGraph(RunState)
    for name in ("step1", "step2", "fast", "slow", "step4"):
        g.add_node(name, node(name))
    g.add_edge(START, "step1")
    g.add_edge("step1", "step2")
    g.add_edge("step2", "fast")
    g.add_edge("step2", "slow")
    g.add_edge(["fast", "slow"], "step4")
    g.add_edge("step4", END)
    return g.compile(checkpointer=checkpointer)


if __name__ == "__main__":
    # python graphs.py <conn string> <thread id> <log file>: runs the pipeline until killed.
    from garrison.state import GarrisonSaver

    url, thread_id, log_file = sys.argv[1:4]
    with GarrisonSaver.from_conn_string(url) as saver:
        graph = pipeline_graph(saver, Path(log_file), slow_node="slow")
        graph.invoke({"done": []}, {"configurable": {"thread_id": thread_id}})
