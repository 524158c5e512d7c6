"""OTLP/HTTP ingest through the real app: encodings, auth, bad input, idempotency, overload."""

from __future__ import annotations

import base64
import gzip
import json

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.telemetry.spans import agent_run, json_request, new_span_id, new_trace_id, protobuf_request, span

PB = {"content-type": "application/x-protobuf"}


async def _flush(platform) -> None:  # type: ignore[no-untyped-def]
    await platform.services["telemetry"].flush()


async def test_protobuf_ingest_builds_the_trace(client: httpx.AsyncClient, platform) -> None:  # type: ignore[no-untyped-def]
    tid = new_trace_id()
    resp = await client.post("/v1/traces", content=protobuf_request(agent_run(tid)), headers=PB)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/x-protobuf"
    out = ExportTraceServiceResponse()
    out.ParseFromString(resp.content)
    assert out.partial_success.rejected_spans == 0

    trace = (await client.get(f"/api/traces/{tid}")).json()
    assert trace["span_count"] == 4
    [root] = trace["spans"]
    assert root["kind"] == "agent" and root["agent"] == "planner"
    assert root["usage"] is None  # usage only on model calls, never on the parent
    kinds = [c["kind"] for c in root["children"]]
    assert kinds == ["model", "tool", "model"]
    summary = trace["summary"]
    assert summary["input_tokens"] == 2500 and summary["output_tokens"] == 300
    assert summary["cached_tokens"] == 1000
    assert summary["cost_usd"] > 0 and summary["unpriced_calls"] == 0
    chain = trace["decision_chain"]
    assert [s["kind"] for s in chain] == ["model", "tool", "model"]
    assert chain[0]["tools_chosen"] == ["get_weather"]
    assert chain[1]["tool_name"] == "get_weather" and chain[1]["tool_call_id"] == "call_1"


async def test_json_and_gzip_and_langfuse_alias(client: httpx.AsyncClient) -> None:
    tid = new_trace_id()
    body = json.dumps(json_request(agent_run(tid))).encode()
    resp = await client.post("/api/public/otel/v1/traces", content=gzip.compress(body),
                             headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {}
    trace = (await client.get(f"/api/traces/{tid}")).json()
    assert trace["span_count"] == 4
    assert trace["summary"]["input_tokens"] == 2500


async def test_basic_auth_with_key_as_password(anon_client: httpx.AsyncClient, make_key) -> None:  # type: ignore[no-untyped-def]
    key = await make_key(["telemetry:write", "telemetry:read"], tenant="acme")
    basic = base64.b64encode(f"pk-lf-anything:{key}".encode()).decode()
    tid = new_trace_id()
    resp = await anon_client.post("/api/public/otel/v1/traces", content=protobuf_request(agent_run(tid)),
                                  headers={**PB, "authorization": f"Basic {basic}"})
    assert resp.status_code == 200, resp.text
    got = await anon_client.get(f"/api/traces/{tid}", headers={"authorization": f"Bearer {key}"})
    assert got.status_code == 200 and got.json()["span_count"] == 4


async def test_auth_and_scope_are_enforced(anon_client: httpx.AsyncClient, make_key) -> None:  # type: ignore[no-untyped-def]
    body = protobuf_request(agent_run(new_trace_id()))
    assert (await anon_client.post("/v1/traces", content=body, headers=PB)).status_code == 401
    reader = await make_key(["telemetry:read"])
    resp = await anon_client.post("/v1/traces", content=body, headers={**PB, "authorization": f"Bearer {reader}"})
    assert resp.status_code == 403
    writer = await make_key(["telemetry:write"])
    resp = await anon_client.get("/api/traces", headers={"authorization": f"Bearer {writer}"})
    assert resp.status_code == 403


async def test_tenants_are_isolated(anon_client: httpx.AsyncClient, make_key) -> None:  # type: ignore[no-untyped-def]
    a = await make_key(["telemetry:write", "telemetry:read"], tenant="tenant-a")
    b = await make_key(["telemetry:write", "telemetry:read"], tenant="tenant-b")
    tid = new_trace_id()
    resp = await anon_client.post("/v1/traces", content=protobuf_request(agent_run(tid, session="s-a")),
                                  headers={**PB, "authorization": f"Bearer {a}"})
    assert resp.status_code == 200
    hb = {"authorization": f"Bearer {b}"}
    assert (await anon_client.get(f"/api/traces/{tid}", headers=hb)).status_code == 404
    assert (await anon_client.get("/api/sessions/s-a", headers=hb)).status_code == 404
    assert (await anon_client.get("/api/traces", headers=hb)).json()["traces"] == []
    ha = {"authorization": f"Bearer {a}"}
    listed = (await anon_client.get("/api/traces", headers=ha)).json()["traces"]
    assert [t["trace_id"] for t in listed] == [tid]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"\xff\xff\xff\xff garbage", PB, 400),
        (b"{not json", {"content-type": "application/json"}, 400),
        (b'{"resourceSpans": 5}', {"content-type": "application/json"}, 400),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0123456789abcdef0123456789abcdef", '
         b'"spanId": "0123456789abcdef", "attributes": [{"key": 1}]}]}]}]}',
         {"content-type": "application/json"}, 400),
        (b"spans", {"content-type": "text/plain"}, 415),
        (b"spans", {}, 415),
        (b"not gzip at all", {**PB, "content-encoding": "gzip"}, 400),
        (b"x", {**PB, "content-encoding": "br"}, 415),
    ],
)
async def test_bad_input_is_a_problem_not_a_500(client: httpx.AsyncClient, body: bytes,
                                                 headers: dict[str, str], status: int) -> None:
    resp = await client.post("/v1/traces", content=body, headers=headers)
    assert resp.status_code == status, resp.text
    problem = resp.json()
    assert problem["status"] == status and problem["detail"]


