"""Span store on SQLite or PostgreSQL (SQLAlchemy Core, async).

Writes are batched: one transaction inserts many spans (duplicates ignored, so a
re-sent batch is idempotent), their content, and the daily usage rollup that cost
reports read instead of scanning spans. On PostgreSQL spans live in day partitions.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from garrison.db import Database
from garrison.telemetry.normalize import DAY_NS
from garrison.telemetry.tables import content, exporters, spans, store_bytes, traces, usage_daily

log = logging.getLogger("garrison.telemetry.store")

SPAN_COLUMNS = tuple(c.name for c in spans.columns)
# IN-list sizes the hot-path lookups are padded to (see _padded); the largest is the chunk size.
_IN_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 500)


def _padded(ids: list[str]) -> list[str]:
    """ids padded (repeating the last) to the next of _IN_SIZES.

    Each IN-list length is its own SQL text, so its own prepared statement in the driver's
    per-connection statement cache (128 on SQLite, each a program of up to ~100 kB for 500
    parameters). Batch sizes vary, so unpadded the caches kept filling with new lengths: the
    slow resident-memory creep of the gateway under load. Padded, there are ten texts; a
    repeated value in an IN list changes no result."""
    n = next(s for s in _IN_SIZES if s >= len(ids))
    return ids + [ids[-1]] * (n - len(ids)) if ids else ids
HOUR_NS = 3600 * 10**9


def _text_columns(table: sa.Table) -> tuple[tuple[str, ...], int]:
    """(text columns, fixed bytes): text counts its UTF-8 bytes, any other column 8 bytes."""
    text = tuple(c.name for c in table.columns if isinstance(c.type, sa.String))
    return text, 8 * (len(table.columns) - len(text))


SPAN_TEXT, SPAN_FIXED = _text_columns(spans)
CONTENT_TEXT, CONTENT_FIXED = _text_columns(content)


def _size(row: dict[str, Any], text: tuple[str, ...], fixed: int) -> int:
    """The stored size of a row, the measure retention by size counts (same as the migration's)."""
    total = fixed
    for name in text:
        value = row.get(name)
        if value:
            total += len(value) if value.isascii() else len(value.encode())
    return total


def span_bytes(row: dict[str, Any]) -> int:
    return _size(row, SPAN_TEXT, SPAN_FIXED)


def content_bytes(row: dict[str, Any]) -> int:
    return _size(row, CONTENT_TEXT, CONTENT_FIXED)


@dataclass(slots=True)
class Written:
    rows: list[dict[str, Any]]  # spans that were new
    contents: list[dict[str, Any]]  # content stored with them (and log content)

SUMMARY_COLUMNS = [
    spans.c.trace_id,
    sa.func.min(spans.c.start_ns).label("start_ns"),
    sa.func.max(spans.c.end_ns).label("end_ns"),
    sa.func.count().label("span_count"),
    sa.func.sum(spans.c.cost_usd).label("cost_usd"),
    sa.func.sum(spans.c.input_tokens).label("input_tokens"),
    sa.func.sum(spans.c.output_tokens).label("output_tokens"),
    sa.func.max(spans.c.status_code).label("status_code"),
    sa.func.sum(sa.case((spans.c.status_code == 2, 1), else_=0)).label("error_count"),
]


@dataclass(slots=True)
class TraceFilter:
    since_ns: int | None = None
    until_ns: int | None = None
    agent: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    model: str | None = None
    kind: str | None = None
    status: str | None = None  # ok | error
    min_cost_usd: float | None = None
    min_duration_ms: float | None = None
    attributes: tuple[tuple[str, str], ...] = ()


class SpanStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.dialect = db.dialect
        self.partitioned = False
        self.use_copy = True
        self._partitions: set[int] = set()
        self._insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        cols = ", ".join(SPAN_COLUMNS)
        if self.dialect == "postgresql":
            marks = ", ".join(["%s"] * len(SPAN_COLUMNS))
            self._insert_sql = f"INSERT INTO telemetry_spans ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING"
            self._copy_sql = f"COPY telemetry_spans ({cols}) FROM STDIN"
            self._trace_sql = (
                "INSERT INTO telemetry_traces (tenant_id, trace_id, first_day, last_day) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (tenant_id, trace_id) DO UPDATE SET "
                "first_day = LEAST(telemetry_traces.first_day, excluded.first_day), "
                "last_day = GREATEST(telemetry_traces.last_day, excluded.last_day)")
        else:
            marks = ", ".join(["?"] * len(SPAN_COLUMNS))
            self._insert_sql = f"INSERT OR IGNORE INTO telemetry_spans ({cols}) VALUES ({marks})"

    async def start(self) -> None:
        if self.dialect == "postgresql":
            async with self.db.engine.connect() as conn:
                found = await conn.scalar(sa.text(
                    "SELECT count(*) FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
                    "WHERE c.relname = 'telemetry_spans'"
                ))
            self.partitioned = bool(found)

    # ------------------------------------------------------------ writes

    async def _ensure_partitions(self, days: set[int]) -> None:
        missing = days - self._partitions
        if not self.partitioned or not missing:
            return
        async with self.db.engine.begin() as conn:
            for day in sorted(missing):
                await conn.execute(sa.text(
                    f"CREATE TABLE IF NOT EXISTS telemetry_spans_d{day} PARTITION OF telemetry_spans "
                    f"FOR VALUES FROM ({day * DAY_NS}) TO ({(day + 1) * DAY_NS})"
                ))
        self._partitions |= missing

    async def write(self, rows: list[dict[str, Any]], contents: list[dict[str, Any]]) -> Written:
        """Insert spans (ignoring ones already stored); returns what was new."""
        if not rows and not contents:
            return Written([], [])
        # A span sent twice within one batch is one span.
        rows = list({(r["tenant_id"], r["trace_id"], r["span_id"]): r for r in reversed(rows)}.values())[::-1]
        await self._ensure_partitions({r["day"] for r in rows})
        async with self.db.engine.begin() as conn:
            new_rows = await self._new_only(conn, rows)
            for r in new_rows:
                r["stored_bytes"] = span_bytes(r)
            if new_rows and self.partitioned and self.use_copy:
                await self._copy_rows(conn, new_rows)
            elif new_rows:
                # Raw executemany: SQLAlchemy's per-row parameter processing was the ingest bottleneck.
                await conn.exec_driver_sql(self._insert_sql, [tuple(r[c] for c in SPAN_COLUMNS) for r in new_rows])
            inserted = {(r["tenant_id"], r["trace_id"], r["span_id"]) for r in new_rows}
            keep = [c for c in contents if c["span_id"] is None
                    or (c["tenant_id"], c["trace_id"], c["span_id"]) in inserted]
            for c in keep:
                c["stored_bytes"] = content_bytes(c)
            if keep:
                await conn.execute(sa.insert(content), keep)
            await self._rollup(conn, new_rows)
            await self._count_bytes(conn, new_rows, keep)
            if self.partitioned and new_rows:
                await self._index_traces(conn, new_rows)
        return Written(new_rows, keep)

    async def _count_bytes(self, conn: AsyncConnection, rows: list[dict[str, Any]],
                           contents: list[dict[str, Any]]) -> None:
        agg: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for r in rows:
            a = agg[r["start_ns"] // HOUR_NS]
            a[0] += r["stored_bytes"]
            a[2] += 1
        for c in contents:
            a = agg[c["time_ns"] // HOUR_NS]
            a[1] += c["stored_bytes"]
            a[3] += 1
        if not agg:
            return
        names = ("span_bytes", "content_bytes", "spans", "contents")
        stmt = self._insert(store_bytes)
        stmt = stmt.on_conflict_do_update(
            index_elements=["hour"],
            set_={n: getattr(store_bytes.c, n) + getattr(stmt.excluded, n) for n in names},
        )
        for hour in sorted(agg):
            await conn.execute(stmt, {"hour": hour, **dict(zip(names, agg[hour], strict=True))})

    async def _copy_rows(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        """PostgreSQL COPY, in the write's transaction. Safe without ON CONFLICT because the
        rows were checked against the store just before (one writer per process)."""
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        async with driver.cursor() as cur, cur.copy(self._copy_sql) as copy:
            for r in rows:
                await copy.write_row(tuple(r[c] for c in SPAN_COLUMNS))

    async def _index_traces(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        days: dict[tuple[str, str], list[int]] = {}
        for r in rows:
            key = (r["tenant_id"], r["trace_id"])
            d = days.get(key)
            if d is None:
                days[key] = [r["day"], r["day"]]
            else:
                d[0], d[1] = min(d[0], r["day"]), max(d[1], r["day"])
        await conn.exec_driver_sql(self._trace_sql, [(t, tr, d[0], d[1]) for (t, tr), d in sorted(days.items())])

    async def _trace_days(self, conn: AsyncConnection, tenant_id: str,
                          trace_ids: list[str]) -> dict[str, tuple[int, int]]:
        """First and last day of the given traces (PostgreSQL's trace index)."""
        out: dict[str, tuple[int, int]] = {}
        for i in range(0, len(trace_ids), 500):
            q = sa.select(traces.c.trace_id, traces.c.first_day, traces.c.last_day).where(
                traces.c.tenant_id == tenant_id, traces.c.trace_id.in_(_padded(trace_ids[i:i + 500])))
            out.update({t: (a, b) for t, a, b in await conn.execute(q)})
        return out

    async def _trace_filter(self, conn: AsyncConnection, tenant_id: str, trace_id: str) -> list[Any]:
        """WHERE terms that find one trace; on PostgreSQL bounded to its days, so only those partitions are read."""
        where: list[Any] = [spans.c.tenant_id == tenant_id, spans.c.trace_id == trace_id]
        if self.partitioned:
            found = (await self._trace_days(conn, tenant_id, [trace_id])).get(trace_id)
            if found is not None:
                where += [spans.c.start_ns >= found[0] * DAY_NS, spans.c.start_ns < (found[1] + 1) * DAY_NS]
        return where

    async def _new_only(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows not stored yet (one writer per process, so no race inside a process)."""
        by_tenant: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            by_tenant[r["tenant_id"]].add(r["trace_id"])
        existing: set[tuple[str, str, str]] = set()
        for tenant, trace_ids in by_tenant.items():
            ids = sorted(trace_ids)
            bounds: list[Any] = []
            if self.partitioned:
                # Only traces the index knows can have stored spans, and only in their days.
                known = await self._trace_days(conn, tenant, ids)
                if not known:
                    continue
                ids = sorted(known)
                bounds = [spans.c.start_ns >= min(a for a, _ in known.values()) * DAY_NS,
                          spans.c.start_ns < (max(b for _, b in known.values()) + 1) * DAY_NS]
            for i in range(0, len(ids), 500):
                q = sa.select(spans.c.trace_id, spans.c.span_id).where(
                    spans.c.tenant_id == tenant, spans.c.trace_id.in_(_padded(ids[i:i + 500])), *bounds)
                existing.update((tenant, t, s) for t, s in await conn.execute(q))
        if not existing:
            return rows
        return [r for r in rows if (r["tenant_id"], r["trace_id"], r["span_id"]) not in existing]

    async def _rollup(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        agg: dict[tuple[str, int, str, str], list[float]] = defaultdict(lambda: [0] * 9)
        for r in rows:
            if r["kind"] != "model":
                continue
            a = agg[(r["tenant_id"], r["day"], r["model"] or "", r["provider"] or "")]
            a[0] += 1
            a[1] += 1 if r["status_code"] == 2 else 0
            a[2] += r["input_tokens"]
            a[3] += r["output_tokens"]
            a[4] += r["cached_tokens"]
            a[5] += r["reasoning_tokens"]
            a[6] += r["cost_usd"] or 0.0
            a[7] += 1 if r["cost_usd"] is None else 0
            a[8] += r["duration_ms"]
        if not agg:
            return
        names = ("calls", "errors", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens",
                 "cost_usd", "unpriced_calls", "duration_ms_sum")
        values = [
            {"tenant_id": k[0], "day": k[1], "model": k[2], "provider": k[3], **dict(zip(names, v, strict=True))}
            for k, v in agg.items()
        ]
        stmt = self._insert(usage_daily)
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "day", "model", "provider"],
            set_={n: getattr(usage_daily.c, n) + getattr(stmt.excluded, n) for n in names},
        )
        for v in sorted(values, key=lambda v: (v["tenant_id"], v["day"], v["model"], v["provider"])):
            await conn.execute(stmt, v)

    # ------------------------------------------------------------ reads

    async def trace_spans(self, tenant_id: str, trace_id: str) -> list[dict[str, Any]]:
        # Sorted here, not in SQL: an ORDER BY start_ns would tempt SQLite into the time index.
        async with self.db.engine.connect() as conn:
            q = sa.select(spans).where(*await self._trace_filter(conn, tenant_id, trace_id))
            rows = [dict(r._mapping) for r in await conn.execute(q)]
        rows.sort(key=lambda r: (r["start_ns"], r["span_id"]))
        return rows

    async def trace(self, tenant_id: str, trace_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A trace's spans (sorted by start) and captured content, on one connection."""
        async with self.db.engine.connect() as conn:
            q = sa.select(spans).where(*await self._trace_filter(conn, tenant_id, trace_id))
            rows = [dict(r._mapping) for r in await conn.execute(q)]
            contents: list[dict[str, Any]] = []
            if rows:
                cq = (sa.select(content.c.span_id, content.c.source, content.c.time_ns, content.c.body)
                      .where(content.c.tenant_id == tenant_id, content.c.trace_id == trace_id)
                      .order_by(content.c.time_ns, content.c.id))
                contents = [dict(r._mapping) for r in await conn.execute(cq)]
        rows.sort(key=lambda r: (r["start_ns"], r["span_id"]))
        return rows, contents

    async def trace_content(self, tenant_id: str, trace_id: str) -> list[dict[str, Any]]:
        q = (sa.select(content.c.span_id, content.c.source, content.c.time_ns, content.c.body)
             .where(content.c.tenant_id == tenant_id, content.c.trace_id == trace_id)
             .order_by(content.c.time_ns, content.c.id))
        async with self.db.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(q)]

    def _attr_match(self, key: str, value: str) -> sa.ColumnElement[bool]:
        if self.dialect == "postgresql":
            return sa.cast(spans.c.attributes, postgresql.JSONB)[key].astext == value
        path = '$."' + key.replace('"', "") + '"'
        return sa.func.json_extract(spans.c.attributes, path) == value

    async def list_traces(self, tenant_id: str, f: TraceFilter, *, limit: int,
                          before: tuple[int, str] | None = None) -> list[dict[str, Any]]:
        base = [spans.c.tenant_id == tenant_id]
        if f.since_ns is not None:
            base.append(spans.c.start_ns >= f.since_ns)
        if f.until_ns is not None:
            base.append(spans.c.start_ns < f.until_ns)
        span_conds = []
        for col, value in ((spans.c.agent_name, f.agent), (spans.c.session_id, f.session_id),
                           (spans.c.user_id, f.user_id), (spans.c.model, f.model), (spans.c.kind, f.kind)):
            if value is not None:
                span_conds.append(col == value)
        span_conds += [self._attr_match(k, v) for k, v in f.attributes]
        where = list(base)
        for cond in span_conds:
            where.append(spans.c.trace_id.in_(sa.select(spans.c.trace_id).where(*base, cond)))
        having = []
        if f.status == "error":
            having.append(sa.func.max(spans.c.status_code) == 2)
        elif f.status == "ok":
            having.append(sa.func.max(spans.c.status_code) < 2)
        if f.min_cost_usd is not None:
            having.append(sa.func.coalesce(sa.func.sum(spans.c.cost_usd), 0) >= f.min_cost_usd)
        if f.min_duration_ms is not None:
            having.append(sa.func.max(spans.c.end_ns) - sa.func.min(spans.c.start_ns) >= f.min_duration_ms * 1e6)
        if before is not None:
            start, tid = before
            having.append(sa.or_(sa.func.min(spans.c.start_ns) < start,
                                 sa.and_(sa.func.min(spans.c.start_ns) == start, spans.c.trace_id < tid)))
        q = (sa.select(*SUMMARY_COLUMNS).where(*where).group_by(spans.c.trace_id)
             .order_by(sa.func.min(spans.c.start_ns).desc(), spans.c.trace_id.desc()).limit(limit))
        if having:
            q = q.having(sa.and_(*having))
        async with self.db.engine.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(q)]
            if rows:
                await self._attach_roots(conn, tenant_id, rows)
        return rows

    async def _attach_roots(self, conn: AsyncConnection, tenant_id: str, rows: list[dict[str, Any]]) -> None:
        ids = [r["trace_id"] for r in rows]
        q = (sa.select(spans.c.trace_id, spans.c.name, spans.c.kind, spans.c.agent_name, spans.c.session_id,
                       spans.c.user_id, spans.c.service_name, spans.c.parent_span_id, spans.c.start_ns)
             .where(spans.c.tenant_id == tenant_id, spans.c.trace_id.in_(ids))
             .order_by(spans.c.start_ns))
        roots: dict[str, dict[str, Any]] = {}
        for r in await conn.execute(q):
            m = dict(r._mapping)
            cur = roots.get(m["trace_id"])
            if cur is None or (cur["parent_span_id"] is not None and m["parent_span_id"] is None):
                roots[m["trace_id"]] = m
        for row in rows:
            root = roots.get(row["trace_id"], {})
            row["root"] = {k: root.get(k) for k in ("name", "kind", "agent_name", "service_name")}
            row["session_id"] = root.get("session_id")
            row["user_id"] = root.get("user_id")

    async def session_traces(self, tenant_id: str, session_id: str, limit: int) -> list[dict[str, Any]]:
        sub = sa.select(spans.c.trace_id).where(spans.c.tenant_id == tenant_id, spans.c.session_id == session_id)
        q = (sa.select(*SUMMARY_COLUMNS).where(spans.c.tenant_id == tenant_id, spans.c.trace_id.in_(sub))
             .group_by(spans.c.trace_id).order_by(sa.func.min(spans.c.start_ns), spans.c.trace_id).limit(limit))
        async with self.db.engine.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(q)]
            if rows:
                await self._attach_roots(conn, tenant_id, rows)
        return rows

    async def cost_by_model_by_day(self, tenant_id: str, since_day: int, until_day: int) -> list[dict[str, Any]]:
        u = usage_daily.c
        q = (sa.select(u.day, u.model, u.provider, u.calls, u.errors, u.input_tokens, u.output_tokens,
                       u.cached_tokens, u.reasoning_tokens, u.cost_usd, u.unpriced_calls, u.duration_ms_sum)
             .where(u.tenant_id == tenant_id, u.day >= since_day, u.day <= until_day)
             .order_by(u.day, u.model, u.provider))
        async with self.db.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(q)]

    async def model_durations(self, tenant_id: str, since_ns: int, until_ns: int,
                              cap: int = 50_000) -> list[tuple[str, float]]:
        q = (sa.select(spans.c.model, spans.c.duration_ms)
             .where(spans.c.tenant_id == tenant_id, spans.c.kind == "model",
                    spans.c.start_ns >= since_ns, spans.c.start_ns < until_ns)
             .order_by(spans.c.start_ns.desc()).limit(cap))
        async with self.db.engine.connect() as conn:
            return [(r[0] or "", float(r[1])) for r in await conn.execute(q)]

    async def count(self, tenant_id: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(spans)
        if tenant_id is not None:
            q = q.where(spans.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            return int(await conn.scalar(q) or 0)

    # ------------------------------------------------------------ retention

    async def drop_older_than(self, cutoff_ns: int, *, whole_partitions: bool = False) -> int:
        """Delete spans (and content) that started before ``cutoff_ns``; returns how many spans went.

        On PostgreSQL, day partitions wholly before the cut-off are dropped (no row deletes,
        no vacuum debt). With ``whole_partitions`` that is all it does: the cut-off rounds down
        to the start of its day, so up to a day more is kept. Otherwise the rows of the
        partition that holds the cut-off are deleted one by one.
        """
        if self.partitioned and whole_partitions:
            cutoff_ns = cutoff_ns // DAY_NS * DAY_NS
        dropped = 0
        async with self.db.engine.begin() as conn:
            if self.partitioned:
                names = await conn.execute(sa.text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'telemetry_spans'"
                ))
                for (name,) in names.all():
                    day = int(name.rsplit("_d", 1)[1])
                    if (day + 1) * DAY_NS <= cutoff_ns:
                        dropped += int(await conn.scalar(sa.text(f"SELECT count(*) FROM {name}")) or 0)
                        await conn.execute(sa.text(f"DROP TABLE {name}"))
                        self._partitions.discard(day)
                # Traces wholly before the cut are gone; ones that reach past it keep their entry.
                await conn.execute(sa.delete(traces).where(traces.c.last_day < cutoff_ns // DAY_NS))
            if not (self.partitioned and whole_partitions):
                result = await conn.execute(sa.delete(spans).where(spans.c.start_ns < cutoff_ns))
                dropped += result.rowcount or 0
            await conn.execute(sa.delete(content).where(content.c.time_ns < cutoff_ns))
            await self._recount_bytes(conn, cutoff_ns)
        return dropped

    async def _recount_bytes(self, conn: AsyncConnection, cutoff_ns: int) -> None:
        """After a cut: hours before it hold nothing; the hour it falls in is measured again."""
        hour = cutoff_ns // HOUR_NS
        await conn.execute(sa.delete(store_bytes).where(store_bytes.c.hour < hour))
        if cutoff_ns % HOUR_NS == 0:
            return
        lo, hi = hour * HOUR_NS, (hour + 1) * HOUR_NS
        sb, sn = (await conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(spans.c.stored_bytes), 0), sa.func.count())
            .where(spans.c.start_ns >= lo, spans.c.start_ns < hi))).one()
        cb, cn = (await conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(content.c.stored_bytes), 0), sa.func.count())
            .where(content.c.time_ns >= lo, content.c.time_ns < hi))).one()
        await conn.execute(sa.delete(store_bytes).where(store_bytes.c.hour == hour))
        if sn or cn:
            await conn.execute(sa.insert(store_bytes).values(
                hour=hour, span_bytes=int(sb), content_bytes=int(cb), spans=int(sn), contents=int(cn)))

    async def stored_bytes(self) -> int:
        """Bytes of spans plus stored content, every tenant (what retention by size caps)."""
        q = sa.select(sa.func.coalesce(sa.func.sum(store_bytes.c.span_bytes + store_bytes.c.content_bytes), 0))
        async with self.db.engine.connect() as conn:
            return int(await conn.scalar(q) or 0)

    async def size_cutoff(self, max_bytes: int) -> int | None:
        """The start time before which spans and content must go so the newest fit in ``max_bytes``."""
        async with self.db.engine.connect() as conn:
            hours = (await conn.execute(
                sa.select(store_bytes.c.hour, store_bytes.c.span_bytes + store_bytes.c.content_bytes)
                .order_by(store_bytes.c.hour.desc()))).all()
            kept, boundary = 0, None
            for hour, size in hours:
                if kept + size > max_bytes:
                    boundary = int(hour)
                    break
                kept += int(size)
            if boundary is None:
                return None
            # The hour that does not fit whole: keep its newest rows while they fit.
            lo, hi = boundary * HOUR_NS, (boundary + 1) * HOUR_NS
            items = [tuple(r) for r in await conn.execute(
                sa.select(spans.c.start_ns, spans.c.stored_bytes)
                .where(spans.c.start_ns >= lo, spans.c.start_ns < hi))]
            items += [tuple(r) for r in await conn.execute(
                sa.select(content.c.time_ns, content.c.stored_bytes)
                .where(content.c.time_ns >= lo, content.c.time_ns < hi))]
        items.sort(reverse=True)
        budget = max_bytes - kept
        for time_ns, size in items:
            if size > budget:
                return int(time_ns) + 1
            budget -= size
        return int(lo)

    async def enforce_max_bytes(self, max_bytes: int) -> int:
        """Drop the oldest spans and content until what is stored fits in ``max_bytes``."""
        cutoff = await self.size_cutoff(max_bytes)
        if cutoff is None:
            return 0
        return await self.drop_older_than(cutoff)

    # ------------------------------------------------------------ exporters

    async def set_exporter(self, tenant_id: str, endpoint: str, headers: dict[str, str], enabled: bool,
                           now: datetime, include_content: bool = False) -> None:
        values = {"endpoint": endpoint, "headers": orjson.dumps(headers).decode(), "enabled": enabled,
                  "include_content": include_content, "updated_at": now}
        stmt = self._insert(exporters).values(tenant_id=tenant_id, **values)
        stmt = stmt.on_conflict_do_update(index_elements=["tenant_id"], set_=values)
        async with self.db.engine.begin() as conn:
            await conn.execute(stmt)

    async def delete_exporter(self, tenant_id: str) -> bool:
        async with self.db.engine.begin() as conn:
            result = await conn.execute(sa.delete(exporters).where(exporters.c.tenant_id == tenant_id))
        return bool(result.rowcount)

    async def exporters(self) -> list[dict[str, Any]]:
        async with self.db.engine.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(sa.select(exporters))]
        for r in rows:
            r["headers"] = orjson.loads(r["headers"])
        return rows
