"""The saver's operations, written once for the sync and the async saver.

Each operation is a generator that yields ``(statement, params, want_rows)`` and is
sent back the rows (or the rowcount); ``run_sync`` / ``run_async`` drive it on a
connection. Channel values live in ``state_blobs`` keyed by (thread, namespace,
channel, version): a checkpoint writes only the channels in ``new_versions``, and a
read joins the blobs of its ``channel_versions`` in the same query.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any

import orjson
import ormsgpack
import sqlalchemy as sa
import zstandard
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects import sqlite as sqlite_dialect

from garrison.state.checkpoint.errors import CorruptCheckpoint, InvalidConfig, ValueTooLarge
from garrison.state.tables import blobs as B
from garrison.state.tables import checkpoints as C
from garrison.state.tables import writes as W

Step = tuple[Any, Any, bool]
Op = Generator[Step, Any, Any]

MAX_ID_CHARS = 512
LIST_CHUNK = 100

_GET_SQL = """
WITH c AS (
  SELECT checkpoint_id, parent_checkpoint_id, type, checkpoint, meta, channel_versions
  FROM state_checkpoints
  WHERE tenant_id = :tenant AND thread_id = :thread AND checkpoint_ns = :ns {id_filter}
  ORDER BY checkpoint_id DESC LIMIT 1
)
SELECT 0 AS kind, c.checkpoint_id AS a, c.parent_checkpoint_id AS b, c.type AS t, c.checkpoint AS v,
       c.meta AS m, c.channel_versions AS p, CAST(NULL AS INTEGER) AS i FROM c
UNION ALL
SELECT 1, bl.channel, bl.version, bl.type, bl.blob, NULL, NULL, NULL
FROM c {each_versions}
{blob_join}
UNION ALL
SELECT 2, w.task_id, w.channel, w.type, w.blob, NULL, w.task_path, w.idx
FROM c JOIN state_writes w ON w.tenant_id = :tenant AND w.thread_id = :thread AND w.checkpoint_ns = :ns
  AND w.checkpoint_id = c.checkpoint_id
