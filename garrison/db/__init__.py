"""The store: SQLAlchemy 2 Core, async, on SQLite (default) or PostgreSQL."""

from garrison.db.engine import Database, metadata

__all__ = ["Database", "metadata"]
