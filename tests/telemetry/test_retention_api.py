"""POST /api/telemetry/retention through the real app: retention deletes every tenant's spans,
so only the operator's admin may run it, never another tenant's admin:* key."""

from __future__ import annotations

import httpx
import pytest

from tests.telemetry.spans import agent_run, new_trace_id, protobuf_request

PB = {"content-type": "application/x-protobuf"}


def _as(app, key: str) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                             headers={"authorization": f"Bearer {key}"})


async def test_only_the_operators_admin_may_apply_retention(client, app, platform, make_key,  # type: ignore[no-untyped-def]
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    globex_key = await make_key(["telemetry:write", "telemetry:read"], tenant="globex")
    acme_admin = await make_key(["admin:*"], tenant="acme")
    tid = new_trace_id()
    async with _as(app, globex_key) as globex:
        r = await globex.post("/v1/traces", content=protobuf_request(agent_run(tid)), headers=PB)
        assert r.status_code == 200, r.text
        await platform.services["telemetry"].flush()
        assert (await globex.get(f"/api/traces/{tid}")).json()["span_count"] == 4
    # A cap of one byte: a retention run that went ahead would drop every span of every tenant.
    monkeypatch.setattr(platform.services["telemetry"].settings, "max_store_bytes", 1)

    async with _as(app, acme_admin) as acme:
        r = await acme.post("/api/telemetry/retention")
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "operator's admin" in r.json()["detail"] and "every tenant" in r.json()["detail"]
    async with _as(app, globex_key) as globex:  # globex's spans are untouched
        assert (await globex.get(f"/api/traces/{tid}")).json()["span_count"] == 4
    acme_tenant = (await platform.identity.tenant_by_name("acme"))["id"]
    denies = [e for e in await platform.audit.tail(50, acme_tenant)
              if e["action"] == "telemetry:retention" and e["decision"] == "deny"]
    assert len(denies) == 1 and denies[0]["resource"] == "telemetry/spans"

    # The operator's admin (the default tenant's admin:* key) still runs it.
    r = await client.post("/api/telemetry/retention")
    assert r.status_code == 200, r.text
    # globex's 4 spans, and any of garrison's own request spans flushed by then (timing-dependent)
    assert r.json()["dropped_by_size"] >= 4
    async with _as(app, globex_key) as globex:
        assert (await globex.get(f"/api/traces/{tid}")).status_code == 404
    allows = [e for e in await platform.audit.tail(50) if e["action"] == "telemetry:retention"
              and e["decision"] == "allow"]
    assert len(allows) == 1 and allows[0]["tenant_id"] == platform.identity.default_tenant_id
