"""Alembic migrations, run by `garrison migrate` and by `garrison up`.

Each layer owns an Alembic branch (``branch_labels = ("<layer>",)``) whose first
revision ``depends_on`` the foundation, so layers add migrations without colliding;
``upgrade heads`` applies them all.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect

import garrison
from garrison.db.engine import sync_url

MIGRATIONS = Path(__file__).parent / "migrations"


def import_all_tables() -> None:
    """Import every ``garrison.<layer>.tables`` module so their tables join the metadata."""
    root = Path(garrison.__file__).parent
    for mod in pkgutil.iter_modules([str(root)]):
        if mod.ispkg and (root / mod.name / "tables.py").exists():
            importlib.import_module(f"garrison.{mod.name}.tables")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Bring the schema to the newest revision of every layer (blocking; call in a thread)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "heads")


def current_tables(url: str) -> set[str]:
    engine = create_engine(sync_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
