"""A chain a -> b -> c compiled with breakpoints (tests/runtime/test_breakpoints.py): each node logs its name."""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph


class Chain(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def _node(name: str):  # noqa: ANN202
    def run(state: Chain) -> dict:
        return {"log": [name]}
    return run


builder = StateGraph(Chain)
for name in ("a", "b", "c"):
    builder.add_node(name, _node(name))
builder.add_edge(START, "a")
builder.add_edge("a", "b")
builder.add_edge("b", "c")
builder.add_edge("c", END)
before_b = builder.compile(interrupt_before=["b"])
after_a = builder.compile(interrupt_after=["a"])
before_a = builder.compile(interrupt_before=["a"])
