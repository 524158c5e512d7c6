"""Threads: metadata rows here, state in the state layer's checkpointer (read through the thread's graph)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING, Any

from langgraph.types import StateSnapshot
from sqlalchemy.exc import IntegrityError

from garrison.core.errors import BadRequest, Conflict, NotFound
from garrison.core.principal import Principal
from garrison.runtime import graphs, serde

if TYPE_CHECKING:
    from garrison.runtime.service import RuntimeService

THREAD_STATUSES = {"idle", "busy", "interrupted", "error"}


def _checkpoint_ref(config: dict[str, Any] | None) -> dict[str, Any] | None:
    if not config:
        return None
    c = config.get("configurable") or {}
    return {"thread_id": c.get("thread_id"), "checkpoint_ns": c.get("checkpoint_ns", ""),
            "checkpoint_id": c.get("checkpoint_id"), "checkpoint_map": c.get("checkpoint_map")}


def _interrupts(items: Any) -> list[dict[str, Any]]:
    return [{"value": serde.jsonable(i.value), "id": i.id} for i in items or ()]


def _subgraph_ref(state: Any) -> dict[str, Any] | None:
    """A task's subgraph checkpoint as LangGraph names it when not asked for subgraph state (a config
    ``{"configurable": {"thread_id", "checkpoint_ns": "node:task_id"}}``): its ``configurable``, as
    LangGraph Platform renders it in the task's ``checkpoint``."""
    if not isinstance(state, dict):
        return None
    c = state.get("configurable") or {}
    ref = {"thread_id": c.get("thread_id"), "checkpoint_ns": c.get("checkpoint_ns") or ""}
    for key in ("checkpoint_id", "checkpoint_map"):
        if c.get(key) is not None:
            ref[key] = serde.jsonable(c[key])
    return ref


def snapshot_out(snap: Any) -> dict[str, Any]:
    """A LangGraph ``StateSnapshot`` in the Platform API's ``ThreadState`` shape.

    A task that runs a subgraph: read with ``subgraphs=True``, its ``state`` is the subgraph's own
    ``ThreadState`` (nested as deep as the subgraphs are) and its ``checkpoint`` is null; read without,
    its ``checkpoint`` names the subgraph's namespace and its ``state`` is null (as in LangGraph Platform)."""
    tasks = [{"id": t.id, "name": t.name, "path": list(t.path) if t.path else [], "error": t.error and str(t.error),
              "interrupts": _interrupts(t.interrupts), "checkpoint": _subgraph_ref(t.state),
              "state": snapshot_out(t.state) if isinstance(t.state, StateSnapshot) else None,
              "result": serde.jsonable(t.result) if getattr(t, "result", None) is not None else None}
             for t in snap.tasks]
    return {"values": serde.jsonable(snap.values), "next": list(snap.next), "tasks": tasks,
            "checkpoint": _checkpoint_ref(snap.config), "metadata": serde.jsonable(snap.metadata or {}),
            "created_at": snap.created_at, "parent_checkpoint": _checkpoint_ref(snap.parent_config),
            "interrupts": _interrupts(getattr(snap, "interrupts", ()))}


EMPTY_STATE: dict[str, Any] = {"values": {}, "next": [], "tasks": [], "checkpoint": None, "metadata": {}, "created_at": None,
               "parent_checkpoint": None, "interrupts": []}


