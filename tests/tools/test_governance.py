"""Policy, rate limits, timeouts, caps, breaker, hostile upstreams, audit: through the real client."""

from __future__ import annotations

import time

import pytest
from mcp.shared.exceptions import MCPError

from garrison.tools.catalogue import LocalTool
from tests.tools.servers import garbage_http, hanging_tcp
from tests.tools.test_gateway import base_url, mcp_client, setup_gateway, text, upstream_url  # noqa: F401


@pytest.fixture
def db_url(tmp_path):
    """The call path runs from memory; its store side is covered on both engines in test_gateway."""
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


async def test_cedar_policy_can_forbid_one_tool(client, platform, base_url, admin_key, upstream_url):  # noqa: F811
    await setup_gateway(client, upstream_url)
    platform.policy.write_file("20-no-add.cedar", 'forbid (principal, action == Garrison::Action::"tools:call", '
                                                  'resource) when { resource.tool == "add" };')
    async with mcp_client(f"{base_url}/mcp/agents", admin_key) as mcp:
        denied = await mcp.call_tool("fixture__add", {"a": 1, "b": 1})
        assert denied.is_error and "Forbidden" in text(denied)
        assert text(await mcp.call_tool("fixture__echo", {"text": "ok"})) == "ok"
    await platform.audit.flush()
    r = await client.get("/api/audit", params={"limit": 200})
    calls = [e for e in r.json() if e["action"] == "tools:call"]
    assert {e["decision"] for e in calls} == {"allow", "deny"}
    assert any(e["resource"] == "tool/agents/fixture__echo" and e["decision"] == "allow" for e in calls)


async def test_rate_limit_per_caller_and_virtual_server(client, base_url, admin_key, upstream_url):  # noqa: F811
    await setup_gateway(client, upstream_url, rate=2)
    async with mcp_client(f"{base_url}/mcp/agents", admin_key) as mcp:
        assert not (await mcp.call_tool("fixture__echo", {"text": "1"})).is_error
        assert not (await mcp.call_tool("fixture__echo", {"text": "2"})).is_error
        limited = await mcp.call_tool("fixture__echo", {"text": "3"})
        assert limited.is_error and "rate limit" in text(limited)


async def test_timeout_and_result_cap(client, platform, base_url, admin_key, upstream_url, monkeypatch):  # noqa: F811
    await setup_gateway(client, upstream_url, timeout_s=1.5)  # slack for a loaded machine; slow sleeps 5 s
    monkeypatch.setattr(platform.services["tools"].settings, "max_result_bytes", 4096)
    async with mcp_client(f"{base_url}/mcp/agents", admin_key) as mcp:
        slow = await mcp.call_tool("fixture__slow", {"seconds": 5})
        assert slow.is_error and "did not answer" in text(slow)
        huge = await mcp.call_tool("fixture__huge", {"size": 100_000})
        assert huge.is_error and "larger than" in text(huge)
        assert text(await mcp.call_tool("fixture__huge", {"size": 10})) == "x" * 10
        with pytest.raises(MCPError, match="no tool"):
            await mcp.call_tool("fixture__nope", {})


async def test_breaker_opens_after_repeated_failures(client, platform, base_url, admin_key):  # noqa: F811
    svc = platform.services["tools"]
    svc.settings.connect_timeout_s = 0.5
    svc.pool.connect_timeout_s = 0.5
    with hanging_tcp() as hang:
        r = await client.post("/api/tools/upstreams", json={"name": "hang", "url": hang})
        assert r.status_code == 201
        up = svc.upstreams[(next(iter(svc.upstreams))[0], "hang")]
        # The hanging upstream never lists tools: pretend a tool list was cached earlier.
        svc._tool_cache[up.id] = (time.monotonic(), [{"name": "t", "inputSchema": {"type": "object"}}])
        await client.post("/api/tools/virtual-servers", json={"name": "h", "tools": [{"upstream": "hang"}]})
        async with mcp_client(f"{base_url}/mcp/h", admin_key) as mcp:
            outcomes = [text(await mcp.call_tool("hang__t", {})) for _ in range(svc.breaker.failures + 1)]
    assert "no MCP handshake" in outcomes[0] or "cannot connect" in outcomes[0]
    assert "circuit open" in outcomes[-1]


async def test_unreachable_and_garbage_upstreams_do_not_break_listing(client, platform, base_url, admin_key,  # noqa: F811
                                                                       upstream_url):  # noqa: F811
    platform.services["tools"].pool.connect_timeout_s = 0.5
    with hanging_tcp() as hang, garbage_http() as garbage:
        for name, url in (("fixture", upstream_url), ("hang", hang), ("junk", garbage)):
            assert (await client.post("/api/tools/upstreams", json={"name": name, "url": url})).status_code == 201
        r = await client.post("/api/tools/virtual-servers", json={"name": "mixed", "tools": [
            {"upstream": "fixture"}, {"upstream": "hang"}, {"upstream": "junk"}]})
        assert r.status_code == 201
        async with mcp_client(f"{base_url}/mcp/mixed", admin_key) as mcp:
            names = {t.name for t in (await mcp.list_tools()).tools}
    assert "fixture__echo" in names and not any(n.startswith(("hang__", "junk__")) for n in names)


