"""The Registry API v0.1 (and /v0) end to end through the app, on SQLite and PostgreSQL."""

from urllib.parse import quote

import pytest


def server(name="com.example/weather", version="1.0.0", description="Weather forecasts", **extra):
    doc = {"name": name, "description": description, "version": version,
           "remotes": [{"type": "streamable-http", "url": "https://example.com/mcp"}]}
    doc.update(extra)
    return doc


def enc(name):
    return quote(name, safe="")


async def publish(client, **kw):
    r = await client.post("/v0.1/publish", json=server(**kw))
    assert r.status_code == 200, r.text
    return r.json()


def official(item):
    return item["_meta"]["io.modelcontextprotocol.registry/official"]


async def test_publish_then_read_every_way(client):
    body = await publish(client)
    assert body["server"]["name"] == "com.example/weather"
    assert official(body)["isLatest"] is True and official(body)["status"] == "active"
    for prefix in ("/v0.1", "/v0"):
        listing = (await client.get(f"{prefix}/servers")).json()
        assert [s["server"]["name"] for s in listing["servers"]] == ["com.example/weather"]
        assert listing["metadata"]["count"] == 1 and "nextCursor" not in listing["metadata"]
        one = await client.get(f"{prefix}/servers/{enc('com.example/weather')}/versions/1.0.0")
        assert one.status_code == 200 and one.json()["server"]["version"] == "1.0.0"
        latest = await client.get(f"{prefix}/servers/{enc('com.example/weather')}/versions/latest")
        assert latest.json()["server"]["version"] == "1.0.0"


async def test_is_latest_follows_semver_not_publish_order(client):
    for v in ["1.0.0", "2.0.0", "1.5.0", "2.0.0-rc.1", "2.0.1-beta"]:
        await publish(client, version=v)
    versions = (await client.get(f"/v0.1/servers/{enc('com.example/weather')}/versions")).json()["servers"]
    assert [v["server"]["version"] for v in versions] == ["2.0.1-beta", "2.0.0-rc.1", "1.5.0", "2.0.0", "1.0.0"]
    latest = [v["server"]["version"] for v in versions if official(v)["isLatest"]]
    assert latest == ["2.0.1-beta"]
    r = await client.get("/v0.1/servers", params={"version": "latest"})
    assert [s["server"]["version"] for s in r.json()["servers"]] == ["2.0.1-beta"]
    r = await client.get("/v0.1/servers", params={"version": "1.5.0"})
    assert [s["server"]["version"] for s in r.json()["servers"]] == ["1.5.0"]


async def test_non_semver_loses_to_semver_and_later_non_semver_wins(client):
    await publish(client, version="snapshot-1")
    await publish(client, version="snapshot-2")
    r = await client.get(f"/v0.1/servers/{enc('com.example/weather')}/versions/latest")
    assert r.json()["server"]["version"] == "snapshot-2"
    await publish(client, version="0.0.1")
    await publish(client, version="snapshot-3")
    r = await client.get(f"/v0.1/servers/{enc('com.example/weather')}/versions/latest")
    assert r.json()["server"]["version"] == "0.0.1"


async def test_duplicate_version_conflicts(client):
    await publish(client)
    r = await client.post("/v0.1/publish", json=server())
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_cursor_pagination_walks_everything_once(client):
    names = [f"com.example/s{i:02d}" for i in range(7)]
    for n in names:
        await publish(client, name=n)
    seen, cursor = [], None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v0.1/servers", params=params)).json()
        assert page["metadata"]["count"] == len(page["servers"]) <= 3
        seen += [s["server"]["name"] for s in page["servers"]]
        cursor = page["metadata"].get("nextCursor")
        if not cursor:
            break
    assert seen == names


async def test_limit_is_clamped(client):
    for i in range(3):
        await publish(client, name=f"com.example/s{i}")
    assert len((await client.get("/v0.1/servers", params={"limit": 0})).json()["servers"]) == 1
    assert len((await client.get("/v0.1/servers", params={"limit": 10**9})).json()["servers"]) == 3


