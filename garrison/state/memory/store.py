"""GarrisonStore: LangGraph's BaseStore on garrison's database, with TTL and semantic search.

Items live in ``state_store_items`` (namespace labels joined by "."; langgraph forbids
"." in labels), embeddings in ``state_store_vectors`` (float32, unit length). On
SQLite a sqlite-vec index (``vec_index.py``, a file of its own) holds a
1-bit-per-dimension copy partitioned by tenant: a query takes a hamming-distance
shortlist from it and re-ranks the shortlist by exact cosine on the float vectors.
On PostgreSQL with pgvector (``pgvec.py``) an HNSW index gives the shortlist. Without
either, the cosine runs in numpy over the namespace's vectors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa
from langgraph.store.base import (
    NOT_PROVIDED,
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
)
from langgraph.store.base import validate_op_namespace as _validate_namespace
from sqlalchemy.engine import Engine

from garrison.state.checkpoint.engine import WRITE_OPTION, create_sync_engine, normalize_url
from garrison.state.checkpoint.errors import InvalidConfig, ValueTooLarge
from garrison.state.checkpoint.ops import insert_for
from garrison.state.memory import vec_index
from garrison.state.memory.pgvec import PgVector
from garrison.state.tables import STORE_TABLES
from garrison.state.tables import store_items as I
from garrison.state.tables import store_vectors as V

DEFAULT_MAX_VALUE_BYTES = 4 * 1024 * 1024
MAX_KEY_CHARS = 512


def _prefix(namespace: Sequence[str]) -> str:
    return ".".join(namespace)


def _namespace(prefix: str) -> tuple[str, ...]:
    return tuple(prefix.split("."))


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _matches(value: Any, flt: Any) -> bool:
    """langgraph's filter semantics: nested equality and $eq/$ne/$gt/$gte/$lt/$lte."""
    if isinstance(flt, dict):
        if any(k.startswith("$") for k in flt):
            return all(_apply(value, op, arg) for op, arg in flt.items())
        return isinstance(value, dict) and all(_matches(value.get(k), v) for k, v in flt.items())
    if isinstance(flt, (list, tuple)):
        return (isinstance(value, (list, tuple)) and len(value) == len(flt)
                and all(_matches(a, b) for a, b in zip(value, flt, strict=True)))
    return bool(value == flt)


_OPERATORS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"}


def _validate_filter(flt: Any) -> None:
    """Refuse unknown operators up front, not only when an item happens to be compared."""
    if isinstance(flt, dict):
        for k, v in flt.items():
            if isinstance(k, str) and k.startswith("$") and k not in _OPERATORS:
                raise InvalidConfig(f"unsupported filter operator {k!r}: use $eq, $ne, $gt, $gte, $lt or $lte")
            _validate_filter(v)
    elif isinstance(flt, (list, tuple)):
        for v in flt:
            _validate_filter(v)


def _apply(value: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return bool(value == arg)
    if op == "$ne":
        return bool(value != arg)
    if op not in ("$gt", "$gte", "$lt", "$lte"):
        raise InvalidConfig(f"unsupported filter operator {op!r}: use $eq, $ne, $gt, $gte, $lt or $lte")
    try:
        a, b = float(value), float(arg)
    except (TypeError, ValueError):
        return False
    return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]


def _ns_match(cond: MatchCondition, ns: tuple[str, ...]) -> bool:
    path = tuple(cond.path)
    if len(path) > len(ns):
        return False
    part = ns[: len(path)] if cond.match_type == "prefix" else ns[len(ns) - len(path):]
    return all(p == "*" or p == n for p, n in zip(path, part, strict=True))


