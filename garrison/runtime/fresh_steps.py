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
  still stops after the one superstep (its tasks' writes are newer), and a breakpoint compiled into the
  graph (``interrupt_before``) stops the step before its tasks when LangGraph's rule holds (a channel
  updated since the last resume), as it stops one ``ainvoke`` there. Such a stop ends the run, interrupted
  (``breakpoint_stop``): a new run on the thread with input ``None`` resumes, which passes the breakpoint.
  The graph's compiled ``interrupt_after`` (garrison's own ``"*"`` replaces it in each step) is applied
  after the step the same way.

The sandbox runner copies this logic (it imports nothing from garrison); a request carries ``"fresh": true``
and a runner that applied it marks its first stream item ``"fresh": true`` (runtime/sandboxed_steps.py). A
request with ``"breakpoints": true`` has the runner keep the compiled ``interrupt_before`` on a fresh step and
name the graph's breakpoints in its last frame; a runner deployed before ignores it: it passes
``NO_BREAKPOINTS`` (a list naming no node) on a fresh step and names none, so its runs do not stop at them.
"""

from __future__ import annotations

from typing import Any

from langgraph._internal._constants import CONFIG_KEY_RESUMING


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


def _named(nodes: Any, names: Any) -> list[str]:
    """Those of ``names`` that a breakpoint list (``"*"``: every node) names."""
    return [n for n in names if n in nodes] if nodes != "*" else list(names)


def breakpoint_stop(graph: Any, state: Any, ran: set[str], run_id: str, step: int) -> str | None:
    """Whether step ``step`` of run ``run_id``, which left ``state`` and ran the tasks of the nodes ``ran``,
    stopped at a breakpoint compiled into ``graph`` (its ``interrupt_before_nodes`` and
    ``interrupt_after_nodes``, as a compiled graph has them), and which: "before <nodes>" or "after <nodes>".

    Before: LangGraph stopped the step ahead of its tasks (it ran no superstep: the latest checkpoint is not
    one this step completed) and the next tasks include such a node. After: the step completed a superstep
    that ran such a node, and tasks remain. A stop at an ``interrupt()`` (tasks with interrupts) is not one.
    """
    before = getattr(graph, "interrupt_before_nodes", None) or ()
    after = getattr(graph, "interrupt_after_nodes", None) or ()
    if not (before or after) or not state.next or any(task.interrupts for task in state.tasks):
        return None
    meta = state.metadata or {}
    completed = (meta.get("run_id") == run_id and meta.get("garrison_step") == step
                 and meta.get("source") == "loop")
    if before and not completed and (nodes := _named(before, state.next)):
        return f"before {', '.join(nodes)}"
    if after and completed and (nodes := _named(after, sorted(ran))):
        return f"after {', '.join(nodes)}"
    return None