"""

_BLOB_KEY = ("bl.tenant_id = :tenant AND bl.thread_id = :thread AND bl.checkpoint_ns = :ns "
             "AND bl.channel = j.key AND bl.version = j.value")
_BLOB_JOIN = {
    "sqlite": f"CROSS JOIN state_blobs bl ON {_BLOB_KEY}",
    "postgresql": ("CROSS JOIN LATERAL (SELECT bl.channel, bl.version, bl.type, bl.blob FROM state_blobs bl "
                   f"WHERE {_BLOB_KEY} LIMIT 1) AS bl"),
}
_EACH = {
    "sqlite": "CROSS JOIN json_each(c.channel_versions) AS j",
    "postgresql": "CROSS JOIN LATERAL jsonb_each_text(CAST(c.channel_versions AS jsonb)) AS j(key, value)",
}


def _get_statements(dialect: str) -> tuple[sa.TextClause, sa.TextClause]:
    # Each (channel, version) must be one primary-key probe, whatever the planner's statistics
    # say: SQLite's CROSS JOIN pins the join order, PostgreSQL's LATERAL runs per row (a hash
    # join over all of a long thread's blobs was 10x slower on a table not yet analyzed).
    fmt = {"each_versions": _EACH[dialect], "blob_join": _BLOB_JOIN[dialect]}
    latest = sa.text(_GET_SQL.format(id_filter="", **fmt))
    by_id = sa.text(_GET_SQL.format(id_filter="AND checkpoint_id = :cid", **fmt))
    return latest, by_id


def head_and_writes_sql(id_filter: str) -> str:
    """The GET query without the blobs, for callers that hold the blobs already."""
    full = _GET_SQL.format(id_filter=id_filter, each_versions="", blob_join="")
    start, end = full.index("UNION ALL\nSELECT 1"), full.index("UNION ALL\nSELECT 2")
    return full[:start] + full[end:]


GET_SQL = {d: _get_statements(d) for d in _EACH}


def insert_for(dialect: str, table: sa.Table) -> Any:
    return (pg.insert if dialect == "postgresql" else sqlite_dialect.insert)(table)


def _put_statements(dialect: str) -> tuple[Any, Any]:
    upsert = insert_for(dialect, C)
    upsert = upsert.on_conflict_do_update(
        index_elements=[C.c.tenant_id, C.c.thread_id, C.c.checkpoint_ns, C.c.checkpoint_id],
        set_={k: upsert.excluded[k] for k in ("parent_checkpoint_id", "run_id", "type", "checkpoint",
                                              "meta", "channel_versions")},
    )
    return upsert, insert_for(dialect, B).on_conflict_do_nothing()


def _writes_statements(dialect: str) -> tuple[Any, Any]:
    keys = [W.c.tenant_id, W.c.thread_id, W.c.checkpoint_ns, W.c.checkpoint_id, W.c.task_id, W.c.idx]
    upsert = insert_for(dialect, W)
    upsert = upsert.on_conflict_do_update(
        index_elements=keys, set_={k: upsert.excluded[k] for k in ("channel", "type", "blob", "task_path")})
    return insert_for(dialect, W).on_conflict_do_nothing(index_elements=keys), upsert


# Built once: constructing ON CONFLICT statements costs more than running them.
_PUT_SQL = {d: _put_statements(d) for d in _EACH}
_WRITES_SQL = {d: _writes_statements(d) for d in _EACH}


COMPRESS_MIN = 256
ZSTD_PREFIX = "zstd:"
_local = threading.local()


def _zstd() -> zstandard.ZstdCompressor:
    # zstandard's (de)compressors must not be shared between threads. Level 1: on a ~1.5 KB
    # checkpoint row it is ~3x faster than level 3 (9 vs 26 us, a put's biggest CPU cost)
    # for about 1% more bytes.
    c = getattr(_local, "c", None)
    if c is None:
        c = _local.c = zstandard.ZstdCompressor(level=1)
    return c


def _unzstd() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def next_version(current: str | int | float | None) -> str:
    """Zero-padded counter plus 48 random bits: sortable, short, and unique across forks."""
    if current is None:
        n = 0
    elif isinstance(current, (int, float)):
        n = int(current)
    else:
        n = int(current.split(".")[0])
    return f"{n + 1:010d}.{random.getrandbits(48):012x}"


class Scope:
    """What every operation needs: tenant, dialect, serializer and limits."""

    def __init__(self, tenant_id: str, dialect: str, serde: SerializerProtocol, max_value_bytes: int) -> None:
        self.tenant_id = tenant_id
        self.dialect = dialect
        self.serde = serde
        self.max_value_bytes = max_value_bytes
        # Plain JsonPlusSerializer: decode msgpack directly (same call it makes, minus two layers).
        self._ext_hook = getattr(serde, "_unpack_ext_hook", None) if type(serde) is JsonPlusSerializer else None

    # -- encoding -------------------------------------------------------------

    def dump(self, value: Any, what: str, *, compress: bool = False,
             keep: Callable[[bytes, bytes], None] | None = None) -> tuple[str, bytes]:
        """``keep(compressed, raw)`` is told of each compression (a cache of inflated rows)."""
        type_, data = self.serde.dumps_typed(value)
        if compress and len(data) >= COMPRESS_MIN and "+" not in type_:
            # Checkpoint rows repeat every version string several times: zstd takes ~5x off.
            raw, data = data, _zstd().compress(data)
            type_ = ZSTD_PREFIX + type_
            if keep is not None:
                keep(data, raw)
        if len(data) > self.max_value_bytes:
            raise ValueTooLarge(
                f"{what} serializes to {len(data)} bytes, over the limit of {self.max_value_bytes}: "
                "keep large data outside the graph state or raise max_value_bytes"
            )
        return type_, data

    def load(self, type_: str, data: bytes | None, where: str | tuple[Any, ...]) -> Any:
        """Decode a stored value; ``where`` (text, or a %-format tuple) names it in errors."""
        try:
            if type_ == "msgpack" and self._ext_hook is not None:
                return ormsgpack.unpackb(data or b"", ext_hook=self._ext_hook, option=ormsgpack.OPT_NON_STR_KEYS)
            if type_.startswith(ZSTD_PREFIX):
                type_, data = type_[len(ZSTD_PREFIX):], _unzstd().decompress(data or b"")
                if type_ == "msgpack" and self._ext_hook is not None:
                    return ormsgpack.unpackb(data, ext_hook=self._ext_hook, option=ormsgpack.OPT_NON_STR_KEYS)
            return self.serde.loads_typed((type_, data if data is not None else b""))
        except Exception as exc:  # any decoder error means a row we did not write as is
            if isinstance(where, tuple):
                where = where[0] % where[1:]
            raise CorruptCheckpoint(f"cannot decode {where}: {type(exc).__name__}: {exc}") from exc


def _thread_key(config: RunnableConfig) -> tuple[str, str, str | None]:
    conf = config.get("configurable") or {}
    thread_id = conf.get("thread_id")
    if thread_id is None or thread_id == "":
        raise InvalidConfig("config['configurable']['thread_id'] is required")
    thread_id = str(thread_id)
    ns = conf.get("checkpoint_ns") or ""
    cid = get_checkpoint_id(config)
    for name, value in (("thread_id", thread_id), ("checkpoint_ns", ns), ("checkpoint_id", cid or "")):
        if len(value) > MAX_ID_CHARS:
            raise InvalidConfig(f"{name} is {len(value)} characters, over the limit of {MAX_ID_CHARS}")
        if "\x00" in value:
            raise InvalidConfig(f"{name} must not contain NUL characters")
    return thread_id, ns, cid


def _config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}


# -- put ----------------------------------------------------------------------


def put_rows(
    s: Scope,
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    new_versions: ChannelVersions,
    keep: Callable[[bytes, bytes], None] | None = None,
) -> tuple[str, str, dict[str, Any], list[dict[str, Any]]]:
    """The checkpoint row and the rows of the channels that changed."""
    thread_id, ns, parent_id = _thread_key(config)
    versions = checkpoint["channel_versions"]
    values = checkpoint["channel_values"]
    stored = dict(checkpoint)
    # Values of channels without a version cannot be keyed in state_blobs: keep them inline.
    stored["channel_values"] = {k: v for k, v in values.items() if k not in versions}
    type_, data = s.dump(stored, f"checkpoint {checkpoint['id']}", compress=True, keep=keep)
    meta = get_serializable_checkpoint_metadata(config, metadata)
    try:
        meta_json = orjson.dumps(meta, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError as exc:
        raise InvalidConfig(f"checkpoint metadata must be JSON-serializable: {exc}") from exc
    blob_rows = []
    for channel, version in new_versions.items():
        if channel in values:
            btype, bdata = s.dump(values[channel], f"channel {channel!r}")
        else:
            btype, bdata = "empty", None
        blob_rows.append({
            "tenant_id": s.tenant_id, "thread_id": thread_id, "checkpoint_ns": ns,
            "channel": channel, "version": str(version), "type": btype, "blob": bdata,
        })
    run_id = meta.get("run_id")
    row = {
        "tenant_id": s.tenant_id, "thread_id": thread_id, "checkpoint_ns": ns,
        "checkpoint_id": checkpoint["id"], "parent_checkpoint_id": parent_id,
        "run_id": str(run_id) if run_id is not None else None, "created_at": time.time(),
        "type": type_, "checkpoint": data, "meta": meta_json,
        "channel_versions": orjson.dumps({k: str(v) for k, v in versions.items()}).decode(),
    }
    return thread_id, ns, row, blob_rows


def put(
    s: Scope,
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    new_versions: ChannelVersions,
) -> Op:
    thread_id, ns, row, blob_rows = put_rows(s, config, checkpoint, metadata, new_versions)
    upsert, blob_insert = _PUT_SQL[s.dialect]
    if blob_rows and s.dialect == "postgresql":
        # One statement, one round trip, one commit: the blobs ride in a CTE.
        cte = blob_insert.values(blob_rows).cte("new_blobs")
        yield upsert.values(row).add_cte(cte), None, False
    else:
        if blob_rows:
            yield blob_insert, blob_rows, False
        yield upsert, row, False
    return _config(thread_id, ns, checkpoint["id"])


def writes_rows(
    s: Scope, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of regular writes (insert if absent) and of special ones (replace)."""
    thread_id, ns, cid = _thread_key(config)
    if not cid:
        raise InvalidConfig("put_writes needs config['configurable']['checkpoint_id']")
    regular: list[dict[str, Any]] = []
    special: list[dict[str, Any]] = []
    for idx, (channel, value) in enumerate(writes):
        type_, data = s.dump(value, f"write to channel {channel!r}")
        row = {
            "tenant_id": s.tenant_id, "thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cid,
            "task_id": task_id, "idx": WRITES_IDX_MAP.get(channel, idx), "channel": channel,
            "type": type_, "blob": data, "task_path": task_path,
        }
        (special if channel in WRITES_IDX_MAP else regular).append(row)
    return regular, special


