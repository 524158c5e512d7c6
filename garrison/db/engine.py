"""Engine creation for SQLite (WAL, foreign keys, busy timeout) and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

# One MetaData for every layer's tables, so Alembic sees all of them.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def sync_url(url: str) -> str:
    """The blocking-driver form of a URL (Alembic and maintenance tools)."""
    return url.replace("sqlite+aiosqlite", "sqlite")


class Database:
    """Wraps the async engine; ``dialect`` is ``sqlite`` or ``postgresql``."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"echo": echo}
        if url.startswith("sqlite"):
            # aiosqlite runs each connection on its own thread; a small pool keeps them warm.
            kwargs.update(pool_size=8, max_overflow=8, connect_args={"timeout": 10})
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        if ":memory:" in url:
            kwargs = {"echo": echo, "poolclass": NullPool}
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    async def ping(self) -> None:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
