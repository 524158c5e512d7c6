"""/api/llm/models, `garrison models`, auth, allowlists, and hostile input on /v1."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from garrison.cli.main import app as cli


def chat(model: str = "m", **extra):  # type: ignore[no-untyped-def]
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def test_models_crud_persists_and_hides_api_key(client, platform, fake, fake2, add_model):
    out = await add_model("m", fake, kind="vllm", api_key="sk-secret", max_concurrency=4, upstream_model="up")
    assert out["replicas"][0]["has_api_key"] and "sk-secret" not in json.dumps(out)
    out = await add_model("m", fake2)
    assert len(out["replicas"]) == 2
    r = await client.post("/api/llm/models", json={"model": "m", "base_url": fake.base_url})
    assert r.status_code == 409
    r = await client.patch("/api/llm/models/m", json={"fallbacks": ["other"], "tpm": 1000})
    assert r.status_code == 200 and r.json()["fallbacks"] == ["other"]
    # A fresh service reads the same pools from the store.
    svc = platform.services["llm"]
    svc.pools.clear()
    await svc.reload()
    listed = (await client.get("/api/llm/models")).json()
    assert [m["name"] for m in listed] == ["m"] and listed[0]["tpm"] == 1000
    rid = listed[0]["replicas"][1]["id"]
    assert (await client.delete(f"/api/llm/models/m?replica={rid}")).status_code == 204
    assert len((await client.get("/api/llm/models/m")).json()["replicas"]) == 1
    assert (await client.delete("/api/llm/models/m")).status_code == 204
    assert (await client.get("/api/llm/models/m")).status_code == 404
    assert (await client.delete("/api/llm/models/m")).status_code == 404


async def test_absurd_limits_are_422_naming_the_field(client, fake, add_model):
    # Found by schemathesis: a 34-digit tpm reached the database and failed there (500).
    await add_model("m", fake)
    for field in ("tpm", "rpm", "tenant_tpm", "context_window"):
        r = await client.patch("/api/llm/models/m", json={field: 2 * 10**33})
        assert r.status_code == 422 and field in r.text
        r = await client.post("/api/llm/models", json={"model": "n", "base_url": fake.base_url, field: 10**20})
        assert r.status_code == 422 and field in r.text
    assert (await client.get("/api/llm/models/m")).json()["tpm"] is None


async def test_model_text_the_database_cannot_hold_is_422_naming_the_field(client, fake, add_model):
    # Found by fuzzing on PostgreSQL: a NUL in fallbacks or provider reached the UPDATE (500 there).
    await add_model("m", fake)
    for field, value in (("fallbacks", ["a\x00"]), ("provider", "p\x00")):
        r = await client.patch("/api/llm/models/m", json={field: value})
        assert r.status_code == 422 and field in r.text, r.text
    r = await client.post("/api/llm/models", json={"model": "n", "base_url": fake.base_url, "upstream_model": "u\x00"})
    assert r.status_code == 422 and "upstream_model" in r.text, r.text
    assert (await client.get("/api/llm/models/m")).json()["fallbacks"] == []


async def test_models_admin_needs_scope(client, make_key):
    key = await make_key(["llm:invoke"])
    r = await client.post("/api/llm/models", json={"model": "m", "base_url": "http://x:1/v1"},
                          headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 403


async def test_a_tenants_admin_key_may_not_add_repoint_or_remove_shared_models(client, platform, make_key,
                                                                               fake, fake2, add_model):
    """Models serve every tenant: another tenant's admin:* key adding a replica could read their prompts."""
    await add_model("m", fake)
    before = (await client.get("/api/llm/models/m")).json()
    rid = before["replicas"][0]["id"]
    acme_admin = await make_key(["admin:*"], tenant="acme")
    h = {"authorization": f"Bearer {acme_admin}"}
    attempts = [
        await client.post("/api/llm/models", json={"model": "m", "base_url": fake2.base_url}, headers=h),
        await client.post("/api/llm/models", json={"model": "mine", "base_url": fake2.base_url}, headers=h),
        await client.patch("/api/llm/models/m", json={"fallbacks": ["mine"]}, headers=h),
        await client.delete(f"/api/llm/models/m?replica={rid}", headers=h),
        await client.delete("/api/llm/models/m", headers=h),
    ]
    for r in attempts:
        assert r.status_code == 403, (r.request.method, r.request.url, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "shared by every tenant" in r.json()["detail"] and "operator's tenant" in r.json()["detail"]
    after = (await client.get("/api/llm/models/m")).json()
    assert [r["base_url"] for r in after["replicas"]] == [fake.base_url.rstrip("/")]
    assert after["fallbacks"] == before["fallbacks"] == []
    assert (await client.get("/api/llm/models/mine")).status_code == 404
    acme = (await platform.identity.tenant_by_name("acme"))["id"]
    denies = [e for e in await platform.audit.tail(100, acme) if e["decision"] == "deny"]
    assert [e["action"] for e in denies] == ["llm:admin"] * len(attempts)
    # The operator's tenant still manages them (admin:* or an llm:admin key of its own).
    operator_key = await make_key(["llm:admin", "llm:read"])
    r = await client.patch("/api/llm/models/m", json={"tpm": 1000}, headers={"authorization": f"Bearer {operator_key}"})
    assert r.status_code == 200 and r.json()["tpm"] == 1000
    assert (await client.delete("/api/llm/models/m")).status_code == 204


async def test_models_cli(fake, garrison_url, admin_key):
    runner = CliRunner()
    base = ["--url", garrison_url, "--key", admin_key]
    out = await asyncio.to_thread(runner.invoke, cli, ["models", "add", "llama", "--base-url", fake.base_url,
                                                       "--kind", "vllm", "--max-concurrency", "8",
                                                       "--upstream-model", "meta/llama", *base])
    assert out.exit_code == 0, out.output
    out = await asyncio.to_thread(runner.invoke, cli, ["models", "list", "--format", "json", *base])
    listed = json.loads(out.output)
    assert listed[0]["name"] == "llama" and listed[0]["replicas"][0]["max_concurrency"] == 8
    out = await asyncio.to_thread(runner.invoke, cli, ["models", "list", *base])
    assert "llama" in out.output
    out = await asyncio.to_thread(runner.invoke, cli, ["models", "remove", "llama", *base])
    assert out.exit_code == 0
    out = await asyncio.to_thread(runner.invoke, cli, ["models", "remove", "llama", *base])
    assert out.exit_code == 1 and "404" in out.output


async def test_v1_needs_key_and_scope(anon_client, client, make_key, fake, add_model):
    await add_model("m", fake)
    assert (await anon_client.post("/v1/chat/completions", json=chat())).status_code == 401
    assert (await anon_client.get("/v1/models")).status_code == 401
    key = await make_key(["usage:read"])
    r = await client.post("/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 403


async def test_allowlist_limits_models_and_the_listing(client, make_key, fake, add_model):
    await add_model("m", fake)
    await add_model("secret", fake)
    for attrs in ({"allowed_models": ["m"]}, {"allowed_models": "m, other"}):
        key = await make_key(["llm:invoke"], attributes=attrs)
        h = {"authorization": f"Bearer {key}"}
        assert [m["id"] for m in (await client.get("/v1/models", headers=h)).json()["data"]] == ["m"]
        assert (await client.post("/v1/chat/completions", json=chat(), headers=h)).status_code == 200
        r = await client.post("/v1/chat/completions", json=chat("secret"), headers=h)
        assert r.status_code == 403 and "may not use model 'secret'" in r.json()["detail"]


