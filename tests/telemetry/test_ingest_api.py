"""OTLP/HTTP ingest through the real app: encodings, auth, bad input, idempotency, overload."""

from __future__ import annotations

import base64
import gzip
import json

import httpx
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


async def test_a_skewed_span_sent_again_is_still_one_span(client: httpx.AsyncClient) -> None:
    # A skewed span is filed under its arrival time, which differs on every send: the
    # duplicate must still be recognised by its ids (on PostgreSQL the time is in the key).
    tid = new_trace_id()
    body = protobuf_request([span(tid, "from the future", start_ns=4_000_000_000 * 10**9),
                             span(tid, "from long ago", start_ns=10**9)])
    for _ in range(3):
        assert (await client.post("/v1/traces", content=body, headers=PB)).status_code == 200
    trace = (await client.get(f"/api/traces/{tid}")).json()
    assert trace["span_count"] == 2
    assert all("clock_skew" in s["flags"] for s in trace["spans"])


async def test_nul_in_otlp_strings_is_stored_as_replacement_char(client: httpx.AsyncClient) -> None:
    # A NUL (legal in an OTLP string) failed the PostgreSQL write of the whole batch: 503 to the
    # sender, and the other spans written with it lost too. It is kept as U+FFFD instead.
    tid = new_trace_id()
    bad = span(tid, "tool\x00call", {"gen_ai.tool.name": "t\x00", "k\x00": "v\x00", "nested": ["a\x00"]})
    good = span(tid, "fine", {"gen_ai.tool.name": "ok"}, parent=bad["span_id"])
    resp = await client.post("/v1/traces", content=protobuf_request([bad, good], service="svc\x00"), headers=PB)
    assert resp.status_code == 200, resp.text
    trace = (await client.get(f"/api/traces/{tid}")).json()
    assert trace["span_count"] == 2
    [root] = trace["spans"]
    assert root["name"] == "tool\ufffdcall" and root["attributes"]["k\ufffd"] == "v\ufffd"
    found = await client.get("/api/traces", params={"attr": "k\ufffd=v\ufffd"})
    assert found.status_code == 200 and [t["trace_id"] for t in found.json()["traces"]] == [tid]
