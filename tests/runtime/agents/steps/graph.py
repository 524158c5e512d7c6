"""Test agent: a three-step graph that logs each step's execution, and a human-approval graph.

STEPS_LOG (env) names a file each node appends its name to, so a test can count how
many times a step really ran; STEP_SLEEP_S makes the middle step slow enough to kill.
"""

import operator
import os
import time
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def _record(name: str) -> None:
    path = os.environ.get("STEPS_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(name + "\n")


def first(state: State) -> dict:
    _record("first")
    return {"log": ["first"]}


def second(state: State) -> dict:
    time.sleep(float(os.environ.get("STEP_SLEEP_S", "0")))
    _record("second")
    return {"log": ["second"]}


def third(state: State) -> dict:
    _record("third")
    return {"log": ["third"]}


builder = StateGraph(State)
builder.add_node("first", first)
builder.add_node("second", second)
builder.add_node("third", third)
builder.add_edge(START, "first")
builder.add_edge("first", "second")
builder.add_edge("second", "third")
builder.add_edge("third", END)
graph = builder.compile()


def propose(state: State) -> dict:
    return {"log": ["proposed"]}


def approve(state: State) -> dict:
    answer = interrupt({"question": "approve the plan?"})
    return {"log": [f"approved:{answer}"]}


approval_builder = StateGraph(State)
approval_builder.add_node("propose", propose)
approval_builder.add_node("approve", approve)
approval_builder.add_edge(START, "propose")
approval_builder.add_edge("propose", "approve")
approval_builder.add_edge("approve", END)
approval = approval_builder.compile()