class ThreadManager:
    def __init__(self, service: RuntimeService) -> None:
        self.service = service
        self.store = service.store

    def check_owner(self, principal: Principal, thread: dict[str, Any]) -> None:
        """Users see only their own threads; services and admins see the tenant's."""
        if principal.kind == "user" and not principal.is_admin and thread["owner"] not in (None, principal.id):
            raise NotFound(f"thread {thread['thread_id']!r} not found")

    async def insert(self, principal: Principal, thread_id: str, metadata: dict[str, Any]) -> None:
        try:
            await self.store.insert_thread(principal.tenant_id, thread_id, principal.id, metadata)
        except IntegrityError as exc:
            # Thread ids are unique across tenants: the id may be another tenant's thread (never shown
            # to this caller; the 409 says only that the id is taken) or one created a moment ago.
            raise Conflict(f"thread_id {thread_id} is already in use: choose another UUID, or leave "
                           "thread_id out and garrison picks one") from exc

    async def create(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        thread_id = body.get("thread_id") or str(uuid.uuid4())
        try:
            thread_id = str(uuid.UUID(str(thread_id)))
        except ValueError as exc:
            raise BadRequest("thread_id must be a UUID") from exc
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise BadRequest("metadata must be an object")
        existing = await self.store.thread(principal.tenant_id, thread_id)
        if existing is not None:
            if body.get("if_exists") == "do_nothing":
                return await self.out(principal, existing)
            raise Conflict(f"thread {thread_id} already exists")
        await self.insert(principal, thread_id, metadata)
        return await self.get(principal, thread_id)

    async def row(self, principal: Principal, thread_id: str) -> dict[str, Any]:
        thread = await self.store.thread(principal.tenant_id, thread_id)
        if thread is None:
            raise NotFound(f"thread {thread_id!r} not found")
        self.check_owner(principal, thread)
        return thread

    async def get(self, principal: Principal, thread_id: str) -> dict[str, Any]:
        return await self.out(principal, await self.row(principal, thread_id))

    async def out(self, principal: Principal, thread: dict[str, Any], with_values: bool = True) -> dict[str, Any]:
        values: Any = None
        interrupts: dict[str, Any] = {}
        if with_values:
            state = await self.state(principal, thread["thread_id"], thread=thread)
            values = state["values"]
            for task in state["tasks"]:
                if task["interrupts"]:
                    interrupts[task["id"]] = task["interrupts"]
        return {"thread_id": thread["thread_id"], "created_at": thread["created_at"],
                "updated_at": thread["updated_at"], "metadata": thread["metadata"], "status": thread["status"],
                "values": values, "interrupts": interrupts, "config": {}}

    async def search(self, principal: Principal, body: dict[str, Any]) -> list[dict[str, Any]]:
        status = body.get("status")
        if status is not None and (not isinstance(status, str) or status not in THREAD_STATUSES):
            raise BadRequest(f"status must be one of {sorted(THREAD_STATUSES)}")
        limit, offset = _page(body)
        rows = await self.store.threads(principal.tenant_id, status, limit, offset)
        wanted = body.get("metadata") or {}
        if not isinstance(wanted, dict):
            raise BadRequest("metadata must be an object")
        out = []
        for row in rows:
            if principal.kind == "user" and not principal.is_admin and row["owner"] not in (None, principal.id):
                continue
            if all(row["metadata"].get(k) == v for k, v in wanted.items()):
                out.append(await self.out(principal, row, with_values=False))
        return out

    async def patch(self, principal: Principal, thread_id: str, body: dict[str, Any]) -> dict[str, Any]:
        thread = await self.row(principal, thread_id)
        metadata = body.get("metadata")
        if not isinstance(metadata, dict):
            raise BadRequest("metadata must be an object")
        await self.store.update_thread(thread_id, metadata={**thread["metadata"], **metadata})
        return await self.get(principal, thread_id)

    async def delete(self, principal: Principal, thread_id: str) -> None:
        thread = await self.row(principal, thread_id)
        for run_id in await self.store.active_runs(thread_id):
            await self.service.runs.cancel(principal, thread_id, run_id, wait=True)
        await self.delete_quietly(thread["tenant_id"], thread_id)

    async def delete_quietly(self, tenant_id: str, thread_id: str) -> None:
        with contextlib.suppress(Exception):
            await self.service.state.saver(tenant_id).adelete_thread(thread_id)
        await self.store.delete_thread(tenant_id, thread_id)

    async def remember_graph(self, thread_id: str, assistant: dict[str, Any]) -> None:
        """Like LangGraph Platform: a thread's metadata names the graph that ran on it last."""
        thread = await self.store.thread(assistant["tenant_id"], thread_id)
        if thread is None:
            return
        meta = {**thread["metadata"], "graph_id": assistant["graph_id"], "assistant_id": assistant["assistant_id"]}
        if meta != thread["metadata"]:
            await self.store.update_thread(thread_id, metadata=meta)

    async def graph(self, principal: Principal, thread: dict[str, Any]) -> Any | None:
        assistant_id = thread["metadata"].get("assistant_id")
        if not assistant_id:
            return None
        assistant = await self.store.assistant(principal.tenant_id, assistant_id)
        if assistant is None:
            return None
        number, path, ref = await self.service.resolve_graph(principal.tenant_id, assistant)
        # Hook (runtime/sandboxed_steps.py): a sandboxed version's graph is read in its thread's sandbox.
        from garrison.runtime.sandboxed_steps import isolation_for

        isolated = await isolation_for(self.service).thread_graph(principal.tenant_id, assistant, number, ref, thread)
        if isolated is not None:
            return isolated
        graph = await asyncio.to_thread(self.service.load, assistant["agent_id"], number, path, ref)
        return graphs.bind(graph, self.service.state.saver(principal.tenant_id),
                           self.service.graph_store(principal.tenant_id))

    def _config(self, thread_id: str, checkpoint: dict[str, Any] | None) -> dict[str, Any]:
        configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
        if checkpoint:
            if not isinstance(checkpoint, dict):
                raise BadRequest("checkpoint must be an object with checkpoint_id")
            for key in ("checkpoint_id", "checkpoint_ns"):
                if checkpoint.get(key) is not None:
                    configurable[key] = str(checkpoint[key])
        return {"configurable": configurable}

    async def state(self, principal: Principal, thread_id: str, *, checkpoint: dict[str, Any] | None = None,
                    subgraphs: bool = False, thread: dict[str, Any] | None = None) -> dict[str, Any]:
        thread = thread or await self.row(principal, thread_id)
        graph = await self.graph(principal, thread)
        if graph is None:
            return dict(EMPTY_STATE)
        snap = await graph.aget_state(self._config(thread_id, checkpoint), subgraphs=subgraphs)
        return snapshot_out(snap)

    async def history(self, principal: Principal, thread_id: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        thread = await self.row(principal, thread_id)
        graph = await self.graph(principal, thread)
        if graph is None:
            return []
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise BadRequest("limit must be an integer from 1 to 1000")
        before = body.get("before")
        out = []
        async for snap in graph.aget_state_history(self._config(thread_id, body.get("checkpoint")),
                                                   filter=body.get("metadata") or None, limit=limit,
                                                   before=self._config(thread_id, before) if before else None):
            out.append(snapshot_out(snap))
        return out

    async def update_state(self, principal: Principal, thread_id: str, body: dict[str, Any]) -> dict[str, Any]:
        thread = await self.row(principal, thread_id)
        if await self.store.active_runs(thread_id):
            raise Conflict(f"thread {thread_id} has a run in progress; update its state when it is idle")
        graph = await self.graph(principal, thread)
        if graph is None:
            raise Conflict("this thread has no graph yet: run an assistant on it before updating its state")
        config = self._config(thread_id, body.get("checkpoint") or (
            {"checkpoint_id": body["checkpoint_id"]} if body.get("checkpoint_id") else None))
        new_config = await graph.aupdate_state(config, body.get("values"), as_node=body.get("as_node"))
        return {"checkpoint": _checkpoint_ref(new_config)}


def _page(body: dict[str, Any]) -> tuple[int, int]:
    limit, offset = body.get("limit", 10), body.get("offset", 0)
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise BadRequest("limit must be an integer from 1 to 1000")
    if not isinstance(offset, int) or not 0 <= offset <= 2**63 - 1:
        raise BadRequest("offset must be a non-negative 64-bit integer")
    return limit, offset
