"""Forwarding to a tenant's OTLP endpoint: a fake OTLP/HTTP receiver decoding protobuf with
opentelemetry-proto over a real socket. Content goes along only when captured and the
tenant asked; spans wait out a receiver outage; a full forwarding queue drops the
oldest spans and counts them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client import REGISTRY

from garrison.core.principal import Principal
from garrison.db import Database
from garrison.db.migrate import upgrade
from garrison.telemetry.config import TelemetrySettings
from garrison.telemetry.service import TelemetryService
from tests.telemetry.live import free_port, serve
from tests.telemetry.spans import agent_run, new_trace_id, protobuf_request

PB = "application/x-protobuf"
ALICE = Principal(id="prn_a", tenant_id="ten_a", kind="service", scopes=frozenset())
BOB = Principal(id="prn_b", tenant_id="ten_b", kind="service", scopes=frozenset())


class Receiver:
    """An OTLP/HTTP traces receiver: protobuf in, protobuf out; can refuse its first requests."""

    def __init__(self, refuse_first: int = 0) -> None:
        self.requests: list[tuple[dict[str, str], ExportTraceServiceRequest]] = []
        self.refused = 0
        self._refuse_first = refuse_first
        self._lock = threading.Lock()
        self.app = FastAPI()
        self.app.post("/v1/traces")(self._collect)

    async def _collect(self, request: Request) -> Response:
        if request.headers.get("content-type") != PB:
            return Response(status_code=415)
        with self._lock:
            if self.refused < self._refuse_first:
                self.refused += 1
                return Response(status_code=503, headers={"retry-after": "1"})
        req = ExportTraceServiceRequest()
        req.ParseFromString(await request.body())
        with self._lock:
            self.requests.append((dict(request.headers), req))
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type=PB)

    def spans(self) -> list[tuple[str, Any]]:
        """(authorization header, span) for every span received."""
        return [(headers.get("authorization", ""), s) for headers, r in self.requests
                for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]


def _metric(result: str) -> float:
    return REGISTRY.get_sample_value("garrison_telemetry_export_spans_total", {"result": result}) or 0.0


def _retries() -> float:
    return REGISTRY.get_sample_value("garrison_telemetry_export_retries_total") or 0.0


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[TelemetryService]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    svc = TelemetryService(db, TelemetrySettings(capture_content=True, export_retry_initial_s=0.05,
                                                 export_retry_max_s=0.3, export_batch_spans=3))
    await svc.start(self_tracing=False)
    try:
        yield svc
    finally:
        await svc.stop()
        await db.dispose()


async def _send(svc: TelemetryService, who: Principal, spans: list[dict]) -> None:  # type: ignore[type-arg]
    await svc.ingest_traces(who, protobuf_request(spans), PB, None)
    await svc.flush()


async def _until(cond: Any) -> None:
    for _ in range(1500):  # up to 30 s on a loaded machine
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in 30 s")


async def test_spans_wait_out_a_receiver_outage_and_carry_content_when_enabled(service: TelemetryService) -> None:
    port = free_port()  # nothing listens there yet: the receiver is down
    endpoint = f"http://127.0.0.1:{port}/v1/traces"
    await service.set_exporter(ALICE, endpoint, {"authorization": "Bearer alice"}, True, include_content=True)
    await service.set_exporter(BOB, endpoint, {"authorization": "Bearer bob"}, True, include_content=False)
    dropped0, retries0 = _metric("dropped"), _retries()
    t_alice, t_bob = new_trace_id(), new_trace_id()
    await _send(service, ALICE, agent_run(t_alice))
    await _send(service, BOB, agent_run(t_bob))
    await _until(lambda: _retries() >= retries0 + 2)  # both tenants tried and failed
    assert service.forwarder.pending() == 8

    receiver = Receiver(refuse_first=1)  # back up, and busy once more (503 with Retry-After)
    with serve(receiver.app, port=port):
        assert await service.forwarder.drain(30)
    assert receiver.refused == 1
    got = receiver.spans()
    assert sorted(s.trace_id.hex() for _, s in got) == sorted([t_alice] * 4 + [t_bob] * 4)
    assert len({s.span_id for _, s in got}) == 8  # each span once
    assert _metric("dropped") == dropped0

    def tool_attrs(trace_id: str) -> tuple[str, dict[str, Any]]:
        auth, tool = next((a, s) for a, s in got if s.trace_id.hex() == trace_id and s.name.startswith("execute_tool"))
        return auth, {kv.key: kv.value for kv in tool.attributes}

    auth, attrs = tool_attrs(t_alice)
    assert auth == "Bearer alice"
    assert attrs["gen_ai.tool.call.arguments"].string_value == '{"city": "Paris"}'  # content put back
    assert attrs["gen_ai.tool.name"].string_value == "get_weather"
    auth, attrs = tool_attrs(t_bob)
    assert auth == "Bearer bob"
    assert "gen_ai.tool.call.arguments" not in attrs  # Bob did not ask for content
    chat = next(s for _, s in got if s.trace_id.hex() == t_alice and s.name.startswith("chat"))
    assert {kv.key: kv.value for kv in chat.attributes}["gen_ai.usage.input_tokens"].int_value == 1000


async def test_content_stays_home_when_capture_is_off(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'off.db'}"
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    svc = TelemetryService(db, TelemetrySettings(capture_content=False))
    await svc.start(self_tracing=False)
    receiver = Receiver()
    try:
        with serve(receiver.app) as base:
            out = await svc.set_exporter(ALICE, f"{base}/v1/traces", {}, True, include_content=True)
            assert out["include_content"] is True and out["content_captured"] is False
            tid = new_trace_id()
            await _send(svc, ALICE, agent_run(tid))
            assert await svc.forwarder.drain(30)
    finally:
        await svc.stop()
        await db.dispose()
    got = receiver.spans()
    assert len(got) == 4
    assert all(kv.key != "gen_ai.tool.call.arguments" for _, s in got for kv in s.attributes)


async def test_a_full_forwarding_queue_drops_the_oldest_and_counts_them(service: TelemetryService) -> None:
    service.settings.export_queue_spans = 6
    port = free_port()
    await service.set_exporter(ALICE, f"http://127.0.0.1:{port}/v1/traces", {}, True)
    dropped0 = _metric("dropped")
    sent: set[bytes] = set()
    for _ in range(3):
        run = agent_run(new_trace_id())
        sent |= {bytes.fromhex(s["span_id"]) for s in run}
        await _send(service, ALICE, run)
    assert _metric("dropped") - dropped0 == 6  # 12 spans, room for 6
    assert service.forwarder.pending() == 6
    receiver = Receiver()
    with serve(receiver.app, port=port):
        assert await service.forwarder.drain(30)
    got = receiver.spans()
    assert len(got) == 6 and {s.span_id for _, s in got} <= sent
    assert _metric("dropped") - dropped0 == 6
