"""The blocking saver's hot path: get_tuple, put and put_writes on pooled driver connections.

A LangGraph step costs one put and one or more put_writes, so these three run
straight on the DBAPI connection that SQLAlchemy's pool hands out (no statement
compilation or result wrapping per call): one statement and one commit per put on
PostgreSQL (the blobs ride in a CTE, in autocommit); on SQLite one writer connection
with group commit (``groupcommit``), ``BEGIN IMMEDIATE`` so other processes' writers
queue on the busy timeout instead of failing. Rows and
decoding are shared with the SQLAlchemy Core path in ``ops``.

On SQLite, channel blobs are also kept in a bounded in-process cache (``blobcache``):
a read needs only the checkpoint row and its writes, one query with positional
parameters (sqlite3 keeps the prepared statement in its per-connection cache), and
decodes the checkpoint and its channel values in one msgpack call. Deletes in this
process clear the cache.
"""

from __future__ import annotations

import functools
import re
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from sqlalchemy.engine import Engine

from garrison.state.checkpoint import ops
from garrison.state.checkpoint.blobcache import BlobCache, Inflated, decode_fast
from garrison.state.checkpoint.groupcommit import GroupCommit, Statement

CP_COLS = ["tenant_id", "thread_id", "checkpoint_ns", "checkpoint_id", "parent_checkpoint_id", "run_id",
           "created_at", "type", "checkpoint", "meta", "channel_versions"]
BLOB_COLS = ["tenant_id", "thread_id", "checkpoint_ns", "channel", "version", "type", "blob"]
WRITE_COLS = ["tenant_id", "thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx", "channel", "type",
              "blob", "task_path"]
CP_UPDATE = ", ".join(f"{c} = excluded.{c}" for c in ("parent_checkpoint_id", "run_id", "type", "checkpoint",
                                                       "meta", "channel_versions"))
CP_CONFLICT = f"ON CONFLICT (tenant_id, thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET {CP_UPDATE}"
W_KEYS = "tenant_id, thread_id, checkpoint_ns, checkpoint_id, task_id, idx"
W_UPDATE = ", ".join(f"{c} = excluded.{c}" for c in ("channel", "type", "blob", "task_path"))


def _named(cols: list[str]) -> str:
    return ", ".join(f":{c}" for c in cols)


def _pg_values(cols: list[str], n: int) -> str:
    one = "(" + ", ".join(["%s"] * len(cols)) + ")"
    return ", ".join([one] * n)


