"""The gateway end to end: the real `mcp` client -> garrison over a socket -> garrison's fixture
MCP server over a socket, under protocol revisions 2025-11-25 (sessions) and 2026-07-28 (stateless)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from sqlalchemy import select

from garrison.tools.tables import tools_upstreams
from tests.tools.servers import fixture_mcp, serve_in_loop

MODES = ["legacy", "2026-07-28"]  # legacy = the 2025-11-25 initialize handshake


@pytest.fixture(scope="module")
def upstream_url():
    with fixture_mcp() as url:
        yield url


@pytest.fixture
async def base_url(app) -> AsyncIterator[str]:
    async with serve_in_loop(app) as url:
        yield url


@asynccontextmanager
async def mcp_client(url: str, key: str | None, mode: str = "legacy", **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, **kw) as c:
            yield c


async def setup_gateway(client, upstream_url, *, vs="agents", timeout_s=None, rate=None, auth=None, tools=None):
    body = {"name": "fixture", "url": upstream_url,
            "auth": auth or {"kind": "bearer", "secret": "upstream-secret"}}
    if timeout_s:
        body["timeout_s"] = timeout_s
    r = await client.post("/api/tools/upstreams", json=body)
    assert r.status_code == 201, r.text
    r = await client.post("/api/tools/virtual-servers", json={
        "name": vs, "tools": tools or [{"upstream": "fixture", "tool": "*"}], "rate_limit_per_min": rate})
    assert r.status_code == 201, r.text


def text(result) -> str:
    return "".join(c.text for c in result.content if c.type == "text")


@pytest.mark.parametrize("mode", MODES)
async def test_tools_through_the_gateway(client, platform, base_url, admin_key, upstream_url, mode):
    await setup_gateway(client, upstream_url)
    fast = platform.services["tools"].gateway.fast
    async with mcp_client(f"{base_url}/mcp/agents", admin_key, mode) as mcp:
        names = {t.name for t in (await mcp.list_tools()).tools}
        assert {"fixture__add", "fixture__echo", "fixture__whoami", "search_tools"} <= names
        result = await mcp.call_tool("fixture__add", {"a": 2, "b": 40})
        assert not result.is_error and text(result) == "42"
        who = await mcp.call_tool("fixture__whoami", {})
        # garrison's own outbound credential reached the upstream; the caller's key did not.
        assert who.structured_content["authorization"] == "Bearer upstream-secret"
        assert admin_key not in text(who)
        failed = await mcp.call_tool("fixture__fail", {"message": "nope"})
        assert failed.is_error and "nope" in text(failed)
        found = await mcp.call_tool("search_tools", {"query": "add integers"})
        assert found.structured_content["tools"][0]["name"] == "fixture__add"
        with pytest.raises(MCPError, match="no tool"):
            await mcp.call_tool("fixture__nope", {})
    # tools/call was answered by the lean JSON-RPC path, not only by the SDK's transport.
    assert fast.served >= 4


async def test_progress_and_logging_pass_through(client, base_url, admin_key, upstream_url):
    await setup_gateway(client, upstream_url)
    seen, logs = [], []

    async def on_progress(progress, total, message):
        seen.append((progress, total))

    async def on_log(params):
        logs.append(params.data)

    async with mcp_client(f"{base_url}/mcp/agents", admin_key, "legacy", logging_callback=on_log) as mcp:
        result = await mcp.call_tool("fixture__progress", {"steps": 3}, progress_callback=on_progress)
        assert text(result) == "3 steps"
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert logs == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]


async def test_one_upstream_session_per_downstream_session(client, platform, base_url, admin_key, upstream_url):
    await setup_gateway(client, upstream_url)
    pool = platform.services["tools"].pool
    async with mcp_client(f"{base_url}/mcp/agents", admin_key) as a, mcp_client(f"{base_url}/mcp/agents", admin_key) as b:
        await a.call_tool("fixture__echo", {"text": "a"})
        await b.call_tool("fixture__echo", {"text": "b"})
        await a.call_tool("fixture__echo", {"text": "a again"})
        sessions = {o for o in pool.owners() if o.startswith("s:")}
        assert len(sessions) == 2
    # Closing a downstream session (DELETE) closes its upstream session.
    import asyncio

    async with mcp_client(f"{base_url}/mcp/agents", admin_key) as lister:
        await lister.list_tools()
    gateway = platform.services["tools"].gateway
    for _ in range(100):
        if not any(o.startswith("s:") for o in pool.owners()) and not gateway._sessions:
            break
        await asyncio.sleep(0.05)
    assert not any(o.startswith("s:") for o in pool.owners())
    assert not gateway._sessions  # ended sessions are forgotten


async def test_inbound_auth(client, base_url, make_key, upstream_url):
    await setup_gateway(client, upstream_url)
    async with httpx.AsyncClient() as http:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        headers = {"Accept": "application/json, text/event-stream"}
        r = await http.post(f"{base_url}/mcp/agents", json=init, headers=headers)
        assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]
        reader = await make_key(["tools:read"])
        r = await http.post(f"{base_url}/mcp/agents", json=init, headers={**headers, "Authorization": f"Bearer {reader}"})
        assert r.status_code == 403
        caller = await make_key(["tools:call"], tenant="other")
        r = await http.post(f"{base_url}/mcp/agents", json=init, headers={**headers, "Authorization": f"Bearer {caller}"})
        assert r.status_code == 404  # another tenant's virtual server does not exist for this caller
        r = await http.post(f"{base_url}/mcp/agents", json=init,
                            headers={**headers, "Authorization": f"Bearer {caller}", "Origin": "https://evil.example"})
        assert r.status_code in (403, 404)


async def test_session_is_bound_to_its_caller_and_virtual_server(client, base_url, admin_key, make_key, upstream_url):
    await setup_gateway(client, upstream_url)
    r = await client.post("/api/tools/virtual-servers", json={"name": "second", "tools": []})
    assert r.status_code == 201
    other = await make_key(["tools:call"])
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{base_url}/mcp/agents", json=init, headers={**headers, "Authorization": f"Bearer {admin_key}"})
        sid = r.headers["mcp-session-id"]
        ping = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        r = await http.post(f"{base_url}/mcp/agents", json=ping,
                            headers={**headers, "Authorization": f"Bearer {other}", "Mcp-Session-Id": sid})
        assert r.status_code == 404
        r = await http.post(f"{base_url}/mcp/second", json=ping,
                            headers={**headers, "Authorization": f"Bearer {admin_key}", "Mcp-Session-Id": sid})
        assert r.status_code == 404


async def test_credentials_are_encrypted_at_rest(client, platform, upstream_url):
    await setup_gateway(client, upstream_url)
    async with platform.db.engine.connect() as conn:
        stored = (await conn.execute(select(tools_upstreams.c.auth_secret))).scalar_one()
    assert "upstream-secret" not in stored
    r = await client.get("/api/tools/upstreams/fixture")
    assert "secret" not in r.text.replace("auth_kind", "")


async def test_api_key_header_credential(client, base_url, admin_key, upstream_url):
    await setup_gateway(client, upstream_url, auth={"kind": "api_key_header", "header": "X-Api-Key", "secret": "k-1"})
    async with mcp_client(f"{base_url}/mcp/agents", admin_key) as mcp:
        who = await mcp.call_tool("fixture__whoami", {})
    assert who.structured_content == {"authorization": None, "x_api_key": "k-1"}
