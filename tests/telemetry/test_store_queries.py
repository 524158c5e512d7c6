"""The span store and queries on SQLite and PostgreSQL: filters, sessions, content apart,
retention by age and size, cost by model by day, forwarding to a tenant's OTLP endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI, Request, Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from garrison.core.principal import Principal
from garrison.db import Database
from garrison.db.migrate import upgrade
from garrison.telemetry.config import TelemetrySettings
from garrison.telemetry.normalize import DAY_NS
from garrison.telemetry.service import TelemetryService
from garrison.telemetry.store import TraceFilter
from tests.telemetry.live import serve
from tests.telemetry.spans import agent_run, new_trace_id, protobuf_request, span

PB = "application/x-protobuf"
ALICE = Principal(id="prn_a", tenant_id="ten_a", kind="service", scopes=frozenset())
BOB = Principal(id="prn_b", tenant_id="ten_b", kind="service", scopes=frozenset())


@pytest.fixture
async def service(db_url: str) -> AsyncIterator[TelemetryService]:
    await asyncio.to_thread(upgrade, db_url)
    db = Database(db_url)
    svc = TelemetryService(db, TelemetrySettings(capture_content=True, retention_days=1, max_spans=1000))
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


async def test_retention_by_age_and_by_size(service: TelemetryService) -> None:
    now = time.time_ns()
    old = new_trace_id()
    # 3 days old: past the 1-day retention, yet inside the clock-skew window so it is kept as sent.
    await _send(service, ALICE, [span(old, "old", start_ns=now - 3 * DAY_NS)])
    fresh = new_trace_id()
    await _send(service, ALICE, [span(fresh, f"s{i}", start_ns=now - i * 1000) for i in range(5)])
    result = await service.apply_retention()
    assert result["dropped_by_age"] == 1
    assert await service.store.count() == 5
    service.settings.max_spans = 3
    result = await service.apply_retention()
    assert result["dropped_by_size"] == 2
    names = sorted(r["name"] for r in await service.store.trace_spans(ALICE.tenant_id, fresh))
    assert names == ["s0", "s1", "s2"]  # the newest are kept


async def test_forwarding_to_a_tenant_otlp_endpoint(service: TelemetryService) -> None:
    received: list[ExportTraceServiceRequest] = []
    seen_headers: list[str] = []
    receiver = FastAPI()

    @receiver.post("/v1/traces")
    async def collect(request: Request) -> Response:
        req = ExportTraceServiceRequest()
        req.ParseFromString(await request.body())
        received.append(req)
        seen_headers.append(request.headers.get("authorization", ""))
        return Response(b"", media_type=PB)

    with serve(receiver) as url:
        await service.set_exporter(ALICE, f"{url}/v1/traces", {"authorization": "Bearer lf"}, True)
        assert service.exporter_view(ALICE.tenant_id)["header_names"] == ["authorization"]
        tid = new_trace_id()
        await _send(service, ALICE, agent_run(tid))
        await _send(service, BOB, agent_run(new_trace_id()))  # Bob has no exporter
        await service.flush()
        for _ in range(200):
            if received:
                break
            await asyncio.sleep(0.02)
        await service.forwarder._queue.join()
    spans = [s for r in received for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert {s.trace_id.hex() for s in spans} == {tid}
    assert len(spans) == 4 and seen_headers[0] == "Bearer lf"
    chat = next(s for s in spans if s.name.startswith("chat"))
    attrs = {kv.key: kv.value for kv in chat.attributes}
    assert attrs["gen_ai.usage.input_tokens"].int_value == 1000