class DirectSQL:
    """Driver connections kept out of SQLAlchemy's pool while the saver lives.

    One per engine (``for_engine``), so the blocking and the asyncio saver on one
    database share the blob cache.
    """

    @classmethod
    def for_engine(cls, engine: Engine) -> DirectSQL:
        with _SHARED_LOCK:
            direct = _SHARED.get(engine)
            if direct is None:
                direct = _SHARED[engine] = cls(engine)
            return direct

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pg = engine.dialect.name == "postgresql"
        self._idle: list[tuple[Any, Any]] = []  # (pool fairy, driver connection)
        latest, by_id = (t.text for t in ops.GET_SQL[engine.dialect.name])
        head_latest = ops.head_and_writes_sql("")
        head_by_id = ops.head_and_writes_sql("AND checkpoint_id = :cid")
        if self.pg:
            latest, by_id = PG_GET_LATEST, PG_GET_BY_ID
        else:
            # Positional parameters: sqlite3 binds a tuple faster than a dict.
            latest, by_id, head_latest, head_by_id = (_numbered(q) for q in (latest, by_id, head_latest, head_by_id))
        self.get_latest, self.get_by_id = latest, by_id
        self.head_latest, self.head_by_id = head_latest, head_by_id
        self.blob_cache = BlobCache() if not self.pg else None
        self.inflated = Inflated()
        # SQLite has one writer at a time: writers of this process queue in process (SQLite's
        # busy handler sleeps in steps of milliseconds) and commit in groups (one fsync each).
        self.sqlite_writes = GroupCommit(self._open)

    def _open(self) -> tuple[Any, Any]:
        fairy = self.engine.raw_connection()
        con = fairy.driver_connection
        if self.pg:
            con.autocommit = True  # type: ignore[union-attr]
        return fairy, con

    @contextmanager
    def connection(self) -> Iterator[Any]:
        try:
            pair = self._idle.pop()
        except IndexError:
            pair = self._open()
        try:
            yield pair[1]
        except BaseException:
            pair[0].invalidate()  # unknown transaction state: never reuse
            raise
        self._idle.append(pair)

    def _fetch(self, sql: str, params: Any) -> list[Any]:
        """One read on an idle connection (the get hot path: no context manager, no wrapping)."""
        idle = self._idle
        try:
            pair = idle.pop()
        except IndexError:
            pair = self._open()
        try:
            rows = pair[1].execute(sql, params).fetchall()
        except BaseException:
            pair[0].invalidate()
            raise
        idle.append(pair)
        return rows  # type: ignore[no-any-return]

    def close(self) -> None:
        if not self.pg:
            self.sqlite_writes.close()
        while self._idle:
            fairy, con = self._idle.pop()
            if self.pg:
                con.autocommit = False
            fairy.close()

    # -- operations ------------------------------------------------------------------

    def get_tuple(self, s: ops.Scope, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id, ns, cid = ops._thread_key(config)
        cache = self.blob_cache
        if cache is None:
            params = {"tenant": s.tenant_id, "thread": thread_id, "ns": ns}
            if cid:
                params["cid"] = cid
            return ops.decode_get(s, thread_id, ns, self._fetch(self.get_by_id if cid else self.get_latest, params))
        tenant = s.tenant_id
        if cid:
            rows = self._fetch(self.head_by_id, (tenant, thread_id, ns, cid))
        else:
            rows = self._fetch(self.head_latest, (tenant, thread_id, ns))
        if not rows or rows[0][0] != 0:
            return None
        head = rows[0]
        writes = [(a, b, t, i, p or "", v) for _k, a, b, t, v, _m, p, i in rows[1:]]
        packed = cache.packed_map(tenant, thread_id, ns, head[6])
        if packed is not None:
            tup = decode_fast(s, thread_id, ns, head[1:6], packed[0], packed[1], writes, self.inflated)
            if tup is not None:
                return tup  # type: ignore[no-any-return]
        blobs = cache.lookup(tenant, thread_id, ns, orjson.loads(head[6]))
        if blobs is None:  # a miss: read them with the checkpoint, by id so it is the same one
            full = self._fetch(self.get_by_id, (tenant, thread_id, ns, head[1]))
            cache.fill(tenant, thread_id, ns, [(r[1], r[2], r[3], r[4]) for r in full if r[0] == 1])
            return ops.decode_get(s, thread_id, ns, full)
        return ops._tuple(s, thread_id, ns, head[1:6], ops.load_blobs(s, thread_id, head[1], blobs), writes)

    def put(self, s: ops.Scope, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        keep = self.inflated.keep if not self.pg else None
        thread_id, ns, row, blob_rows = ops.put_rows(s, config, checkpoint, metadata, new_versions, keep)
        if self.pg:
            with self.connection() as con:
                con.execute(*pg_put(row, blob_rows))
        else:
            stmts: list[Statement] = []
            if blob_rows:
                stmts.append((_SQLITE_BLOBS, blob_rows, True) if len(blob_rows) > 1
                             else (_SQLITE_BLOBS, blob_rows[0], False))
            stmts.append((_SQLITE_CP, row, False))
            self.sqlite_writes.write(stmts)
            if self.blob_cache is not None and blob_rows:
                self.blob_cache.fill(s.tenant_id, thread_id, ns,
                                     [(r["channel"], r["version"], r["type"], r["blob"]) for r in blob_rows])
        return ops._config(thread_id, ns, checkpoint["id"])

    def put_writes(self, s: ops.Scope, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str) -> None:
        regular, special = ops.writes_rows(s, config, writes, task_id, task_path)
        if self.pg:
            with self.connection() as con:
                con.execute(*pg_writes(regular, special))
            return
        stmts: list[Statement] = []
        if regular:
            stmts.append((_SQLITE_WRITES_NEW, regular, True))
        if special:
            stmts.append((_SQLITE_WRITES_REPLACE, special, True))
        self.sqlite_writes.write(stmts)


# -- PostgreSQL statements (shared with the asyncio saver's direct path) ---------------------

PG_GET_LATEST, PG_GET_BY_ID = (re.sub(r":(\w+)", r"%(\1)s", t.text) for t in ops.GET_SQL["postgresql"])


@functools.lru_cache(maxsize=256)
def _pg_put_sql(n_blobs: int) -> str:
    cp = f"INSERT INTO state_checkpoints ({', '.join(CP_COLS)}) VALUES {_pg_values(CP_COLS, 1)} {CP_CONFLICT}"
    if not n_blobs:
        return cp
    return (f"WITH new_blobs AS (INSERT INTO state_blobs ({', '.join(BLOB_COLS)}) VALUES "
            f"{_pg_values(BLOB_COLS, n_blobs)} ON CONFLICT DO NOTHING) {cp}")


def pg_put(row: dict[str, Any], blob_rows: list[dict[str, Any]]) -> tuple[str, list[Any]]:
    """One statement, one round trip, one commit (autocommit): the new blobs ride in a CTE."""
    return _pg_put_sql(len(blob_rows)), [r[c] for r in blob_rows for c in BLOB_COLS] + [row[c] for c in CP_COLS]


@functools.lru_cache(maxsize=256)
def _pg_writes_sql(n_regular: int, n_special: int) -> str:
    parts = [f"INSERT INTO state_writes ({', '.join(WRITE_COLS)}) VALUES "
             f"{_pg_values(WRITE_COLS, n)} ON CONFLICT ({W_KEYS}) {tail}"
             for n, tail in ((n_regular, "DO NOTHING"), (n_special, f"DO UPDATE SET {W_UPDATE}")) if n]
    return f"WITH new_writes AS ({parts[0]}) {parts[1]}" if len(parts) == 2 else parts[0]


def pg_writes(regular: list[dict[str, Any]], special: list[dict[str, Any]]) -> tuple[str, list[Any]]:
    """One statement (regular writes in a CTE when both kinds come): atomic in autocommit."""
    return (_pg_writes_sql(len(regular), len(special)),
            [r[c] for rows in (regular, special) for r in rows for c in WRITE_COLS])


_SHARED: weakref.WeakKeyDictionary[Engine, DirectSQL] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def _numbered(sql: str) -> str:
    """``:tenant :thread :ns :cid`` as sqlite's numbered ``?1 ?2 ?3 ?4`` (each may repeat)."""
    for i, name in enumerate(("tenant", "thread", "ns", "cid"), 1):
        sql = re.sub(rf":{name}\b", f"?{i}", sql)
    return sql


_SQLITE_BLOBS = (f"INSERT INTO state_blobs ({', '.join(BLOB_COLS)}) VALUES ({_named(BLOB_COLS)}) "
                 "ON CONFLICT DO NOTHING")
_SQLITE_CP = f"INSERT INTO state_checkpoints ({', '.join(CP_COLS)}) VALUES ({_named(CP_COLS)}) {CP_CONFLICT}"
_SQLITE_WRITES_NEW = (f"INSERT INTO state_writes ({', '.join(WRITE_COLS)}) VALUES ({_named(WRITE_COLS)}) "
                      f"ON CONFLICT ({W_KEYS}) DO NOTHING")
_SQLITE_WRITES_REPLACE = (f"INSERT INTO state_writes ({', '.join(WRITE_COLS)}) VALUES ({_named(WRITE_COLS)}) "
                          f"ON CONFLICT ({W_KEYS}) DO UPDATE SET {W_UPDATE}")
