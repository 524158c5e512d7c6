"""The issue's bad input for the gateway: upstreams that answer garbage or too much, tool
name collisions across upstreams, traversal in names, oversized bodies. Each is a clear
error (a 4xx, or a tool error result the agent can read), never a 500 or a broken session."""

from __future__ import annotations

import httpx
import pytest

from garrison.tools.naming import MAX_TOOL_NAME, exposed_name, valid_tool_name
from tests.tools.servers import failing_upstream, fixture_mcp
from tests.tools.test_gateway import base_url, mcp_client, setup_gateway, text, upstream_url  # noqa: F401

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def db_url(tmp_path):
    """The call path runs from memory; its store side is covered on both engines in test_gateway."""
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


GARBAGE = [
    (200, b"application/json", b"this is not JSON-RPC {", "not JSON"),
    (200, b"application/json", b'{"jsonrpc": "2.0", "id": "someone-else", "result": {"content": []}}', "not a tool result"),
    (200, b"application/json", b'{"jsonrpc": "2.0", "id": 1, "result": {"content": "not a list"}}', "not a tool result"),
    (200, b"text/event-stream", b"event: message\r\ndata: {broken\r\n\r\n", "not JSON"),
    (200, b"text/event-stream", b": only a comment, then the stream ends\r\n\r\n", "closed the stream"),
    (400, b"text/html", b"<html>bad</html>", "HTTP 400"),
]


@pytest.mark.parametrize(("status", "ctype", "body", "says"), GARBAGE)
async def test_garbage_answers_to_a_call_are_tool_errors(client, base_url, admin_key, status, ctype, body, says):  # noqa: F811
    with failing_upstream(fail_first={"echo": 1}, status=status, body=body, content_type=ctype) as (url, _):
        assert (await client.post("/api/tools/upstreams", json={"name": "fixture", "url": url})).status_code == 201
        await client.post("/api/tools/virtual-servers", json={"name": "agents", "tools": [{"upstream": "fixture"}]})
        async with mcp_client(f"{base_url}/mcp/agents", admin_key) as mcp:
            await mcp.list_tools()
            broken = await mcp.call_tool("fixture__echo", {"text": "x"})
            assert broken.is_error and says in text(broken), text(broken)
            # The gateway and the session survive it; the next call reaches the upstream.
            assert text(await mcp.call_tool("fixture__echo", {"text": "fine"})) == "fine"


async def test_same_tool_names_on_two_upstreams_stay_apart(client, base_url, admin_key):  # noqa: F811
    with fixture_mcp() as first, fixture_mcp() as second:
        for name, url in (("alpha", first), ("beta", second)):
            r = await client.post("/api/tools/upstreams", json={
                "name": name, "url": url, "auth": {"kind": "bearer", "secret": f"{name}-secret"}})
            assert r.status_code == 201
        r = await client.post("/api/tools/virtual-servers", json={"name": "both", "tools": [
            {"upstream": "alpha"}, {"upstream": "beta"}, {"upstream": "beta", "tool": "echo", "alias": "echo"}]})
        assert r.status_code == 201, r.text
        async with mcp_client(f"{base_url}/mcp/both", admin_key) as mcp:
            names = [t.name for t in (await mcp.list_tools()).tools]
            assert len(names) == len(set(names))
            assert {"alpha__echo", "beta__echo", "echo", "alpha__whoami", "beta__whoami"} <= set(names)
            for upstream in ("alpha", "beta"):  # each name reaches its own upstream, with its own credential
                who = await mcp.call_tool(f"{upstream}__whoami", {})
                assert who.structured_content["authorization"] == f"Bearer {upstream}-secret"


@pytest.mark.parametrize("alias", ["beta__echo", "search_tools", "x__y"])
async def test_an_alias_cannot_shadow_a_namespaced_tool(client, upstream_url, alias):  # noqa: F811
    await setup_gateway(client, upstream_url)
    r = await client.post("/api/tools/virtual-servers", json={"name": "shadow", "tools": [
        {"upstream": "fixture", "tool": "echo", "alias": alias}]})
    assert r.status_code == 400 and "reserved" in r.json()["detail"]


def test_long_and_odd_upstream_tool_names_become_valid_distinct_names():
    odd = ["x" * 300, "x" * 299 + "y", "has spaces/and:colons", "has spaces/and;colons", "ünïcode"]
    names = [exposed_name("up", t) for t in odd]
    assert all(valid_tool_name(n) and len(n) <= MAX_TOOL_NAME for n in names)
    assert len(set(names)) == len(names)


TRAVERSAL = ["/mcp/..%2F..%2Fetc%2Fpasswd", "/mcp/%2e%2e", "/api/tools/upstreams/..%2F..%2Fetc",
             "/api/tools/virtual-servers/..%2Fagents", "/api/tools/upstreams/%2e%2e%2f%2e%2e"]


@pytest.mark.parametrize("path", TRAVERSAL)
async def test_traversal_in_names_finds_nothing(client, upstream_url, path):  # noqa: F811
    await setup_gateway(client, upstream_url)
    r = await client.request("POST" if path.startswith("/mcp") else "GET", path, headers=MCP_HEADERS,
                             content=b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}')
    assert r.status_code in (400, 404), (path, r.status_code, r.text)


async def test_traversal_in_new_names_is_refused(client, upstream_url):  # noqa: F811
    r = await client.post("/api/tools/upstreams", json={"name": "../x", "url": upstream_url})
    assert r.status_code == 422
    r = await client.post("/api/tools/virtual-servers", json={"name": "../x", "tools": []})
    assert r.status_code == 422


async def test_oversized_mcp_body_is_413(client, platform, base_url, admin_key, upstream_url):  # noqa: F811
    await setup_gateway(client, upstream_url)
    cap = platform.services["tools"].settings.max_body_bytes
    big = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "fixture__echo", ' \
          b'"arguments": {"text": "' + b"x" * (cap + 10) + b'"}}}'
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.post(f"{base_url}/mcp/agents", content=big, headers={
            **MCP_HEADERS, "Authorization": f"Bearer {admin_key}", "MCP-Protocol-Version": "2026-07-28"})
    assert r.status_code == 413, r.text


async def test_text_the_database_cannot_hold_is_422_naming_the_field(client, upstream_url):  # noqa: F811
    # Found by schemathesis on PostgreSQL: a NUL in a virtual server's description reached the INSERT (500).
    assert (await client.post("/api/tools/upstreams", json={"name": "fixture", "url": upstream_url})).status_code == 201
    for body, field in (({"name": "vs", "description": "d\x00"}, "description"),
                        ({"name": "vs", "tools": [{"upstream": "fixture", "tool": "echo\x00"}]}, "tool"),
                        ({"name": "vs", "tools": [{"upstream": "fix\x00ture"}]}, "upstream")):
        r = await client.post("/api/tools/virtual-servers", json=body)
        assert r.status_code == 422 and field in r.text, (field, r.status_code, r.text)
    r = await client.post("/api/tools/upstreams", json={"name": "other", "url": upstream_url,
                                                        "idempotent_tools": ["a\x00"]})
    assert r.status_code == 422 and "idempotent_tools" in r.text, r.text
    assert (await client.get("/api/tools/virtual-servers")).json() == []
