"""Test agent: a parent graph whose node is a compiled subgraph, whose own node is a compiled subgraph that
calls ``interrupt()`` (two levels, so a thread's state nests a subgraph's state in a subgraph's).

No isolation named: it runs in garrison's process or in its thread's sandbox as the deployment's
default (GARRISON_RUNTIME_GRAPH_ISOLATION) says. Every value is deterministic, so a test can compare
each level's state exactly.
"""

import operator
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt


class Review(TypedDict, total=False):
    draft: str
    verdict: str


def ask(state: Review) -> dict:
    answer = interrupt({"question": "approve the draft?", "draft": state["draft"]})
    return {"verdict": f"{state['draft']}: {answer}"}


review_builder = StateGraph(Review)
review_builder.add_node("ask", ask)
review_builder.add_edge(START, "ask")
review_builder.add_edge("ask", END)


class Plan(TypedDict, total=False):
    topic: str
    draft: str  # the subgraph's own: the parent has no such key
    verdict: str


def draft(state: Plan) -> dict:
    return {"draft": f"plan for {state['topic']}"}


plan_builder = StateGraph(Plan)
plan_builder.add_node("draft", draft)
plan_builder.add_node("review", review_builder.compile())
plan_builder.add_edge(START, "draft")
plan_builder.add_edge("draft", "review")
plan_builder.add_edge("review", END)


class Outer(TypedDict, total=False):
    topic: str
    log: Annotated[list[str], operator.add]
    verdict: str


def prepare(state: Outer) -> dict:
    return {"log": ["prepared"]}


def finish(state: Outer) -> dict:
    return {"log": ["finished"]}


builder = StateGraph(Outer)
builder.add_node("prepare", prepare)
builder.add_node("plan", plan_builder.compile())
builder.add_node("finish", finish)
builder.add_edge(START, "prepare")
builder.add_edge("prepare", "plan")
builder.add_edge("plan", "finish")
builder.add_edge("finish", END)
graph = builder.compile()
