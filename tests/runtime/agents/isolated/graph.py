"""Test agent: looks around from where its code runs, asks a model through garrison, then a slow step.

``look`` reports whether it can read ``probe`` (a file garrison can read), its hostname, pid and
environment, and asks the model through ``config["configurable"]["garrison"]`` (llm_base_url,
token, headers): inside a sandbox that is the egress listener and the thread's session token.
``slow`` announces itself on the custom stream, then sleeps ``sleep_s`` (so a test can kill it).
"""

import json
import os
import socket
import time
import urllib.request
from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    probe: str
    no_model: bool
    sleep_s: float
    seen: dict[str, Any]
    answer: str
    slow_runs: int


def look(state: State, config: RunnableConfig) -> dict:
    try:
        with open(state["probe"]) as fh:
            read = fh.read()
    except OSError as exc:
        read = f"denied: {type(exc).__name__}"
    seen = {"read": read, "hostname": socket.gethostname(), "pid": os.getpid(),
            "secret": os.environ.get("GARRISON_TEST_SECRET"), "openai_base_url": os.environ.get("OPENAI_BASE_URL")}
    if state.get("no_model"):
        return {"seen": seen}
    garrison = config["configurable"].get("garrison") or {}
    request = urllib.request.Request(
        garrison["llm_base_url"] + "/chat/completions", method="POST",
        data=json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {garrison['token']}",
                 **garrison.get("headers", {})})
    with urllib.request.urlopen(request, timeout=60) as resp:
        answer = json.loads(resp.read())["choices"][0]["message"]["content"]
    return {"seen": seen, "answer": answer}


def slow(state: State) -> dict:
    get_stream_writer()({"slow": "started"})
    time.sleep(float(state.get("sleep_s") or 0))
    return {"slow_runs": (state.get("slow_runs") or 0) + 1}


builder = StateGraph(State)
builder.add_node("look", look)
builder.add_node("slow", slow)
builder.add_edge(START, "look")
builder.add_edge("look", "slow")
builder.add_edge("slow", END)
graph = builder.compile()