async def test_search_is_case_insensitive_on_name_or_description(client):
    await publish(client, name="com.example/weather", description="Forecasts")
    await publish(client, name="com.example/files", description="Reads WEATHER_logs 100%")
    await publish(client, name="com.example/maps", description="Maps")

    async def names(term):
        r = await client.get("/v0.1/servers", params={"search": term})
        return sorted(s["server"]["name"] for s in r.json()["servers"])

    assert await names("WeAtHeR") == ["com.example/files", "com.example/weather"]
    assert await names("100%") == ["com.example/files"]
    assert await names("_") == ["com.example/files"]  # LIKE wildcards are literal


async def test_status_changes_hide_deleted_and_updated_since_sees_them(client):
    await publish(client, version="1.0.0")
    await publish(client, version="1.1.0")
    before = (await client.get("/v0.1/servers")).json()["servers"][0]
    since = official(before)["updatedAt"]
    name = enc("com.example/weather")
    r = await client.patch(f"/v0.1/servers/{name}/versions/1.1.0/status",  # PostgreSQL text cannot hold NUL
                           json={"status": "deprecated", "statusMessage": "use\x002.x"})
    assert r.status_code == 422 and "statusMessage" in r.text, r.text
    r = await client.patch(f"/v0.1/servers/{name}/versions/1.1.0/status",
                           json={"status": "deprecated", "statusMessage": "use 2.x"})
    assert r.status_code == 200
    assert official(r.json())["status"] == "deprecated" and official(r.json())["statusMessage"] == "use 2.x"
    r = await client.patch(f"/v0.1/servers/{name}/status", json={"status": "deleted"})
    assert r.status_code == 200 and r.json()["updatedCount"] == 2
    assert (await client.get("/v0.1/servers")).json()["servers"] == []
    assert (await client.get(f"/v0.1/servers/{name}/versions")).status_code == 404
    assert (await client.get(f"/v0.1/servers/{name}/versions/1.0.0")).status_code == 404
    deleted = (await client.get("/v0.1/servers", params={"include_deleted": "true"})).json()["servers"]
    assert {official(s)["status"] for s in deleted} == {"deleted"}
    changed = (await client.get("/v0.1/servers", params={"updated_since": since})).json()["servers"]
    assert len(changed) == 2
    r = await client.get(f"/v0.1/servers/{name}/versions/1.0.0", params={"include_deleted": "true"})
    assert r.status_code == 200
    r = await client.patch(f"/v0.1/servers/{name}/status", json={"status": "gone"})
    assert r.status_code == 422


async def test_put_replaces_metadata_but_not_identity(client):
    await publish(client)
    name = enc("com.example/weather")
    r = await client.put(f"/v0.1/servers/{name}/versions/1.0.0", json=server(description="Better words"))
    assert r.status_code == 200 and r.json()["server"]["description"] == "Better words"
    r = await client.put(f"/v0.1/servers/{name}/versions/1.0.0", json=server(version="9.9.9"))
    assert r.status_code == 400
    r = await client.put(f"/v0.1/servers/{name}/versions/2.0.0", json=server(version="2.0.0"))
    assert r.status_code == 404


async def test_delete_moves_latest_to_the_next_newest(client):
    for v in ["1.0.0", "1.2.0", "1.1.0"]:
        await publish(client, version=v)
    name = enc("com.example/weather")
    r = await client.delete(f"/v0.1/servers/{name}/versions/1.2.0")
    assert r.status_code == 200 and official(r.json())["status"] == "deleted"
    latest = (await client.get(f"/v0.1/servers/{name}/versions/latest")).json()
    assert latest["server"]["version"] == "1.1.0" and official(latest)["isLatest"]
    assert (await client.delete(f"/v0.1/servers/{name}/versions/1.2.0")).status_code == 404


