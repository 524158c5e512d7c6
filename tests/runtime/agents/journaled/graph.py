"""Test agent: asks a model through garrison's LLM gateway, then loses its worker once.

JOURNAL_MARKER (env) names a file that says whether the worker was lost already; the
answer says whether the model call was answered from garrison's journal of run calls.
"""

import os
from pathlib import Path
from typing import TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from openai import AsyncOpenAI


class WorkerLost(BaseException):  # noqa: N818 (named for what it stands for)
    """Stands for the process dying under the step: not the agent's own error, so Temporal retries it."""


class State(TypedDict, total=False):
    question: str
    draft: str
    replayed: bool


def _first_time(marker: Path) -> bool:
    if marker.exists():
        return False
    marker.write_text("lost once")
    return True


async def draft(state: State, config: RunnableConfig) -> dict:
    run = config["configurable"].get("garrison") or {}
    client = AsyncOpenAI(base_url=os.environ["AGENT_LLM_BASE_URL"], max_retries=0,
                         api_key=run.get("token") or os.environ["AGENT_LLM_KEY"], default_headers=run.get("headers"))
    raw = await client.chat.completions.with_raw_response.create(
        model=os.environ.get("AGENT_MODEL", "fake-model"), messages=[{"role": "user", "content": state["question"]}])
    await client.close()
    reply = raw.parse()
    if _first_time(Path(os.environ["JOURNAL_MARKER"])):
        raise WorkerLost("the worker went away after the model had answered")
    return {"draft": reply.choices[0].message.content, "replayed": raw.headers.get("x-garrison-replayed") == "true"}


builder = StateGraph(State)
builder.add_node("draft", draft)
builder.add_edge(START, "draft")
builder.add_edge("draft", END)
graph = builder.compile()
