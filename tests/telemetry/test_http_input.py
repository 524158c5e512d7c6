"""HTTP-level behaviour that does not depend on the store engine (SQLite only, to keep CI short):
authentication and scopes, bad and hostile input, caps, overload, validation, metrics."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.telemetry.spans import agent_run, json_request, new_span_id, new_trace_id, protobuf_request, span

PB = {"content-type": "application/x-protobuf"}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


async def test_auth_and_scope_are_enforced(anon_client: httpx.AsyncClient, make_key) -> None:  # type: ignore[no-untyped-def]
    body = protobuf_request(agent_run(new_trace_id()))
    assert (await anon_client.post("/v1/traces", content=body, headers=PB)).status_code == 401
    reader = await make_key(["telemetry:read"])
    resp = await anon_client.post("/v1/traces", content=body, headers={**PB, "authorization": f"Bearer {reader}"})
    assert resp.status_code == 403
    writer = await make_key(["telemetry:write"])
    resp = await anon_client.get("/api/traces", headers={"authorization": f"Bearer {writer}"})
    assert resp.status_code == 403


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


async def test_mislabelled_truncated_and_bad_id_protobuf(client: httpx.AsyncClient) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    tid = new_trace_id()
    good = protobuf_request(agent_run(tid))
    # Right bytes, wrong label (and the other way round): a 400 that names the decoding problem.
    resp = await client.post("/v1/traces", content=good, headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["detail"]
    resp = await client.post("/v1/traces", content=b'{"resourceSpans": []}', headers=PB)
    assert resp.status_code == 400 and resp.json()["detail"]
    # Cut off mid-message.
    resp = await client.post("/v1/traces", content=good[: len(good) // 2], headers=PB)
    assert resp.status_code == 400
    assert (await client.get(f"/api/traces/{tid}")).status_code == 404  # nothing of it was stored
    # Well-formed protobuf whose ids are unusable: those spans alone are refused, in a protobuf answer.
    req = ExportTraceServiceRequest()
    req.ParseFromString(protobuf_request(agent_run(tid)))
    spans = req.resource_spans[0].scope_spans[0].spans
    spans[1].trace_id = b"\x01" * 5
    spans[2].span_id = b""
    spans[3].trace_id = b"\x00" * 16
    resp = await client.post("/v1/traces", content=req.SerializeToString(), headers=PB)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse()
    answer.ParseFromString(resp.content)
    assert answer.partial_success.rejected_spans == 3 and answer.partial_success.error_message
    assert (await client.get(f"/api/traces/{tid}")).json()["span_count"] == 1


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


async def test_huge_names_resources_and_events_are_capped_and_flagged(client: httpx.AsyncClient,  # type: ignore[no-untyped-def]
                                                                     platform) -> None:
    caps = platform.services["telemetry"].settings
    tid = new_trace_id()
    fat = span(tid, "n" * 5000)
    fat["events"] = [("exception", {"exception.stacktrace": "s" * (caps.max_attribute_chars * 4)})] + [
        (f"e{i}", {}) for i in range(caps.max_events + 10)]
    resource = {f"host.label{i}": "r" * 3000 for i in range(40)}
    body = protobuf_request([fat], resource=resource)
    assert len(body) > 100_000
    resp = await client.post("/v1/traces", content=body, headers=PB)
    assert resp.status_code == 200, resp.text
    [stored] = (await client.get(f"/api/traces/{tid}")).json()["spans"]
    assert len(stored["name"]) == 256
    assert {"truncated", "events_dropped", "attributes_dropped"} <= set(stored["flags"])
    truncated = stored["attributes"]["garrison.truncated_keys"]
    assert "span.name" in truncated and "event:exception:exception.stacktrace" in truncated
    assert any(k.startswith("resource:") for k in truncated)
    assert len(stored["events"]) == caps.max_events
    assert len(stored["events"][0]["attributes"]["exception.stacktrace"]) == caps.max_attribute_chars
    # The stored resource is capped, and still a JSON object (a cut string would not parse).
    tenant = (await platform.identity.tenant_by_name("default"))["id"]
    [row] = await platform.services["telemetry"].store.trace_spans(tenant, tid)
    assert len(row["resource"]) <= caps.max_attribute_chars
    kept = json.loads(row["resource"])
    assert kept["service.name"] == "agent-app" and 0 < len(kept) < 41


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
    assert service.decoding == 0  # slots are given back
    service.decoding = service.settings.max_concurrent_decodes  # every decoding slot is taken
    try:
        resp = await client.post("/v1/traces", content=protobuf_request(agent_run(new_trace_id())), headers=PB)
    finally:
        service.decoding = 0
    assert resp.status_code == 503 and resp.headers["retry-after"]


async def test_logs_endpoint_accepts_genai_events(client: httpx.AsyncClient) -> None:
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{
        "timeUnixNano": "1", "traceId": new_trace_id(), "spanId": new_span_id(),
        "eventName": "gen_ai.user.message", "body": {"stringValue": "hello"},
    }]}]}]}
    assert (await client.post("/v1/logs", json=doc)).status_code == 200
    assert (await client.post("/v1/logs", content=b"\x01\x02", headers=PB)).status_code == 400


async def test_exporter_api_validates_and_audits(client: httpx.AsyncClient, platform) -> None:  # type: ignore[no-untyped-def]
    assert (await client.get("/api/telemetry/exporter")).status_code == 404
    bad = await client.put("/api/telemetry/exporter", json={"endpoint": "file:///etc/passwd"})
    assert bad.status_code == 422
    bad = await client.put("/api/telemetry/exporter", json={"endpoint": "http://x/v1/traces",
                                                            "headers": {"bad name": "v"}})
    assert bad.status_code == 422
    for body in ({"endpoint": "http://x\x00/v1/traces"}, {"endpoint": "http://x/v1/traces", "headers": {"k": "v\x00"}}):
        bad = await client.put("/api/telemetry/exporter", json=body)  # PostgreSQL text cannot hold NUL
        assert bad.status_code == 422, bad.text
    ok = await client.put("/api/telemetry/exporter", json={"endpoint": "http://127.0.0.1:9/v1/traces",
                                                           "headers": {"x-api-key": "secret"}, "enabled": False})
    assert ok.status_code == 200 and ok.json() == {"endpoint": "http://127.0.0.1:9/v1/traces", "enabled": False,
                                                   "include_content": False, "content_captured": False,
                                                   "header_names": ["x-api-key"]}
    assert "secret" not in (await client.get("/api/telemetry/exporter")).text
    assert (await client.delete("/api/telemetry/exporter")).status_code == 204
    assert (await client.delete("/api/telemetry/exporter")).status_code == 404
    await platform.audit.flush()
    actions = [e["action"] for e in await platform.audit.tail(50)]
    assert "telemetry:exporter.set" in actions and "telemetry:exporter.delete" in actions


async def test_query_input_is_validated(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/traces/not-a-trace-id")).status_code == 400
    assert (await client.get(f"/api/traces/{new_trace_id()}")).status_code == 404
    assert (await client.get("/api/traces", params={"status": "weird"})).status_code == 422
    assert (await client.get("/api/traces", params={"limit": 10_000})).status_code == 422
    assert (await client.get("/api/traces", params={"attr": "novalue"})).status_code == 400
    assert (await client.get("/api/traces", params={"cursor": "!!!"})).status_code == 400
    assert (await client.get("/api/traces", params={"min_cost_usd": -1})).status_code == 422
    assert (await client.get("/api/sessions/" + "x" * 300)).status_code == 400
    since = datetime.now(UTC).isoformat()
    resp = await client.get("/api/telemetry/usage", params={"since": since, "until": "2000-01-01T00:00:00Z"})
    assert resp.status_code == 400


async def test_metrics_expose_ingest_and_gen_ai(client: httpx.AsyncClient) -> None:
    await client.post("/v1/traces", content=protobuf_request(agent_run(new_trace_id())),
                      headers=PB)
    text = (await client.get("/metrics")).text
    assert "garrison_telemetry_spans_stored_total" in text
    assert 'garrison_gen_ai_client_token_usage_total{model="gpt-4o-mini",provider="openai",type="input"}' in text
    assert 'garrison_gen_ai_client_token_usage_total{model="gpt-4o-mini",provider="openai",type="output"}' in text
    assert ('garrison_gen_ai_client_operation_duration_seconds_count{model="gpt-4o-mini",operation="chat",'
            'provider="openai"}') in text