def put_writes(
    s: Scope, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
) -> Op:
    regular, special = writes_rows(s, config, writes, task_id, task_path)
    insert_new, upsert = _WRITES_SQL[s.dialect]
    if regular:
        # A task's regular writes are final once saved: a retry must not replace them.
        yield insert_new, regular, False
    if special:
        yield upsert, special, False


# -- read ---------------------------------------------------------------------


def _tuple(
    s: Scope,
    thread_id: str,
    ns: str,
    row: Any,
    values: Mapping[str, Any],
    writes: list[tuple[str, str, str, int, str, bytes]],
) -> CheckpointTuple:
    checkpoint_id, parent_id, type_, data, meta_json = row
    where = ("checkpoint %s of thread %r", checkpoint_id, thread_id)
    cp = s.load(type_, data, where)
    if not isinstance(cp, dict) or "channel_versions" not in cp:
        raise CorruptCheckpoint(f"cannot decode {where[0] % where[1:]}: not a checkpoint")
    cp["channel_values"] = dict(cp.get("channel_values") or {})
    return tuple_from_decoded(s, thread_id, ns, row, cp, values, writes)


def tuple_from_decoded(
    s: Scope,
    thread_id: str,
    ns: str,
    row: Any,
    cp: dict[str, Any],
    values: Mapping[str, Any],
    writes: list[tuple[str, str, str, int, str, bytes]],
) -> CheckpointTuple:
    """The tuple from a decoded checkpoint (whose ``channel_values`` dict it may update)."""
    checkpoint_id, parent_id, meta_json = row[0], row[1], row[4]
    where = ("checkpoint %s of thread %r", checkpoint_id, thread_id)
    try:
        meta = orjson.loads(meta_json)
    except orjson.JSONDecodeError as exc:
        raise CorruptCheckpoint(f"cannot decode metadata of {where[0] % where[1:]}: {exc}") from exc
    cp["channel_values"].update(values)
    if writes:
        writes.sort(key=lambda w: (w[4], w[0], w[3]))
        wwhere = ("a write of checkpoint %s of thread %r", checkpoint_id, thread_id)
        pending = [(w[0], w[1], s.load(w[2], w[5], wwhere)) for w in writes]
    else:
        pending = []
    return CheckpointTuple(
        config=_config(thread_id, ns, checkpoint_id),
        checkpoint=cp,  # type: ignore[arg-type]
        metadata=meta,
        parent_config=_config(thread_id, ns, parent_id) if parent_id else None,
        pending_writes=pending,
    )


