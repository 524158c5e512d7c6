"""Scopes, tenant isolation and Cedar policies, at the engine and over HTTP."""

from __future__ import annotations

import httpx
import pytest

from garrison.core.principal import Principal
from garrison.policy import PolicyEngine, Resource


def _p(scopes, tenant="t1", pid="prn_1") -> Principal:
    return Principal(id=pid, tenant_id=tenant, kind="service", scopes=frozenset(scopes), name="svc")


@pytest.fixture
def engine(tmp_path) -> PolicyEngine:
    e = PolicyEngine(tmp_path / "policies", operator_tenant_id="t0")
    e.load()
    return e


def test_missing_scope_is_denied_before_cedar(engine):
    d = engine.authorize(_p(["registry:read"]), "registry:publish", Resource("server", "x", "t1"))
    assert not d.allowed and "missing scope" in d.reason


def test_same_tenant_allowed_other_tenant_denied(engine):
    p = _p(["registry:read"])
    assert engine.authorize(p, "registry:read", Resource("server", "x", "t1")).allowed
    d = engine.authorize(p, "registry:read", Resource("server", "x", "t2"))
    assert not d.allowed and "another tenant" in d.reason


def test_admin_scope_does_not_cross_tenants_outside_admin_actions(engine):
    admin = _p(["admin:*"], tenant="t0")
    assert engine.authorize(admin, "keys:read", Resource("key", "k", "t2")).allowed
    assert not engine.authorize(admin, "sandbox:exec", Resource("sandbox", "s", "t2")).allowed
    tenant_admin = _p(["admin:*"], tenant="t1")
    assert not engine.authorize(tenant_admin, "keys:read", Resource("key", "k", "t2")).allowed


def test_operator_is_the_operator_tenants_admin_not_any_admin(engine):
    from garrison.core.errors import Forbidden

    assert engine.is_operator(_p(["admin:*"], tenant="t0"))
    assert not engine.is_operator(_p(["admin:*"], tenant="t1"))  # a tenant's admin
    assert not engine.is_operator(_p(["keys:read"], tenant="t0"))
    assert engine.is_operator(_p(["keys:read"], tenant="t0"), admin=False)
    assert not engine.is_operator(_p(["admin:*"], tenant="t1"), admin=False)
    with pytest.raises(Forbidden, match="only the operator"):
        engine.require_operator(_p(["admin:*"], tenant="t1"), "x:admin", "x/1", "only the operator")
    engine.require_operator(_p(["admin:*"], tenant="t0"), "x:admin", "x/1", "only the operator")
    # Cedar sees the same answer as principal.operator.
    engine.write_file("10-operator-only.cedar",
                      'forbid (principal, action == Garrison::Action::"x:admin", resource) '
                      "unless { principal.operator };")
    assert engine.authorize(_p(["admin:*"], tenant="t0"), "x:admin", Resource("x", "1", "t0")).allowed
    assert not engine.authorize(_p(["admin:*"], tenant="t1"), "x:admin", Resource("x", "1", "t1")).allowed
    unset = PolicyEngine(engine.dir)  # no operator tenant known: nobody is the operator
    assert not unset.is_operator(_p(["admin:*"], tenant=""))


def test_forbid_wins_over_permit(engine):
    engine.write_file("10-no-publish.cedar",
                      'forbid (principal, action == Garrison::Action::"registry:publish", resource);')
    p = _p(["registry:publish", "registry:read"])
    d = engine.authorize(p, "registry:publish", Resource("server", "x", "t1"))
    assert not d.allowed and "forbidden by" in d.reason
    assert engine.authorize(p, "registry:read", Resource("server", "x", "t1")).allowed


def test_policies_can_use_principal_and_context_attributes(engine):
    engine.write_file("20-agents.cedar",
                      'forbid (principal, action, resource) when { principal.kind == "agent" && '
                      'context.method == "DELETE" };')
    agent = Principal(id="a", tenant_id="t1", kind="agent", scopes=frozenset(["tools:call"]))
    r = Resource("tool", "x", "t1")
    assert not engine.authorize(agent, "tools:call", r, {"method": "DELETE"}).allowed
    assert engine.authorize(agent, "tools:call", r, {"method": "POST"}).allowed


def test_default_deny_without_a_permit(engine, tmp_path):
    (engine.dir / "00-baseline.cedar").unlink()
    engine.write_file("only-read.cedar", 'permit (principal, action == Garrison::Action::"x:read", resource);')
    p = _p(["x:read", "x:write"])
    assert engine.authorize(p, "x:read", Resource("x", "1", "t1")).allowed
    d = engine.authorize(p, "x:write", Resource("x", "1", "t1"))
    assert not d.allowed and "default deny" in d.reason


def test_log_only_mode_allows_but_marks_cedar_denies(tmp_path):
    e = PolicyEngine(tmp_path / "p", mode="log_only")
    e.load()
    e.write_file("f.cedar", "forbid (principal, action, resource);")
    d = e.authorize(_p(["x:read"]), "x:read", Resource("x", "1", "t1"))
    assert d.allowed and not d.enforced
    # Scopes and tenant isolation are never relaxed by log_only.
    assert not e.authorize(_p(["x:read"]), "x:write", Resource("x", "1", "t1")).allowed
    assert not e.authorize(_p(["x:read"]), "x:read", Resource("x", "1", "t2")).allowed


