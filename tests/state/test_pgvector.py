"""Semantic search on PostgreSQL: pgvector (HNSW) where the server allows, numpy where it doesn't."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

from garrison.state.memory.embedder import MiniLMEmbedder
from garrison.state.memory.store import GarrisonStore

MINILM = MiniLMEmbedder()
INDEX = {"dims": 384, "embed": MINILM, "fields": ["text"]}
NOTES = {"sushi": "loves sushi and ramen", "hike": "goes hiking in the Alps every summer",
         "tax": "files tax forms in April", "jazz": "listens to jazz on vinyl"}


def _admin(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _server_has_pgvector(url: str) -> bool:
    with psycopg.connect(_admin(url), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone() is not None


def test_pgvector_index_drives_semantic_search(pg_url: str) -> None:
    if not _server_has_pgvector(pg_url):
        pytest.skip("this PostgreSQL server has no pgvector installed (the numpy fallback is tested below)")
    with GarrisonStore.from_conn_string(pg_url, index=INDEX) as store:
        assert store.vector_search.startswith("pgvector ")
        for key, text in NOTES.items():
            store.put(("users", "u1"), key, {"text": text})
        hits = store.search(("users",), query="what food does the user like?", limit=2)
        assert hits[0].key == "sushi"
        table = store._pgvec.table  # type: ignore[union-attr]
        with store.engine.connect() as conn:
            assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == len(NOTES)
            index = conn.execute(sa.text("SELECT indexdef FROM pg_indexes WHERE tablename = :t AND indexdef LIKE "
                                         "'%hnsw%'"), {"t": table}).scalar()
        assert index is not None and "vector_cosine_ops" in index
        store.delete(("users", "u1"), "tax")  # the pgvector row goes with the item
        with store.engine.begin() as conn:
            assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == len(NOTES) - 1
            # Empty the index behind the store's back: search now finds nothing, which shows the
            # shortlist comes from pgvector and not from a scan of the stored vectors.
            conn.execute(sa.text(f"DELETE FROM {table}"))
        assert store.search(("users",), query="what food does the user like?", limit=2) == []
        assert store.sync_vector_index() == len(NOTES) - 1  # the backfill restores it
        assert store.search(("users",), query="what food does the user like?", limit=1)[0].key == "sushi"


@pytest.fixture
def unprivileged_url(pg_url: str) -> Iterator[str]:
    """pg_url as a role that may create tables but not extensions, in a database without pgvector."""
    role = f"garrison_t_{uuid.uuid4().hex[:8]}"
    db = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(_admin(pg_url), autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'ALTER DATABASE "{db}" OWNER TO "{role}"')
        conn.execute(f'ALTER SCHEMA public OWNER TO "{role}"')
    base, _db = pg_url.rsplit("/", 1)
    scheme, rest = base.split("://", 1)
    yield f"{scheme}://{role}@{rest.split('@', 1)[-1]}/{db}"
    with psycopg.connect(_admin(pg_url).rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_without_pgvector_search_ranks_in_numpy_and_says_so(unprivileged_url: str) -> None:
    with GarrisonStore.from_conn_string(unprivileged_url, index=INDEX) as store:
        assert store.vector_search.startswith("numpy (pgvector unavailable: ")
        assert store._pgvec is None
        for key, text in NOTES.items():
            store.put(("users", "u1"), key, {"text": text})
        hits = store.search(("users",), query="which music?", limit=1)
        assert hits[0].key == "jazz"
