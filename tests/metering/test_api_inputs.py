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