def get_tuple(s: Scope, config: RunnableConfig) -> Op:
    thread_id, ns, cid = _thread_key(config)
    latest, by_id = GET_SQL[s.dialect]
    params = {"tenant": s.tenant_id, "thread": thread_id, "ns": ns}
    if cid:
        params["cid"] = cid
    rows = yield (by_id if cid else latest), params, True
    return decode_get(s, thread_id, ns, rows)


def decode_get(s: Scope, thread_id: str, ns: str, rows: Sequence[Any]) -> CheckpointTuple | None:
    """A CheckpointTuple from the rows of the GET query (head, blobs, writes)."""
    head = None
    blobs: list[tuple[str, str, bytes | None]] = []
    writes: list[tuple[str, str, str, int, str, bytes]] = []
    for kind, a, b, t, v, m, p, i in rows:
        if kind == 0:
            head = (a, b, t, v, m)
        elif kind == 1:
            blobs.append((a, t, v))
        else:
            writes.append((a, b, t, i, p or "", v))
    if head is None:
        return None
    return _tuple(s, thread_id, ns, head, load_blobs(s, thread_id, head[0], blobs), writes)


def load_blobs(s: Scope, thread_id: str, checkpoint_id: str,
               blobs: Iterable[tuple[str, str, bytes | None]]) -> dict[str, Any]:
    """Decoded channel values; ``empty`` marks a channel with a version but no value."""
    blobs = list(blobs)
    if s._ext_hook is not None and 0 < len(blobs) < 16 and all(t == "msgpack" for _c, t, _d in blobs):
        # One decoder call for all channels: a msgpack fixmap header, then each channel name
        # and its stored msgpack value as they are (a corrupt value fails the whole map, and
        # the per-channel pass below then names it).
        try:
            packed = bytearray([0x80 | len(blobs)])
            for channel, _t, data in blobs:
                packed += ormsgpack.packb(channel)
                packed += data or b""
            out = ormsgpack.unpackb(bytes(packed), ext_hook=s._ext_hook, option=ormsgpack.OPT_NON_STR_KEYS)
            # Every name where it was put means every value decoded from exactly its own bytes.
            if isinstance(out, dict) and list(out) == [c for c, _t, _d in blobs]:
                return out
        except Exception:  # fall back to decoding one by one, which reports the bad channel
            pass
    out = {}
    for channel, type_, data in blobs:
        if type_ != "empty":
            out[channel] = s.load(type_, data, ("channel %r of checkpoint %s of thread %r",
                                                channel, checkpoint_id, thread_id))
    return out


