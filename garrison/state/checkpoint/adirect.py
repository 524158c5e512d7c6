"""The asyncio saver's hot path on PostgreSQL: get_tuple, put and put_writes on driver connections.

Through SQLAlchemy's async layer a put was BEGIN, INSERT, COMMIT (three round trips)
plus greenlet switches and result wrapping per call, slower than AsyncPostgresSaver.
Here each call is one statement on a psycopg ``AsyncConnection`` in autocommit, taken
from the engine's pool and kept aside while the saver lives (the same statements as
the blocking saver's ``direct`` path; psycopg prepares a statement server-side once a
connection has run it a few times).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util.concurrency import greenlet_spawn

from garrison.state.checkpoint import ops
from garrison.state.checkpoint.direct import PG_GET_BY_ID, PG_GET_LATEST, pg_put, pg_writes


class AsyncDirectPG:
    """Driver connections of one async PostgreSQL engine, shared by its savers (``for_engine``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._idle: list[tuple[Any, Any]] = []  # (pool fairy, psycopg AsyncConnection)

    @classmethod
    def for_engine(cls, engine: AsyncEngine) -> AsyncDirectPG:
        direct = _SHARED.get(engine)
        if direct is None:  # one event loop per engine: no lock needed
            direct = _SHARED[engine] = cls(engine)
        return direct

    async def _execute(self, sql: str, params: Any, *, rows: bool) -> list[Any]:
        con: Any
        try:
            fairy, con = self._idle.pop()
        except IndexError:
            fairy = await self.engine.raw_connection()
            con = fairy.driver_connection
            await con.set_autocommit(True)
        try:
            cur = await con.execute(sql, params)
            out = await cur.fetchall() if rows else []
        except BaseException:
            # Unknown state (e.g. cancelled mid-statement): never reuse. The pool's async
            # adapter does its I/O through greenlet_spawn.
            await asyncio.shield(greenlet_spawn(fairy.invalidate))
            raise
        self._idle.append((fairy, con))
        return out

    async def close(self) -> None:
        while self._idle:
            fairy, con = self._idle.pop()
            try:
                await con.set_autocommit(False)
            finally:
                await greenlet_spawn(fairy.close)

    async def get_tuple(self, s: ops.Scope, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id, ns, cid = ops._thread_key(config)
        params = {"tenant": s.tenant_id, "thread": thread_id, "ns": ns}
        if cid:
            params["cid"] = cid
        rows = await self._execute(PG_GET_BY_ID if cid else PG_GET_LATEST, params, rows=True)
        return ops.decode_get(s, thread_id, ns, rows)

    async def put(self, s: ops.Scope, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                  new_versions: ChannelVersions) -> RunnableConfig:
        thread_id, ns, row, blob_rows = ops.put_rows(s, config, checkpoint, metadata, new_versions)
        await self._execute(*pg_put(row, blob_rows), rows=False)
        return ops._config(thread_id, ns, checkpoint["id"])

    async def put_writes(self, s: ops.Scope, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                         task_id: str, task_path: str) -> None:
        regular, special = ops.writes_rows(s, config, writes, task_id, task_path)
        await self._execute(*pg_writes(regular, special), rows=False)


_SHARED: weakref.WeakKeyDictionary[AsyncEngine, AsyncDirectPG] = weakref.WeakKeyDictionary()
