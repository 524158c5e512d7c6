"""Test agent for one trace per invocation: asks a model through garrison's LLM gateway, calls a tool
through garrison's tools gateway (each in its own superstep), then waits for a human's verdict.

Everything it sends to garrison comes from config["configurable"]["garrison"]: the run's token and
the headers garrison hands each step (they name the agent, the run, and the step's trace). The LLM
gateway is AGENT_LLM_BASE_URL, the tools gateway's virtual server AGENT_MCP_URL (environment).
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
    answer: str
    total: str
    verdict: str


def _garrison(config: RunnableConfig) -> dict:
    return config["configurable"].get("garrison") or {}


async def ask(state: State, config: RunnableConfig) -> dict:
    run = _garrison(config)
    client = AsyncOpenAI(base_url=os.environ["AGENT_LLM_BASE_URL"], api_key=run["token"],
                         default_headers=run.get("headers"))
    reply = await client.chat.completions.create(model="fake-model",
                                                 messages=[{"role": "user", "content": state["question"]}])
    await client.close()
    return {"answer": reply.choices[0].message.content}


async def act(state: State, config: RunnableConfig) -> dict:
    run = _garrison(config)
    headers = {**(run.get("headers") or {}), "Authorization": f"Bearer {run['token']}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(os.environ["AGENT_MCP_URL"], http_client=http)) as mcp:
            result = await mcp.call_tool("fixture__add", {"a": 41, "b": 1})
    return {"total": "".join(c.text for c in result.content if c.type == "text")}


def review(state: State) -> dict:
    if not os.environ.get("AGENT_REVIEW"):
        return {}
    return {"verdict": interrupt({"answer": state["answer"]})}


builder = StateGraph(State)
builder.add_node("ask", ask)
builder.add_node("act", act)
builder.add_node("review", review)
builder.add_edge(START, "ask")
builder.add_edge("ask", "act")
builder.add_edge("act", "review")
builder.add_edge("review", END)
graph = builder.compile()
