"""Test agent whose answer names its version (VERSION is rewritten by the test before each deploy)."""

from typing import TypedDict

from langgraph.graph import END, START, StateGraph

VERSION = "one"


class State(TypedDict, total=False):
    answer: str


def answer(state: State) -> dict:
    return {"answer": VERSION}


builder = StateGraph(State)
builder.add_node("answer", answer)
builder.add_edge(START, "answer")
builder.add_edge("answer", END)
graph = builder.compile()
