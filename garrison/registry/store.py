"""Registry persistence: SQLAlchemy Core queries over the registry tables."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, create_engine, delete, event, func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garrison.core.clock import aware
from garrison.db import Database
from garrison.db.engine import sync_url
from garrison.registry.schemas import Entry
from garrison.registry.tables import (
    registry_health,
    registry_namespaces,
    registry_tool_lists,
    registry_versions,
)

V = registry_versions.c
_ENTRY_COLUMNS = (
    V.name, V.version, V.tenant_id, V.server_json, V.status, V.status_message,
    V.status_changed_at, V.published_at, V.updated_at, V.is_latest,
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _entry(row: Any) -> Entry:
    return Entry(
        name=row.name, version=row.version, tenant_id=row.tenant_id, server_json=row.server_json,
        status=row.status, status_message=row.status_message,
        status_changed_at=aware(row.status_changed_at),  # type: ignore[arg-type]
        published_at=aware(row.published_at),  # type: ignore[arg-type]
        updated_at=aware(row.updated_at),  # type: ignore[arg-type]
        is_latest=bool(row.is_latest),
    )


class RegistryStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # On SQLite the hot listing query runs on a plain sqlite3 engine in one thread hop
        # instead of aiosqlite's several round trips per query.
        self._sync: Engine | None = None
        if db.dialect == "sqlite" and ":memory:" not in db.url:
            self._sync = create_engine(sync_url(db.url), connect_args={"timeout": 10, "check_same_thread": False})
            event.listen(self._sync, "connect", _sqlite_pragmas)

    def dispose(self) -> None:
        if self._sync is not None:
            self._sync.dispose()

    async def list_page(
        self, *, after: tuple[str, str] | None, limit: int, search: str | None,
        updated_since: datetime | None, version: str | None, include_deleted: bool,
    ) -> list[Entry]:
        q = select(*_ENTRY_COLUMNS)
        if after is not None:
            q = q.where(tuple_(V.name, V.version) > tuple_(*after))
        if search:
            q = q.where(V.search_text.contains(search.lower(), autoescape=True))
        if updated_since is not None:
            q = q.where(V.updated_at > updated_since)
        if version == "latest":
            q = q.where(V.is_latest.is_(True))
        elif version:
            q = q.where(V.version == version)
        if not include_deleted:
            q = q.where(V.status != "deleted")
        q = q.order_by(V.name, V.version).limit(limit)
        if self._sync is not None:
            engine = self._sync

            def run() -> list[Entry]:
                with engine.connect() as conn:
                    return [_entry(r) for r in conn.execute(q).all()]

            return await asyncio.to_thread(run)
        async with self.db.engine.connect() as conn:
            return [_entry(r) for r in (await conn.execute(q)).all()]

    async def versions(self, name: str, conn: AsyncConnection | None = None) -> list[Entry]:
        q = select(*_ENTRY_COLUMNS).where(V.name == name).order_by(V.published_at.desc(), V.version.desc())
        if conn is not None:
            return [_entry(r) for r in (await conn.execute(q)).all()]
        async with self.db.engine.connect() as c:
            return [_entry(r) for r in (await c.execute(q)).all()]

    async def get(self, name: str, version: str) -> Entry | None:
        q = select(*_ENTRY_COLUMNS).where(V.name == name)
        q = q.where(V.is_latest.is_(True)) if version == "latest" else q.where(V.version == version)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(q.limit(1))).first()
        return _entry(row) if row else None

    # Writes take a connection inside the caller's transaction.

    async def namespace_owner(self, conn: AsyncConnection, namespace: str, *, lock: bool) -> str | None:
        q = select(registry_namespaces.c.tenant_id).where(registry_namespaces.c.namespace == namespace)
        if lock and self.db.dialect == "postgresql":
            q = q.with_for_update()
        return (await conn.execute(q)).scalar_one_or_none()

    async def claim_namespace(self, conn: AsyncConnection, namespace: str, tenant_id: str, now: datetime) -> None:
        if self.db.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt: Any = pg_insert(registry_namespaces).on_conflict_do_nothing()
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(registry_namespaces).on_conflict_do_nothing()
        await conn.execute(stmt.values(namespace=namespace, tenant_id=tenant_id, created_at=now))

    async def insert_version(self, conn: AsyncConnection, row_id: str, entry: Entry, search_text: str) -> None:
        await conn.execute(insert(registry_versions).values(
            id=row_id, name=entry.name, version=entry.version, tenant_id=entry.tenant_id,
            server_json=entry.server_json, search_text=search_text, status=entry.status,
            status_message=entry.status_message, status_changed_at=entry.status_changed_at,
            published_at=entry.published_at, updated_at=entry.updated_at, is_latest=entry.is_latest,
        ))

    async def set_latest(self, conn: AsyncConnection, name: str, version: str | None, now: datetime) -> None:
        """Make ``version`` the only latest one of ``name`` (None: none is)."""
        await conn.execute(
            update(registry_versions)
            .where(and_(V.name == name, V.is_latest.is_(True), V.version != (version or "")))
            .values(is_latest=False, updated_at=now)
        )
        if version is not None:
            await conn.execute(
                update(registry_versions)
                .where(and_(V.name == name, V.version == version, V.is_latest.is_(False)))
                .values(is_latest=True, updated_at=now)
            )

    async def update_fields(self, conn: AsyncConnection, name: str, version: str | None, **values: Any) -> int:
        q = update(registry_versions).where(V.name == name)
        if version is not None:
            q = q.where(V.version == version)
        return (await conn.execute(q.values(**values))).rowcount

    async def delete_version(self, conn: AsyncConnection, name: str, version: str) -> None:
        await conn.execute(delete(registry_versions).where(and_(V.name == name, V.version == version)))
        await conn.execute(delete(registry_tool_lists).where(and_(
            registry_tool_lists.c.name == name, registry_tool_lists.c.version == version)))

    async def count(self) -> int:
        async with self.db.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(registry_versions))).scalar_one())

    async def all_entries(self, include_deleted: bool = True) -> list[Entry]:
        q = select(*_ENTRY_COLUMNS).order_by(V.name, V.version)
        if not include_deleted:
            q = q.where(V.status != "deleted")
        async with self.db.engine.connect() as conn:
            return [_entry(r) for r in (await conn.execute(q)).all()]

    # Tool lists (schema versioning) and health history.

    async def tool_list(self, name: str, version: str) -> list[dict[str, Any]] | None:
        t = registry_tool_lists.c
        async with self.db.engine.connect() as conn:
            return (await conn.execute(
                select(t.tools).where(and_(t.name == name, t.version == version))
            )).scalar_one_or_none()

    async def save_tool_list(self, name: str, version: str, tools: list[dict[str, Any]], now: datetime) -> None:
        t = registry_tool_lists.c
        async with self.db.engine.begin() as conn:
            done = await conn.execute(
                update(registry_tool_lists).where(and_(t.name == name, t.version == version))
                .values(tools=tools, recorded_at=now)
            )
            if not done.rowcount:
                await conn.execute(insert(registry_tool_lists).values(
                    name=name, version=version, tools=tools, recorded_at=now))

    async def record_health(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            async with self.db.engine.begin() as conn:
                await conn.execute(insert(registry_health), rows)

    async def health_history(self, name: str, version: str, limit: int) -> list[dict[str, Any]]:
        h = registry_health.c
        q = (select(h.checked_at, h.ok, h.latency_ms, h.tool_count, h.error)
             .where(and_(h.name == name, h.version == version))
             .order_by(h.checked_at.desc(), h.id.desc()).limit(limit))
        async with self.db.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(q)).all()]

    @staticmethod
    def newest_of(entries: list[Entry]) -> Entry | None:
        from garrison.registry.versions import compare_versions

        best: Entry | None = None
        for e in entries:
            if best is None or compare_versions(e.version, best.version, e.published_at, best.published_at) > 0:
                best = e
        return best


