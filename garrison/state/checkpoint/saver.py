"""GarrisonSaver (blocking) and AsyncGarrisonSaver: LangGraph checkpointers on SQLAlchemy Core."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from garrison.state.checkpoint import ops
from garrison.state.checkpoint.adirect import AsyncDirectPG
from garrison.state.checkpoint.crypto import AesGcmCipher
from garrison.state.checkpoint.direct import DirectSQL
from garrison.state.checkpoint.engine import (
    WRITE_OPTION,
    create_async,
    create_schema,
    create_sync_engine,
    normalize_url,
)

DEFAULT_TENANT = "default"
DEFAULT_MAX_VALUE_BYTES = 64 * 1024 * 1024


def _serde(serde: SerializerProtocol | None, encryption_key: bytes | str | Path | None) -> SerializerProtocol:
    inner = serde or JsonPlusSerializer()
    if encryption_key is None:
        return inner
    return EncryptedSerializer(AesGcmCipher.from_key(encryption_key), inner)


class _Common(BaseCheckpointSaver[str]):
    def _init(self, dialect: str, tenant_id: str, serde: SerializerProtocol | None,
              encryption_key: bytes | str | Path | None, max_value_bytes: int) -> None:
        super().__init__(serde=_serde(serde, encryption_key))
        if not tenant_id or len(tenant_id) > 64:
            raise ValueError("tenant_id must be 1 to 64 characters")
        self.tenant_id = tenant_id
        self.dialect = dialect
        self.max_value_bytes = max_value_bytes

    @property
    def scope(self) -> ops.Scope:
        # Rebuilt when the serde or tenant changes (with_allowlist() and for_tenant() clone the saver).
        s = self.__dict__.get("_scope")
        if s is None or s.serde is not self.serde or s.tenant_id != self.tenant_id:
            s = self.__dict__["_scope"] = ops.Scope(self.tenant_id, self.dialect, self.serde,
                                                   self.max_value_bytes)
        return s

    def get_next_version(self, current: str | int | float | None, channel: None = None) -> str:
        return ops.next_version(current)


def _run_sync(conn: sa.Connection, op: ops.Op) -> Any:
    try:
        stmt, params, want_rows = next(op)
        while True:
            result = conn.execute(stmt, params) if params is not None else conn.execute(stmt)
            stmt, params, want_rows = op.send(result.all() if want_rows else result.rowcount)
    except StopIteration as stop:
        return stop.value


async def _run_async(conn: AsyncConnection, op: ops.Op) -> Any:
    try:
        stmt, params, want_rows = next(op)
        while True:
            result = await (conn.execute(stmt, params) if params is not None else conn.execute(stmt))
            stmt, params, want_rows = op.send(result.all() if want_rows else result.rowcount)
    except StopIteration as stop:
        return stop.value


class GarrisonSaver(_Common):
    """A blocking LangGraph checkpointer on SQLite or PostgreSQL.

    Thread-safe: each call takes a pooled connection. The ``a*`` methods run the
    blocking ones in a worker thread.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        tenant_id: str = DEFAULT_TENANT,
        serde: SerializerProtocol | None = None,
        encryption_key: bytes | str | Path | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        self._init(engine.dialect.name, tenant_id, serde, encryption_key, max_value_bytes)
        self.engine = engine
        self._direct = DirectSQL.for_engine(engine)

    @classmethod
    @contextmanager
    def from_conn_string(cls, conn_string: str, *, synchronous: str | None = None, sqlite_synchronous: str | None = None,
                         **kwargs: Any) -> Iterator[GarrisonSaver]:
        """A saver on a SQLite path / URL or a PostgreSQL URL; creates its tables.

        ``synchronous="FULL"`` makes each commit survive power loss of the database host
        too (SQLite ``synchronous=FULL``, PostgreSQL ``synchronous_commit=on``); NORMAL
        survives the agent process being killed (PostgreSQL: ``synchronous_commit=off``).
        Unset: NORMAL on SQLite, the server's own setting on PostgreSQL.
        ``sqlite_synchronous`` is the older name of the same setting.
        """
        synchronous = sqlite_synchronous or synchronous
        engine = create_sync_engine(normalize_url(conn_string, use_async=False), synchronous=synchronous)
        try:
            saver = cls(engine, **kwargs)
            saver.setup()
            yield saver
            saver.close()
        finally:
            engine.dispose()

    def for_tenant(self, tenant_id: str) -> GarrisonSaver:
        """The same store seen by another tenant (shares the engine)."""
        clone = GarrisonSaver.__new__(GarrisonSaver)
        clone.__dict__.update(self.__dict__)
        clone.tenant_id = tenant_id
        return clone

    def close(self) -> None:
        """Hand the driver connections back to the engine's pool."""
        self._direct.close()

    def setup(self) -> None:
        with self.engine.begin() as conn:
            create_schema(conn)

    def _write(self, op: ops.Op, *, snapshot: bool = False) -> Any:
        opts: dict[str, Any] = {WRITE_OPTION: True}
        if snapshot and self.dialect == "postgresql":
            opts["isolation_level"] = "REPEATABLE READ"
        try:
            with self.engine.connect().execution_options(**opts) as conn, conn.begin():
                return _run_sync(conn, op)
        finally:
            if self._direct.blob_cache is not None:  # deletes may free cached keys
                self._direct.blob_cache.clear()

    def _read(self, op: ops.Op) -> Any:
        with self.engine.connect() as conn, conn.begin():
            return _run_sync(conn, op)

    # -- base methods ----------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._direct.get_tuple(self.scope, config)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from self._read(ops.list_checkpoints(self.scope, config, filter, before, limit))

    def persistent_namespaces(self, thread_id: str) -> Sequence[str]:
        """The thread's namespaces of subgraphs compiled with ``checkpointer=True`` (``ops.persistent_namespaces``)."""
        return self._read(ops.persistent_namespaces(self.scope, thread_id))  # type: ignore[no-any-return]

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        return self._direct.put(self.scope, config, checkpoint, metadata, new_versions)

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str = "") -> None:
        if writes:
            self._direct.put_writes(self.scope, config, writes, task_id, task_path)

    def delete_thread(self, thread_id: str) -> None:
        self._write(ops.delete_threads(self.scope, [thread_id]))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._write(ops.delete_for_runs(self.scope, run_ids), snapshot=True)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._write(ops.copy_thread(self.scope, source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", keep_last: int = 1) -> None:
        for thread_id in thread_ids:  # one short transaction per thread
            self._write(ops.prune(self.scope, [thread_id], strategy, keep_last), snapshot=True)

    # -- async twins (worker thread) ---------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        items = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in items:
            yield item

    async def apersistent_namespaces(self, thread_id: str) -> Sequence[str]:
        return await asyncio.to_thread(self.persistent_namespaces, thread_id)

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                   new_versions: ChannelVersions) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                          task_path: str = "") -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)