def _metadata_filters(s: Scope, flt: Mapping[str, Any]) -> list[Any]:
    """SQL filters for the scalar keys; every key is checked again in Python."""
    clauses: list[Any] = []
    if s.dialect == "postgresql":
        scalar = {k: v for k, v in flt.items() if v is not None}
        if scalar:
            clauses.append(sa.cast(C.c.meta, pg.JSONB).contains(scalar))
        return clauses
    for key, value in flt.items():
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and '"' not in key:
            clauses.append(sa.func.json_extract(C.c.meta, f'$."{key}"') == value)
    return clauses


def list_checkpoints(
    s: Scope,
    config: RunnableConfig | None,
    flt: Mapping[str, Any] | None,
    before: RunnableConfig | None,
    limit: int | None,
) -> Op:
    """Yields statements; returns the list of CheckpointTuples (newest first)."""
    stmt = sa.select(
        C.c.thread_id, C.c.checkpoint_ns, C.c.checkpoint_id, C.c.parent_checkpoint_id,
        C.c.type, C.c.checkpoint, C.c.meta, C.c.channel_versions,
    ).where(C.c.tenant_id == s.tenant_id)
    if config is not None:
        thread_id, _ns, cid = _thread_key(config)
        stmt = stmt.where(C.c.thread_id == thread_id)
        conf_ns = (config.get("configurable") or {}).get("checkpoint_ns")
        if conf_ns is not None:
            stmt = stmt.where(C.c.checkpoint_ns == conf_ns)
        if cid:
            stmt = stmt.where(C.c.checkpoint_id == cid)
    if before is not None and (before_id := get_checkpoint_id(before)):
        stmt = stmt.where(C.c.checkpoint_id < before_id)
    flt = dict(flt or {})
    for clause in _metadata_filters(s, flt):
        stmt = stmt.where(clause)
    stmt = stmt.order_by(C.c.checkpoint_id.desc(), C.c.thread_id, C.c.checkpoint_ns)
    if limit is not None and limit <= 0:
        return []
    if limit is not None:
        stmt = stmt.limit(limit * 4 if flt else limit)
    rows = yield stmt, None, True
    kept = []
    for r in rows:
        if flt:
            meta = orjson.loads(r[6])
            if not all(meta.get(k) == v for k, v in flt.items()):
                continue
        kept.append(r)
        if limit is not None and len(kept) >= limit:
            break
    if flt and limit is not None and len(kept) < limit and len(rows) == limit * 4:
        # The SQL pre-filter was not selective enough for the page: fall back to all rows.
        rows = yield stmt.limit(None), None, True
        kept = [r for r in rows if all(orjson.loads(r[6]).get(k) == v for k, v in flt.items())][:limit]
    out: list[CheckpointTuple] = []
    for start in range(0, len(kept), LIST_CHUNK):
        chunk = kept[start:start + LIST_CHUNK]
        out.extend((yield from _hydrate(s, chunk)))
    return out


