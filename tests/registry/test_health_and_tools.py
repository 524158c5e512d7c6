"""Health checks against real servers, tool-list history and schema diffs, import/export."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.tools.servers import fixture_mcp, hanging_tcp


@pytest.fixture(scope="module")
def upstream_url():
    with fixture_mcp() as url:
        yield url


def server(name="com.example/weather", version="1.0.0", url="https://example.com/mcp", tools=None):
    doc = {"name": name, "description": "Weather", "version": version,
           "remotes": [{"type": "streamable-http", "url": url}]}
    if tools is not None:
        doc["_meta"] = {"dev.garrison/registry": {"tools": tools}}
    return doc


def tool(name, required=(), **props):
    return {"name": name, "inputSchema": {"type": "object", "properties": {k: {"type": v} for k, v in props.items()},
                                          "required": list(required)}}


async def test_health_checks_mark_and_unmark(client, platform, upstream_url, monkeypatch):
    registry = platform.services["registry"]
    monkeypatch.setattr(registry.settings, "health_timeout_s", 2.5)  # room for a loaded CI machine
    assert (await client.post("/v0.1/publish", json=server("com.example/good", url=upstream_url))).status_code == 200
    with hanging_tcp() as hang:
        assert (await client.post("/v0.1/publish", json=server("com.example/bad", url=hang))).status_code == 200
        for _ in range(registry.settings.unhealthy_after):
            results = (await client.post("/api/registry/health/check")).json()["results"]
    assert results["com.example/good@1.0.0"]["status"] == "healthy"
    assert results["com.example/good@1.0.0"]["toolCount"] >= 5
    assert results["com.example/bad@1.0.0"]["status"] == "unhealthy"
    assert registry.is_unhealthy("com.example/bad") and not registry.is_unhealthy("com.example/good")
    listing = (await client.get("/v0.1/servers", params={"search": "bad"})).json()["servers"][0]
    assert listing["_meta"]["dev.garrison/registry"]["health"]["status"] == "unhealthy"
    history = (await client.get(f"/api/registry/servers/{quote('com.example/good', safe='')}/health")).json()
    assert history["history"][0]["ok"] and history["history"][0]["tool_count"] >= 5
    tools = (await client.get(f"/api/registry/servers/{quote('com.example/good', safe='')}/versions/1.0.0/tools"))
    assert "echo" in {t["name"] for t in tools.json()["tools"]}


async def test_unhealthy_entry_leaves_the_gateway(client, platform, monkeypatch):
    registry = platform.services["registry"]
    monkeypatch.setattr(registry.settings, "health_timeout_s", 0.5)
    with hanging_tcp() as hang:
        await client.post("/v0.1/publish", json=server("com.example/bad", url=hang))
        r = await client.post("/api/tools/upstreams", json={"name": "bad", "from_registry": "com.example/bad"})
        assert r.status_code == 201 and r.json()["url"] == hang
        tools = platform.services["tools"]
        up = tools.upstreams[(next(iter(tools.upstreams))[0], "bad")]
        assert not tools.unhealthy(up)
        for _ in range(registry.settings.unhealthy_after):
            await client.post("/api/registry/health/check")
        assert tools.unhealthy(up)


async def test_breaking_tool_changes_need_a_major_version(client):
    v1 = [tool("forecast", ["city"], city="string"), tool("alerts")]
    assert (await client.post("/v0.1/publish", json=server(version="1.0.0", tools=v1))).status_code == 200
    additive = v1 + [tool("radar")]
    assert (await client.post("/v0.1/publish", json=server(version="1.1.0", tools=additive))).status_code == 200
    breaking = [tool("forecast", ["city", "days"], city="string", days="integer"), tool("radar")]
    r = await client.post("/v0.1/publish", json=server(version="1.2.0", tools=breaking))
    assert r.status_code == 409
    assert {c["change"] for c in r.json()["changes"]} == {"tool_removed", "required_parameter_added"}
    assert (await client.post("/v0.1/publish", json=server(version="2.0.0", tools=breaking))).status_code == 200
    retyped = [tool("forecast", ["city", "days"], city="integer", days="integer"), tool("radar")]
    r = await client.post("/v0.1/publish", params={"force": "true"}, json=server(version="2.0.1", tools=retyped))
    assert r.status_code == 200
    name = quote("com.example/weather", safe="")
    d = (await client.get(f"/api/registry/servers/{name}/versions/2.0.0/diff")).json()
    assert d["from"] == "1.1.0" and d["breaking"] and d["majorBump"] is True
    d = (await client.get(f"/api/registry/servers/{name}/versions/2.0.1/diff", params={"from": "2.0.0"})).json()
    assert d["changes"] == [{"change": "type_changed", "tool": "forecast", "parameter": "city", "from": "string",
                             "to": "integer", "breaking": True}]
    r = await client.put(f"/api/registry/servers/{name}/versions/1.0.0/tools", json={"tools": "nope"})
    assert r.status_code == 400


async def test_import_export_round_trip(client):
    snapshot = [server(f"io.github.someone/s{i}", version="1.0.0") for i in range(3)]
    snapshot.append({"server": server("io.github.someone/old", "0.1.0"), "_meta": {
        "io.modelcontextprotocol.registry/official": {"status": "deprecated", "publishedAt": "2025-01-02T03:04:05Z"}}})
    snapshot.append({"name": "broken"})
    r = await client.post("/api/registry/import", json=snapshot)
    assert r.status_code == 200
    assert r.json()["imported"] == 4 and r.json()["failed"] == 1 and "broken" in r.json()["errors"][0]
    again = (await client.post("/api/registry/import", json={"servers": snapshot[:3]})).json()
    assert again["skipped"] == 3 and again["imported"] == 0
    old = (await client.get(f"/v0.1/servers/{quote('io.github.someone/old', safe='')}/versions/0.1.0")).json()
    meta = old["_meta"]["io.modelcontextprotocol.registry/official"]
    assert meta["status"] == "deprecated" and meta["publishedAt"].startswith("2025-01-02T03:04:05")
    assert (await client.post("/api/registry/import", json={"not": "a list"})).status_code == 400


async def test_bulk_import_keeps_the_latest_rules_and_namespace_ownership(client, make_key, app):
    import httpx

    await client.post("/v0.1/publish", json=server("com.example/multi", "1.5.0"))
    snapshot = [server("com.example/multi", v) for v in ("1.0.0", "2.0.0-rc.1", "nightly", "1.5.0")]
    snapshot += [server(f"io.github.bulk/s{i:03d}") for i in range(300)]  # spans two chunks
    r = (await client.post("/api/registry/import", json=snapshot)).json()
    assert (r["imported"], r["skipped"], r["failed"]) == (303, 1, 0)
    name = quote("com.example/multi", safe="")
    versions = (await client.get(f"/v0.1/servers/{name}/versions")).json()["servers"]
    latest = [v["server"]["version"] for v in versions
              if v["_meta"]["io.modelcontextprotocol.registry/official"]["isLatest"]]
    assert latest == ["2.0.0-rc.1"]
    other = await make_key(["registry:publish"], tenant="intruder")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 headers={"Authorization": f"Bearer {other}"}) as c:
        r = (await c.post("/api/registry/import", json=[server("com.example/sneaky"),
                                                         server("org.intruder/own")])).json()
    assert (r["imported"], r["failed"]) == (1, 1) and "another tenant" in r["errors"][0]


async def test_bulk_import_by_a_tenants_admin_key_skips_other_namespaces(client, make_key, app, platform):
    """A tenant's admin:* key imports into its own namespaces only; the operator's admin everywhere."""
    import httpx

    acme = await make_key(["registry:publish"], tenant="acme")
    globex_admin = await make_key(["admin:*"], tenant="globex")
    headers = {"Authorization": f"Bearer {acme}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=headers) as c:
        assert (await c.post("/v0.1/publish", json=server("com.acme/tool"))).status_code == 200
    snapshot = [server("com.acme/tool", "2.0.0"), server("com.acme/new"),
                server("com.acme/tool", "3.0.0", tools=[tool("t")]),  # the one-by-one path of the import
                server("com.globex/own")]
    headers = {"Authorization": f"Bearer {globex_admin}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=headers) as c:
        r = (await c.post("/api/registry/import", json=snapshot)).json()
    assert (r["imported"], r["failed"]) == (1, 3), r
    assert all("belongs to another tenant" in e for e in r["errors"])
    versions = (await client.get(f"/v0.1/servers/{quote('com.acme/tool', safe='')}/versions")).json()["servers"]
    assert [v["server"]["version"] for v in versions] == ["1.0.0"]
    assert (await client.get(f"/v0.1/servers/{quote('com.acme/new', safe='')}/versions")).status_code == 404
    globex = (await platform.identity.tenant_by_name("globex"))["id"]
    denies = [e for e in await platform.audit.tail(100, globex)
              if e["action"] == "registry:publish" and e["decision"] == "deny"]
    assert denies and {e["resource"] for e in denies} == {"registry_namespace:com.acme"}
    # The operator's admin imports into every namespace.
    r = (await client.post("/api/registry/import", json=snapshot[:2])).json()
    assert (r["imported"], r["failed"]) == (2, 0), r
