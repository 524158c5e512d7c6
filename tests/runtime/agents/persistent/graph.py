"""Test agent: persistent subgraphs (compiled with ``checkpointer=True``), which keep their own state
across the parent's runs on a thread, under a namespace without task ids.

``call`` invokes the ``memo`` subgraph from inside its function (namespace ``call``); ``keep`` is a
persistent subgraph added as a node (namespace ``keep``); ``plan`` is an ordinary subgraph (a fresh
state each run, namespace ``plan:<task id>``). Each run adds the run's ``topic`` to the persistent
subgraphs' own ``notes`` (a key the parent does not have, so only the subgraph's checkpoint carries it
from one run to the next). No isolation named: it runs in garrison's process or in its thread's
sandbox as the deployment's default (GARRISON_RUNTIME_GRAPH_ISOLATION) says.
"""

import operator
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt


class Memo(TypedDict, total=False):
    topic: str
    notes: Annotated[list[str], operator.add]  # the subgraph's own: kept across runs when persistent
    count: int
    kept: list[str]  # what it hands back to the parent


def remember(state: Memo) -> dict:
    notes = [*state.get("notes", []), state["topic"]]
    return {"notes": [state["topic"]], "count": state.get("count", 0) + 1, "kept": notes}


def _memo() -> StateGraph:
    builder = StateGraph(Memo)
    builder.add_node("remember", remember)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", END)
    return builder


memo = _memo().compile(checkpointer=True)


class Plan(TypedDict, total=False):
    topic: str
    drafted: str


def draft(state: Plan) -> dict:
    return {"drafted": f"draft {state['topic']}"}


plan_builder = StateGraph(Plan)
plan_builder.add_node("draft", draft)
plan_builder.add_edge(START, "draft")
plan_builder.add_edge("draft", END)


class Outer(TypedDict, total=False):
    topic: str
    called: list[str]  # what ``memo`` (called by ``call``) remembers
    kept: list[str]  # what ``keep`` remembers
    drafted: str
    log: Annotated[list[str], operator.add]


async def call(state: Outer) -> dict:
    out = await memo.ainvoke({"topic": state["topic"]})
    return {"called": out["kept"], "log": [f"call {state['topic']}: {out['count']}"]}


builder = StateGraph(Outer)
builder.add_node("call", call)
builder.add_node("keep", _memo().compile(checkpointer=True))
builder.add_node("plan", plan_builder.compile())
builder.add_edge(START, "call")
builder.add_edge(START, "keep")
builder.add_edge(["call", "keep"], "plan")
builder.add_edge("plan", END)
graph = builder.compile()


def prepare(state: Outer) -> dict:
    return {"log": [f"prepared {state['topic']}"]}


# The persistent subgraph runs in the run's second superstep (garrison runs each superstep as a step of its own).
later_builder = StateGraph(Outer)
later_builder.add_node("prepare", prepare)
later_builder.add_node("keep", _memo().compile(checkpointer=True))
later_builder.add_edge(START, "prepare")
later_builder.add_edge("prepare", "keep")
later_builder.add_edge("keep", END)
later = later_builder.compile()
# The same with a breakpoint compiled in: the run stops before ``keep`` (in its second superstep, which runs
# fresh) and ends interrupted, once, as LangGraph's does.
later_stopped = later_builder.compile(interrupt_before=["keep"])


def ask(state: Memo) -> dict:
    answer = interrupt({"question": f"note {state['topic']}?", "notes": state.get("notes", [])})
    note = f"{state['topic']}: {answer}"
    return {"notes": [note], "count": state.get("count", 0) + 1, "kept": [*state.get("notes", []), note]}


# A persistent subgraph that interrupts: resumed, it goes on from its own checkpoint (with its pending writes).
asking_memo = StateGraph(Memo)
asking_memo.add_node("ask", ask)
asking_memo.add_edge(START, "ask")
asking_memo.add_edge("ask", END)
asking_builder = StateGraph(Outer)
asking_builder.add_node("keep", asking_memo.compile(checkpointer=True))
asking_builder.add_edge(START, "keep")
asking_builder.add_edge("keep", END)
asking = asking_builder.compile()
