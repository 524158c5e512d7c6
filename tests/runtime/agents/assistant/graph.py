"""Test agent: asks a model through garrison's LLM gateway, calls a tool through garrison's tools
gateway, then waits for a human to approve the draft.

The gateway URLs come from AGENT_LLM_BASE_URL and AGENT_MCP_URL (no tool call without it); the key
is the run's own token that garrison hands each step in config["configurable"]["garrison"] (with the
headers that name the agent), else AGENT_LLM_KEY.
"""

import os
from typing import TypedDict

import httpx2
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from openai import AsyncOpenAI


class State(TypedDict, total=False):
    question: str
    draft: str
    tokens: int
    checked: str
    verdict: str


def _run(config: RunnableConfig) -> dict:
    return config["configurable"].get("garrison") or {}


async def draft(state: State, config: RunnableConfig) -> dict:
    run = _run(config)
    client = AsyncOpenAI(base_url=os.environ["AGENT_LLM_BASE_URL"],
                         api_key=run.get("token") or os.environ["AGENT_LLM_KEY"], default_headers=run.get("headers"))
    reply = await client.chat.completions.create(
        model=os.environ.get("AGENT_MODEL", "fake-model"),
        messages=[{"role": "user", "content": state["question"]}])
    await client.close()
    return {"draft": reply.choices[0].message.content, "tokens": reply.usage.total_tokens}


async def check(state: State, config: RunnableConfig) -> dict:
    url = os.environ.get("AGENT_MCP_URL")
    if not url:
        return {}
    token = _run(config).get("token") or os.environ["AGENT_LLM_KEY"]
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http)) as mcp:
            result = await mcp.call_tool("fixture__add", {"a": state["tokens"], "b": 1})
    return {"checked": "".join(c.text for c in result.content if c.type == "text")}


def review(state: State) -> dict:
    verdict = interrupt({"draft": state["draft"]})
    return {"verdict": verdict}


builder = StateGraph(State)
builder.add_node("draft", draft)
builder.add_node("check", check)
builder.add_node("review", review)
builder.add_edge(START, "draft")
builder.add_edge("draft", "check")
builder.add_edge("check", "review")
builder.add_edge("review", END)
graph = builder.compile()