# The thread's checkpoint namespaces that name no task, read in the primary key (tenant, thread, ns). SQLite
# (BINARY order: a node's per-task namespaces ``node:<id>...`` sort together) seeks from one namespace to the
# next and over each node's per-task ones at once; PostgreSQL's order depends on the database's collation, so
# it reads the thread's subgraph keys in one range.
PERSISTENT_NS_SQL = {
    "sqlite": """
WITH RECURSIVE ns(n) AS (
  SELECT (SELECT checkpoint_ns FROM state_checkpoints WHERE tenant_id = :tenant AND thread_id = :thread
          AND checkpoint_ns > '' ORDER BY checkpoint_ns LIMIT 1)
  UNION ALL
  SELECT (SELECT checkpoint_ns FROM state_checkpoints WHERE tenant_id = :tenant AND thread_id = :thread
          AND checkpoint_ns > CASE WHEN instr(n, ':') > 0 THEN substr(n, 1, instr(n, ':')) || char(1114111) ELSE n END
          ORDER BY checkpoint_ns LIMIT 1)
  FROM ns WHERE n IS NOT NULL
)
SELECT n FROM ns WHERE n IS NOT NULL AND instr(n, ':') = 0""",
    "postgresql": ("SELECT DISTINCT checkpoint_ns FROM state_checkpoints WHERE tenant_id = %(tenant)s "
                   "AND thread_id = %(thread)s AND checkpoint_ns > '' AND strpos(checkpoint_ns, ':') = 0 "
                   "ORDER BY checkpoint_ns"),
}


def persistent_namespaces(s: Scope, thread_id: str) -> Op:
    """The thread's checkpoint namespaces that name no task (``node``, ``node|child``): those of subgraphs
    compiled with ``checkpointer=True``, which keep one history per thread under LangGraph's namespace with
    the task ids removed. The root's (``""``) and per-task ones (``node:<task id>``) are left out; a thread
    without subgraphs has nothing to read (``PERSISTENT_NS_SQL``)."""
    (thread_id,) = _ids([thread_id], "thread_id")
    sql = PERSISTENT_NS_SQL[s.dialect].replace("%(tenant)s", ":tenant").replace("%(thread)s", ":thread")
    rows = yield sa.text(sql), {"tenant": s.tenant_id, "thread": thread_id}, True
    return sorted(r[0] for r in rows)


