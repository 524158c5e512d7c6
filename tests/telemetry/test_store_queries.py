"""The span store and queries on SQLite and PostgreSQL: filters, sessions, content apart,
cost by model by day (retention: test_retention.py; forwarding: test_forwarding.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from garrison.core.principal import Principal
from garrison.db import Database
from garrison.db.migrate import upgrade
from garrison.telemetry.config import TelemetrySettings
from garrison.telemetry.service import TelemetryService
from garrison.telemetry.store import TraceFilter
from tests.telemetry.spans import agent_run, new_trace_id, protobuf_request

PB = "application/x-protobuf"
ALICE = Principal(id="prn_a", tenant_id="ten_a", kind="service", scopes=frozenset())
BOB = Principal(id="prn_b", tenant_id="ten_b", kind="service", scopes=frozenset())


@pytest.fixture
async def service(db_url: str) -> AsyncIterator[TelemetryService]:
    await asyncio.to_thread(upgrade, db_url)
    db = Database(db_url)
    svc = TelemetryService(db, TelemetrySettings(capture_content=True))
    await svc.start(self_tracing=False)
    try:
        yield svc
    finally:
        await svc.stop()
        await db.dispose()


async def _send(svc: TelemetryService, who: Principal, spans: list[dict]) -> None:  # type: ignore[type-arg]
    await svc.ingest_traces(who, protobuf_request(spans), PB, None)


async def test_filters_sessions_and_summaries(service: TelemetryService) -> None:
    t_ok, t_err, t_other = new_trace_id(), new_trace_id(), new_trace_id()
    await _send(service, ALICE, agent_run(t_ok, session="conv-1", user="alice"))
    await _send(service, ALICE, agent_run(t_err, session="conv-1", user="alice", tool_error=True))
    await _send(service, ALICE, agent_run(t_other, session="conv-2", user="carol", model="gpt-4o"))

    async def ids(**kw: object) -> list[str]:
        out = await service.list_traces(ALICE, TraceFilter(**kw), 50, None)  # type: ignore[arg-type]
        return sorted(t["trace_id"] for t in out["traces"])

    assert await ids() == sorted([t_ok, t_err, t_other])
    assert await ids(status="error") == [t_err]
    assert await ids(status="ok") == sorted([t_ok, t_other])
    assert await ids(user_id="carol") == [t_other]
    assert await ids(model="gpt-4o") == [t_other]
    assert await ids(agent="planner", session_id="conv-1") == sorted([t_ok, t_err])
    assert await ids(kind="tool") == sorted([t_ok, t_err, t_other])
    assert await ids(min_duration_ms=250) == sorted([t_ok, t_err, t_other])
    assert await ids(min_duration_ms=10_000) == []
    assert await ids(min_cost_usd=0.001) == [t_other]  # gpt-4o costs more than gpt-4o-mini
    assert await ids(attributes=(("gen_ai.tool.call.id", "call_1"),)) == sorted([t_ok, t_err, t_other])
    assert await ids(attributes=(("gen_ai.tool.call.id", "nope"),)) == []
    assert await ids(since_ns=time.time_ns() + 10**12) == []
    assert (await service.list_traces(BOB, TraceFilter(), 50, None))["traces"] == []

    page1 = await service.list_traces(ALICE, TraceFilter(), 2, None)
    page2 = await service.list_traces(ALICE, TraceFilter(), 2, page1["nextCursor"])
    assert len(page1["traces"]) == 2 and len(page2["traces"]) == 1 and page2["nextCursor"] is None
    assert {t["trace_id"] for t in page1["traces"] + page2["traces"]} == {t_ok, t_err, t_other}

    sess = await service.session(ALICE, "conv-1", 100)
    assert [t["trace_id"] for t in sess["traces"]] == [t_ok, t_err]  # in order
    assert sess["input_tokens"] == 5000

    err_trace = await service.get_trace(ALICE, t_err)
    assert err_trace["summary"]["errors"] == {"tool_failure": 1}

    now = datetime.now(UTC)
    usage = await service.usage_summary(ALICE, now - timedelta(days=1), now + timedelta(days=1))
    models = {d["model"]: d for d in usage["cost_by_model_by_day"]}
    assert models["gpt-4o-mini"]["calls"] == 4 and models["gpt-4o"]["calls"] == 2
    assert models["gpt-4o"]["input_tokens"] == 2500
    assert usage["latency_by_model"]["gpt-4o"]["calls"] == 2
    assert usage["cost_usd"] == pytest.approx(sum(d["cost_usd"] for d in models.values()))


async def test_content_is_stored_apart(service: TelemetryService) -> None:
    tid = new_trace_id()
    await _send(service, ALICE, agent_run(tid))
    rows = await service.store.trace_spans(ALICE.tenant_id, tid)
    assert all("gen_ai.tool.call.arguments" not in r["attributes"] for r in rows)
    trace = await service.get_trace(ALICE, tid)
    tool_step = next(s for s in trace["decision_chain"] if s["kind"] == "tool")
    assert tool_step["input"] == {"gen_ai.tool.call.arguments": '{"city": "Paris"}'}


async def test_content_is_dropped_when_capture_is_off(db_url: str) -> None:
    await asyncio.to_thread(upgrade, db_url)
    db = Database(db_url)
    svc = TelemetryService(db, TelemetrySettings(capture_content=False))
    await svc.start(self_tracing=False)
    try:
        tid = new_trace_id()
        await _send(svc, ALICE, agent_run(tid))
        assert await svc.store.trace_content(ALICE.tenant_id, tid) == []
        trace = await svc.get_trace(ALICE, tid)
        assert all("input" not in s for s in trace["decision_chain"])
    finally:
        await svc.stop()
        await db.dispose()


async def test_duplicate_lookup_reuses_few_statements(service: TelemetryService) -> None:
    """Batches of 1..40 traces look stored spans up with a handful of SQL texts (each text is a
    prepared statement the driver caches per connection), and a span sent again is still one."""
    from sqlalchemy import event

    texts: set[str] = set()

    def seen(_conn: object, _cur: object, sql: str, *_a: object) -> None:
        if sql.startswith("SELECT telemetry_spans.trace_id, telemetry_spans.span_id"):
            texts.add(sql)

    event.listen(service.store.db.engine.sync_engine, "before_cursor_execute", seen)
    first = agent_run(new_trace_id())
    await _send(service, ALICE, first)
    await service.flush()
    for k in range(1, 41):
        await _send(service, ALICE, [s for _ in range(k) for s in agent_run(new_trace_id())])
        await service.flush()
    await _send(service, ALICE, first)  # sent again: already stored
    await service.flush()
    event.remove(service.store.db.engine.sync_engine, "before_cursor_execute", seen)
    assert len(texts) <= 7  # sizes 1, 2, 4, 8, 16, 32, 64 (unpadded: one per batch size)
    if service.store.db.is_sqlite:  # PostgreSQL looks up only traces its trace index knows
        assert len(texts) > 1
    stored = await service.store.trace_spans("ten_a", first[0]["trace_id"])
    assert len(stored) == len(first)