class AsyncGarrisonSaver(_Common):
    """An asyncio LangGraph checkpointer on SQLite (aiosqlite) or PostgreSQL (psycopg).

    The blocking methods work from other threads (they hop onto the saver's loop),
    as with the upstream async savers.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        tenant_id: str = DEFAULT_TENANT,
        serde: SerializerProtocol | None = None,
        encryption_key: bytes | str | Path | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        sync_engine: Engine | None = None,
    ) -> None:
        """``sync_engine``: a blocking engine on the same SQLite file; the hot path then uses it.

        On SQLite, aiosqlite hops to its thread for every cursor call and SQLAlchemy's
        async layer adds its own: a read took ~1 ms of CPU against ~0.2 ms for
        AsyncSqliteSaver. With ``sync_engine``, ``aget_tuple`` runs the blocking
        saver's read (~20 us, one query) on the loop itself: a WAL reader never waits
        for a writer's lock, so this does not stall the loop the way a write could.
        ``aput`` / ``aput_writes`` run it in a worker thread (a writer may wait for the lock).
        """
        self._init(engine.dialect.name, tenant_id, serde, encryption_key, max_value_bytes)
        self.engine = engine
        self._direct = (DirectSQL.for_engine(sync_engine)
                        if sync_engine is not None and self.dialect == "sqlite" else None)
        # PostgreSQL: one statement per call on psycopg's async connection (see adirect.py).
        self._apg = AsyncDirectPG.for_engine(engine) if self.dialect == "postgresql" else None
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None

    @classmethod
    @asynccontextmanager
    async def from_conn_string(cls, conn_string: str, *, synchronous: str | None = None,
                               sqlite_synchronous: str | None = None,
                               **kwargs: Any) -> AsyncIterator[AsyncGarrisonSaver]:
        """As ``GarrisonSaver.from_conn_string``."""
        synchronous = sqlite_synchronous or synchronous
        url = normalize_url(conn_string, use_async=True)
        engine = create_async(url, synchronous=synchronous)
        sync_engine = None
        if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            sync_engine = create_sync_engine(normalize_url(conn_string, use_async=False),
                                             synchronous=synchronous)
        try:
            saver = cls(engine, sync_engine=sync_engine, **kwargs)
            await saver.setup()
            yield saver
        finally:
            if saver_direct := (sync_engine is not None and DirectSQL.for_engine(sync_engine)):
                saver_direct.close()
            if sync_engine is not None:
                sync_engine.dispose()
            if engine.dialect.name == "postgresql":
                await AsyncDirectPG.for_engine(engine).close()
            await engine.dispose()

    def for_tenant(self, tenant_id: str) -> AsyncGarrisonSaver:
        clone = AsyncGarrisonSaver.__new__(AsyncGarrisonSaver)
        clone.__dict__.update(self.__dict__)
        clone.tenant_id = tenant_id
        return clone

    async def setup(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(create_schema)

    async def _write(self, op: ops.Op, *, snapshot: bool = False) -> Any:
        opts: dict[str, Any] = {WRITE_OPTION: True}
        if snapshot and self.dialect == "postgresql":
            opts["isolation_level"] = "REPEATABLE READ"
        try:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(**opts)
                async with conn.begin():
                    return await _run_async(conn, op)
        finally:
            if self._direct is not None and self._direct.blob_cache is not None:  # deletes may free keys
                self._direct.blob_cache.clear()

    async def _read(self, op: ops.Op) -> Any:
        async with self.engine.connect() as conn, conn.begin():
            return await _run_async(conn, op)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if self._direct is not None:
            return self._direct.get_tuple(self.scope, config)
        if self._apg is not None:
            return await self._apg.get_tuple(self.scope, config)
        return await self._read(ops.get_tuple(self.scope, config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in await self._read(ops.list_checkpoints(self.scope, config, filter, before, limit)):
            yield item

    async def apersistent_namespaces(self, thread_id: str) -> Sequence[str]:
        """The thread's namespaces of subgraphs compiled with ``checkpointer=True`` (``ops.persistent_namespaces``):
        on the driver connections where the saver has them (its get_tuple's), one statement."""
        if self._direct is not None or self._apg is not None:
            params = {"tenant": self.tenant_id, "thread": ops._ids([thread_id], "thread_id")[0]}
            sql = ops.PERSISTENT_NS_SQL[self.dialect]  # in the drivers' own parameter style
            rows = (self._direct._fetch(sql, params) if self._direct is not None
                    else await self._apg._execute(sql, params, rows=True))  # type: ignore[union-attr]
            return sorted(r[0] for r in rows)
        return await self._read(ops.persistent_namespaces(self.scope, thread_id))  # type: ignore[no-any-return]

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                   new_versions: ChannelVersions) -> RunnableConfig:
        if self._direct is not None:
            return await asyncio.to_thread(self._direct.put, self.scope, config, checkpoint, metadata, new_versions)
        if self._apg is not None:
            return await self._apg.put(self.scope, config, checkpoint, metadata, new_versions)
        return await self._write(ops.put(self.scope, config, checkpoint, metadata, new_versions))

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                          task_path: str = "") -> None:
        if writes and self._direct is not None:
            await asyncio.to_thread(self._direct.put_writes, self.scope, config, writes, task_id, task_path)
        elif writes and self._apg is not None:
            await self._apg.put_writes(self.scope, config, writes, task_id, task_path)
        elif writes:
            await self._write(ops.put_writes(self.scope, config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._write(ops.delete_threads(self.scope, [thread_id]))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._write(ops.delete_for_runs(self.scope, run_ids), snapshot=True)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._write(ops.copy_thread(self.scope, source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest",
                     keep_last: int = 1) -> None:
        for thread_id in thread_ids:
            await self._write(ops.prune(self.scope, [thread_id], strategy, keep_last), snapshot=True)

    # -- blocking twins, from another thread ---------------------------------------

    def _sync(self, coro: Any) -> Any:
        loop = self.loop
        if loop is None:
            coro.close()
            raise RuntimeError("AsyncGarrisonSaver was created outside an event loop: use the a* methods")
        try:
            if asyncio.get_running_loop() is loop:
                coro.close()
                raise asyncio.InvalidStateError(
                    "blocking AsyncGarrisonSaver methods can't run on the saver's own event loop: "
                    "use the a* methods there, or GarrisonSaver for blocking code")
        except RuntimeError:
            pass
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._sync(self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from self._sync(self._read(ops.list_checkpoints(self.scope, config, filter, before, limit)))

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        return self._sync(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str = "") -> None:
        self._sync(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._sync(self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._sync(self.adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._sync(self.acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._sync(self.aprune(thread_ids, strategy=strategy))