async def test_local_tools_of_another_layer(client, platform, base_url, admin_key):  # noqa: F811
    seen = []

    async def run_command(principal, arguments):
        seen.append((principal.tenant_id, arguments))
        return {"exit_code": 0, "stdout": arguments["command"]}

    platform.services["tools"].register_local_tools("sandbox", [LocalTool(
        "run_command", "Run a shell command in a sandbox", {"type": "object", "properties": {
            "command": {"type": "string"}}, "required": ["command"]}, run_command)])
    r = await client.post("/api/tools/virtual-servers", json={"name": "sbx", "tools": [
        {"upstream": "sandbox", "tool": "run_command", "alias": "shell"}]})
    assert r.status_code == 201
    async with mcp_client(f"{base_url}/mcp/sbx", admin_key, "2026-07-28") as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == {"shell", "search_tools"}
        result = await mcp.call_tool("shell", {"command": "echo hi"})
    assert result.structured_content == {"exit_code": 0, "stdout": "echo hi"}
    assert seen and seen[0][1] == {"command": "echo hi"}


BAD_VIRTUAL_SERVERS = [
    {"name": "x", "tools": [{"upstream": "missing"}]},
    {"name": "x", "tools": [{"upstream": "fixture", "tool": "*", "alias": "a"}]},
    {"name": "x", "tools": [{"upstream": "fixture", "tool": "echo", "alias": "a"},
                            {"upstream": "fixture", "tool": "add", "alias": "a"}]},
    {"name": "Bad Name", "tools": []},
    {"name": "x", "tools": [{"upstream": "fixture", "tool": "echo", "alias": "no spaces allowed"}]},
]
BAD_UPSTREAMS = [
    {"name": "UPPER", "url": "http://x"}, {"name": "ok", "url": "file:///etc/passwd"},
    {"name": "ok"}, {"name": "ok", "url": "http://x", "auth": {"kind": "bearer"}},
    {"name": "ok", "url": "http://x", "auth": {"kind": "api_key_header", "secret": "s"}},
    {"name": "ok", "url": "http://x", "auth": {"kind": "oauth_client_credentials", "secret": "s"}},
    {"name": "ok", "url": "http://x", "auth": {"kind": "magic"}},
]


async def test_bad_upstreams_and_virtual_servers_are_4xx(client, upstream_url):  # noqa: F811
    for body in BAD_UPSTREAMS:
        r = await client.post("/api/tools/upstreams", json=body)
        assert 400 <= r.status_code < 500, (body, r.text)
    await client.post("/api/tools/upstreams", json={"name": "fixture", "url": upstream_url})
    for body in BAD_VIRTUAL_SERVERS:
        r = await client.post("/api/tools/virtual-servers", json=body)
        assert 400 <= r.status_code < 500, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = await client.post("/api/tools/upstreams", json={"name": "fixture", "url": upstream_url})
    assert r.status_code == 409


async def test_management_needs_scopes(anon_client, app, make_key):
    import httpx

    assert (await anon_client.get("/api/tools/upstreams")).status_code == 401
    key = await make_key(["tools:call"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 headers={"Authorization": f"Bearer {key}"}) as c:
        assert (await c.post("/api/tools/upstreams", json={"name": "x", "url": "http://x"})).status_code == 403


async def test_oauth_client_credentials_outbound(client, base_url, admin_key, upstream_url):  # noqa: F811
    import base64

    from fastapi import FastAPI, Form, Header, HTTPException

    from tests.tools.servers import threaded

    issued = []
    token_app = FastAPI()

    @token_app.post("/token")
    async def token(grant_type: str = Form(), scope: str = Form(""), authorization: str = Header("")) -> dict:
        if base64.b64decode(authorization.removeprefix("Basic ")).decode() != "client-1:s3cret":
            raise HTTPException(401)
        issued.append((grant_type, scope))
        return {"access_token": f"tok-{len(issued)}", "token_type": "bearer", "expires_in": 3600}

    with threaded(token_app) as idp:
        await setup_gateway(client, upstream_url, auth={
            "kind": "oauth_client_credentials", "secret": "s3cret", "client_id": "client-1",
            "token_url": f"{idp}/token", "scope": "tools"})
        async with mcp_client(f"{base_url}/mcp/agents", admin_key) as mcp:
            first = await mcp.call_tool("fixture__whoami", {})
            second = await mcp.call_tool("fixture__whoami", {})
    assert first.structured_content["authorization"] == "Bearer tok-1"
    assert second.structured_content["authorization"] == "Bearer tok-1"  # cached until near expiry
    assert issued[0] == ("client_credentials", "tools")
