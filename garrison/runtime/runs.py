"""Run lifecycle: create (one Temporal workflow each), stream, join, cancel, and what the worker needs."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span

from garrison.core.errors import BadRequest, Conflict, NotFound, PayloadTooLarge
from garrison.core.principal import Principal
from garrison.runtime import graphs, serde
from garrison.runtime.attribution import RunCredentials, end_run_span, run_scopes, run_trace
from garrison.runtime.calls import CallJournal
from garrison.runtime.events import Event, StoreEvents
from garrison.runtime.store import ACTIVE_RUN, FINAL_RUN

if TYPE_CHECKING:
    from temporalio.client import WorkflowHandle

    from garrison.runtime.service import RuntimeService
    from garrison.runtime.workflows import RunParams

DONE = "#done"  # the wake-up key of "this run has ended"
STREAM_MODES = {"values", "updates", "messages", "messages-tuple", "custom", "debug", "tasks", "checkpoints"}
MULTITASK = {"reject", "interrupt", "rollback", "enqueue"}
tracer = trace.get_tracer("garrison.runtime")


def run_out(run: dict[str, Any]) -> dict[str, Any]:
    """The LangGraph Platform ``Run`` shape."""
    spec = run["spec"]
    return {"run_id": run["run_id"], "thread_id": run["thread_id"], "assistant_id": run["assistant_id"],
            "created_at": run["created_at"], "updated_at": run["updated_at"], "status": run["status"],
            "metadata": run["metadata"], "multitask_strategy": run["multitask_strategy"],
            "kwargs": {k: spec.get(k) for k in ("input", "command", "config", "context", "stream_mode")}}


def _stream_modes(raw: Any) -> list[str]:
    modes = [raw] if isinstance(raw, str) else list(raw or ["values"])
    out = []
    for mode in modes:
        if not isinstance(mode, str) or mode not in STREAM_MODES:
            raise BadRequest(f"stream_mode {mode!r} is not supported; use any of {sorted(STREAM_MODES)}")
        out.append("messages" if mode == "messages-tuple" else mode)
    return out


def _seconds(body: dict[str, Any], key: str, most: float) -> float:
    value = body.get(key)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= most:
        raise BadRequest(f"{key} must be a number of seconds from 0 to {most:.0f}")
    return float(value)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


# Waiting for a run that steps in this process is woken by its end; the row is re-read only this
# often, for an end this process would not see (with a Temporal cluster, another garrison's worker).
SAFETY_POLL_S = 2.0


class RunManager:
    def __init__(self, service: RuntimeService) -> None:
        self.service = service
        self.store = service.store
        self.events = service.events
        self.credentials = RunCredentials(service)
        # Loaded graphs bound to a tenant's checkpointer, by (agent, version, ref, tenant): versions are
        # immutable, so neither the import (a thread hop) nor the copy is repeated per step.
        self._bound: dict[tuple[str, int, str, str], Any] = {}
        self._done: dict[str, set[asyncio.Event]] = {}  # waiters for the end of a run
        self.journal = CallJournal(service.platform.db)

    # What the worker calls.
    async def step_config(self, run: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """``graph_for`` plus what the step's own calls to garrison need (attribution, credentials)."""
        graph, config = await self.graph_for(run)
        config["configurable"]["garrison"] = await self.credentials.for_run(run)
        self._wire_journal()
        return graph, config

    def _wire_journal(self) -> None:
        """The LLM and tools gateways journal the calls of run steps (runtime/calls.py), once there are runs."""
        for layer in ("llm", "tools"):
            gateway = self.service.platform.services.get(layer)
            if gateway is not None and getattr(gateway, "call_journal", False) is None:
                gateway.call_journal = self.journal
        executor = self.service.executor
        if executor is not None and executor.journal is None:
            executor.journal = self.journal

    async def graph_for(self, run: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        spec = run["spec"]
        tenant = run["tenant_id"]
        key = (spec["agent_id"], int(spec["version"]), spec["ref"], tenant)
        bound = self._bound.get(key)
        if bound is None:
            graph = await asyncio.to_thread(self.service.load, spec["agent_id"], spec["version"], Path(spec["path"]),
                                            spec["ref"])
            bound = graphs.bind(graph, self.service.state.saver(tenant), self.service.graph_store(tenant))
            if len(self._bound) >= 256:
                self._bound.pop(next(iter(self._bound)))
            self._bound[key] = bound
        config = dict(spec.get("config") or {})
        configurable = {**(config.get("configurable") or {}), "thread_id": run["thread_id"]}
        if spec.get("checkpoint_id"):
            configurable["checkpoint_id"] = spec["checkpoint_id"]
        config["configurable"] = configurable
        config["metadata"] = {**(config.get("metadata") or {}), **(run["metadata"] or {}), "run_id": run["run_id"],
                              "thread_id": run["thread_id"], "assistant_id": run["assistant_id"],
                              "graph_id": spec["graph_id"]}
        return bound, config

    def _ended(self, run_id: str) -> None:
        self.events.wake(run_id)
        self.events.wake(run_id + DONE)
        for waiter in self._done.pop(run_id, ()):
            waiter.set()

    async def on_finished(self, run: dict[str, Any], status: str) -> None:
        self.credentials.forget(run["run_id"])
        executor = self.service.executor
        ended = executor.ended(run["run_id"]) if executor is not None else None
        end_run_span(run, status, ended[1] if ended else None, await self.credentials.agent_name(run["spec"]["agent_id"]))
        self._ended(run["run_id"])
        await self.journal.forget(run["run_id"])
        if run["spec"].get("on_completion") == "delete" and not run["spec"].get("caller_deletes"):
            await self.service.threads.delete_quietly(run["tenant_id"], run["thread_id"])

    # What the API calls.
    async def assistant_for(self, principal: Principal, assistant_id: str) -> dict[str, Any]:
        from garrison.runtime.service import default_assistant_id

        if not isinstance(assistant_id, str) or not assistant_id:
            raise BadRequest("assistant_id is required: an assistant UUID or a graph name")
        # A graph name is the usual case and never a UUID: look for its default assistant first.
        by_graph = default_assistant_id(principal.tenant_id, assistant_id)
        order = [assistant_id, by_graph] if _is_uuid(assistant_id) else [by_graph, assistant_id]
        found = await self.store.assistant(principal.tenant_id, order[0])
        if found is None:
            found = await self.store.assistant(principal.tenant_id, order[1])
        if found is None:
            raise NotFound(f"assistant {assistant_id!r} not found")
        return found

    async def create(self, principal: Principal, thread_id: str | None, body: dict[str, Any], *,
                     caller_deletes: bool = False, endpoint: str = "default") -> dict[str, Any]:
        """A new run; one ``invoke_agent`` span (the invocation) whose child is the run's own span."""
        with tracer.start_as_current_span("invoke_agent", attributes={
                "gen_ai.operation.name": "invoke_agent", "garrison.tenant_id": principal.tenant_id,
                "user.id": principal.id, "garrison.endpoint": endpoint}) as span:
            return await self._create(principal, thread_id, body, span, caller_deletes=caller_deletes,
                                      endpoint=endpoint)

    async def _create(self, principal: Principal, thread_id: str | None, body: dict[str, Any], span: Span, *,
                      caller_deletes: bool, endpoint: str) -> dict[str, Any]:
        threads = self.service.threads
        delay = _seconds(body, "after_seconds", 86400)
        hold = _seconds(body, "hold_for_input_s", 7 * 86400)
        if body.get("interrupt_before") or body.get("interrupt_after"):
            raise BadRequest("interrupt_before / interrupt_after per run are not supported; "
                             "call interrupt() inside the graph instead")
        strategy = body.get("multitask_strategy") or "enqueue"
        if strategy not in MULTITASK:
            raise BadRequest(f"multitask_strategy must be one of {sorted(MULTITASK)}")
        if body.get("input") is not None and body.get("command") is not None:
            raise BadRequest("send either input or command, not both")
        command = body.get("command")
        if command is not None and (not isinstance(command, dict)
                                    or not set(command) <= {"resume", "update", "goto"}):
            raise BadRequest("command must be an object with resume, update or goto")
        assistant = await self.assistant_for(principal, body.get("assistant_id", ""))
        await self.service.check(principal, "runtime:invoke", "assistant", assistant["assistant_id"],
                                 assistant["tenant_id"])
        number, path, ref = await self.service.resolve_graph(principal.tenant_id, assistant, endpoint)
        agent = await self.credentials.agent_name(assistant["agent_id"])  # cached: no read per run
        span.update_name(f"invoke_agent {agent}")
        span.set_attributes({"gen_ai.agent.name": agent, "gen_ai.agent.id": assistant["agent_id"],
                             "garrison.agent_version": str(number), "garrison.graph_id": assistant["graph_id"]})
        on_completion = body.get("on_completion")
        fresh = thread_id is None
        new_thread: dict[str, Any] | None = None
        if thread_id is None:
            thread_id = str(uuid.uuid4())
            # Inserted with the run, in one transaction (and not at all if the request is refused below).
            new_thread = {"owner": principal.id, "metadata": {"graph_id": assistant["graph_id"],
                                                              "assistant_id": assistant["assistant_id"]}}
            on_completion = on_completion or "delete"
        else:
            thread = await self.store.thread(principal.tenant_id, thread_id)
            if thread is None:
                if body.get("if_not_exists") != "create":
                    raise NotFound(f"thread {thread_id!r} not found")
                await threads.insert(principal, thread_id, {})
            else:
                threads.check_owner(principal, thread)
        if on_completion not in (None, "delete", "keep"):
            raise BadRequest("on_completion must be 'delete' or 'keep'")
        active = [] if fresh else await self.store.active_runs(thread_id)
        if active and strategy == "reject":
            raise Conflict(f"thread {thread_id} already has a run in progress (multitask_strategy=reject)")
        if active and strategy in ("interrupt", "rollback"):
            for other in active:
                await self.cancel(principal, thread_id, other, action=strategy, wait=True)
        config = body.get("config") or {}
        if not isinstance(config, dict):
            raise BadRequest("config must be an object")
        merged_config = {**assistant["config"], **config,
                         "configurable": {**(assistant["config"].get("configurable") or {}),
                                          **(config.get("configurable") or {})}}
        spec = {"input": body.get("input"), "command": command, "config": merged_config,
                "context": body.get("context") or assistant["context"] or None,
                "stream_mode": _stream_modes(body.get("stream_mode")),
                "stream_subgraphs": bool(body.get("stream_subgraphs")), "checkpoint_id": body.get("checkpoint_id")
                or (body.get("checkpoint") or {}).get("checkpoint_id"), "on_completion": on_completion,
                "caller_deletes": caller_deletes, "hold_for_input_s": hold, "agent_id": assistant["agent_id"], "version": number,
                "path": str(path), "ref": ref, "graph_id": assistant["graph_id"], "scopes": run_scopes(principal),
                # The caller's trace: the run's span, every step of it and the calls they make join it.
                **run_trace()}
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise BadRequest("metadata must be an object")
        blob = serde.dumpb(spec)
        size = len(blob)
        if size > self.service.settings.max_input_bytes:
            raise PayloadTooLarge(f"run input is {size} bytes; the limit is {self.service.settings.max_input_bytes} "
                                  "(GARRISON_RUNTIME_MAX_INPUT_BYTES): pass large data by reference")
        run_id = str(uuid.uuid4())
        span.set_attributes({"garrison.run_id": run_id, "gen_ai.conversation.id": thread_id})
        # The row as inserted is the run's answer: it is not read back.
        first = {"run_id": run_id, "attempt": 1}
        in_store = isinstance(self.events, StoreEvents)  # the first event rides in the run's transaction
        run = await self.store.insert_run({"run_id": run_id, "tenant_id": principal.tenant_id,
                                           "thread_id": thread_id, "assistant_id": assistant["assistant_id"],
                                           "owner": principal.id, "status": "pending", "spec": spec,
                                           "metadata": metadata, "multitask_strategy": strategy},
                                          thread=new_thread, first_event=("metadata", first) if in_store else None)
        if not fresh:
            await threads.remember_graph(thread_id, assistant)
        if in_store:
            self.events.fresh(run_id, last=1)
        else:
            self.events.fresh(run_id)
            await self.events.publish(run_id, "metadata", first)
        # A new thread has no other run to queue behind: its first step need not look.
        await self._start_workflow(run, {**run, "spec": serde.loads(blob)}, delay, hold, alone=fresh)
        self.service.platform.audit.record(principal, "runtime:invoke", f"run/{run_id}", "allow", "",
                                           {"thread_id": thread_id, "assistant_id": assistant["assistant_id"],
                                            "agent_version": number, "trace_id": spec["traceparent"][3:35]})
        return run

    def params(self, run_id: str, hold_for_input_s: float = 0.0) -> RunParams:
        from garrison.runtime.workflows import RunParams

        s = self.service.settings
        return RunParams(run_id=run_id, steps_per_history=s.continue_as_new_after_steps,
                         step_timeout_s=s.step_timeout_s, heartbeat_timeout_s=s.heartbeat_timeout_s,
                         max_attempts=s.step_max_attempts, max_steps=s.max_steps, hold_for_input_s=hold_for_input_s,
                         local_steps=s.step_mode == "local")

    async def _start_workflow(self, run: dict[str, Any], stored: dict[str, Any], delay: float, hold: float, *,
                              alone: bool = False) -> None:
        """``stored``: the row as the executor reads it (its spec is decoded from what was stored)."""
        from garrison.runtime.workflows import AgentRunWorkflow

        run_id = run["run_id"]
        try:
            client = await self.service.engine.client()
            assert self.service.executor is not None  # made with the engine
            self.service.executor.expect(run_id, stored, alone=alone)
            # Eager start: the first workflow task comes back in the start call's answer and runs
            # in this process at once, instead of a trip through the server's task matching.
            await client.start_workflow(AgentRunWorkflow.run, self.params(run_id, hold), id=run_id,
                                        task_queue=self.service.engine.task_queue,
                                        start_delay=timedelta(seconds=delay) if delay else None,
                                        task_timeout=timedelta(seconds=self.service.settings.workflow_task_timeout_s),
                                        request_eager_start=not delay)
        except Exception:
            await self.store.update_run(run_id, status="error", error="durable execution unavailable")
            run["status"], run["error"] = "error", "durable execution unavailable"
            self._ended(run_id)
            raise

    async def handle(self, run_id: str) -> WorkflowHandle[Any, Any]:
        client = await self.service.engine.client()
        return client.get_workflow_handle(run_id)

    async def get(self, principal: Principal, thread_id: str | None, run_id: str) -> dict[str, Any]:
        run = await self.store.run(run_id, principal.tenant_id)
        if run is None or (thread_id is not None and run["thread_id"] != thread_id):
            raise NotFound(f"run {run_id!r} not found")
        thread = await self.store.thread(principal.tenant_id, run["thread_id"])
        if thread is not None:
            self.service.threads.check_owner(principal, thread)
        return run

    async def cancel(self, principal: Principal, thread_id: str, run_id: str, *, action: str = "interrupt",
                     wait: bool = False) -> None:
        if action not in ("interrupt", "rollback"):
            raise BadRequest("action must be 'interrupt' or 'rollback'")
        run = await self.get(principal, thread_id, run_id)
        await self.service.check(principal, "runtime:invoke", "run", run_id, run["tenant_id"])
        if run["status"] in ACTIVE_RUN:
            from temporalio.service import RPCError

            from garrison.runtime.workflows import AgentRunWorkflow

            handle = await self.handle(run_id)
            if self.service.executor is not None:
                self.service.executor.cancel_local(run_id)  # a local step has no heartbeat to carry the cancel
            try:
                await handle.signal(AgentRunWorkflow.cancel)
                await handle.cancel()
            except RPCError:
                pass  # already closed
            if wait or action == "rollback":
                await self.wait_final(run_id, timeout_s=60)
        if action == "rollback":
            await self.service.state.saver(run["tenant_id"]).adelete_for_runs([run_id])
            await self.store.delete_run(run_id)
            await self.store.update_thread(run["thread_id"], status="idle")
        self.service.platform.audit.record(principal, "runtime:invoke", f"run/{run_id}", "allow", "",
                                           {"cancel": action})

    async def final_state(self, run: dict[str, Any]) -> dict[str, Any]:
        """The thread's state after ``run``, read through the graph version the run executed."""
        from garrison.runtime.threads import snapshot_out

        executor = self.service.executor
        ended = executor.final_values(run["run_id"]) if executor is not None else None
        if ended is not None and not run["spec"].get("checkpoint_id"):
            return snapshot_out(ended)  # the run ended in this process: its last state is at hand
        graph, config = await self.graph_for(run)
        configurable = {k: v for k, v in config["configurable"].items() if k != "checkpoint_id"}
        return snapshot_out(await graph.aget_state({"configurable": {**configurable, "checkpoint_ns": ""}}))

    async def wait_final(self, run_id: str, timeout_s: float | None = None,
                         run: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The run's row once it has ended (or at ``timeout_s``); ``run``: its row as the caller has it."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        executor = self.service.executor
        # Registered before anything is read, so an end between the read and the wait is not missed.
        waiter = asyncio.Event()
        self._done.setdefault(run_id, set()).add(waiter)
        read = run is None
        try:
            while True:
                ended = executor.ended(run_id) if executor is not None else None
                if ended is not None and run is not None:  # it ended in this process: no read needed
                    return {**run, "status": ended[0], "error": ended[1]}
                if read:
                    run = await self.store.run(run_id)
                    if run is None or run["status"] in FINAL_RUN:
                        return run
                    read = False
                    continue  # it may have ended here during the read
                if deadline is not None and loop.time() > deadline:
                    return run
                embedded = not self.service.platform.settings.temporal_address  # this process is the only worker
                wait = SAFETY_POLL_S if embedded else self.events.poll_s
                if deadline is not None:
                    wait = max(0.0, min(wait, deadline - loop.time()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), wait)
                waiter.clear()
                read = True
        finally:
            waiters = self._done.get(run_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    self._done.pop(run_id, None)

    async def stream(self, run_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Events of a run from ``after`` on, until the run has ended and everything was sent."""
        while True:
            batch = await self.events.read(run_id, after)
            for event in batch:
                after = event.seq
                yield event
            if batch:
                continue
            run = await self.store.run(run_id)
            if run is None or run["status"] in FINAL_RUN:
                for event in await self.events.read(run_id, after):
                    yield event
                return
            await self.events.wait(run_id)

    async def provide_input(self, principal: Principal, run_id: str, value: Any) -> str:
        """Human input for a run waiting on it (``hold_for_input_s``): stored, then signalled by id."""
        run = await self.get(principal, None, run_id)
        await self.service.check(principal, "runtime:invoke", "run", run_id, run["tenant_id"])
        from temporalio.service import RPCError

        from garrison.runtime.workflows import AgentRunWorkflow

        input_id = str(uuid.uuid4())
        await self.store.put_input(input_id, run_id, value)
        handle = await self.handle(run_id)
        try:
            await handle.signal(AgentRunWorkflow.human_input, input_id)
        except RPCError as exc:
            raise Conflict(f"run {run_id} is not waiting for input: {exc.message}") from exc
        return input_id
