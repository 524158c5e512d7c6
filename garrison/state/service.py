"""The state layer's service: tenant-scoped checkpointers on garrison's database."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from garrison.state.checkpoint.crypto import load_or_create_key
from garrison.state.checkpoint.engine import create_async, create_sync_engine, normalize_url
from garrison.state.checkpoint.saver import AsyncGarrisonSaver, GarrisonSaver
from garrison.state.kv import SessionKV, session_kv
from garrison.state.memory.embedder import MiniLMEmbedder
from garrison.state.memory.store import GarrisonStore

if TYPE_CHECKING:
    from garrison.config import Settings

KEY_FILE = "state.key"


def encryption_wanted() -> bool:
    return os.environ.get("GARRISON_STATE_ENCRYPT", "").lower() in ("1", "true", "yes")


class StateService:
    """Hands out checkpointers scoped to one tenant; tables come from the Alembic branch ``state``.

    The savers use engines of their own on the platform's database URL (see
    ``checkpoint/engine.py`` for why), created on first use.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.resolved_database_url
        self._async_engine: AsyncEngine | None = None
        self._sync_engine: Engine | None = None
        self._sync_savers: dict[str, GarrisonSaver] = {}
        self._store_engine: Engine | None = None
        self._store: GarrisonStore | None = None
        self.embedder = MiniLMEmbedder()
        self.kv: SessionKV = session_kv(settings.redis_url)
        key_path: Path = settings.data_dir / KEY_FILE
        self.encryption_key: bytes | None = load_or_create_key(key_path) if encryption_wanted() else None

    def _async(self) -> AsyncEngine:
        if self._async_engine is None:
            self._async_engine = create_async(normalize_url(self.url, use_async=True), pool_size=8)
        return self._async_engine

    def saver(self, tenant_id: str) -> AsyncGarrisonSaver:
        """An asyncio checkpointer that sees only ``tenant_id``'s threads."""
        return AsyncGarrisonSaver(self._async(), tenant_id=tenant_id, encryption_key=self.encryption_key)

    def sync_saver(self, tenant_id: str) -> GarrisonSaver:
        """A blocking checkpointer (for graphs run in worker threads) scoped to ``tenant_id``."""
        saver = self._sync_savers.get(tenant_id)
        if saver is None:
            if self._sync_engine is None:
                self._sync_engine = create_sync_engine(normalize_url(self.url, use_async=False), pool_size=8)
            saver = GarrisonSaver(self._sync_engine, tenant_id=tenant_id, encryption_key=self.encryption_key)
            self._sync_savers[tenant_id] = saver
        return saver

    def store(self, tenant_id: str) -> GarrisonStore:
        """The tenant's long-term memory store (LangGraph BaseStore, MiniLM semantic search)."""
        if self._store is None:
            self._store_engine = create_sync_engine(normalize_url(self.url, use_async=False), pool_size=8,
                                                    vectors=True)
            store = GarrisonStore(self._store_engine, tenant_id=tenant_id,
                                  index={"dims": self.embedder.dims, "embed": self.embedder, "fields": ["$"]})
            with self._store_engine.begin() as conn:  # tables come from Alembic; the vec0 index is ours
                store._setup_vec(conn)
            self._store = store
        return self._store.for_tenant(tenant_id)

    async def stop(self) -> None:
        await self.kv.close()
        if self._store_engine is not None:
            self._store_engine.dispose()
        for saver in self._sync_savers.values():
            saver.close()
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        if self._async_engine is not None:
            await self._async_engine.dispose()