def _hydrate(s: Scope, rows: Sequence[Any]) -> Op:
    blob_keys = set()
    for r in rows:
        for ch, ver in orjson.loads(r[7]).items():
            blob_keys.add((r[0], r[1], ch, ver))
    blob_map: dict[tuple[str, str, str, str], tuple[str, bytes | None]] = {}
    if blob_keys:
        got = yield sa.select(B.c.thread_id, B.c.checkpoint_ns, B.c.channel, B.c.version, B.c.type, B.c.blob).where(
            B.c.tenant_id == s.tenant_id,
            sa.tuple_(B.c.thread_id, B.c.checkpoint_ns, B.c.channel, B.c.version).in_(sorted(blob_keys)),
        ), None, True
        blob_map = {(g[0], g[1], g[2], g[3]): (g[4], g[5]) for g in got}
    cp_keys = sorted({(r[0], r[1], r[2]) for r in rows})
    got_w = yield sa.select(
        W.c.thread_id, W.c.checkpoint_ns, W.c.checkpoint_id, W.c.task_id, W.c.channel, W.c.type,
        W.c.idx, W.c.task_path, W.c.blob,
    ).where(
        W.c.tenant_id == s.tenant_id,
        sa.tuple_(W.c.thread_id, W.c.checkpoint_ns, W.c.checkpoint_id).in_(cp_keys),
    ), None, True
    writes_by: dict[tuple[str, str, str], list[Any]] = {}
    for w in got_w:
        writes_by.setdefault((w[0], w[1], w[2]), []).append((w[3], w[4], w[5], w[6], w[7] or "", w[8]))
    out = []
    for r in rows:
        thread_id, ns, cid = r[0], r[1], r[2]
        values = {}
        for ch, ver in orjson.loads(r[7]).items():
            found = blob_map.get((thread_id, ns, ch, ver))
            if found is not None and found[0] != "empty":
                values[ch] = s.load(found[0], found[1],
                                    f"channel {ch!r} of checkpoint {cid} of thread {thread_id!r}")
        out.append(_tuple(s, thread_id, ns, (cid, r[3], r[4], r[5], r[6]), values,
                          writes_by.get((thread_id, ns, cid), [])))
    return out


# -- delete, copy, prune ---------------------------------------------------------


def _ids(values: Iterable[Any], what: str) -> list[str]:
    out = []
    for v in values:
        v = str(v)
        if len(v) > MAX_ID_CHARS:
            raise InvalidConfig(f"{what} is {len(v)} characters, over the limit of {MAX_ID_CHARS}")
        out.append(v)
    return out


def delete_threads(s: Scope, thread_ids: Sequence[str]) -> Op:
    ids = _ids(thread_ids, "thread_id")
    if not ids:
        return None
    for table in (W, B, C):
        yield sa.delete(table).where(table.c.tenant_id == s.tenant_id, table.c.thread_id.in_(ids)), None, False
    return None


def _gc_blobs(s: Scope, thread_id: str, ns: str) -> Op:
    """Delete the blobs of (thread, ns) that no remaining checkpoint references."""
    rows = yield sa.select(C.c.channel_versions).where(
        C.c.tenant_id == s.tenant_id, C.c.thread_id == thread_id, C.c.checkpoint_ns == ns
    ), None, True
    referenced = {(ch, ver) for (cv,) in rows for ch, ver in orjson.loads(cv).items()}
    stored = yield sa.select(B.c.channel, B.c.version).where(
        B.c.tenant_id == s.tenant_id, B.c.thread_id == thread_id, B.c.checkpoint_ns == ns
    ), None, True
    garbage = sorted({(ch, ver) for ch, ver in stored} - referenced)
    for start in range(0, len(garbage), 500):
        part = garbage[start:start + 500]
        yield sa.delete(B).where(
            B.c.tenant_id == s.tenant_id, B.c.thread_id == thread_id, B.c.checkpoint_ns == ns,
            sa.tuple_(B.c.channel, B.c.version).in_(part),
        ), None, False
    return len(garbage)


