"""What the gateway passes between caller and upstream: trace context, cancellation, and
retries of idempotent tools only; the real `mcp` client -> garrison -> upstream servers on sockets."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace

from garrison.tools import fixture_server
from garrison.tools.upstream import UpstreamConnection
from tests.tools.servers import dropping_proxy, failing_upstream, fixture_mcp
from tests.tools.test_gateway import MODES, base_url, mcp_client, setup_gateway, text, upstream_url  # noqa: F401

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@pytest.fixture
def db_url(tmp_path):
    """The call path runs from memory; its store side is covered on both engines in test_gateway."""
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


def _walk(spans: list[dict]) -> list[dict]:
    out = []
    for s in spans:
        out.append(s)
        out.extend(_walk(s.get("children") or []))
    return out


async def _gateway_spans(client, platform, trace_id: str, name: str, count: int) -> list[dict]:
    """garrison's own spans of that name (the SDK's server span, on its path, has the same name)."""
    telemetry = platform.services["telemetry"]
    found: list[dict] = []
    for _ in range(100):  # spans travel through the exporter thread and the store's batcher
        await telemetry.flush()
        r = await client.get(f"/api/traces/{trace_id}")
        spans = _walk(r.json().get("spans", [])) if r.status_code == 200 else []
        found = [s for s in spans if s["name"] == name and "garrison.virtual_server" in s["attributes"]]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{count} spans {name!r} of trace {trace_id} never reached the trace store: {found}")


@pytest.mark.parametrize("mode", MODES)
async def test_trace_context_flows_from_caller_through_gateway_to_upstream(client, platform, base_url, admin_key,  # noqa: F811
                                                                           upstream_url, mode):  # noqa: F811
    await setup_gateway(client, upstream_url)
    # The caller's trace is current; the SDK client writes it into params._meta.traceparent.
    caller = trace.NonRecordingSpan(trace.SpanContext(
        int(TRACE_ID, 16), int(CALLER_SPAN, 16), is_remote=True, trace_flags=trace.TraceFlags(1),
        trace_state=trace.TraceState([("vendor", "1")])))
    async with mcp_client(f"{base_url}/mcp/agents", admin_key, mode) as mcp:
        with trace.use_span(caller):
            result = await mcp.call_tool("fixture__trace_context", {})
            again = await mcp.call_tool("fixture__trace_context", {})  # a session's later calls take the lean path
    assert again.structured_content["traceparent"].split("-")[1] == TRACE_ID
    seen = result.structured_content
    # The upstream got the caller's trace id, with the gateway's span as parent.
    _, trace_id, parent, _ = seen["traceparent"].split("-")
    assert trace_id == TRACE_ID and parent != CALLER_SPAN
    assert seen["tracestate"] == "vendor=1"
    spans = await _gateway_spans(client, platform, TRACE_ID, "tools/call fixture__trace_context", 2)
    for span in spans:
        attrs = span["attributes"]
        assert attrs["mcp.method.name"] == "tools/call"
        assert attrs["gen_ai.operation.name"] == "execute_tool"
        assert attrs["gen_ai.tool.name"] == "fixture__trace_context"
        assert attrs["garrison.tenant_id"] == platform.identity.default_tenant_id
        assert ("mcp.session.id" in attrs) is (mode == "legacy")
    # One trace: a gateway span is the parent of the upstream's request.
    assert parent in {s["span_id"] for s in spans}


@pytest.mark.parametrize("mode", MODES)
async def test_cancelling_a_call_cancels_it_at_the_upstream(client, platform, base_url, admin_key,  # noqa: F811
                                                             upstream_url, mode):  # noqa: F811
    """2025-11-25: the caller's notifications/cancelled; 2026-07-28: the caller closes the stream."""
    await setup_gateway(client, upstream_url)
    label = f"cancel-{mode}"
    fast = platform.services["tools"].gateway.fast
    async with mcp_client(f"{base_url}/mcp/agents", admin_key, mode) as mcp:
        await mcp.list_tools()  # after which the session's calls take the lean path
        served = fast.served
        call = asyncio.create_task(mcp.call_tool("fixture__wait", {"seconds": 30, "label": label}))
        for _ in range(200):
            if (label, "started") in fixture_server.EVENTS:
                break
            await asyncio.sleep(0.05)
        assert (label, "started") in fixture_server.EVENTS
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(200):
            if (label, "cancelled") in fixture_server.EVENTS:
                break
            await asyncio.sleep(0.05)
        assert (label, "cancelled") in fixture_server.EVENTS
        assert fast.served == served + 1 and not fast.inflight
        # The session goes on working after a cancelled call.
        assert text(await mcp.call_tool("fixture__echo", {"text": "still here"})) == "still here"
    assert (label, "finished") not in fixture_server.EVENTS