async def test_cors_on_reads_and_preflight(client):
    await publish(client)
    r = await client.get("/v0.1/servers")
    assert r.headers["access-control-allow-origin"] == "*"
    assert "GET" in r.headers["access-control-allow-methods"]
    r = await client.options(f"/v0.1/servers/{enc('com.example/weather')}/versions",
                             headers={"Origin": "https://inspector.example", "Access-Control-Request-Method": "GET"})
    assert r.status_code == 204 and "Authorization" in r.headers["access-control-allow-headers"]


async def test_reads_need_a_key_unless_opened(anon_client, platform, monkeypatch):
    assert (await anon_client.get("/v0.1/servers")).status_code == 401
    monkeypatch.setattr(platform.services["registry"].settings, "public_reads", True)
    assert (await anon_client.get("/v0.1/servers")).status_code == 200
    assert (await anon_client.post("/v0.1/publish", json=server())).status_code == 401


async def test_publish_needs_scope_and_namespace_belongs_to_first_tenant(app, make_key):
    import httpx

    def as_key(key):
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                 headers={"Authorization": f"Bearer {key}"})

    reader = await make_key(scopes=["registry:read"], tenant="acme")
    acme = await make_key(scopes=["registry:publish", "registry:read"], tenant="acme")
    globex = await make_key(scopes=["registry:publish", "registry:read"], tenant="globex")
    async with as_key(reader) as c:
        assert (await c.post("/v0.1/publish", json=server(name="com.acme/tool"))).status_code == 403
    async with as_key(acme) as c:
        assert (await c.post("/v0.1/publish", json=server(name="com.acme/tool"))).status_code == 200
    async with as_key(globex) as c:
        r = await c.post("/v0.1/publish", json=server(name="com.acme/other"))
        assert r.status_code == 403 and "namespace" in r.json()["detail"]
        r = await c.patch(f"/v0.1/servers/{enc('com.acme/tool')}/status", json={"status": "deleted"})
        assert r.status_code == 403
        assert (await c.post("/v0.1/publish", json=server(name="com.globex/tool"))).status_code == 200
        names = [s["server"]["name"] for s in (await c.get("/v0.1/servers")).json()["servers"]]
        assert names == ["com.acme/tool", "com.globex/tool"]


