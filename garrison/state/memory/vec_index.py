"""The semantic-search shortlist index: sign bits of each vector, in a database file of its own.

The file is a sqlite-vec ``vec0`` table (1 bit per dimension, partitioned by tenant),
so the index persists and other tools can query it. sqlite-vec needs a SQLite that
can load extensions, which Python's own ``sqlite3`` here cannot: it comes through
``pysqlite3`` (its own copy of the SQLite library). Two copies of SQLite in one
process must never open the same database file (their POSIX lock bookkeeping is
separate, so one can silently drop the other's locks and lose writes), so the index
lives in ``<database>-vec`` and only this class opens it.

Queries run in numpy on an in-memory copy of the bits (48 bytes per 384-d vector, so
100,000 vectors take 4.8 MB): XOR and popcount beat the vec0 scan about tenfold. The
copy follows this process's writes and reloads when ``PRAGMA data_version`` says
another connection changed the file. The index is derived data: ``rows`` of
``state_store_vectors``; the store's ``sync_vector_index`` refills it after a crash.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MAX_K = 4096  # sqlite-vec's limit on k, kept for the numpy path too


def available() -> bool:
    try:
        import pysqlite3.dbapi2 as sqlite3
        import sqlite_vec

        conn = sqlite3.connect(":memory:")
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.close()
        return True
    except Exception:  # no pysqlite3 wheel for this platform, or no extension loading
        return False


def bits(vec: np.ndarray) -> bytes:
    return np.packbits(vec > 0).tobytes()


class VecIndex:
    """One connection guarded by a lock; the in-memory copy answers queries."""

    def __init__(self, path: Path, dims: int) -> None:
        import pysqlite3.dbapi2 as sqlite3
        import sqlite_vec

        self.path = path
        self.dims = dims
        self.table = f"bits_{dims}"
        self._words = (dims + 63) // 64
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS {self.table} USING vec0("
                     f"tenant_id text partition key, embedding bit[{dims}])")
        self._conn: Any = conn
        self._lock = threading.Lock()
        self._mem: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # tenant -> (ids, bits as uint64)
        self._version: int | None = None

    # -- the in-memory copy ------------------------------------------------------------

    def _as_words(self, blobs: Sequence[bytes]) -> np.ndarray:
        raw = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), -1)
        pad = self._words * 8 - raw.shape[1]
        if pad:
            raw = np.pad(raw, ((0, 0), (0, pad)))
        return raw.view(np.uint64).reshape(len(blobs), self._words)

    def _fresh(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The copy, reloaded if another connection wrote the file (call with the lock held)."""
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if self._mem is None or version != self._version:
            rows = self._conn.execute(f"SELECT rowid, tenant_id, embedding FROM {self.table}").fetchall()
            by_tenant: dict[str, tuple[list[int], list[bytes]]] = {}
            for rowid, tenant, emb in rows:
                ids, blobs = by_tenant.setdefault(tenant, ([], []))
                ids.append(rowid)
                blobs.append(bytes(emb))
            self._mem = {t: (np.asarray(ids, dtype=np.int64), self._as_words(blobs))
                         for t, (ids, blobs) in by_tenant.items()}
            self._version = version
        return self._mem

    def _mem_remove(self, ids: set[int]) -> None:
        if self._mem is None:
            return
        for tenant, (have, words) in list(self._mem.items()):
            keep = ~np.isin(have, list(ids))
            if not keep.all():
                self._mem[tenant] = (have[keep], words[keep])

    def _mem_add(self, rows: Sequence[tuple[int, str, bytes]]) -> None:
        if self._mem is None:
            return
        by_tenant: dict[str, list[tuple[int, bytes]]] = {}
        for rowid, tenant, emb in rows:
            by_tenant.setdefault(tenant, []).append((rowid, emb))
        for tenant, items in by_tenant.items():
            ids = np.asarray([i for i, _ in items], dtype=np.int64)
            words = self._as_words([b for _, b in items])
            if tenant in self._mem:
                have, old = self._mem[tenant]
                self._mem[tenant] = (np.concatenate([have, ids]), np.concatenate([old, words]))
            else:
                self._mem[tenant] = (ids, words)

    # -- writes and queries --------------------------------------------------------------

    def add(self, rows: Sequence[tuple[int, str, bytes]]) -> None:
        if not rows:
            return
        with self._lock:
            self._fresh()
            self._conn.execute("BEGIN")
            self._conn.executemany(f"DELETE FROM {self.table} WHERE rowid = ?", [(r[0],) for r in rows])
            self._conn.executemany(f"INSERT INTO {self.table}(rowid, tenant_id, embedding) VALUES (?, ?, vec_bit(?))",
                                   rows)
            self._conn.execute("COMMIT")
            self._mem_remove({r[0] for r in rows})
            self._mem_add(rows)

    def remove(self, ids: Iterable[int]) -> None:
        rows = [(i,) for i in ids]
        if rows:
            with self._lock:
                self._fresh()
                self._conn.execute("BEGIN")
                self._conn.executemany(f"DELETE FROM {self.table} WHERE rowid = ?", rows)
                self._conn.execute("COMMIT")
                self._mem_remove({r[0] for r in rows})

    def nearest(self, tenant_id: str, query: np.ndarray, k: int) -> list[int]:
        """Ids of the tenant's k vectors nearest to ``query`` in Hamming distance of the sign bits."""
        q = self._as_words([bits(query)])[0]
        with self._lock:
            found = self._fresh().get(tenant_id)
        if found is None or len(found[0]) == 0:
            return []
        ids, words = found
        dist = np.bitwise_count(words ^ q).sum(axis=1, dtype=np.int32)
        k = min(k, len(ids))
        top = np.argpartition(dist, k - 1)[:k] if k < len(ids) else np.arange(len(ids))
        return ids[top[np.argsort(dist[top], kind="stable")]].tolist()

    def max_id(self) -> int:
        with self._lock:
            row = self._conn.execute(f"SELECT max(rowid) FROM {self.table}").fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
