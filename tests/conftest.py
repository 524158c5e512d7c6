"""Shared fixtures: every store-backed test runs on SQLite and on PostgreSQL.

PostgreSQL tests use a fresh database per test on the local server
(``GARRISON_TEST_PG``, default ``postgresql://postgres@127.0.0.1:5432/test``). They are
skipped with the reason when the server is unreachable, unless
``GARRISON_REQUIRE_POSTGRES=1`` (as in CI), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from garrison.config import Settings
from garrison.platform import Platform
from garrison.server import create_app

# The test agents are first-party code that reads host files and variables on purpose, so they
# run in garrison's process; the sandboxed default is tested by agents that declare it.
os.environ.setdefault("GARRISON_RUNTIME_GRAPH_ISOLATION", "process")

PG_ADMIN_URL = os.environ.get("GARRISON_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _require(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def _pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as exc:
        return f"PostgreSQL at {PG_ADMIN_URL} unreachable: {exc}"


@pytest.fixture(scope="session")
def pg_available() -> str | None:
    return _pg_reachable()


def _pg_database(pg_problem: str | None, template: str | None = None) -> Iterator[str]:
    if pg_problem:
        if _require("GARRISON_REQUIRE_POSTGRES"):
            pytest.fail(pg_problem + " (GARRISON_REQUIRE_POSTGRES=1)")
        pytest.skip(pg_problem)
    name = f"garrison_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield _pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def migrated_templates(tmp_path_factory: pytest.TempPathFactory, pg_available: str | None) -> Iterator[dict[str, str]]:
    """Migrate once per session; each test gets a copy (SQLite) or a clone (PostgreSQL)."""
    from garrison.db.migrate import upgrade

    out: dict[str, str] = {}
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    with sqlite3.connect(path) as conn:  # fold the WAL into the file so a copy is complete
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    out["sqlite"] = str(path)
    name = f"garrison_tmpl_{uuid.uuid4().hex[:12]}"
    if not pg_available:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        upgrade(_pg_url(name))
        out["postgresql"] = name
    try:
        yield out
    finally:
        if "postgresql" in out:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_url(name: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_available: str | None,
           migrated_templates: dict[str, str]) -> Iterator[str]:
    """A fresh, migrated database for this test, on each backend."""
    if request.param == "sqlite":
        target = tmp_path / "garrison.db"
        shutil.copyfile(migrated_templates["sqlite"], target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    yield from _pg_database(pg_available, template=migrated_templates.get("postgresql"))


@pytest.fixture
def pg_url(pg_available: str | None) -> Iterator[str]:
    """A fresh PostgreSQL database, for tests that are PostgreSQL-only."""
    yield from _pg_database(pg_available)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def settings(data_dir: Path, db_url: str) -> Settings:
    return Settings(data_dir=data_dir, database_url=db_url, audit_flush_ms=20)


@pytest.fixture
async def platform(settings: Settings) -> AsyncIterator[Platform]:
    plat = Platform(settings)
    await plat.start()
    try:
        yield plat
    finally:
        await plat.stop()


@pytest.fixture
def app(platform: Platform):  # type: ignore[no-untyped-def]
    return create_app(platform=platform)


@pytest.fixture
def admin_key(platform: Platform) -> str:
    return platform.settings.admin_key_path.read_text().strip()


@pytest.fixture
async def client(app, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://garrison.test",
                                 headers={"authorization": f"Bearer {admin_key}"}) as c:
        yield c


@pytest.fixture
async def anon_client(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://garrison.test") as c:
        yield c


@pytest.fixture
def make_key(platform: Platform) -> Callable[..., Awaitable[str]]:
    """``await make_key(["llm:invoke"], tenant="acme")``: a key string (tenant created if new)."""

    async def make(scopes: list[str], tenant: str = "default", *, principal: str = "tester",
                   kind: str = "service", attributes: dict | None = None, ttl_s: int | None = None) -> str:
        row = await platform.identity.tenant_by_name(tenant)
        if row is None:
            row = await platform.identity.create_tenant(tenant)
        _, key = await platform.identity.create_key(row["id"], principal_name=principal, name="test key",
                                                    scopes=scopes, kind=kind, attributes=attributes,
                                                    ttl_s=ttl_s)
        return key

    return make


REDIS_URL = os.environ.get("GARRISON_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The local Redis server; skipped when unreachable unless GARRISON_REQUIRE_REDIS=1 (CI)."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:
        problem = f"Redis at {REDIS_URL} unreachable: {exc}"
        if _require("GARRISON_REQUIRE_REDIS"):
            pytest.fail(problem + " (GARRISON_REQUIRE_REDIS=1)")
        pytest.skip(problem)
    return REDIS_URL
