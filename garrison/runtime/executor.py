"""The activities of a durable run: execute one graph superstep, and record how a run ended."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from temporalio import activity

from garrison.runtime.events import StoreEvents
from garrison.runtime.store import FINAL_RUN, RuntimeStore
from garrison.runtime.workflows import FINISH_ACTIVITY, STEP_ACTIVITY, FinishParams, StepOutcome, StepParams

log = logging.getLogger("garrison.runtime.executor")
tracer = trace.get_tracer("garrison.runtime")

# What a thread becomes when its run ends.
THREAD_STATUS = {"success": "idle", "interrupted": "interrupted", "error": "error", "timeout": "error"}


def _is_breakpoint_marker(mode: str, chunk: Any) -> bool:
    """The empty ``__interrupt__`` update that our own after-each-step breakpoint produces."""
    return mode == "updates" and isinstance(chunk, dict) and chunk.get("__interrupt__") == ()


class RunExecutor:
    """Holds what the activities need; ``graph_for(run)`` returns the bound graph and its config."""

    def __init__(self, store: RuntimeStore, events: StoreEvents, heartbeat_every_s: float,
                 graph_for: Callable[[dict[str, Any]], Awaitable[tuple[Any, dict[str, Any]]]],
                 on_finished: Callable[[dict[str, Any], str], Awaitable[None]]) -> None:
        self.store = store
        self.events = events
        self.heartbeat_every_s = heartbeat_every_s
        self.graph_for = graph_for
        self.on_finished = on_finished

    def activities(self) -> list[Callable[..., Any]]:
        return [self.run_step, self.finish_run]

    async def _beat(self) -> None:
        if activity.info().is_local:
            return  # local activities have no heartbeats
        while True:
            await asyncio.sleep(self.heartbeat_every_s)
            activity.heartbeat()

    @activity.defn(name=STEP_ACTIVITY)
    async def run_step(self, params: StepParams) -> StepOutcome:
        run = await self.store.run(params.run_id)
        if run is None:
            return StepOutcome("error")  # deleted meanwhile (rollback)
        if run["status"] in FINAL_RUN:
            return StepOutcome(run["status"])  # recorded before a crash; nothing left to do
        if run["status"] == "pending":
            active = await self.store.active_runs(run["thread_id"])
            if active and active[0] != run["run_id"]:
                return StepOutcome("wait")
            await self.store.update_run(run["run_id"], status="running")
            await self.store.update_thread(run["thread_id"], status="busy")
        beat = asyncio.create_task(self._beat())
        try:
            with tracer.start_as_current_span("runtime.run_step", attributes={
                    "garrison.run_id": run["run_id"], "garrison.thread_id": run["thread_id"],
                    "garrison.step": params.step}):
                return await self._step(run, params)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _step(self, run: dict[str, Any], params: StepParams) -> StepOutcome:
        from langgraph.types import Command

        spec = run["spec"]
        graph, config = await self.graph_for(run)
        # A local step can be replayed by a new workflow task after a crash, on attempt 1 again.
        retrying = activity.info().attempt > 1 or activity.info().is_local
        if params.resume_input_id:
            graph_input: Any = Command(resume=await self.store.input_value(params.resume_input_id))
        elif params.step == 0 and not (retrying and await self._already_started(graph, config, run["run_id"])):
            graph_input = Command(**spec["command"]) if spec.get("command") else spec.get("input")
        else:
            graph_input = None  # continue from the last checkpoint
        modes: list[str] = spec.get("stream_mode") or ["values"]
        wanted = set(modes)
        internal = sorted(wanted | {"updates"})
        skip_first_values = graph_input is None and params.step > 0
        try:
            local = activity.info().is_local
            async for item in graph.astream(graph_input, config, stream_mode=internal, interrupt_after="*",
                                            subgraphs=bool(spec.get("stream_subgraphs")),
                                            context=spec.get("context")):
                if not local:
                    activity.heartbeat()
                if len(item) == 3:
                    namespace, mode, chunk = item
                else:
                    (mode, chunk), namespace = item, ()
                if _is_breakpoint_marker(mode, chunk) or mode not in wanted:
                    continue
                if mode == "values" and skip_first_values and not namespace:
                    skip_first_values = False
                    continue
                name = mode if not namespace else f"{mode}|{'|'.join(namespace)}"
                if mode == "messages":
                    name = "messages" if not namespace else name
                await self.events.publish(run["run_id"], name, chunk, step=params.step)
            state = await graph.aget_state(config)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the agent's own error: recorded, not retried (its steps are not idempotent)
            log.info("run %s failed in step %s: %s", run["run_id"], params.step, exc)
            await self.events.publish(run["run_id"], "error", {"error": type(exc).__name__, "message": str(exc)},
                                      step=params.step)
            await self._finish(run, "error", f"{type(exc).__name__}: {exc}")
            return StepOutcome("error")
        await self.store.update_run(run["run_id"], steps=params.step + 1)
        if state.next:
            if any(task.interrupts for task in state.tasks):
                if spec.get("hold_for_input_s"):
                    # The workflow waits for the human_input signal; the run stays open.
                    await self.store.update_thread(run["thread_id"], status="interrupted")
                    self.events.wake(run["run_id"])
                    self.events.wake(run["run_id"] + "#done")
                    return StepOutcome("interrupted")
                await self._finish(run, "interrupted", None)
                return StepOutcome("interrupted")
            return StepOutcome("continue")
        await self._finish(run, "success", None)
        return StepOutcome("success")

    async def _already_started(self, graph: Any, config: dict[str, Any], run_id: str) -> bool:
        """A retried first step whose input was already checkpointed must not apply it twice."""
        state = await graph.aget_state(config)
        return bool(state.metadata and state.metadata.get("run_id") == run_id)

    async def _finish(self, run: dict[str, Any], status: str, error: str | None) -> None:
        await self.store.update_run(run["run_id"], status=status, error=error)
        await self.store.update_thread(run["thread_id"], status=THREAD_STATUS.get(status, "idle"))
        await self.on_finished(run, status)

    @activity.defn(name=FINISH_ACTIVITY)
    async def finish_run(self, params: FinishParams) -> None:
        run = await self.store.run(params.run_id)
        if run is None or run["status"] in FINAL_RUN:
            return
        if params.status == "error" and params.error:
            await self.events.publish(run["run_id"], "error", {"error": "RunFailed", "message": params.error})
        await self._finish(run, params.status, params.error)
