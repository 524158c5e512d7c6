"""Test agent: calls a tool through garrison's tools gateway (MCP), then loses its worker once.

AGENT_MCP_URL (env) is the gateway's virtual server; the run's token and headers (which name the
run and the step) come from config["configurable"]["garrison"]. JOURNAL_MARKER (env) names a file
that says whether the worker was lost already; the answer says whether the tool call was answered
from garrison's journal of run calls.
"""

import os
from pathlib import Path
from typing import TypedDict

import httpx2
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


class WorkerLost(BaseException):  # noqa: N818 (named for what it stands for)
    """Stands for the process dying under the step: not the agent's own error, so Temporal retries it."""


class State(TypedDict, total=False):
    a: int
    total: str
    replayed: bool


def _first_time(marker: Path) -> bool:
    if marker.exists():
        return False
    marker.write_text("lost once")
    return True


async def act(state: State, config: RunnableConfig) -> dict:
    run = config["configurable"].get("garrison") or {}
    headers = {**(run.get("headers") or {}), "Authorization": f"Bearer {run['token']}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(os.environ["AGENT_MCP_URL"], http_client=http)) as mcp:
            result = await mcp.call_tool("fixture__add", {"a": state["a"], "b": 1})
    if _first_time(Path(os.environ["JOURNAL_MARKER"])):
        raise WorkerLost("the worker went away after the tool had answered")
    meta = result.meta or {}
    return {"total": "".join(c.text for c in result.content if c.type == "text"),
            "replayed": meta.get("garrison/replayed") is True}


builder = StateGraph(State)
builder.add_node("act", act)
builder.add_edge(START, "act")
builder.add_edge("act", END)
graph = builder.compile()
