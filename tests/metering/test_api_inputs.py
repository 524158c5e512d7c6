"""Hostile input on /api/metering: text PostgreSQL cannot hold is a 422 naming the field."""

from __future__ import annotations


async def test_budget_and_price_text_with_nul_is_422_naming_the_field(client):
    # Found by fuzzing on PostgreSQL: a NUL in scope_id reached the INSERT (500 there).
    for field in ("scope_id", "tenant_id"):
        r = await client.post("/api/metering/budgets", json={"scope": "tenant", "limit_usd": "1", field: "a\x00"})
        assert r.status_code == 422 and field in r.text, r.text
    r = await client.post("/api/metering/prices", json={"model": "m\x00", "input_per_mtok": "1",
                                                        "output_per_mtok": "1"})
    assert r.status_code == 422 and "model" in r.text, r.text
    assert (await client.get("/api/metering/budgets")).json() == []
    r = await client.post("/api/metering/budgets", json={"scope": "key", "scope_id": "k\u00e9", "limit_usd": "1"})
    assert r.status_code == 201, r.text  # ordinary non-ASCII text is fine


async def test_price_valid_from_outside_years_1_to_9999_in_utc_is_422(client):
    # Found by probing on PostgreSQL: year 0 in UTC was stored, then every read of the prices
    # failed ("timestamp too small"), later price writes included.
    for at in ("0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"):
        r = await client.post("/api/metering/prices", json={"model": "m", "input_per_mtok": "1",
                                                            "output_per_mtok": "1", "valid_from": at})
        assert r.status_code == 422 and "valid_from" in r.text, r.text
    r = await client.post("/api/metering/prices", json={"model": "m", "input_per_mtok": "1", "output_per_mtok": "1",
                                                        "valid_from": "2026-01-01T02:00:00+02:00"})
    assert r.status_code == 201 and r.json()["valid_from"].startswith("2026-01-01T00:00:00"), r.text
    assert (await client.get("/api/metering/prices")).status_code == 200


async def test_a_tenants_admin_key_may_not_set_prices_or_other_tenants_budgets(client, platform, make_key):
    """Prices apply to every tenant and budgets belong to one: a tenant's admin:* key gets 403 (audited)."""
    r = await client.post("/api/metering/prices", json={"model": "m", "input_per_mtok": "1", "output_per_mtok": "2"})
    assert r.status_code == 201, r.text
    price = r.json()
    globex = (await platform.identity.create_tenant("globex"))["id"]
    h = {"authorization": f"Bearer {await make_key(['admin:*'], tenant='acme')}"}
    attempts = [
        await client.post("/api/metering/prices", json={"model": "m", "input_per_mtok": "0", "output_per_mtok": "0"},
                          headers=h),
        await client.delete(f"/api/metering/prices/{price['id']}", headers=h),
        await client.post("/api/metering/budgets", json={"scope": "tenant", "limit_usd": "0", "tenant_id": globex},
                          headers=h),
        await client.get("/api/usage", params={"tenant": globex}, headers=h),
    ]
    for r in attempts:
        assert r.status_code == 403, (r.request.method, r.request.url, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "operator's admin" in r.json()["detail"]
    assert [p["id"] for p in (await client.get("/api/metering/prices")).json()] == [price["id"]]
    assert (await client.get("/api/metering/budgets")).json() == []
    acme = (await platform.identity.tenant_by_name("acme"))["id"]
    denies = [e["action"] for e in await platform.audit.tail(100, acme) if e["decision"] == "deny"]
    assert denies == ["metering:admin", "metering:admin", "metering:admin", "metering:read"]
    # The operator's admin still sets them.
    r = await client.post("/api/metering/budgets", json={"scope": "tenant", "limit_usd": "5", "tenant_id": globex})
    assert r.status_code == 201 and r.json()["tenant_id"] == globex, r.text