def delete_checkpoints(s: Scope, keys: Sequence[tuple[str, str, str]]) -> Op:
    """Delete checkpoints by (thread, ns, id) with their writes, then unreferenced blobs."""
    keys = sorted(set(keys))
    for start in range(0, len(keys), 500):
        part = keys[start:start + 500]
        for table in (W, C):
            yield sa.delete(table).where(
                table.c.tenant_id == s.tenant_id,
                sa.tuple_(table.c.thread_id, table.c.checkpoint_ns, table.c.checkpoint_id).in_(part),
            ), None, False
    for thread_id, ns in sorted({(k[0], k[1]) for k in keys}):
        yield from _gc_blobs(s, thread_id, ns)
    return len(keys)


def delete_for_runs(s: Scope, run_ids: Sequence[str]) -> Op:
    ids = _ids(run_ids, "run_id")
    if not ids:
        return 0
    rows = yield sa.select(C.c.thread_id, C.c.checkpoint_ns, C.c.checkpoint_id).where(
        C.c.tenant_id == s.tenant_id, C.c.run_id.in_(ids)
    ), None, True
    return (yield from delete_checkpoints(s, [tuple(r) for r in rows]))


def copy_thread(s: Scope, source: str, target: str) -> Op:
    source, target = _ids([source, target], "thread_id")
    if source == target:
        raise InvalidConfig("copy_thread needs two different thread ids")
    existing = yield sa.select(C.c.checkpoint_id).where(
        C.c.tenant_id == s.tenant_id, C.c.thread_id == target
    ).limit(1), None, True
    if existing:
        raise InvalidConfig(f"target thread {target!r} already has checkpoints: delete it first or pick a new id")
    for table in (C, B, W):
        cols = [c for c in table.c if c.name != "thread_id"]
        sel = sa.select(sa.literal(target, sa.String).label("thread_id"), *cols).where(
            table.c.tenant_id == s.tenant_id, table.c.thread_id == source
        )
        yield sa.insert(table).from_select(["thread_id", *[c.name for c in cols]], sel), None, False
    return None


def prune(s: Scope, thread_ids: Sequence[str], strategy: str, keep_last: int = 1) -> Op:
    """``delete`` drops the threads; ``keep_latest`` keeps the newest ``keep_last`` per namespace."""
    ids = _ids(thread_ids, "thread_id")
    if strategy == "delete":
        yield from delete_threads(s, ids)
        return None
    if strategy != "keep_latest":
        raise InvalidConfig(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
    removed = 0
    for thread_id in ids:
        rows = yield sa.select(C.c.checkpoint_ns, C.c.checkpoint_id, C.c.meta).where(
            C.c.tenant_id == s.tenant_id, C.c.thread_id == thread_id
        ).order_by(C.c.checkpoint_ns, C.c.checkpoint_id.desc()), None, True
        by_ns: dict[str, list[tuple[str, str]]] = {}
        for ns, cid, meta in rows:
            by_ns.setdefault(ns, []).append((cid, meta))
        doomed: list[tuple[str, str, str]] = []
        for ns, items in by_ns.items():
            kept = items[:keep_last]
            if any("counters_since_delta_snapshot" in orjson.loads(m) for _c, m in kept):
                # A DeltaChannel rebuilds its value from ancestors: dropping them would lose state.
                raise NotImplementedError(
                    f"keep_latest can't prune thread {thread_id!r}: it uses a DeltaChannel")
            doomed.extend((thread_id, ns, cid) for cid, _m in items[keep_last:])
            if len(items) > keep_last:
                oldest_kept = kept[-1][0]
                yield sa.update(C).where(
                    C.c.tenant_id == s.tenant_id, C.c.thread_id == thread_id, C.c.checkpoint_ns == ns,
                    C.c.checkpoint_id == oldest_kept,
                ).values(parent_checkpoint_id=None), None, False
        if doomed:
            removed += yield from delete_checkpoints(s, doomed)
    return removed
