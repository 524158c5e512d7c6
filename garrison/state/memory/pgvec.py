"""The semantic-search shortlist on PostgreSQL: a pgvector column with an HNSW index.

Where the server has the ``vector`` extension (or lets this role create it), the
store keeps a copy of each embedding in ``state_store_pgvec_<dims>`` (a row per
``state_store_vectors`` row, deleted with it by the foreign key) and asks the HNSW
index for the nearest ids; the store then re-ranks them by exact cosine as it does
with the SQLite index. The table depends on the embedding size, so the store
creates it (like the sqlite-vec file), not a migration. Where the extension is
missing, the store ranks in numpy; the reason is logged once and shown in stats.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

log = logging.getLogger("garrison.state.memory")
_logged: set[str] = set()


def _vector_text(vec: np.ndarray) -> str:
    return "[" + ",".join(repr(float(x)) for x in vec.tolist()) + "]"


class PgVector:
    """pgvector access for one embedding size; build with ``enable``."""

    def __init__(self, dims: int, version: str) -> None:
        self.dims = dims
        self.version = version
        self.table = f"state_store_pgvec_{dims}"
        # hnsw.iterative_scan (0.8.0+) keeps scanning past ef_search when the tenant filter
        # removes most of the first candidates, instead of returning fewer than k.
        self.iterative = tuple(int(p) for p in version.split(".")[:2]) >= (0, 8)

    @classmethod
    def enable(cls, engine: Engine, dims: int) -> tuple[PgVector | None, str]:
        """The index, or None and why not (logged once per reason)."""
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                version = conn.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
                if version is None:
                    try:
                        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
                    except sa.exc.IntegrityError:  # another process created it at the same moment
                        pass
                    version = conn.execute(
                        sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
                index = cls(dims, str(version))
                conn.execute(sa.text(
                    f"CREATE TABLE IF NOT EXISTS {index.table} ("
                    "id BIGINT PRIMARY KEY REFERENCES state_store_vectors(id) ON DELETE CASCADE, "
                    f"tenant_id TEXT NOT NULL, embedding vector({dims}) NOT NULL)"))
                conn.execute(sa.text(
                    f"CREATE INDEX IF NOT EXISTS ix_{index.table}_hnsw ON {index.table} "
                    "USING hnsw (embedding vector_cosine_ops)"))
            return index, f"pgvector {version} (HNSW)"
        except sa.exc.DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
            why = f"numpy (pgvector unavailable: {reason})"
            if why not in _logged:
                _logged.add(why)
                log.warning("memory store: semantic search ranks in numpy; the vector extension can't be used "
                            "(%s). Install pgvector on the server (e.g. postgresql-15-pgvector) to index it.", reason)
            return None, why

    def add(self, conn: sa.Connection, rows: Sequence[tuple[int, str, np.ndarray]]) -> None:
        if rows:
            conn.execute(sa.text(f"INSERT INTO {self.table} (id, tenant_id, embedding) "
                                 "VALUES (:id, :t, CAST(:e AS vector)) ON CONFLICT (id) DO NOTHING"),
                         [{"id": i, "t": t, "e": _vector_text(v)} for i, t, v in rows])

    def nearest(self, conn: sa.Connection, tenant_id: str, q: np.ndarray, k: int) -> list[int]:
        """Ids of the tenant's ``k`` vectors nearest ``q`` by cosine (in the caller's transaction)."""
        conn.execute(sa.text(f"SET LOCAL hnsw.ef_search = {min(1000, max(40, k))}"))
        if self.iterative:
            conn.execute(sa.text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
        return list(conn.execute(sa.text(
            f"SELECT id FROM {self.table} WHERE tenant_id = :t ORDER BY embedding <=> CAST(:q AS vector) LIMIT :k"),
            {"t": tenant_id, "q": _vector_text(q), "k": k}).scalars())

    def backfill(self, engine: Engine, dims: int) -> int:
        """Copy the vectors the pgvector table lacks (rows stored before it existed)."""
        added = 0
        while True:
            with engine.begin() as conn:
                rows: list[Any] = list(conn.execute(sa.text(
                    f"SELECT v.id, v.tenant_id, v.embedding FROM state_store_vectors v "
                    f"LEFT JOIN {self.table} p ON p.id = v.id WHERE p.id IS NULL "
                    "AND length(v.embedding) = :n ORDER BY v.id LIMIT 2000"), {"n": 4 * dims}).all())
                if not rows:
                    return added
                self.add(conn, [(r[0], r[1], np.frombuffer(r[2], np.float32)) for r in rows])
                added += len(rows)
