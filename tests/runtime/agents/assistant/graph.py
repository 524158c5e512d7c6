"""Test agent: asks a model through garrison's LLM gateway, then waits for a human to approve the draft.

The gateway URL and key come from AGENT_LLM_BASE_URL / AGENT_LLM_KEY (the test sets them).
"""

import os
from typing import TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from openai import AsyncOpenAI


class State(TypedDict, total=False):
    question: str
    draft: str
    tokens: int
    verdict: str


async def draft(state: State) -> dict:
    client = AsyncOpenAI(base_url=os.environ["AGENT_LLM_BASE_URL"], api_key=os.environ["AGENT_LLM_KEY"])
    reply = await client.chat.completions.create(
        model=os.environ.get("AGENT_MODEL", "fake-model"),
        messages=[{"role": "user", "content": state["question"]}])
    await client.close()
    return {"draft": reply.choices[0].message.content, "tokens": reply.usage.total_tokens}


def review(state: State) -> dict:
    verdict = interrupt({"draft": state["draft"]})
    return {"verdict": verdict}


builder = StateGraph(State)
builder.add_node("draft", draft)
builder.add_node("review", review)
builder.add_edge(START, "draft")
builder.add_edge("draft", "review")
builder.add_edge("review", END)
graph = builder.compile()
