"""The activities of a durable run: execute one graph superstep, and record how a run ended."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import propagate, trace
from temporalio import activity

from garrison.runtime.calls import STEP_HEADER
from garrison.runtime.events import StoreEvents
from garrison.runtime.fresh_steps import breakpoint_stop, fresh_config
from garrison.runtime.store import FINAL_RUN, RuntimeStore
from garrison.runtime.workflows import FINISH_ACTIVITY, STEP_ACTIVITY, FinishParams, StepOutcome, StepParams

log = logging.getLogger("garrison.runtime.executor")
tracer = trace.get_tracer("garrison.runtime")

# A step slower than this records the run's progress (steps completed) as soon as it ends.
PROGRESS_WRITE_AFTER_S = 1.0

# What a thread becomes when its run ends.
THREAD_STATUS = {"success": "idle", "interrupted": "interrupted", "error": "error", "timeout": "error"}


# A step's events are written in batches: what it streams within this long goes in one transaction, and
# what is left goes with the step's outcome (a short step: its events and its status write in one commit).
BATCH_S = 0.02
# ... while a reader in this process waits on the run's stream (woken by the write at once). With none,
# readers are in other processes, which poll the table every poll_s anyway, or not there at all (a run
# awaited with /wait): the batch then stays open up to poll_s, so a step that ends within that time
# writes its events once, with its outcome, instead of once on the timer and once at its end.


class _StepWrites:
    """The events and status writes of one step, written together (in order) at most ``BATCH_S`` late."""

    def __init__(self, events: Any, store: RuntimeStore, run_id: str, step: int) -> None:
        self.events, self.store, self.run_id, self.step = events, store, run_id, step
        self.items: list[tuple[str, Any]] = []
        self.writes: list[Callable[[Any], Awaitable[None]]] = []
        self.lock = asyncio.Lock()
        self.timer: asyncio.Task[None] | None = None

    def add(self, name: str, data: Any) -> None:
        self.items.append((name, data))
        self._soon()

    def write(self, write: Callable[[Any], Awaitable[None]]) -> None:
        self.writes.append(write)
        self._soon()

    def _soon(self) -> None:
        if self.timer is None:
            self.timer = asyncio.create_task(self._later())

    async def _later(self) -> None:
        waited = getattr(self.events, "waited", None)
        longest = getattr(self.events, "poll_s", BATCH_S) if waited is not None else BATCH_S
        slept = 0.0
        while True:
            await asyncio.sleep(BATCH_S)
            slept += BATCH_S
            # A reader that starts waiting meanwhile gets the events within BATCH_S of that.
            if slept >= longest or waited is None or waited(self.run_id):
                break
        self.timer = None  # from here on it is not cancelled: it writes
        try:
            await self.flush()
        except Exception as exc:  # kept: the step's own flush writes them (or fails the step)
            log.warning("run %s: writing step events failed: %s", self.run_id, exc)

    def drop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    async def flush(self, also: Callable[[Any], Awaitable[None]] | None = None) -> None:
        self.drop()  # a timer still sleeping: what it would write is written here
        async with self.lock:
            items, writes = self.items, self.writes + ([also] if also is not None else [])
            self.items, self.writes = [], []
            if not items and not writes:
                return

            async def all_writes(conn: Any) -> None:
                for write in writes:
                    await write(conn)

            try:
                many = getattr(self.events, "publish_many", None)
                if many is not None:  # the store: events and status in one transaction
                    await many(self.run_id, items, self.step, also=all_writes if writes else None)
                    return
                for name, data in items:
                    await self.events.publish(self.run_id, name, data, step=self.step)
                if writes:
                    async with self.store.db.engine.begin() as conn:
                        await all_writes(conn)
            except BaseException:
                self.items[:0], self.writes[:0] = items, writes[:len(writes) - (also is not None)]
                raise


def _is_breakpoint_marker(mode: str, chunk: Any) -> bool:
    """The empty ``__interrupt__`` update that our own after-each-step breakpoint produces."""
    return mode == "updates" and isinstance(chunk, dict) and chunk.get("__interrupt__") == ()


def _mine(snapshot: Any, run_id: str) -> bool:
    return bool(snapshot.metadata and snapshot.metadata.get("run_id") == run_id)


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
        # The step each run created or stepped in this process expects next. A local step has no
        # attempt count that survives a crash, so a step not expected here may be a re-execution:
        # only then is the checkpoint (and the events already published) looked at.
        self._expected: dict[str, int] = {}
        # Values of runs that ended in this process: the caller waiting for them needs no re-read.
        self._final: OrderedDict[str, Any] = OrderedDict()
        self._ended: OrderedDict[str, tuple[str, str | None]] = OrderedDict()  # status, error
        # Steps running in this process, so a cancel reaches a local step at once (it has no heartbeats).
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._cancelled: set[str] = set()
        # The row of each run stepping here, read at its first step (its spec never changes).
        self._runs: dict[str, dict[str, Any]] = {}
        self._alone: set[str] = set()  # runs on a thread of their own (see expect)
        self.journal: Any = None  # the model-call journal (runtime/calls.py), set with the first step
        self._writes: dict[str, _StepWrites] = {}  # of the step of each run running here
        # Isolation hook (runtime/sandboxed_steps.py, set by the runtime service): the graph of a
        # version deployed with isolation = "sandbox" steps in its thread's sandbox, not here.
        self.isolation: Any = None

    def activities(self) -> list[Callable[..., Any]]:
        return [self.run_step, self.finish_run]

    def expect(self, run_id: str, run: dict[str, Any] | None = None, *, alone: bool = False) -> None:
        """``run_id`` was created by this process: its first step is new, not a re-execution.

        ``run``: its row as inserted (the first step need not read it); ``alone``: its thread is new,
        so no earlier run of the thread can be in progress (the first step need not look).
        """
        self._expected[run_id] = 0
        if run is not None:
            self._runs[run_id] = run
        if alone:
            self._alone.add(run_id)
        if len(self._expected) > 10_000:
            oldest = next(iter(self._expected))
            self._expected.pop(oldest)
            self._runs.pop(oldest, None)
            self._alone.discard(oldest)

    def final_values(self, run_id: str) -> Any:
        """The state snapshot a run ended with in this process, if it did (taken once)."""
        return self._final.pop(run_id, None)

    def ended(self, run_id: str) -> tuple[str, str | None] | None:
        """(status, error) of a run that ended in this process, if it did."""
        return self._ended.get(run_id)

    def cancel_local(self, run_id: str) -> bool:
        """Stop ``run_id`` if it steps in this process: its running step now, else at its next step.

        A local step has no heartbeat to carry the workflow's cancellation, and the workflow sees the
        cancel signal only after its current workflow task, which runs the next local step first: so
        the request is remembered here, and a step of a cancelled run ends the run instead of running.
        """
        task = self._running.get(run_id)
        if task is None and run_id not in self._expected:
            return False  # not stepping here: the workflow's cancellation reaches it
        self._cancelled.add(run_id)
        if task is not None:
            task.cancel()
        return True

    async def _end_cancelled(self, run: dict[str, Any], steps: int | None = None) -> StepOutcome:
        self._cancelled.discard(run["run_id"])
        await self._finish(run, "interrupted", "cancelled", steps=steps)
        return StepOutcome("cancelled")

    async def _beat(self) -> None:
        if activity.info().is_local:
            return  # local activities have no heartbeats
        while True:
            await asyncio.sleep(self.heartbeat_every_s)
            activity.heartbeat()

    @activity.defn(name=STEP_ACTIVITY)
    async def run_step(self, params: StepParams) -> StepOutcome:
        fresh = activity.info().attempt == 1 and self._expected.get(params.run_id) == params.step
        run = self._runs.get(params.run_id) if fresh else None
        if run is None:
            # Not stepped here before (or maybe repeated): the row says whether it ended or was deleted.
            run = await self.store.run(params.run_id)
        if run is None:
            return StepOutcome("error")  # deleted meanwhile (rollback)
        if run["status"] in FINAL_RUN:
            return StepOutcome(run["status"])  # recorded before a crash; nothing left to do
        if run["run_id"] in self._cancelled:
            return await self._end_cancelled(run)
        if run["status"] == "pending":
            if run["run_id"] not in self._alone:
                active = await self.store.active_runs(run["thread_id"])
                if active and active[0] != run["run_id"]:
                    return StepOutcome("wait")
            self._alone.discard(run["run_id"])
            starting = True
            run = {**run, "status": "running"}
        else:
            starting = False
        writes = self._writes[run["run_id"]] = _StepWrites(self.events, self.store, run["run_id"], params.step)
        if starting:
            # Written with the step's first events (at most BATCH_S after its start), not on its own.
            run_id, thread_id = run["run_id"], run["thread_id"]
            writes.write(lambda conn: self.store.end_run_on(conn, run_id, thread_id, "busy", status="running"))
        beat = asyncio.create_task(self._beat())
        task = asyncio.current_task()
        assert task is not None
        self._running[run["run_id"]] = task
        try:
            if run["run_id"] in self._cancelled:  # while the row was read or written above
                return await self._end_cancelled(run)
            # Activities run on the worker's own tasks: the run's trace comes from its spec.
            parent = propagate.extract({"traceparent": run["spec"]["traceparent"]}) \
                if run["spec"].get("traceparent") else None
            with tracer.start_as_current_span("runtime.run_step", context=parent, attributes={
                    "garrison.run_id": run["run_id"], "garrison.thread_id": run["thread_id"],
                    "garrison.tenant_id": run["tenant_id"], "garrison.step": params.step}):
                return await self._step(run, params)
        except asyncio.CancelledError:
            if run["run_id"] not in self._cancelled:
                raise
            # Cancelled through garrison (cancel_local): the run ends here.
            return await self._end_cancelled(run)
        finally:
            if self._running.get(run["run_id"]) is task:
                del self._running[run["run_id"]]
            if self._writes.get(run["run_id"]) is writes:  # not flushed: the step failed (a retry repeats them)
                del self._writes[run["run_id"]]
                writes.drop()
            # Not awaited: awaiting it could swallow a cancellation of this task meant for the step.
            beat.cancel()

    def _maybe_repeated(self, run_id: str, step: int) -> bool:
        info = activity.info()
        if info.attempt > 1:
            return True
        return info.is_local and self._expected.get(run_id) != step

    async def _step(self, run: dict[str, Any], params: StepParams) -> StepOutcome:
        from langgraph.types import Command

        began = time.monotonic()
        spec = run["spec"]
        run_id = run["run_id"]
        isolated = await self.isolation.graph_for(run) if self.isolation is not None else None
        graph, config = isolated if isolated is not None else await self.graph_for(run)
        # Checkpoints written by this step carry its number: a repeated step knows whether it had finished.
        config["metadata"]["garrison_step"] = params.step
        headers = (config["configurable"].get("garrison") or {}).get("headers")
        if isinstance(headers, dict):
            # This execution of the step: the model calls it makes are journaled under it (runtime/calls.py).
            headers[STEP_HEADER] = f"{params.step}/{uuid.uuid4().hex[:16]}"
        skip, started = 0, False
        repeated = self._maybe_repeated(run_id, params.step)
        if repeated:
            if self.journal is not None:
                self.journal.may_have(run_id)  # calls of its earlier steps may be recorded
            done, before = await self._done_step(graph, config, run_id)
            if done is not None and done >= params.step:
                # This step completed before a crash (or a reset) lost its result: it is not run again,
                # nor is the next superstep run under its number; its outcome follows from the checkpoint.
                return await self._outcome(run, params, before, done=done)
            started = before is not None and _mine(before, run_id)
            skip = await self.events.count_step(run_id, params.step)  # published by the earlier attempt
        if params.resume_input_id:
            graph_input: Any = Command(resume=await self.store.input_value(params.resume_input_id))
        elif params.step == 0 and not started:
            graph_input = Command(**spec["command"]) if spec.get("command") else spec.get("input")
        else:
            graph_input = None  # continue from the last checkpoint
        modes: list[str] = spec.get("stream_mode") or ["values"]
        wanted = set(modes)
        internal = sorted(wanted | {"updates"})
        # A later superstep of this run, run for the first time: LangGraph is told it does not resume (see
        # runtime/fresh_steps.py), as in one ainvoke, so its subgraphs take their input. A resume, a step
        # that may repeat one partly executed (its finished tasks' writes are reused, its subgraphs resume)
        # and a run that addresses a checkpoint keep LangGraph's default: they resume.
        fresh = (graph_input is None and params.step > 0 and not repeated and not params.resume_input_id
                 and not config["configurable"].get("checkpoint_id"))
        # A fresh step keeps the graph's compiled interrupt_before: LangGraph stops it before its tasks as it
        # stops one ainvoke (a resumed step has passed them); the stop ends the run (breakpoint_stop, below).
        step_config = fresh_config(config) if fresh else config
        # A resumed step streams the state it resumes from first (the last step's end): not published again.
        skip_first_values = graph_input is None and params.step > 0 and not fresh
        ran: set[str] = set()
        try:
            local = activity.info().is_local
            async for item in graph.astream(graph_input, step_config, stream_mode=internal, interrupt_after="*",
                                            subgraphs=bool(spec.get("stream_subgraphs")),
                                            context=spec.get("context")):
                if not local:
                    activity.heartbeat()
                if len(item) == 3:
                    namespace, mode, chunk = item
                else:
                    (mode, chunk), namespace = item, ()
                if mode == "updates" and not namespace and isinstance(chunk, dict):
                    ran.update(chunk)  # the nodes of the step's tasks (and a breakpoint's marker)
                if _is_breakpoint_marker(mode, chunk) or mode not in wanted:
                    continue
                if mode == "values" and skip_first_values and not namespace:
                    skip_first_values = False
                    continue
                if skip:
                    skip -= 1  # the earlier attempt published this one (same run, step and position)
                    continue
                name = mode if not namespace else f"{mode}|{'|'.join(namespace)}"
                if mode == "messages":
                    name = "messages" if not namespace else name
                self._writes[run_id].add(name, chunk)
            state = await graph.aget_state(config)
            # The superstep is done and checkpointed: a cancel from here on takes effect at the step's
            # end (below), not in the middle of recording its outcome.
            if self._running.get(run_id) is asyncio.current_task():
                del self._running[run_id]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the agent's own error: recorded, not retried (its steps are not idempotent)
            log.info("run %s failed in step %s: %s", run_id, params.step, exc)
            self._writes[run_id].add("error", {"error": type(exc).__name__, "message": str(exc)})
            await self._finish(run, "error", f"{type(exc).__name__}: {exc}")
            return StepOutcome("error")
        stop = breakpoint_stop(graph, state, ran - {"__interrupt__"}, run_id, params.step)
        if stop is not None:
            # A breakpoint compiled into the graph: the run ends interrupted, as LangGraph's would; a new
            # run on the thread with input None goes on from there (a resume passes the breakpoint).
            log.info("run %s stopped %s in step %s", run_id, stop, params.step)
            await self._finish(run, "interrupted", None, steps=params.step + 1, state=state)
            return StepOutcome("cancelled")  # recorded: the workflow ends (it holds for no input)
        return await self._outcome(run, params, state, began=began)

    async def _done_step(self, graph: Any, config: dict[str, Any], run_id: str) -> tuple[int | None, Any]:
        """(the last step of ``run_id`` whose superstep completed, or None; the thread's latest state).

        Checkpoints carry the step that wrote them. The one LangGraph writes right after a run's
        input (before the first superstep executes) carries step 0 too but completes nothing.
        """
        latest, parent = None, None
        async for snapshot in graph.aget_state_history(config, limit=2):
            if latest is None:
                latest = snapshot
            else:
                parent = snapshot
        if latest is None or not _mine(latest, run_id):
            return None, latest
        step = int(latest.metadata.get("garrison_step", -1))
        source = latest.metadata.get("source")
        before_first = (parent is not None and _mine(parent, run_id) and parent.metadata.get("source") == "input"
                        and parent.metadata.get("garrison_step") == step)
        if source == "loop" and not before_first:
            return step, latest
        return (step - 1 if step > 0 else None), latest

    async def _outcome(self, run: dict[str, Any], params: StepParams, state: Any,
                       done: int | None = None, began: float = 0.0) -> StepOutcome:
        """What the workflow does after step ``done`` (this one unless it had run further) left ``state``."""
        run_id = run["run_id"]
        steps = params.step + 1
        if done is not None:
            # A step that stopped at an interrupt leaves no checkpoint of its own: the run's count of
            # completed steps (read afresh for a repeated step) says how far it had come.
            steps = max(done + 1, int(run.get("steps") or 0))
        jump = steps if steps != params.step + 1 else None
        if state.next:
            if any(task.interrupts for task in state.tasks):
                if run["spec"].get("hold_for_input_s"):
                    # The workflow waits for the human_input signal; the run stays open.
                    thread_id = run["thread_id"]
                    await self._flush(run_id, lambda conn: self.store.end_run_on(conn, run_id, thread_id,
                                                                                 "interrupted", steps=steps))
                    self._expected[run_id] = steps
                    self.events.wake(run_id)
                    self.events.wake(run_id + "#done")
                    return StepOutcome("interrupted", jump)
                await self._finish(run, "interrupted", None, steps=steps, state=state)
                return StepOutcome("interrupted", jump)
            if run_id in self._cancelled:
                return await self._end_cancelled(run, steps)
            progress = None
            if time.monotonic() - began > PROGRESS_WRITE_AFTER_S:
                # Progress of a slow run is visible; a fast step skips the write (the count is recorded
                # when the run stops or waits, and a repeated step reads its progress from the checkpoints).
                async def progress(conn: Any) -> None:
                    await self.store.update_run_on(conn, run_id, steps=steps)
            # The step's events are written before it returns: a completed step is never run again.
            await self._flush(run_id, progress)
            self._expected[run_id] = steps
            self._runs[run_id] = run
            return StepOutcome("continue", jump)
        await self._finish(run, "success", None, steps=steps, state=state)
        return StepOutcome("success")

    async def _finish(self, run: dict[str, Any], status: str, error: str | None, *, steps: int | None = None,
                      state: Any = None) -> None:
        values: dict[str, Any] = {"status": status, "error": error}
        if steps is not None:
            values["steps"] = steps
        run_id, thread_id, thread_status = run["run_id"], run["thread_id"], THREAD_STATUS.get(status, "idle")
        await self._flush(run_id, lambda conn: self.store.end_run_on(conn, run_id, thread_id, thread_status,
                                                                     **values))
        self._expected.pop(run["run_id"], None)
        self._runs.pop(run["run_id"], None)
        self._alone.discard(run["run_id"])
        self._cancelled.discard(run["run_id"])
        self._ended[run["run_id"]] = (status, error)
        while len(self._ended) > 1000:
            self._ended.popitem(last=False)
        if state is not None:
            self._final[run["run_id"]] = state
            while len(self._final) > 1000:
                self._final.popitem(last=False)
        await self.on_finished(run, status)

    async def _flush(self, run_id: str, also: Callable[[Any], Awaitable[None]] | None) -> None:
        """Write what the run's step has pending, and ``also`` (a status write), in one transaction."""
        writes = self._writes.pop(run_id, None)
        if writes is not None:
            await writes.flush(also)
        elif also is not None:
            async with self.store.db.engine.begin() as conn:
                await also(conn)

    @activity.defn(name=FINISH_ACTIVITY)
    async def finish_run(self, params: FinishParams) -> None:
        run = await self.store.run(params.run_id)
        if run is None or run["status"] in FINAL_RUN:
            return
        if params.status == "error" and params.error:
            await self.events.publish(run["run_id"], "error", {"error": "RunFailed", "message": params.error})
        await self._finish(run, params.status, params.error)
