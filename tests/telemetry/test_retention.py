"""Retention on SQLite and PostgreSQL: by age (whole day partitions on PostgreSQL) and by
size, where size is the bytes of spans plus their stored message content."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from garrison.core.principal import Principal
from garrison.db import Database
from garrison.db.migrate import upgrade
from garrison.telemetry.config import TelemetrySettings
from garrison.telemetry.normalize import DAY_NS
from garrison.telemetry.service import TelemetryService
from garrison.telemetry.store import HOUR_NS, content_bytes, span_bytes
from garrison.telemetry.tables import content, spans
from tests.telemetry.spans import new_trace_id, protobuf_request, span

PB = "application/x-protobuf"
ALICE = Principal(id="prn_a", tenant_id="ten_a", kind="service", scopes=frozenset())


@pytest.fixture
async def service(db_url: str) -> AsyncIterator[TelemetryService]:
    await asyncio.to_thread(upgrade, db_url)
    db = Database(db_url)
    svc = TelemetryService(db, TelemetrySettings(capture_content=True, retention_days=1))
    await svc.start(self_tracing=False)
    try:
        yield svc
    finally:
        await svc.stop()
        await db.dispose()


async def _send(svc: TelemetryService, spans_: list[dict]) -> None:  # type: ignore[type-arg]
    await svc.ingest_traces(ALICE, protobuf_request(spans_), PB, None)


async def _names(svc: TelemetryService) -> list[str]:
    async with svc.store.db.engine.connect() as conn:
        return sorted(r[0] for r in await conn.execute(sa.select(spans.c.name)))


async def _measured(svc: TelemetryService) -> tuple[int, int]:
    """Bytes of every stored span and content row, measured from the rows themselves."""
    async with svc.store.db.engine.connect() as conn:
        span_rows = [dict(r._mapping) for r in await conn.execute(sa.select(spans))]
        content_rows = [dict(r._mapping) for r in await conn.execute(sa.select(content))]
    return sum(span_bytes(r) for r in span_rows), sum(content_bytes(c) for c in content_rows)


async def _partitions(svc: TelemetryService) -> set[int]:
    async with svc.store.db.engine.connect() as conn:
        names = await conn.execute(sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'telemetry_spans'"))
        return {int(n.rsplit("_d", 1)[1]) for (n,) in names}


async def test_retention_by_age(service: TelemetryService) -> None:
    now = time.time_ns()
    cutoff = now - DAY_NS  # retention_days=1
    # 3 days old: past retention, inside the clock-skew window so it is filed as sent.
    old_ns = now - 3 * DAY_NS
    # Just past the cut-off: its day may still reach beyond it.
    edge_ns = cutoff - HOUR_NS
    old_trace = new_trace_id()
    await _send(service, [span(old_trace, "old", start_ns=old_ns),
                          span(new_trace_id(), "edge", start_ns=edge_ns),
                          span(new_trace_id(), "fresh", start_ns=now - 1000)])
    assert await service.store.trace_spans(ALICE.tenant_id, old_trace)
    pg = service.store.partitioned
    if pg:
        assert {old_ns // DAY_NS, edge_ns // DAY_NS, now // DAY_NS} <= await _partitions(service)
    result = await service.apply_retention()
    if pg:
        # PostgreSQL drops whole day partitions and deletes no rows: the edge span stays
        # exactly when its day ends after the cut-off.
        left = await _partitions(service)
        assert old_ns // DAY_NS not in left and now // DAY_NS in left
        edge_kept = (edge_ns // DAY_NS + 1) * DAY_NS > cutoff
        assert (edge_ns // DAY_NS in left) == edge_kept
        assert result["dropped_by_age"] == (1 if edge_kept else 2)
        assert await _names(service) == (["edge", "fresh"] if edge_kept else ["fresh"])
        async with service.store.db.engine.connect() as conn:  # the trace index forgets dropped traces
            indexed = {t for (t,) in await conn.execute(sa.text("SELECT trace_id FROM telemetry_traces"))}
        assert old_trace not in indexed and len(indexed) == (2 if edge_kept else 1)
    else:
        assert result["dropped_by_age"] == 2
        assert await _names(service) == ["fresh"]
    assert await service.store.trace_spans(ALICE.tenant_id, old_trace) == []
    # The size ledger follows what is left.
    assert result["stored_bytes"] == sum(await _measured(service))


async def test_retention_by_size_counts_span_and_content_bytes(service: TelemetryService) -> None:
    now = time.time_ns()
    # Twenty small spans in an older hour, then one model call with a 50 kB prompt.
    await _send(service, [span(new_trace_id(), f"small{i:02}", start_ns=now - 3 * HOUR_NS - i * 10**6)
                          for i in range(20)])
    big = new_trace_id()
    prompt = "é" * 25_000  # 50,000 bytes of UTF-8: bytes count, not characters
    await _send(service, [span(big, "chat big", {"gen_ai.operation.name": "chat",
                                                 "gen_ai.input.messages": prompt}, start_ns=now - 1000)])
    span_total, content_total = await _measured(service)
    assert content_total > 50_000
    assert await service.store.stored_bytes() == span_total + content_total

    big_rows = await service.store.trace_spans(ALICE.tenant_id, big)
    big_span = span_bytes(big_rows[0])
    big_with_content = big_span + content_total

    # A cap that fits the big call with its content, not one more small span: eleven spans is
    # no count limit, yet the twenty small ones go because of their bytes.
    service.settings.max_store_bytes = big_with_content + 10
    result = await service.apply_retention()
    assert result["dropped_by_size"] == 20
    assert await _names(service) == ["chat big"]
    assert result["stored_bytes"] == big_with_content <= service.settings.max_store_bytes

    # The span alone would fit this cap; with its stored content it does not, so it goes too.
    service.settings.max_store_bytes = big_span + 1000
    result = await service.apply_retention()
    assert result["dropped_by_size"] == 1
    assert await _names(service) == []
    assert await service.store.trace_content(ALICE.tenant_id, big) == []
    assert result["stored_bytes"] == 0


async def test_retention_by_size_keeps_the_newest_within_an_hour(service: TelemetryService) -> None:
    now = time.time_ns()
    tid = new_trace_id()
    await _send(service, [span(tid, f"s{i}", start_ns=now - (i + 1) * 10**6) for i in range(5)])
    rows = await service.store.trace_spans(ALICE.tenant_id, tid)
    sizes = {r["name"]: span_bytes(r) for r in rows}
    service.settings.max_store_bytes = sizes["s0"] + sizes["s1"] + sizes["s2"] + 5
    result = await service.apply_retention()
    assert result["dropped_by_size"] == 2
    assert await _names(service) == ["s0", "s1", "s2"]
    assert result["stored_bytes"] == sum(await _measured(service)) <= service.settings.max_store_bytes
