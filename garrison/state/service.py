"""The state layer's service: tenant-scoped checkpointers, memory store, session KV, retention."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from garrison.state import metrics, retention
from garrison.state.checkpoint.adirect import AsyncDirectPG
from garrison.state.checkpoint.crypto import load_or_create_key
from garrison.state.checkpoint.direct import DirectSQL
from garrison.state.checkpoint.engine import create_async, create_sync_engine, normalize_url
from garrison.state.checkpoint.saver import AsyncGarrisonSaver, GarrisonSaver
from garrison.state.kv import SessionKV, session_kv
from garrison.state.memory.embedder import MiniLMEmbedder
from garrison.state.memory.strategies import StrategyJobs
from garrison.state.settings import StateSettings
from garrison.state.tables import retention as R

if TYPE_CHECKING:
    from garrison.config import Settings
    from garrison.db import Database
    from garrison.state.memory.store import GarrisonStore  # (numpy) imported on first use, see store()

log = logging.getLogger("garrison.state")
KEY_FILE = "state.key"


class StateService:
    """Hands out per-tenant checkpointers and memory stores; runs retention in the background.

    Tables come from the Alembic branch ``state``. The savers use engines of their own
    on the platform's database URL (see ``checkpoint/engine.py`` for why), made on first use.
    """

    def __init__(self, settings: Settings, db: Database | None = None,
                 state_settings: StateSettings | None = None) -> None:
        self.settings = settings
        self.state_settings = state_settings or StateSettings()  # GARRISON_STATE_* or [state]
        self.db = db
        self.url = settings.resolved_database_url
        self._async_engine: AsyncEngine | None = None
        self._sync_engine: Engine | None = None
        self._sync_savers: dict[str, GarrisonSaver] = {}
        self._store_engine: Engine | None = None
        self._store: GarrisonStore | None = None
        self._task: asyncio.Task[None] | None = None
        self.embedder = MiniLMEmbedder()
        self.kv: SessionKV = session_kv(settings.redis_url)
        self.strategies = StrategyJobs(self._async)
        key_path: Path = settings.data_dir / KEY_FILE
        self.encryption_key: bytes | None = load_or_create_key(key_path) if self.state_settings.encrypt else None

    # -- checkpointers and store --------------------------------------------------------

    def _async(self) -> AsyncEngine:
        if self._async_engine is None:
            self._async_engine = create_async(normalize_url(self.url, use_async=True), pool_size=8,
                                              synchronous=self.state_settings.synchronous)
        return self._async_engine

    def _sync(self) -> Engine:
        if self._sync_engine is None:
            self._sync_engine = create_sync_engine(normalize_url(self.url, use_async=False), pool_size=8,
                                                   synchronous=self.state_settings.synchronous)
        return self._sync_engine

    def saver(self, tenant_id: str) -> AsyncGarrisonSaver:
        """An asyncio checkpointer that sees only ``tenant_id``'s threads."""
        engine = self._async()
        # SQLite file: the hot path runs on the blocking engine (see AsyncGarrisonSaver.__init__).
        on_file = engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:")
        return AsyncGarrisonSaver(engine, tenant_id=tenant_id, encryption_key=self.encryption_key,
                                  sync_engine=self._sync() if on_file else None)

    def sync_saver(self, tenant_id: str) -> GarrisonSaver:
        """A blocking checkpointer (for graphs run in worker threads) scoped to ``tenant_id``."""
        saver = self._sync_savers.get(tenant_id)
        if saver is None:
            saver = GarrisonSaver(self._sync(), tenant_id=tenant_id, encryption_key=self.encryption_key)
            self._sync_savers[tenant_id] = saver
        return saver

    def store(self, tenant_id: str) -> GarrisonStore:
        """The tenant's long-term memory store (LangGraph BaseStore, MiniLM semantic search)."""
        if self._store is None:
            from garrison.state.memory.store import GarrisonStore

            self._store_engine = create_sync_engine(normalize_url(self.url, use_async=False), pool_size=8)
            store = GarrisonStore(self._store_engine, tenant_id=tenant_id,
                                  index={"dims": self.embedder.dims, "embed": self.embedder, "fields": ["$"]},
                                  vector_index=self.settings.data_dir / "state-vectors.db")
            store.sync_vector_index()  # tables come from Alembic; the index file is the store's
            self._store = store
        return self._store.for_tenant(tenant_id)

    # -- retention -------------------------------------------------------------------------

    async def stats(self, tenant_id: str) -> dict[str, Any]:
        out = await asyncio.to_thread(retention.stats, self.sync_saver(tenant_id))
        # How memory search finds candidates: sqlite-vec, pgvector, or numpy and why.
        out["vector_search"] = self._store.vector_search if self._store is not None else "not started"
        metrics.STATE_BYTES.labels(tenant_id).set(out["bytes"])
        return out

    async def get_policy(self, tenant_id: str) -> retention.Policy:
        async with self._async().connect() as conn:
            row = (await conn.execute(sa.select(R.c.keep_last, R.c.max_age_s, R.c.idle_thread_s)
                                      .where(R.c.tenant_id == tenant_id))).first()
        if row is None:
            return retention.Policy()
        return retention.Policy(keep_last=row[0], max_age_s=row[1], idle_thread_s=row[2])

    async def set_policy(self, tenant_id: str, policy: retention.Policy) -> retention.Policy:
        async with self._async().connect() as conn:
            conn = await conn.execution_options(garrison_state_write=True)
            async with conn.begin():
                await conn.execute(sa.delete(R).where(R.c.tenant_id == tenant_id))
                if not policy.is_empty():
                    await conn.execute(sa.insert(R).values(tenant_id=tenant_id, updated_at=time.time(),
                                                           **policy.model_dump()))
        return policy

    async def prune(self, tenant_id: str, policy: retention.Policy | None = None) -> dict[str, Any]:
        """Apply ``policy`` (default: the tenant's stored one) now."""
        policy = policy or await self.get_policy(tenant_id)
        if policy.is_empty():
            return {"tenant_id": tenant_id, "policy": policy.model_dump(), "skipped": "no retention policy"}

        def progress(phase: str, done: int, total: int) -> None:
            log.info("retention tenant=%s %s: %d/%d", tenant_id, phase, done, total)

        try:
            report = await asyncio.to_thread(retention.apply, self.sync_saver(tenant_id), policy, progress=progress)
        except Exception:
            metrics.RETENTION_RUNS.labels("error").inc()
            raise
        metrics.RETENTION_RUNS.labels("ok").inc()
        metrics.RETENTION_DROPPED.inc(report["checkpoints_dropped"])
        metrics.RETENTION_THREADS_DROPPED.inc(report["threads_dropped"])
        metrics.STATE_BYTES.labels(tenant_id).set(report["bytes_after"])
        return {"tenant_id": tenant_id, "policy": policy.model_dump(), **report}

    async def run_retention_once(self) -> list[dict[str, Any]]:
        async with self._async().connect() as conn:
            tenants = list((await conn.execute(sa.select(R.c.tenant_id))).scalars())
        return [await self.prune(t) for t in tenants]

    async def _retention_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.run_retention_once()
            except Exception:  # keep the loop alive; the failure is counted and logged
                log.exception("retention pass failed")

    def start_background(self) -> None:
        interval = self.state_settings.retention_interval_s
        if interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._retention_loop(interval))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.strategies.stop()
        await self.kv.close()
        if self._store is not None:
            self._store.close()
        if self._store_engine is not None:
            self._store_engine.dispose()
        for saver in self._sync_savers.values():
            saver.close()
        if self._sync_engine is not None:
            DirectSQL.for_engine(self._sync_engine).close()  # async savers' connections too
            self._sync_engine.dispose()
        if self._async_engine is not None:
            if self._async_engine.dialect.name == "postgresql":
                await AsyncDirectPG.for_engine(self._async_engine).close()
            await self._async_engine.dispose()
