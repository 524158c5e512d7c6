"""Engines for the savers: URL forms, SQLite pragmas, BEGIN IMMEDIATE for writers, schema.

The savers keep engines of their own (not the platform's shared one) because on
SQLite they take the write lock at BEGIN (``BEGIN IMMEDIATE``): a writer then
waits for the busy timeout instead of failing with "database is locked" when two
deferred transactions both try to upgrade to a write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from garrison.state.tables import CHECKPOINT_TABLES

WRITE_OPTION = "garrison_state_write"


def normalize_url(conn_string: str, *, use_async: bool) -> str:
    """A SQLAlchemy URL from a SQLite path, a sqlite:// URL or a PostgreSQL URL."""
    s = conn_string.strip()
    if not s:
        raise ValueError("empty connection string: give a SQLite path, ':memory:' or a postgresql:// URL")
    if s.startswith(("postgres://", "postgresql://", "postgresql+")):
        rest = s.split("://", 1)[1]
        return f"postgresql+psycopg://{rest}"
    sqlite_driver = "sqlite+aiosqlite" if use_async else "sqlite"
    if s.startswith("sqlite"):
        rest = s.split("://", 1)[1] if "://" in s else s.split(":", 1)[1]
        return f"{sqlite_driver}://{rest}"
    if "://" in s:
        raise ValueError(f"unsupported connection string scheme in {s.split('://', 1)[0]!r}: "
                         "use a SQLite path or a postgresql:// URL")
    if s == ":memory:":
        return f"{sqlite_driver}://"
    path = Path(s).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{sqlite_driver}:///{path.resolve()}"


SYNCHRONOUS = ("NORMAL", "FULL")
# SQLite in WAL mode at NORMAL survives the process being killed (SQLite's own advice for WAL);
# PostgreSQL, unless told, keeps the server's synchronous_commit (see _engine_kwargs).
SQLITE_DEFAULT = "NORMAL"


def _sqlite_connect_hook(synchronous: str) -> Any:
    if synchronous not in SYNCHRONOUS:
        raise ValueError(f"sqlite synchronous must be one of {SYNCHRONOUS}, not {synchronous!r}")

    def connect(dbapi_conn: Any, _record: Any) -> None:
        # Autocommit at the driver level: SQLAlchemy's begin hook below emits BEGIN itself.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit survives the process being killed; FULL also survives power loss
        # (on PostgreSQL the same word sets synchronous_commit, see _engine_kwargs).
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return connect


def _sqlite_begin(conn: sa.Connection) -> None:
    if conn.get_execution_options().get(WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def _install_sqlite_hooks(sync_engine: Engine, synchronous: str) -> None:
    event.listen(sync_engine, "connect", _sqlite_connect_hook(synchronous))
    event.listen(sync_engine, "begin", _sqlite_begin)


def _engine_kwargs(url: str, *, pool_size: int, synchronous: str | None = None) -> dict[str, Any]:
    if url.startswith("sqlite"):
        if url.endswith("://") or ":memory:" in url:
            return {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        return {"pool_size": pool_size, "max_overflow": pool_size, "connect_args": {"check_same_thread": False}}
    if synchronous is not None and synchronous not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS}, not {synchronous!r}")
    kwargs: dict[str, Any] = {"pool_size": pool_size, "max_overflow": pool_size, "pool_pre_ping": False}
    # Unset (the default) keeps the server's synchronous_commit, as PostgresSaver does: turning it
    # off per session would also skip a DBA's synchronous standbys, so a fail-over could lose
    # checkpoints garrison had acknowledged. NORMAL is an explicit opt-in.
    if synchronous == "NORMAL":
        # The same promise as SQLite's NORMAL: a commit survives the agent process being
        # killed (the server has it), and only a crash of the database host itself may lose
        # the last few hundred ms of commits (never corrupts). The commit then does not wait
        # for the WAL flush, which is most of a put's time. FULL keeps the server's default.
        # Set at connection start-up (libpq options), so it costs no round trip.
        kwargs["connect_args"] = {"options": "-c synchronous_commit=off"}
    return kwargs


def create_sync_engine(url: str, *, pool_size: int = 16, synchronous: str | None = None) -> Engine:
    engine = sa.create_engine(url, **_engine_kwargs(url, pool_size=pool_size, synchronous=synchronous))
    if engine.dialect.name == "sqlite":
        _install_sqlite_hooks(engine, synchronous or SQLITE_DEFAULT)
    return engine


def create_async(url: str, *, pool_size: int = 16, synchronous: str | None = None) -> AsyncEngine:
    kwargs = _engine_kwargs(url, pool_size=pool_size, synchronous=synchronous)
    if url.startswith("sqlite"):
        kwargs.pop("connect_args", None)
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _install_sqlite_hooks(engine.sync_engine, synchronous or SQLITE_DEFAULT)
    return engine


def create_schema(conn: sa.Connection) -> None:
    """Create the state tables where missing (standalone use; garrison runs Alembic)."""
    CHECKPOINT_TABLES[0].metadata.create_all(conn, tables=CHECKPOINT_TABLES, checkfirst=True)
    # Databases set up by an earlier version have an index every put paid for (state_0005).
    conn.execute(sa.text("DROP INDEX IF EXISTS ix_state_checkpoints_created"))
