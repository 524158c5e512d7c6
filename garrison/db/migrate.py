"""Alembic migrations, run by `garrison migrate` and by `garrison up`.

Each layer owns an Alembic branch (``branch_labels = ("<layer>",)``) whose first
revision ``depends_on`` the foundation, so layers add migrations without colliding;
``upgrade heads`` applies them all.

At start-up ``upgrade(url, stamp=...)`` skips Alembic (its import alone is about a third
of a CPU second) when the store already holds the revisions that the last upgrade from
exactly these migration files left there.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, inspect, text

import garrison
from garrison.db.engine import sync_url

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger("garrison.db.migrate")

MIGRATIONS = Path(__file__).parent / "migrations"


def import_all_tables() -> None:
    """Import every ``garrison.<layer>.tables`` module so their tables join the metadata."""
    root = Path(garrison.__file__).parent
    for mod in pkgutil.iter_modules([str(root)]):
        if mod.ispkg and (root / mod.name / "tables.py").exists():
            importlib.import_module(f"garrison.{mod.name}.tables")


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, stamp: Path | None = None) -> None:
    """Bring the schema to the newest revision of every layer (blocking; call in a thread).

    ``stamp``: a file recording the migration files' digest and the revisions the last
    upgrade left in the store; when both still match, Alembic is not loaded at all.
    """
    digest = _migrations_digest() if stamp is not None else ""
    if stamp is not None and _stamp_matches(stamp, digest, url):
        return
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    from alembic import command

    command.upgrade(alembic_config(url), "heads")
    if stamp is not None:
        revisions = _store_revisions(url)
        if revisions:
            try:
                stamp.write_text(json.dumps({"migrations": digest, "revisions": sorted(revisions)}))
            except OSError as exc:  # only a shortcut for the next start
                log.warning("could not write %s: %s", stamp, exc)


def _migrations_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(MIGRATIONS.rglob("*.py")):
        h.update(path.relative_to(MIGRATIONS).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _store_revisions(url: str) -> set[str] | None:
    """The revisions in the store's ``alembic_version`` table (what Alembic itself compares to its heads)."""
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return {str(r[0]) for r in conn.execute(text("SELECT version_num FROM alembic_version"))}
    except Exception:  # no table yet, or no store: Alembic decides
        return None
    finally:
        engine.dispose()


def _stamp_matches(stamp: Path, digest: str, url: str) -> bool:
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or recorded.get("migrations") != digest:
        return False
    at = _store_revisions(url)
    if at is None or at != set(recorded.get("revisions", ())):
        return False
    log.debug("schema at the recorded heads; Alembic not loaded")
    return True


def current_tables(url: str) -> set[str]:
    engine = create_engine(sync_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
