"""Persistence of the runtime layer (SQLAlchemy Core, async; SQLite and PostgreSQL)."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, select, update
from sqlalchemy.sql import Executable

from garrison.core.clock import aware, rfc3339, utcnow
from garrison.db import Database
from garrison.runtime import serde
from garrison.runtime.tables import (
    agents,
    assistants,
    calls,
    endpoints,
    events,
    run_inputs,
    runs,
    threads,
    versions,
)

ACTIVE_RUN = ("pending", "running")
# Assistants and endpoints are read by every run's creation and change rarely: a read is kept this long.
# This process's own changes drop it at once; another process's (a cluster of garrisons on one
# database) are seen within this time.
CACHE_TTL_S = 1.0
FINAL_RUN = ("success", "error", "interrupted", "timeout")


# The statements of every run (create, each step, the end, the stateless run's clean-up), built once:
# building a statement and its cache key costs more Python than executing the cached compiled form.
_INSERT_THREAD = insert(threads)
_INSERT_RUN = insert(runs)
_INSERT_EVENT = insert(events)
_ASSISTANT = select(assistants).where(and_(assistants.c.tenant_id == bindparam("k_tenant"),
                                          assistants.c.assistant_id == bindparam("k_assistant")))
_ENDPOINT = select(endpoints.c.version).where(and_(endpoints.c.agent_id == bindparam("k_agent"),
                                                   endpoints.c.name == bindparam("k_name")))
_RUN = select(runs).where(runs.c.run_id == bindparam("k_run"))
_RUN_OF_TENANT = _RUN.where(runs.c.tenant_id == bindparam("k_tenant"))
_DELETE_THREAD = [
    delete(threads).where(and_(threads.c.tenant_id == bindparam("k_tenant"), threads.c.thread_id == bindparam("k_thread"))),
    delete(events).where(events.c.stream.in_(select(runs.c.run_id).where(runs.c.thread_id == bindparam("k_thread"))
                                             .scalar_subquery())),
    delete(runs).where(runs.c.thread_id == bindparam("k_thread")),
]


@lru_cache(maxsize=64)
def _update(table: str, columns: tuple[str, ...]) -> Executable:
    """UPDATE of ``columns`` (and updated_at) of one run or thread, by key; parameters ``k_key`` and ``v_<column>``."""
    target = runs if table == "runs" else threads
    key = target.c.run_id if table == "runs" else target.c.thread_id
    return update(target).where(key == bindparam("k_key")).values(
        {name: bindparam("v_" + name) for name in ("updated_at", *columns)})


async def _update_on(conn: Any, table: str, key: str, values: dict[str, Any]) -> None:
    params = {"k_key": key, "v_updated_at": utcnow(), **{"v_" + name: value for name, value in values.items()}}
    await conn.execute(_update(table, tuple(sorted(values))), params)


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    cache.pop(key, None)
    if len(cache) >= 1024:
        cache.pop(next(iter(cache)))
    cache[key] = value


def _row(row: Any, json_cols: Sequence[str] = ("metadata", "config", "context")) -> dict[str, Any]:
    out = dict(row._mapping)
    for key in json_cols:
        if key in out and isinstance(out[key], str):
            out[key] = serde.loads(out[key])
    for key in ("created_at", "updated_at"):
        if key in out:
            out[key] = rfc3339(aware(out[key]))
    return out


class RuntimeStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._versions: dict[tuple[str, int], dict[str, Any]] = {}  # versions never change once deployed
        self._assistants: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}  # (read at, row)
        self._endpoints: dict[tuple[str, str], tuple[float, int]] = {}
        # Counts this process's changes to either: a read that overlapped one is not kept (it may predate it).
        self._changes = 0

    # Agents, versions, endpoints.
    async def agent(self, tenant_id: str, name: str) -> dict[str, Any] | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(agents).where(and_(agents.c.tenant_id == tenant_id,
                                                                agents.c.name == name)))).first()
        return _row(row) if row else None

    async def agent_by_id(self, agent_id: str) -> dict[str, Any] | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(agents).where(agents.c.id == agent_id))).first()
        return _row(row) if row else None

    async def agents(self, tenant_id: str) -> list[dict[str, Any]]:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(select(agents).where(agents.c.tenant_id == tenant_id)
                                       .order_by(agents.c.name))).all()
        return [_row(r) for r in rows]

    async def add_version(self, *, agent_id: str, tenant_id: str, name: str, kind: str, descriptor: dict[str, Any],
                          digest: str, path: str, created_by: str | None) -> int:
        """Create the agent on first deploy; versions count up from 1 and are never rewritten."""
        now = utcnow()
        async with self.db.engine.begin() as conn:
            row = (await conn.execute(select(agents.c.id).where(and_(agents.c.tenant_id == tenant_id,
                                                                     agents.c.name == name)))).first()
            if row is None:
                await conn.execute(insert(agents).values(id=agent_id, tenant_id=tenant_id, name=name,
                                                         created_by=created_by, created_at=now))
            else:
                agent_id = row[0]
            top = (await conn.execute(select(func.max(versions.c.version))
                                      .where(versions.c.agent_id == agent_id))).scalar()
            number = int(top or 0) + 1
            await conn.execute(insert(versions).values(
                agent_id=agent_id, version=number, tenant_id=tenant_id, kind=kind, descriptor=serde.dumps(descriptor),
                digest=digest, path=path, created_by=created_by, created_at=now))
        return number

    async def version(self, agent_id: str, number: int) -> dict[str, Any] | None:
        cached = self._versions.get((agent_id, number))
        if cached is not None:
            return dict(cached)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(versions).where(and_(versions.c.agent_id == agent_id,
                                                                  versions.c.version == number)))).first()
        out = _row(row, ("descriptor",)) if row else None
        if out is not None and out["path"]:  # immutable once its files are in place (path set at deploy)
            if len(self._versions) >= 1024:
                self._versions.pop(next(iter(self._versions)))
            self._versions[(agent_id, number)] = out
            return dict(out)
        return out

    async def versions(self, agent_id: str) -> list[dict[str, Any]]:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(select(versions).where(versions.c.agent_id == agent_id)
                                       .order_by(versions.c.version))).all()
        return [_row(r, ("descriptor",)) for r in rows]

    async def set_endpoint(self, agent_id: str, name: str, version: int) -> None:
        now = utcnow()
        self._changes += 1
        try:
            async with self.db.engine.begin() as conn:
                done = await conn.execute(update(endpoints).where(and_(endpoints.c.agent_id == agent_id,
                                                                       endpoints.c.name == name))
                                          .values(version=version, updated_at=now))
                if not done.rowcount:
                    await conn.execute(insert(endpoints).values(agent_id=agent_id, name=name, version=version,
                                                                updated_at=now))
        finally:
            self._endpoints.pop((agent_id, name), None)
            self._changes += 1

    async def endpoints(self, agent_id: str) -> list[dict[str, Any]]:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(select(endpoints).where(endpoints.c.agent_id == agent_id)
                                       .order_by(endpoints.c.name))).all()
        return [_row(r) for r in rows]

    async def endpoint(self, agent_id: str, name: str) -> int | None:
        key = (agent_id, name)
        cached = self._endpoints.get(key)
        if cached is not None and time.monotonic() - cached[0] < CACHE_TTL_S:
            return cached[1]
        read_at, changes = time.monotonic(), self._changes
        async with self.db.engine.connect() as conn:
            number = (await conn.execute(_ENDPOINT, {"k_agent": agent_id, "k_name": name})).scalar()
        if number is not None and changes == self._changes:
            _remember(self._endpoints, key, (read_at, int(number)))
        else:
            self._endpoints.pop(key, None)
        return number

    # Assistants.
    async def put_assistant(self, values: dict[str, Any]) -> None:
        row = {**values, "config": serde.dumps(values.get("config") or {}),
               "context": serde.dumps(values.get("context") or {}),
               "metadata": serde.dumps(values.get("metadata") or {})}
        self._forget_assistant(values["assistant_id"])
        try:
            async with self.db.engine.begin() as conn:
                done = await conn.execute(update(assistants).where(assistants.c.assistant_id == values["assistant_id"])
                                          .values(**{k: v for k, v in row.items() if k != "created_at"}))
                if not done.rowcount:
                    await conn.execute(insert(assistants).values(**row))
        finally:
            self._forget_assistant(values["assistant_id"])  # and what was read while it was written

    async def assistant(self, tenant_id: str, assistant_id: str) -> dict[str, Any] | None:
        key = (tenant_id, assistant_id)
        cached = self._assistants.get(key)
        if cached is not None and time.monotonic() - cached[0] < CACHE_TTL_S:
            return copy.deepcopy(cached[1])  # the caller's to change
        read_at, changes = time.monotonic(), self._changes
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(_ASSISTANT, {"k_tenant": tenant_id, "k_assistant": assistant_id})).first()
        if row is None:
            self._assistants.pop(key, None)
            return None
        out = _row(row)
        if changes == self._changes:
            _remember(self._assistants, key, (read_at, copy.deepcopy(out)))
        return out

    def _forget_assistant(self, assistant_id: str) -> None:
        self._changes += 1
        for key in [k for k in self._assistants if k[1] == assistant_id]:
            del self._assistants[key]

    async def assistants(self, tenant_id: str, graph_id: str | None = None, limit: int = 10,
                         offset: int = 0) -> list[dict[str, Any]]:
        query = select(assistants).where(assistants.c.tenant_id == tenant_id)
        if graph_id:
            query = query.where(assistants.c.graph_id == graph_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(assistants.c.created_at.desc()).limit(limit)
                                       .offset(offset))).all()
        return [_row(r) for r in rows]

    async def delete_assistant(self, tenant_id: str, assistant_id: str) -> bool:
        self._forget_assistant(assistant_id)
        try:
            async with self.db.engine.begin() as conn:
                done = await conn.execute(delete(assistants).where(and_(assistants.c.tenant_id == tenant_id,
                                                                        assistants.c.assistant_id == assistant_id)))
        finally:
            self._forget_assistant(assistant_id)  # and what was read while it was deleted
        return bool(done.rowcount)

    # Threads.
    async def insert_thread(self, tenant_id: str, thread_id: str, owner: str | None, metadata: dict[str, Any]) -> None:
        now = utcnow()
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(threads).values(thread_id=thread_id, tenant_id=tenant_id, owner=owner,
                                                      status="idle", metadata=serde.dumps(metadata),
                                                      created_at=now, updated_at=now))

    async def thread(self, tenant_id: str, thread_id: str) -> dict[str, Any] | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(threads).where(and_(threads.c.tenant_id == tenant_id,
                                                                 threads.c.thread_id == thread_id)))).first()
        return _row(row) if row else None

    async def update_thread(self, thread_id: str, **values: Any) -> None:
        if "metadata" in values:
            values["metadata"] = serde.dumps(values["metadata"])
        async with self.db.engine.begin() as conn:
            await conn.execute(update(threads).where(threads.c.thread_id == thread_id)
                               .values(updated_at=utcnow(), **values))

    async def threads(self, tenant_id: str, status: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        query = select(threads).where(threads.c.tenant_id == tenant_id)
        if status:
            query = query.where(threads.c.status == status)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(threads.c.created_at.desc()).limit(limit).offset(offset))).all()
        return [_row(r) for r in rows]

    async def delete_thread(self, tenant_id: str, thread_id: str) -> bool:
        params = {"k_tenant": tenant_id, "k_thread": thread_id}
        async with self.db.engine.begin() as conn:
            done = await conn.execute(_DELETE_THREAD[0], params)
            await conn.execute(_DELETE_THREAD[1], params)  # the events of its runs
            await conn.execute(_DELETE_THREAD[2], params)
        return bool(done.rowcount)

    # Runs.
    async def insert_run(self, values: dict[str, Any], *, thread: dict[str, Any] | None = None,
                         first_event: tuple[str, Any] | None = None) -> dict[str, Any]:
        """Insert a run (with its new ``thread``, owner and metadata, and its stream's ``first_event``, in
        one transaction); answers the row as ``run()`` would read it back."""
        now = utcnow()
        row = {**values, "spec": serde.dumps(values["spec"]), "metadata": serde.dumps(values.get("metadata") or {}),
               "created_at": now, "updated_at": now, "steps": 0}
        async with self.db.engine.begin() as conn:
            if thread is not None:
                await conn.execute(_INSERT_THREAD, {
                    "thread_id": values["thread_id"], "tenant_id": values["tenant_id"], "owner": thread["owner"],
                    "status": "idle", "metadata": serde.dumps(thread["metadata"]), "created_at": now,
                    "updated_at": now})
            await conn.execute(_INSERT_RUN, row)
            if first_event is not None:
                await conn.execute(_INSERT_EVENT, {"stream": values["run_id"], "seq": 1, "event": first_event[0],
                                                   "data": serde.dumps(first_event[1]), "step": None,
                                                   "created_at": now})
        return {"error": None, **values, "metadata": values.get("metadata") or {}, "steps": 0,
                "created_at": rfc3339(now), "updated_at": rfc3339(now)}

    async def run(self, run_id: str, tenant_id: str | None = None) -> dict[str, Any] | None:
        query, params = (_RUN, {"k_run": run_id}) if tenant_id is None else \
            (_RUN_OF_TENANT, {"k_run": run_id, "k_tenant": tenant_id})
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query, params)).first()
        return _row(row, ("metadata", "spec")) if row else None

    async def runs(self, thread_id: str, status: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        query = select(runs).where(runs.c.thread_id == thread_id)
        if status:
            query = query.where(runs.c.status == status)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(runs.c.created_at.desc(), runs.c.run_id.desc())
                                       .limit(limit).offset(offset))).all()
        return [_row(r, ("metadata", "spec")) for r in rows]

    async def search_runs(self, tenant_id: str, thread_id: str | None, status: str | None, limit: int,
                          offset: int) -> list[dict[str, Any]]:
        query = select(runs).where(runs.c.tenant_id == tenant_id)
        if thread_id:
            query = query.where(runs.c.thread_id == thread_id)
        if status:
            query = query.where(runs.c.status == status)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(runs.c.created_at.desc(), runs.c.run_id.desc())
                                       .limit(limit).offset(offset))).all()
        return [_row(r, ("metadata", "spec")) for r in rows]

    async def active_runs(self, thread_id: str) -> list[str]:
        """Unfinished runs of a thread, oldest first (the enqueue order)."""
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(select(runs.c.run_id).where(and_(runs.c.thread_id == thread_id,
                                                                        runs.c.status.in_(ACTIVE_RUN)))
                                       .order_by(runs.c.created_at, runs.c.run_id))).all()
        return [r[0] for r in rows]

    async def running_run_ids(self) -> list[str]:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(select(runs.c.run_id).where(runs.c.status == "running"))).all()
        return [r[0] for r in rows]

    async def unfinished_runs(self) -> int:
        async with self.db.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(runs)
                                           .where(runs.c.status.in_(ACTIVE_RUN)))).scalar() or 0)

    async def update_run(self, run_id: str, **values: Any) -> None:
        async with self.db.engine.begin() as conn:
            await self.update_run_on(conn, run_id, **values)

    @staticmethod
    async def update_run_on(conn: Any, run_id: str, **values: Any) -> None:
        await _update_on(conn, "runs", run_id, values)

    async def start_run(self, run_id: str, thread_id: str) -> None:
        """The run is running and its thread busy: one transaction (one commit per step counts)."""
        async with self.db.engine.begin() as conn:
            await self.end_run_on(conn, run_id, thread_id, "busy", status="running")

    async def end_run(self, run_id: str, thread_id: str, thread_status: str, **values: Any) -> None:
        """The run's final values (status, error, steps) and its thread's status, in one transaction."""
        async with self.db.engine.begin() as conn:
            await self.end_run_on(conn, run_id, thread_id, thread_status, **values)

    @staticmethod
    async def end_run_on(conn: Any, run_id: str, thread_id: str, thread_status: str, **values: Any) -> None:
        """``end_run`` (or ``start_run``) inside the caller's transaction ``conn``."""
        await _update_on(conn, "runs", run_id, values)
        await _update_on(conn, "threads", thread_id, {"status": thread_status})

    async def delete_run(self, run_id: str) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(delete(events).where(events.c.stream == run_id))
            await conn.execute(delete(calls).where(calls.c.run_id == run_id))
            await conn.execute(delete(runs).where(runs.c.run_id == run_id))

    # Human input handed to a waiting run (the signal carries only the id).
    async def put_input(self, input_id: str, run_id: str, value: Any) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(run_inputs).values(id=input_id, run_id=run_id, value=serde.dumps(value),
                                                         created_at=utcnow()))

    async def input_value(self, input_id: str) -> Any:
        async with self.db.engine.connect() as conn:
            text = (await conn.execute(select(run_inputs.c.value).where(run_inputs.c.id == input_id))).scalar()
        return serde.loads(text)