def test_broken_policy_file_is_refused_and_old_set_kept(engine):
    from garrison.core.errors import BadRequest

    with pytest.raises(BadRequest):
        engine.write_file("bad.cedar", "permit (principal, action resource")
    assert not (engine.dir / "bad.cedar").exists()
    assert engine.authorize(_p(["x:read"]), "x:read", Resource("x", "1", "t1")).allowed


async def test_policy_api_round_trip_and_audit(client, platform, make_key, app):
    key = await make_key(["keys:read"])
    r = await client.put("/api/policies/10-deny-keys.cedar",
                         content='forbid (principal, action == Garrison::Action::"keys:read", resource);',
                         headers={"content-type": "text/plain"})
    assert r.status_code == 200, r.text
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 headers={"authorization": f"Bearer {key}"}) as c:
        r = await c.get("/api/keys")
        assert r.status_code == 403 and "forbidden by" in r.json()["detail"]
    r = await client.put("/api/policies/bad.cedar", content="permit (", headers={"content-type": "text/plain"})
    assert r.status_code == 400
    r = await client.put("/api/policies/..%2Fescape.cedar", content="", headers={"content-type": "text/plain"})
    assert r.status_code in (404, 422)
    assert (await client.delete("/api/policies/10-deny-keys.cedar")).status_code == 204
    assert (await client.delete("/api/policies/10-deny-keys.cedar")).status_code == 404
    rows = await platform.audit.tail(50)
    assert any(e["action"] == "policies:write" for e in rows)
    assert any(e["action"] == "keys:read" and e["decision"] == "deny" for e in rows)


async def test_tenants_never_see_each_other(client, app, platform):
    for name in ("acme", "globex"):
        assert (await client.post("/api/tenants", json={"name": name})).status_code == 201
    keys = {}
    for name in ("acme", "globex"):
        r = await client.post("/api/keys", json={"scopes": ["keys:read", "keys:write", "tenants:read"],
                                                 "tenant": name, "principal": "admin", "kind": "user"})
        assert r.status_code == 201, r.text
        keys[name] = r.json()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 headers={"authorization": f"Bearer {keys['acme']['key']}"}) as acme:
        listed = (await acme.get("/api/keys")).json()
        assert {k["tenant_id"] for k in listed} == {keys["acme"]["tenant_id"]}
        other = keys["globex"]["id"]
        for method, path in (("GET", f"/api/keys/{other}"), ("POST", f"/api/keys/{other}/revoke"),
                             ("POST", f"/api/keys/{other}/rotate")):
            r = await acme.request(method, path)
            assert r.status_code == 404, (method, path, r.status_code)
        r = await acme.post("/api/keys", json={"scopes": ["keys:read"], "tenant": "globex"})
        assert r.status_code == 403
        tenants = (await acme.get("/api/tenants")).json()
        assert [t["name"] for t in tenants] == ["acme"]
    # The globex key still works: the attempts changed nothing.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 headers={"authorization": f"Bearer {keys['globex']['key']}"}) as globex:
        assert (await globex.get("/api/whoami")).status_code == 200


async def test_a_tenants_admin_key_may_not_touch_the_hosts_policies_or_tenants(client, app, platform, make_key):
    """Policy files and the tenant list are the host's: another tenant's admin:* key gets 403, and
    nothing changes; the operator's admin still manages them."""
    assert (await client.put("/api/policies/20-ops.cedar", content='forbid (principal, action == '
                             'Garrison::Action::"keys:write", resource) when { principal.kind == "agent" };',
                             headers={"content-type": "text/plain"})).status_code == 200
    before = platform.policy.list_files()
    acme_admin = await make_key(["admin:*"], tenant="acme")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 headers={"authorization": f"Bearer {acme_admin}"}) as acme:
        attempts = [
            await acme.get("/api/policies"),
            await acme.put("/api/policies/99-lockout.cedar", content="forbid (principal, action, resource);",
                           headers={"content-type": "text/plain"}),
            await acme.delete("/api/policies/20-ops.cedar"),
            await acme.delete("/api/policies/00-baseline.cedar"),
        ]
        for r in attempts:
            assert r.status_code == 403, (r.request.method, r.request.url, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert "every tenant" in r.json()["detail"] and "operator's tenant" in r.json()["detail"]
        r = await acme.post("/api/tenants", json={"name": "globex"})
        assert r.status_code == 403 and "operator" in r.json()["detail"], r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        # Its own tenant it still administers.
        assert (await acme.get("/api/whoami")).status_code == 200
        assert (await acme.post("/api/keys", json={"scopes": ["keys:read"]})).status_code == 201
    assert platform.policy.list_files() == before
    assert await platform.identity.tenant_by_name("globex") is None
    acme = (await platform.identity.tenant_by_name("acme"))["id"]
    denies = [(e["action"], e["resource"]) for e in await platform.audit.tail(100, acme) if e["decision"] == "deny"]
    assert denies == [("policies:read", "policy/*"), ("policies:write", "policy/99-lockout.cedar"),
                      ("policies:write", "policy/20-ops.cedar"), ("policies:write", "policy/00-baseline.cedar"),
                      ("tenants:write", "tenant/globex")]
    # The operator's admin still does all of it.
    assert "20-ops.cedar" in (await client.get("/api/policies")).json()["files"]
    assert (await client.delete("/api/policies/20-ops.cedar")).status_code == 204
    assert (await client.post("/api/tenants", json={"name": "globex"})).status_code == 201
