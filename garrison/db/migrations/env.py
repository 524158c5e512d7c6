"""Alembic environment: every layer's tables share garrison.db.metadata."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from garrison.db.engine import metadata
from garrison.db.migrate import import_all_tables

import_all_tables()
config = context.config


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