async def test_a_tenants_admin_key_stays_out_of_other_namespaces(app, client, platform, make_key):
    """admin:* of a tenant is that tenant's admin: it may not write in another tenant's namespace;
    only the operator's admin (the default tenant's admin:* key) may act in every namespace."""
    import httpx

    def as_key(key):
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                 headers={"Authorization": f"Bearer {key}"})

    acme = await make_key(scopes=["registry:publish", "registry:read"], tenant="acme")
    globex_admin = await make_key(scopes=["admin:*"], tenant="globex")
    async with as_key(acme) as c:
        assert (await c.post("/v0.1/publish", json=server(name="com.acme/tool"))).status_code == 200
    name = enc("com.acme/tool")
    async with as_key(globex_admin) as c:
        attempts = [
            await c.post("/v0.1/publish", json=server(name="com.acme/tool", version="2.0.0")),
            await c.post("/v0.1/publish", json=server(name="com.acme/other")),
            await c.put(f"/v0.1/servers/{name}/versions/1.0.0", json=server(name="com.acme/tool",
                                                                             description="hijacked")),
            await c.patch(f"/v0.1/servers/{name}/status", json={"status": "deleted"}),
            await c.patch(f"/v0.1/servers/{name}/versions/1.0.0/status", json={"status": "deprecated"}),
            await c.delete(f"/v0.1/servers/{name}/versions/1.0.0"),
            await c.put(f"/api/registry/servers/{name}/versions/1.0.0/tools", json={"tools": []}),
        ]
        for r in attempts:
            assert r.status_code == 403, (r.request.method, r.request.url, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert "belongs to another tenant" in r.json()["detail"]
            assert "operator's admin" in r.json()["detail"]
        # Its own namespace is its own.
        assert (await c.post("/v0.1/publish", json=server(name="com.globex/tool"))).status_code == 200
    # Nothing changed: one version, active, acme's words, and the namespace still acme's.
    versions = (await client.get(f"/v0.1/servers/{name}/versions")).json()["servers"]
    assert [(v["server"]["version"], v["server"]["description"], official(v)["status"]) for v in versions] == [
        ("1.0.0", "Weather forecasts", "active")]
    assert (await client.get(f"/v0.1/servers/{enc('com.acme/other')}/versions")).status_code == 404
    svc = platform.services["registry"]
    acme_tenant = (await platform.identity.tenant_by_name("acme"))["id"]
    async with svc.db.engine.connect() as conn:
        assert await svc.store.namespace_owner(conn, "com.acme", lock=False) == acme_tenant
    globex_tenant = (await platform.identity.tenant_by_name("globex"))["id"]
    denies = [e for e in await platform.audit.tail(100, globex_tenant)
              if e["action"] == "registry:publish" and e["decision"] == "deny"]
    assert len(denies) == len(attempts) and {e["resource"] for e in denies} == {"registry_namespace:com.acme"}

    # The operator's admin may act in every namespace.
    r = await client.put(f"/v0.1/servers/{name}/versions/1.0.0", json=server(name="com.acme/tool",
                                                                              description="Fixed by the operator"))
    assert r.status_code == 200, r.text
    assert (await client.post("/v0.1/publish", json=server(name="com.acme/tool", version="1.1.0"))).status_code == 200
    async with svc.db.engine.connect() as conn:  # acting there does not take the namespace over
        assert await svc.store.namespace_owner(conn, "com.acme", lock=False) == acme_tenant


@pytest.mark.parametrize("path", [
    "/v0.1/servers/com.example%2F..%2F..%2Fetc/versions",
    "/v0.1/servers/..%2F..%2Fetc/versions/latest",
    "/v0.1/servers/noslash/versions",
    "/v0.1/servers/com.example%2Fx/versions/%5E1.0.0",
])
async def test_hostile_paths_are_4xx(client, path):
    r = await client.get(path)
    assert 400 <= r.status_code < 500
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("params", [{"cursor": "!!!"}, {"cursor": "e30"}, {"updated_since": "yesterday"},
                                    {"updated_since": "2025-01-01T00:00:00"}, {"limit": "many"}])
async def test_bad_query_is_4xx(client, params):
    r = await client.get("/v0.1/servers", params=params)
    assert 400 <= r.status_code < 500, r.text


async def test_bad_bodies(client):
    r = await client.post("/v0.1/publish", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = await client.post("/v0.1/publish", json=server(version="^1.0.0"))
    assert r.status_code == 400 and "range" in r.json()["detail"]
    r = await client.post("/v0.1/publish", json=server(version="latest"))
    assert r.status_code == 400
    r = await client.post("/v0.1/publish", json={"name": "com.example/x"})
    assert r.status_code == 422 and r.json()["errors"]
    huge = server(_meta={"io.modelcontextprotocol.registry/publisher-provided": {"blob": "x" * 300_000}})
    r = await client.post("/v0.1/publish", json=huge)
    assert r.status_code == 413


async def test_server_json_with_nul_is_a_400_not_a_database_error(client):
    # Found by probing on PostgreSQL: a NUL in description reached the INSERT (500 there).
    for extra in ({"description": "a\x00"}, {"title": "t\x00"}, {"_meta": {"k": ["\x00"]}}):
        r = await client.post("/v0.1/publish", json=server(name="com.example/nul", **extra))
        assert r.status_code == 400 and "server.json" in r.text, (extra, r.status_code, r.text)
    assert (await client.get("/v0.1/servers")).json()["servers"] == []
