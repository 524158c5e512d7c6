"""The HTTP surface: probes, metrics, problem+json errors, request ids, trace context, limits."""

from __future__ import annotations


async def test_health_and_readiness(anon_client):
    r = await anon_client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = await anon_client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    # Where start-up time went: the foundation, then every layer that started.
    startup = r.json()["startup_s"]
    assert {"foundation", "total", *r.json()["layers"]} <= set(startup)
    assert startup["total"] >= max(v for k, v in startup.items() if k != "total")


async def test_metrics_need_a_key_and_speak_prometheus(anon_client, client):
    assert (await anon_client.get("/metrics")).status_code == 401
    await client.get("/api/whoami")
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert "garrison_http_requests_total" in r.text


async def test_unknown_route_is_problem_json(client):
    r = await client.get("/api/nope")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 404 and "no route" in body["detail"]


async def test_method_not_allowed_is_problem_json(client):
    r = await client.delete("/api/whoami")
    assert r.status_code == 405 and r.json()["type"].endswith("/method-not-allowed")


async def test_request_id_and_traceparent_propagate(client):
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = await client.get("/api/whoami", headers={"x-request-id": "abc-123", "traceparent": tp})
    assert r.headers["x-request-id"] == "abc-123"
    assert r.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    r = await client.get("/api/whoami", headers={"traceparent": "garbage"})
    assert len(r.headers["traceparent"].split("-")[1]) == 32


async def test_oversized_body_is_413(client, platform):
    limit = platform.settings.max_body_bytes
    r = await client.post("/api/tenants", content=b"x" * (limit + 1), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_openapi_is_served(anon_client):
    r = await anon_client.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/api/keys" in paths and "/api/audit/verify" in paths


async def test_hostile_inputs_never_500(client):
    bodies = [b"", b"null", b"[]", b'{"name": null}', b'{"name": "' + b"a" * 10000 + b'"}',
              b'{"name": "\\u0000"}', "{\"name\": \"\u202e\"}".encode(), b"\xff\xfe", b'{"name": {"$ne": 1}}']
    for body in bodies:
        r = await client.post("/api/tenants", content=body, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (body[:40], r.status_code)
    r = await client.get("/api/audit", params={"limit": "-1"})
    assert r.status_code == 422
    r = await client.get("/api/keys/" + "k" * 5000)
    assert r.status_code == 404


async def test_a_nul_in_any_url_is_a_400_not_a_database_error(client):
    # PostgreSQL text cannot hold NUL: each of these was a 500 there (schemathesis).
    for url in ("/api/keys/k%00", "/api/runtime/agents/a%00b", "/api/memory/jobs/j%00",
                "/api/usage/entries?tenant=a%00", "/api/tenants?x=%00"):
        r = await client.get(url)
        assert r.status_code == 400, (url, r.status_code, r.text)
        assert r.json()["type"].endswith("/bad-request")
    assert (await client.get("/api/keys/k%2500")).status_code == 404  # a literal "%00" is only text


async def test_layers_spans_join_the_callers_trace(app, client):
    from opentelemetry import trace

    @app.get("/test/current-trace")
    async def current() -> dict[str, str]:
        with trace.get_tracer("garrison.test").start_as_current_span("probe") as span:
            return {"trace_id": format(span.get_span_context().trace_id, "032x")}

    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = await client.get("/test/current-trace", headers={"traceparent": tp})
    assert r.json()["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_routes_that_cap_their_own_uploads_may_take_larger_bodies(platform):
    from garrison.core.middleware import RequestContextMiddleware

    mw = RequestContextMiddleware(None, max_body_bytes=1000, body_limits=[(r"^/api/big/[^/]+/upload$", 5000)])
    assert mw._limit_for("/api/big/x/upload") == 5000
    assert mw._limit_for("/api/big/x/upload/more") == 1000
    assert mw._limit_for("/api/tenants") == 1000


def test_client_package_exports_the_sandbox():
    import garrison.client as c

    assert c.Sandbox.__name__ == "Sandbox"