class GarrisonStore(BaseStore):
    """A LangGraph long-term memory store scoped to one tenant."""

    supports_ttl = True

    def __init__(
        self,
        engine: Engine,
        *,
        tenant_id: str = "default",
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        vector_index: Path | None = None,
    ) -> None:
        """``vector_index``: the sqlite-vec index file (SQLite only; without it, numpy scans)."""
        self.engine = engine
        self.dialect = engine.dialect.name
        self.tenant_id = tenant_id
        self.ttl_config = ttl
        self.max_value_bytes = max_value_bytes
        self.index_config = dict(index) if index else None
        self.embeddings = ensure_embeddings(index["embed"]) if index else None
        self.dims = int(index["dims"]) if index else 0
        fields = (index or {}).get("fields") or ["$"]
        self._fields = [(f, tokenize_path(f) if f != "$" else f) for f in fields]
        self._vec: vec_index.VecIndex | None = None
        if index and vector_index is not None and self.dialect == "sqlite" and vec_index.available():
            self._vec = vec_index.VecIndex(vector_index, self.dims)
        self._pgvec: PgVector | None = None  # set by sync_vector_index on PostgreSQL
        # How semantic search finds candidates (shown in stats).
        self.vector_search = "sqlite-vec" if self._vec is not None else "numpy" if index else "off"

    def close(self) -> None:
        if self._vec is not None:
            self._vec.close()

    @classmethod
    @contextmanager
    def from_conn_string(cls, conn_string: str, **kwargs: Any) -> Iterator[GarrisonStore]:
        """A store on a SQLite path / URL (sqlite-vec loaded) or a PostgreSQL URL; creates its tables."""
        url = normalize_url(conn_string, use_async=False)
        engine = create_sync_engine(url)
        path = url.split("///", 1)[1] if url.startswith("sqlite:///") else ""
        kwargs.setdefault("vector_index", Path(path + "-vec") if path else None)
        try:
            store = cls(engine, **kwargs)
            store.setup()
            yield store
            store.close()
        finally:
            engine.dispose()

    def for_tenant(self, tenant_id: str) -> GarrisonStore:
        clone = object.__new__(type(self))
        for name in ("engine", "dialect", "ttl_config", "max_value_bytes", "index_config", "embeddings",
                     "dims", "_fields", "_vec", "_pgvec", "vector_search"):
            setattr(clone, name, getattr(self, name))
        clone.tenant_id = tenant_id
        return clone

    def setup(self) -> None:
        with self.engine.begin() as conn:
            STORE_TABLES[0].metadata.create_all(conn, tables=STORE_TABLES, checkfirst=True)
        self.sync_vector_index()

    def sync_vector_index(self) -> int:
        """Add the vectors the index lacks (after a crash between the two commits).

        On PostgreSQL: enable pgvector where the server allows and copy vectors stored
        before it was enabled.
        """
        if self.dialect == "postgresql" and self.embeddings is not None:
            self._pgvec, self.vector_search = PgVector.enable(self.engine, self.dims)
            return self._pgvec.backfill(self.engine, self.dims) if self._pgvec is not None else 0
        if self._vec is None:
            return 0
        added = 0
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(V.c.id, V.c.tenant_id, V.c.embedding).where(
                    V.c.id > self._vec.max_id()).order_by(V.c.id).limit(5000)).all()
            rows = [r for r in rows if len(r[2]) == 4 * self.dims]
            if not rows:
                return added
            self._vec.add([(r[0], r[1], vec_index.bits(np.frombuffer(r[2], np.float32))) for r in rows])
            added += len(rows)

    # -- batch ------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        for op in ops:
            _validate_namespace(op)
        puts = [op for op in ops if isinstance(op, PutOp)]
        for op in puts:  # refuse oversized or non-JSON values before spending time embedding them
            if op.value is not None:
                _dump(op.value, self.max_value_bytes)
        vectors = self._embed_puts(puts) if puts else {}
        results: list[Result] = []
        refresh: set[tuple[str, str]] = set()
        opts = {WRITE_OPTION: True} if puts else {}
        changes = _IndexChanges()
        with self.engine.connect().execution_options(**opts) as conn, conn.begin():
            pending: list[PutOp] = []
            for op in ops:
                if isinstance(op, PutOp):  # consecutive puts go to the database together
                    pending.append(op)
                    results.append(None)
                    continue
                if pending:
                    self._put_many(conn, pending, vectors, changes)
                    pending = []
                if isinstance(op, GetOp):
                    results.append(self._get(conn, op, refresh))
                elif isinstance(op, SearchOp):
                    results.append(self._search(conn, op, refresh))
                elif isinstance(op, ListNamespacesOp):
                    results.append(self._list_namespaces(conn, op))
                else:
                    raise InvalidConfig(f"unknown store operation {type(op).__name__}")
            if pending:
                self._put_many(conn, pending, vectors, changes)
        self._apply_index(changes)
        if refresh:
            self._refresh_ttl(refresh)
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    # -- operations ---------------------------------------------------------------------

    def _item(self, row: Any, now: float, refresh: set[tuple[str, str]], want_refresh: bool,
              score: float | None = None) -> Item:
        prefix, key, value, created, updated, _expires, ttl_minutes = row[:7]
        if want_refresh and ttl_minutes is not None:
            refresh.add((prefix, key))
        args = dict(value=orjson.loads(value), key=key, namespace=_namespace(prefix),
                    created_at=_ts(created), updated_at=_ts(updated))
        return SearchItem(**args, score=score) if score is not None else Item(**args)

    def _live(self, now: float) -> Any:
        return sa.or_(I.c.expires_at.is_(None), I.c.expires_at > now) if self._omit_expired() else sa.true()

    def _omit_expired(self) -> bool:
        return (self.ttl_config or {}).get("omit_expired", True)

    def _get(self, conn: sa.Connection, op: GetOp, refresh: set[tuple[str, str]]) -> Item | None:
        now = time.time()
        row = conn.execute(sa.select(*_ITEM_COLS).where(
            I.c.tenant_id == self.tenant_id, I.c.prefix == _prefix(op.namespace), I.c.key == op.key,
            self._live(now))).first()
        return self._item(row, now, refresh, op.refresh_ttl) if row else None

    def _apply_index(self, changes: _IndexChanges) -> None:
        """After the main commit: the index is derived data, refilled by sync_vector_index."""
        if self._vec is not None:
            self._vec.remove(changes.removed)
            self._vec.add(changes.added)

    def _put_many(self, conn: sa.Connection, puts: list[PutOp],
                  vectors: dict[tuple[tuple[str, ...], str], list[tuple[str, np.ndarray]]],
                  changes: _IndexChanges) -> None:
        latest: dict[tuple[str, str], PutOp] = {}
        for op in puts:  # within one batch the last put of a key wins
            if not op.namespace:
                raise InvalidConfig("namespace must have at least one label")
            if not isinstance(op.key, str) or not op.key or len(op.key) > MAX_KEY_CHARS or "\x00" in op.key:
                raise InvalidConfig(f"key must be a string of 1 to {MAX_KEY_CHARS} characters without NUL")
            latest[(_prefix(op.namespace), op.key)] = op
        now = time.time()
        rows, vec_rows, deletes = [], [], []
        for (prefix, key), op in latest.items():
            if op.value is None:
                deletes.append((prefix, key))
                continue
            ttl = op.ttl
            if ttl is NOT_PROVIDED:
                ttl = (self.ttl_config or {}).get("default_ttl")
            if ttl is not None and (not isinstance(ttl, (int, float)) or ttl <= 0):
                raise InvalidConfig("ttl must be a positive number of minutes")
            rows.append({"tenant_id": self.tenant_id, "prefix": prefix, "key": key,
                         "value": _dump(op.value, self.max_value_bytes), "created_at": now, "updated_at": now,
                         "expires_at": now + ttl * 60 if ttl else None, "ttl_minutes": ttl})
            for field, vec in vectors.get((op.namespace, op.key), []):
                vec_rows.append({"tenant_id": self.tenant_id, "prefix": prefix, "key": key, "field": field,
                                 "embedding": vec.tobytes()})
        self._delete_vectors_of(conn, list(latest), changes)
        for start in range(0, len(deletes), 500):
            conn.execute(sa.delete(I).where(I.c.tenant_id == self.tenant_id,
                                            sa.tuple_(I.c.prefix, I.c.key).in_(deletes[start:start + 500])))
        if rows:
            conn.execute(_UPSERT[self.dialect], rows)
        if vec_rows:
            ids = conn.execute(sa.insert(V).returning(V.c.id, sort_by_parameter_order=True),
                               vec_rows).scalars().all()
            if self._pgvec is not None:
                self._pgvec.add(conn, [(i, self.tenant_id, np.frombuffer(r["embedding"], np.float32))  # type: ignore[call-overload]
                                       for i, r in zip(ids, vec_rows, strict=True)])
            if self._vec is not None:
                changes.added.extend(
                    (i, self.tenant_id, vec_index.bits(np.frombuffer(r["embedding"], np.float32)))  # type: ignore[call-overload]
                    for i, r in zip(ids, vec_rows, strict=True))

    def _delete_vectors_of(self, conn: sa.Connection, items: list[tuple[str, str]], changes: _IndexChanges) -> None:
        for start in range(0, len(items), 500):
            where = [V.c.tenant_id == self.tenant_id, sa.tuple_(V.c.prefix, V.c.key).in_(items[start:start + 500])]
            if self._vec is not None:
                changes.removed.extend(conn.execute(sa.select(V.c.id).where(*where)).scalars().all())
            conn.execute(sa.delete(V).where(*where))

    def _scope_clause(self, table: sa.Table, namespace_prefix: Sequence[str]) -> list[Any]:
        where = [table.c.tenant_id == self.tenant_id]
        if namespace_prefix:
            p = _prefix(namespace_prefix)
            where.append(sa.or_(table.c.prefix == p, table.c.prefix.like(_like_escape(p) + ".%", escape="\\")))
        return where

    def _search(self, conn: sa.Connection, op: SearchOp, refresh: set[tuple[str, str]]) -> list[SearchItem]:
        if op.limit < 0 or op.offset < 0:
            raise InvalidConfig("limit and offset must not be negative")
        now = time.time()
        flt = op.filter or {}
        _validate_filter(flt)
        if op.query and self.embeddings is not None:
            return self._semantic(conn, op, now, refresh)
        rows = conn.execute(sa.select(*_ITEM_COLS).where(
            *self._scope_clause(I, op.namespace_prefix), self._live(now)).order_by(I.c.updated_at.desc()))
        out: list[SearchItem] = []
        skipped = 0
        for row in rows:
            if flt and not _matches(orjson.loads(row[2]), flt):
                continue
            if skipped < op.offset:
                skipped += 1
                continue
            if len(out) >= op.limit:
                break
            out.append(self._item(row, now, refresh, op.refresh_ttl, score=None))  # type: ignore[arg-type]
        return out

    def _semantic(self, conn: sa.Connection, op: SearchOp, now: float,
                  refresh: set[tuple[str, str]]) -> list[SearchItem]:
        assert self.embeddings is not None
        q = _unit(np.asarray(self.embeddings.embed_query(op.query or ""), dtype=np.float32))
        want = op.offset + op.limit
        if self._vec is not None or self._pgvec is not None:
            k = min(vec_index.MAX_K, max(100, 10 * want))
            while True:
                if self._pgvec is not None:
                    cand = self._pgvec.nearest(conn, self.tenant_id, q, k)
                else:
                    assert self._vec is not None
                    cand = self._vec.nearest(self.tenant_id, q, k)
                ranked = self._rank_candidates(conn, op, cand, q, now, refresh) if cand else []
                if len(ranked) >= want or len(cand) < k:
                    return ranked[op.offset:want]
                if k == vec_index.MAX_K:  # deep pages or a narrow filter: rank the whole scope exactly
                    break
                k = min(vec_index.MAX_K, k * 4)
        vec_rows = conn.execute(sa.select(V.c.prefix, V.c.key, V.c.embedding).where(
            *self._scope_clause(V, op.namespace_prefix))).all()
        return self._rank(conn, op, vec_rows, q, now, refresh)[op.offset:want]

    def _rank_candidates(self, conn: sa.Connection, op: SearchOp, ids: Sequence[int], q: np.ndarray, now: float,
                         refresh: set[tuple[str, str]]) -> list[SearchItem]:
        """Shortlist ids to ranked items: one query of primary-key probes, scope and filter in Python."""
        # SQLite's CROSS JOIN pins the join order (vectors by id first); PostgreSQL plans it itself.
        join = "JOIN" if self.dialect == "postgresql" else "CROSS JOIN"
        cols = ("SELECT v.embedding, i.prefix, i.key, i.value, i.created_at, i.updated_at, i.expires_at, "
                f"i.ttl_minutes FROM state_store_vectors v {join} state_store_items i ON i.tenant_id = v.tenant_id "
                "AND i.prefix = v.prefix AND i.key = v.key ")
        if self.dialect == "postgresql":
            rows = conn.execute(sa.text(cols + "WHERE v.id = ANY(:ids) AND v.tenant_id = :t"),
                                {"ids": list(ids), "t": self.tenant_id}).all()
        else:
            marks = ", ".join("?" * len(ids))
            # "+v.tenant_id": SQLite would otherwise walk the tenant's whole index instead of the ids.
            rows = conn.exec_driver_sql(cols + f"WHERE v.id IN ({marks}) AND +v.tenant_id = ?",
                                        (*ids, self.tenant_id)).all()
        p = _prefix(op.namespace_prefix)
        omit = self._omit_expired()
        rows = [r for r in rows if (not p or r[1] == p or r[1].startswith(p + "."))
                and not (omit and r[6] is not None and r[6] <= now)]
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        best: dict[tuple[str, str], tuple[float, Any]] = {}
        for r, score in zip(rows, (matrix @ q).tolist(), strict=True):
            k = (r[1], r[2])
            if k not in best or score > best[k][0]:
                best[k] = (score, r[1:])
        flt = op.filter or {}
        out = []
        for score, row in sorted(best.values(), key=lambda x: -x[0]):
            if flt and not _matches(orjson.loads(row[2]), flt):
                continue
            out.append(self._item(row, now, refresh, op.refresh_ttl, score=float(score)))
        return out  # type: ignore[return-value]

    def _rank(self, conn: sa.Connection, op: SearchOp, vec_rows: Sequence[Any], q: np.ndarray, now: float,
              refresh: set[tuple[str, str]]) -> list[SearchItem]:
        if not vec_rows:
            return []
        matrix = np.frombuffer(b"".join(r[2] for r in vec_rows), dtype=np.float32).reshape(len(vec_rows), -1)
        scores = matrix @ q
        best: dict[tuple[str, str], float] = {}
        for (prefix, key, _e), s in zip(vec_rows, scores.tolist(), strict=True):
            if s > best.get((prefix, key), -2.0):
                best[(prefix, key)] = s
        order = sorted(best.items(), key=lambda kv: -kv[1])
        items = {}
        keys = [k for k, _s in order]
        for start in range(0, len(keys), 500):
            part = keys[start:start + 500]
            for row in conn.execute(sa.select(*_ITEM_COLS).where(
                    I.c.tenant_id == self.tenant_id, sa.tuple_(I.c.prefix, I.c.key).in_(part), self._live(now))):
                items[(row[0], row[1])] = row
        flt = op.filter or {}
        out = []
        for k, s in order:
            found = items.get(k)
            if found is None or (flt and not _matches(orjson.loads(found[2]), flt)):
                continue
            out.append(self._item(found, now, refresh, op.refresh_ttl, score=float(s)))
        return out  # type: ignore[return-value]

    def _list_namespaces(self, conn: sa.Connection, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        now = time.time()
        prefixes = conn.execute(sa.select(I.c.prefix).distinct().where(
            I.c.tenant_id == self.tenant_id, self._live(now))).scalars().all()
        spaces = [_namespace(p) for p in prefixes]
        if op.match_conditions:
            spaces = [ns for ns in spaces if all(_ns_match(c, ns) for c in op.match_conditions)]
        if op.max_depth is not None:
            spaces = list({ns[: op.max_depth] for ns in spaces})
        return sorted(spaces)[op.offset: op.offset + op.limit]

    # -- embeddings, TTL ----------------------------------------------------------------

    def _embed_puts(self, puts: list[PutOp]) -> dict[tuple[tuple[str, ...], str], list[tuple[str, np.ndarray]]]:
        if self.embeddings is None:
            return {}
        texts: list[str] = []
        owners: list[tuple[tuple[tuple[str, ...], str], str]] = []
        for op in puts:
            if op.value is None or op.index is False:
                continue
            fields = self._fields if op.index is None else [(f, tokenize_path(f)) for f in op.index]
            for name, path in fields:
                found = get_text_at_path(op.value, path)
                for i, text in enumerate(found):
                    texts.append(text)
                    owners.append(((op.namespace, op.key), f"{name}.{i}" if len(found) > 1 else name))
        if not texts:
            return {}
        vectors = np.asarray(self.embeddings.embed_documents(texts), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(texts), self.dims):
            raise InvalidConfig(f"the embedder returned vectors of shape {vectors.shape}, "
                                f"expected ({len(texts)}, {self.dims}): check index['dims']")
        out: dict[tuple[tuple[str, ...], str], list[tuple[str, np.ndarray]]] = {}
        for (item, field), vec in zip(owners, vectors, strict=True):
            out.setdefault(item, []).append((field, _unit(vec)))
        return out

    def _refresh_ttl(self, keys: set[tuple[str, str]]) -> None:
        now = time.time()
        with self.engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
            for prefix, key in keys:
                conn.execute(sa.update(I).where(
                    I.c.tenant_id == self.tenant_id, I.c.prefix == prefix, I.c.key == key,
                    I.c.ttl_minutes.is_not(None)).values(expires_at=now + I.c.ttl_minutes * 60))

    def sweep_ttl(self) -> int:
        """Delete this tenant's expired items and their vectors; returns how many items."""
        now = time.time()
        changes = _IndexChanges()
        with self.engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
            expired = [tuple(r) for r in conn.execute(sa.select(I.c.prefix, I.c.key).where(
                I.c.tenant_id == self.tenant_id, I.c.expires_at <= now)).all()]
            self._delete_vectors_of(conn, expired, changes)
            for start in range(0, len(expired), 500):
                conn.execute(sa.delete(I).where(I.c.tenant_id == self.tenant_id,
                                                sa.tuple_(I.c.prefix, I.c.key).in_(expired[start:start + 500])))
        self._apply_index(changes)
        return len(expired)


class _IndexChanges:
    def __init__(self) -> None:
        self.added: list[tuple[int, str, bytes]] = []
        self.removed: list[int] = []


def _upsert(dialect: str) -> Any:
    ins = insert_for(dialect, I)
    return ins.on_conflict_do_update(
        index_elements=[I.c.tenant_id, I.c.prefix, I.c.key],
        set_={c: ins.excluded[c] for c in ("value", "updated_at", "expires_at", "ttl_minutes")})


_UPSERT = {d: _upsert(d) for d in ("sqlite", "postgresql")}
_ITEM_COLS = (I.c.prefix, I.c.key, I.c.value, I.c.created_at, I.c.updated_at, I.c.expires_at, I.c.ttl_minutes)


def _ts(epoch: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v.astype(np.float32)


def _dump(value: Mapping[str, Any], limit: int) -> str:
    if not isinstance(value, Mapping):
        raise InvalidConfig("a store value must be a JSON object (a dict)")
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError as exc:
        raise InvalidConfig(f"store values must be JSON-serializable: {exc}") from exc
    if len(text) > limit:
        raise ValueTooLarge(f"the value is {len(text)} bytes of JSON, over the limit of {limit}")
    return text
