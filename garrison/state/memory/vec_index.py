"""The sqlite-vec shortlist index, in a database file of its own.

sqlite-vec needs a SQLite that can load extensions, which Python's own ``sqlite3``
here cannot: it comes through ``pysqlite3`` (its own copy of the SQLite library).
Two copies of SQLite in one process must never open the same database file (their
POSIX lock bookkeeping is separate, so one can silently drop the other's locks and
lose writes), so the index lives in ``<database>-vec`` and only this class opens it.
It is derived data: rows are the ids of ``state_store_vectors`` with the sign bit of
each dimension; ``sync`` refills it from the main database after a crash.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MAX_K = 4096  # sqlite-vec's limit on k


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
    """One connection (sqlite-vec queries are CPU-bound; a lock serialises them)."""

    def __init__(self, path: Path, dims: int) -> None:
        import pysqlite3.dbapi2 as sqlite3
        import sqlite_vec

        self.path = path
        self.table = f"bits_{dims}"
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS {self.table} USING vec0("
                     f"tenant_id text partition key, embedding bit[{dims}])")
        self._conn: Any = conn
        self._lock = threading.Lock()

    def add(self, rows: Sequence[tuple[int, str, bytes]]) -> None:
        if not rows:
            return
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany(f"DELETE FROM {self.table} WHERE rowid = ?", [(r[0],) for r in rows])
            self._conn.executemany(f"INSERT INTO {self.table}(rowid, tenant_id, embedding) VALUES (?, ?, vec_bit(?))",
                                   rows)
            self._conn.execute("COMMIT")

    def remove(self, ids: Iterable[int]) -> None:
        rows = [(i,) for i in ids]
        if rows:
            with self._lock:
                self._conn.execute("BEGIN")
                self._conn.executemany(f"DELETE FROM {self.table} WHERE rowid = ?", rows)
                self._conn.execute("COMMIT")

    def nearest(self, tenant_id: str, query: np.ndarray, k: int) -> list[int]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT rowid FROM {self.table} WHERE embedding MATCH vec_bit(?) AND k = ? AND tenant_id = ?",
                (bits(query), k, tenant_id)).fetchall()
        return [r[0] for r in rows]

    def max_id(self) -> int:
        with self._lock:
            row = self._conn.execute(f"SELECT max(rowid) FROM {self.table}").fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
