"""A later superstep of a durable run, run as a step of its own as LangGraph runs it inside one ``ainvoke``.

garrison runs each superstep of a run as its own ``graph.astream(None, config, interrupt_after="*")``
(runtime/executor.py, in the sandbox runtime/sandbox_runner.py). Given input ``None``, LangGraph takes
the call for a resume and tells that superstep's subgraphs they resume: a persistent subgraph
(``checkpointer=True``) that has a checkpoint then goes on from it and ignores its input. Within one
``ainvoke`` only the first superstep resumes. So a step that continues its run for the first time (not a
resume, not a retry of a step that may have partly run) runs with LangGraph's resuming flag set to False
(``fresh_config``). What that changes besides:

- LangGraph does not stream the state the step starts from first (a resumed step does; the executor drops
  it), so the step's first ``values`` event is its own.
- LangGraph does not mark the channels as seen by breakpoints at the step's start. ``interrupt_after="*"``
  still stops after the one superstep (its tasks' writes are newer), but a breakpoint compiled into the
  graph (``interrupt_before``) would stop every such step before its tasks, again and again. garrison does
  not stop at compiled breakpoints after a run's first superstep (each resumed step passed them), so such a
  step passes ``NO_BREAKPOINTS``, which names no node, as the step's ``interrupt_before``.

The sandbox runner copies this logic (it imports nothing from garrison); a request carries ``"fresh": true``
and a runner that applied it marks its first stream item ``"fresh": true`` (runtime/sandboxed_steps.py).
"""

from __future__ import annotations

from typing import Any

from langgraph._internal._constants import CONFIG_KEY_RESUMING

# No node has this name: a step's interrupt_before that stops before none (an empty list means "the graph's").
NO_BREAKPOINTS = ["__garrison_no_breakpoint__"]


def fresh_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` for a step that continues its run for the first time: LangGraph does not resume."""
    return {**config, "configurable": {**config.get("configurable", {}), CONFIG_KEY_RESUMING: False}}


def is_fresh(config: dict[str, Any]) -> bool:
    """Whether ``config`` is one ``fresh_config`` made."""
    return (config.get("configurable") or {}).get(CONFIG_KEY_RESUMING) is False


def plain(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without the flag ``fresh_config`` set (what an older sandbox runner must not see)."""
    configurable = {k: v for k, v in (config.get("configurable") or {}).items() if k != CONFIG_KEY_RESUMING}
    return {**config, "configurable": configurable}