async def test_gzip_bomb_is_refused(client: httpx.AsyncClient, platform) -> None:  # type: ignore[no-untyped-def]
    limit = platform.services["telemetry"].settings.max_request_bytes
    bomb = gzip.compress(b"\0" * (limit + 1024))
    resp = await client.post("/v1/traces", content=bomb, headers={**PB, "content-encoding": "gzip"})
    assert resp.status_code == 413


async def test_invalid_span_ids_are_a_partial_success(client: httpx.AsyncClient) -> None:
    tid = new_trace_id()
    good = span(tid, "ok span")
    doc = json_request([good])
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"].append(
        {"traceId": "00" * 16, "spanId": "zz", "name": "broken"})
    resp = await client.post("/v1/traces", json=doc)
    assert resp.status_code == 200
    assert resp.json()["partialSuccess"]["rejectedSpans"] == 1
    assert (await client.get(f"/api/traces/{tid}")).json()["span_count"] == 1


async def test_huge_attributes_are_truncated_and_flagged(client: httpx.AsyncClient, platform) -> None:  # type: ignore[no-untyped-def]
    caps = platform.services["telemetry"].settings
    tid = new_trace_id()
    attrs = {"big": "x" * (caps.max_attribute_chars * 10)}
    attrs.update({f"k{i}": i for i in range(caps.max_attributes + 50)})
    resp = await client.post("/v1/traces", content=protobuf_request([span(tid, "fat", attrs)]), headers=PB)
    assert resp.status_code == 200
    [root] = (await client.get(f"/api/traces/{tid}")).json()["spans"]
    assert "truncated" in root["flags"] and "attributes_dropped" in root["flags"]
    assert len(root["attributes"]["big"]) == caps.max_attribute_chars
    assert "big" in root["attributes"]["garrison.truncated_keys"]
    assert len(root["attributes"]) <= caps.max_attributes + 1


async def test_duplicates_are_idempotent(client: httpx.AsyncClient, platform) -> None:  # type: ignore[no-untyped-def]
    tid = new_trace_id()
    body = protobuf_request(agent_run(tid))
    for _ in range(3):
        assert (await client.post("/v1/traces", content=body, headers=PB)).status_code == 200
    trace = (await client.get(f"/api/traces/{tid}")).json()
    assert trace["span_count"] == 4
    usage = (await client.get("/api/telemetry/usage")).json()
    calls = sum(d["calls"] for d in usage["cost_by_model_by_day"])
    assert calls == 2  # the rollup counted each model call once


async def test_orphans_and_clock_skew_are_kept_and_flagged(client: httpx.AsyncClient) -> None:
    tid = new_trace_id()
    orphan = span(tid, "child of nobody", parent=new_span_id())
    skewed = span(tid, "from the future", start_ns=4_000_000_000 * 10**9)
    backwards = span(tid, "ends before it starts", duration_ms=-5)
    resp = await client.post("/v1/traces", content=protobuf_request([orphan, skewed, backwards]), headers=PB)
    assert resp.status_code == 200
    trace = (await client.get(f"/api/traces/{tid}")).json()
    by_name = {s["name"]: s for s in trace["spans"]}
    assert by_name["child of nobody"]["orphan"] is True and trace["orphan_count"] == 1
    assert "clock_skew" in by_name["from the future"]["flags"]
    assert by_name["from the future"]["attributes"]["garrison.original_start_ns"] == 4_000_000_000 * 10**9
    assert "clock_skew" in by_name["ends before it starts"]["flags"]
    assert by_name["ends before it starts"]["duration_ms"] == 0


async def test_full_queue_answers_503_with_retry_after(client: httpx.AsyncClient, platform) -> None:  # type: ignore[no-untyped-def]
    service = platform.services["telemetry"]
    service.queue.pending = service.queue.max_spans  # the writer is behind by a whole queue
    try:
        resp = await client.post("/v1/traces", content=protobuf_request(agent_run(new_trace_id())), headers=PB)
    finally:
        service.queue.pending = 0
    assert resp.status_code == 503
    assert int(resp.headers["retry-after"]) >= 1
    resp = await client.post("/v1/traces", content=protobuf_request(agent_run(new_trace_id())), headers=PB)
    assert resp.status_code == 200


async def test_logs_endpoint_accepts_genai_events(client: httpx.AsyncClient) -> None:
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{
        "timeUnixNano": "1", "traceId": new_trace_id(), "spanId": new_span_id(),
        "eventName": "gen_ai.user.message", "body": {"stringValue": "hello"},
    }]}]}]}
    assert (await client.post("/v1/logs", json=doc)).status_code == 200
    assert (await client.post("/v1/logs", content=b"\x01\x02", headers=PB)).status_code == 400
