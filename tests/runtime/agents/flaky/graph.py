"""Test agent: a step that streams two parts, then loses its worker once (FLAKY_MARKER says whether it did)."""

import asyncio
import os
from pathlib import Path
from typing import TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph


class WorkerLost(BaseException):  # noqa: N818 (named for what it stands for)
    """Stands for the process dying under the step: not the agent's own error, so Temporal retries it."""


class State(TypedDict, total=False):
    done: bool


def _first_time(marker: Path) -> bool:
    if marker.exists():
        return False
    marker.write_text("lost once")
    return True


async def work(state: State) -> dict:
    write = get_stream_writer()
    for part in (1, 2):
        write({"part": part})
        await asyncio.sleep(0.05)  # let the stream hand each part on before anything else happens
    if _first_time(Path(os.environ["FLAKY_MARKER"])):
        raise WorkerLost("the worker went away")
    write({"part": 3})
    return {"done": True}


builder = StateGraph(State)
builder.add_node("work", work)
builder.add_edge(START, "work")
builder.add_edge("work", END)
graph = builder.compile()