async def test_legacy_upstream_gets_notifications_cancelled():
    """On a 2025-11-25 upstream session the cancellation is a notifications/cancelled message."""
    with fixture_mcp() as url:
        conn = UpstreamConnection(url, {}, connect_timeout_s=10, mode="legacy")
        await conn.start()
        try:
            assert conn.client is not None and conn.client.session.protocol_version == "2025-11-25"
            call = asyncio.create_task(conn.call_tool_raw("wait", {"seconds": 30, "label": "legacy-up"}))
            for _ in range(200):
                if ("legacy-up", "started") in fixture_server.EVENTS:
                    break
                await asyncio.sleep(0.05)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            for _ in range(200):
                if ("legacy-up", "cancelled") in fixture_server.EVENTS:
                    break
                await asyncio.sleep(0.05)
            assert ("legacy-up", "cancelled") in fixture_server.EVENTS
        finally:
            await conn.close()


async def test_only_idempotent_tools_are_retried_on_5xx(client, base_url, admin_key):  # noqa: F811
    with failing_upstream(fail_first={"echo": 1, "add": 1}, status=503) as (url, attempts):
        r = await client.post("/api/tools/upstreams", json={"name": "fixture", "url": url,
                                                             "idempotent_tools": ["echo"]})
        assert r.status_code == 201, r.text
        await client.post("/api/tools/virtual-servers", json={"name": "agents", "tools": [{"upstream": "fixture"}]})
        async with mcp_client(f"{base_url}/mcp/agents", admin_key) as mcp:
            echoed = await mcp.call_tool("fixture__echo", {"text": "again"})
            added = await mcp.call_tool("fixture__add", {"a": 1, "b": 2})
    assert not echoed.is_error and text(echoed) == "again"
    assert attempts["echo"] == 2  # failed once with 503, sent again
    assert added.is_error and "503" in text(added)
    assert attempts["add"] == 1  # not marked idempotent: never sent twice


async def test_only_idempotent_tools_are_retried_on_connection_error(client, base_url, admin_key,  # noqa: F811
                                                                     upstream_url):  # noqa: F811
    with dropping_proxy(upstream_url, drop_first={"echo": 1, "add": 1}) as (url, dropped):
        r = await client.post("/api/tools/upstreams", json={"name": "fixture", "url": url,
                                                             "idempotent_tools": ["echo"]})
        assert r.status_code == 201, r.text
        await client.post("/api/tools/virtual-servers", json={"name": "agents", "tools": [{"upstream": "fixture"}]})
        async with mcp_client(f"{base_url}/mcp/agents", admin_key) as mcp:
            echoed = await mcp.call_tool("fixture__echo", {"text": "through"})
            added = await mcp.call_tool("fixture__add", {"a": 1, "b": 2})
            assert text(await mcp.call_tool("fixture__add", {"a": 1, "b": 2})) == "3"  # the next call reconnects
    assert dropped == {"echo": 1, "add": 1}
    assert not echoed.is_error and text(echoed) == "through"
    assert added.is_error and "failed" in text(added)


async def test_mcp_param_headers_are_sent_after_listing_the_tool():
    """A 2026-07-28 tool with an x-mcp-header parameter: the first call, on a connection that
    never listed it, is refused (header mismatch); the tool is listed and the call sent again."""
    with fixture_mcp() as url:
        conn = UpstreamConnection(url, {}, connect_timeout_s=10)
        await conn.start()
        listed = []
        list_tools = conn.list_tools

        async def counting() -> list:
            listed.append(1)
            return await list_tools()

        conn.list_tools = counting  # type: ignore[method-assign]
        try:
            assert conn.client is not None and conn.client.session.protocol_version == "2026-07-28"
            first = await conn.call_tool_raw("region", {"region": "eu"})
            second = await conn.call_tool_raw("region", {"region": "us"})
        finally:
            await conn.close()
    assert first["structuredContent"] == {"result": "eu"} and second["structuredContent"] == {"result": "us"}
    assert listed == [1]  # listed once, after the refusal; the second call carried the header at once


async def test_mcp_param_tool_through_the_gateway(client, base_url, admin_key, upstream_url):  # noqa: F811
    await setup_gateway(client, upstream_url)
    for mode in MODES:
        async with mcp_client(f"{base_url}/mcp/agents", admin_key, mode) as mcp:
            await mcp.list_tools()
            assert text(await mcp.call_tool("fixture__region", {"region": "eu"})) == "eu"
