"""Test agent: what a sandboxed graph needs beyond its own root state.

``remembering`` writes to LangGraph's long-term store with ``get_store()`` (blocking calls) and reads
it back (async calls): inside a sandbox that store is garrison's, reached through the egress.
``nested`` runs a subgraph as a node; the subgraph drafts (a fresh random draft each time it runs),
then interrupts inside itself for a review. Resumed, the review must see the same draft: the
subgraph's own checkpoint (namespace ``plan:<task id>``) must have survived between the steps.
"""

import operator
import uuid
from typing import Annotated, Any, TypedDict

from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt


class Memory(TypedDict, total=False):
    user: str
    key: str
    note: str
    forget: str
    got: Any
    found: list[str]
    namespaces: list[list[str]]


def write(state: Memory) -> dict:
    store = get_store()
    ns = ("memories", state["user"])
    if state.get("note"):
        store.put(ns, state["key"], {"text": state["note"]})
    if state.get("forget"):
        store.delete(ns, state["forget"])
    return {}


async def read(state: Memory) -> dict:
    store = get_store()
    got = await store.aget(("memories", state["user"]), "k1")
    found = await store.asearch(("memories",), limit=10)
    spaces = await store.alist_namespaces(prefix=("memories",))
    return {"got": got.value if got else None, "found": sorted(i.value["text"] for i in found),
            "namespaces": [list(n) for n in spaces]}


memory_builder = StateGraph(Memory)
memory_builder.add_node("write", write)
memory_builder.add_node("read", read)
memory_builder.add_edge(START, "write")
memory_builder.add_edge("write", "read")
memory_builder.add_edge("read", END)
remembering = memory_builder.compile()


class Review(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    draft: str  # the subgraph's own: only its checkpoint keeps it between steps


def draft(state: Review) -> dict:
    return {"draft": f"plan-{uuid.uuid4().hex[:8]}"}


def review(state: Review) -> dict:
    answer = interrupt({"question": "approve the draft?", "draft": state["draft"]})
    return {"log": [f"reviewed {state['draft']}: {answer}"]}


review_builder = StateGraph(Review)
review_builder.add_node("draft", draft)
review_builder.add_node("review", review)
review_builder.add_edge(START, "draft")
review_builder.add_edge("draft", "review")
review_builder.add_edge("review", END)


class Plan(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def finish(state: Plan) -> dict:
    return {"log": ["finished"]}


plan_builder = StateGraph(Plan)
plan_builder.add_node("plan", review_builder.compile())
plan_builder.add_node("finish", finish)
plan_builder.add_edge(START, "plan")
plan_builder.add_edge("plan", "finish")
plan_builder.add_edge("finish", END)
nested = plan_builder.compile()
