"""The memory API (/api/memory) and the state API (/api/state) through the real app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from garrison.platform import Platform
from tests.state.test_saver import Steps


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_records_roundtrip_search_and_delete(client: httpx.AsyncClient) -> None:
    for key, text in [("seat", "Alice prefers window seats on long flights"),
                      ("boss", "Alice reports to Bob in the finance team"),
                      ("food", "Alice is allergic to peanuts")]:
        r = await client.post("/api/memory/records", json={"namespace": ["users", "alice"], "key": key,
                                                           "value": {"text": text, "kind": "fact"}})
        assert r.status_code == 201, r.text
        assert r.json()["namespace"] == ["users", "alice"]
    r = await client.get("/api/memory/records", params={"namespace": "users.alice", "key": "seat"})
    assert r.status_code == 200 and r.json()["value"]["text"].startswith("Alice prefers")
    r = await client.post("/api/memory/search", json={"namespace_prefix": ["users"], "query":
                                                       "where should we seat alice on the plane?", "limit": 2})
    assert r.status_code == 200
    hits = r.json()["records"]
    assert hits[0]["key"] == "seat" and hits[0]["score"] > hits[1]["score"]
    r = await client.post("/api/memory/search", json={"namespace_prefix": ["users"], "filter": {"kind": "fact"},
                                                       "limit": 10})
    assert {h["key"] for h in r.json()["records"]} == {"seat", "boss", "food"}, (r.json(), (await client.post("/api/memory/search", json={"namespace_prefix": ["users"]})).json())
    r = await client.get("/api/memory/namespaces", params={"prefix": "users"})
    assert r.json()["namespaces"] == [["users", "alice"]]
    r = await client.delete("/api/memory/records", params={"namespace": "users.alice", "key": "seat"})
    assert r.status_code == 204
    r = await client.get("/api/memory/records", params={"namespace": "users.alice", "key": "seat"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")


async def test_events_are_kept_in_order_per_actor_and_session(client: httpx.AsyncClient) -> None:
    for i in range(3):
        r = await client.post("/api/memory/events", json={"actor_id": "alice", "session_id": "s-1",
                                                          "payload": {"role": "user", "text": f"message {i}"}})
        assert r.status_code == 201
    await client.post("/api/memory/events", json={"actor_id": "bob", "session_id": "s-1", "payload": {"x": 1}})
    r = await client.get("/api/memory/events", params={"actor_id": "alice", "session_id": "s-1"})
    assert [e["payload"]["text"] for e in r.json()["events"]] == ["message 0", "message 1", "message 2"]
    r = await client.get("/api/memory/events", params={"actor_id": "alice", "session_id": "s-1", "limit": 2})
    assert [e["payload"]["text"] for e in r.json()["events"]] == ["message 1", "message 2"]
    r = await client.get("/api/memory/namespaces")
    assert all(ns[0] != "_events" for ns in r.json()["namespaces"])


async def test_bad_input_gets_a_4xx_that_says_what_to_fix(client: httpx.AsyncClient) -> None:
    cases = [
        ("POST", "/api/memory/records", {"namespace": ["a.b"], "key": "k", "value": {}}, 422),
        ("POST", "/api/memory/records", {"namespace": [], "key": "k", "value": {}}, 422),
        ("POST", "/api/memory/records", {"namespace": ["a"], "key": "k", "value": [1, 2]}, 422),
        ("POST", "/api/memory/records", {"namespace": ["a"], "key": "", "value": {}}, 422),
        ("POST", "/api/memory/records", {"namespace": ["a"], "key": "k", "value": {}, "ttl_minutes": -1}, 422),
        ("POST", "/api/memory/records", {"namespace": ["a"], "key": "k", "value": {}, "extra": 1}, 422),
        ("POST", "/api/memory/records", {"namespace": ["_events", "x"], "key": "k", "value": {}}, 400),
        ("POST", "/api/memory/records", {"namespace": ["a"], "key": "k", "value": {"t": "x" * 5_000_000}}, 413),
        ("POST", "/api/memory/search", {"limit": 0}, 422),
        ("POST", "/api/memory/search", {"filter": {"n": {"$where": "1"}}}, 400),
        ("POST", "/api/memory/events", {"actor_id": "a b", "session_id": "s", "payload": {}}, 422),
        ("GET", "/api/memory/records?namespace=..&key=k", None, 422),
        ("GET", "/api/memory/events?actor_id=a", None, 422),
        ("PUT", "/api/state/retention", {"keep_last": 0}, 422),
    ]
    for method, path, body, status in cases:
        r = await client.request(method, path, json=body)
        assert r.status_code == status, (method, path, body, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), r.text
        assert r.json()["detail"]


async def test_auth_scopes_and_tenants(app, anon_client: httpx.AsyncClient,  # type: ignore[no-untyped-def]
                                       make_key: Callable[..., Awaitable[str]]) -> None:
    r = await anon_client.get("/api/memory/events", params={"actor_id": "a", "session_id": "s"})
    assert r.status_code == 401
    reader = await make_key(["memory:read"], tenant="acme")
    writer = await make_key(["memory:read", "memory:write"], tenant="acme")
    outsider = await make_key(["memory:read", "memory:write", "state:read"], tenant="umbrella")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://garrison.test") as c:
        body = {"namespace": ["notes"], "key": "plan", "value": {"text": "acme's launch plan"}}
        r = await c.post("/api/memory/records", json=body, headers=_auth(reader))
        assert r.status_code == 403
        r = await c.post("/api/memory/records", json=body, headers=_auth(writer))
        assert r.status_code == 201
        r = await c.get("/api/memory/records", params={"namespace": "notes", "key": "plan"}, headers=_auth(reader))
        assert r.status_code == 200
        r = await c.get("/api/memory/records", params={"namespace": "notes", "key": "plan"},
                        headers=_auth(outsider))
        assert r.status_code == 404
        r = await c.post("/api/memory/search", json={"query": "launch plan"}, headers=_auth(outsider))
        assert r.json()["records"] == []
        r = await c.put("/api/state/retention", json={"keep_last": 3}, headers=_auth(outsider))
        assert r.status_code == 403


async def test_state_stats_retention_and_prune(client: httpx.AsyncClient, platform: Platform) -> None:
    r = await client.get("/api/whoami")
    tenant = r.json()["tenant_id"]
    saver = platform.services["state"].sync_saver(tenant)
    steps = Steps(saver, "thread-a")
    for i in range(6):
        steps.put({"v": i})
    r = await client.get("/api/state/stats")
    assert r.status_code == 200 and r.json()["checkpoints"] == 6 and r.json()["bytes"] > 0
    assert (await client.get("/api/state/retention")).json() == {"keep_last": None, "max_age_s": None,
                                                                 "idle_thread_s": None}
    r = await client.post("/api/state/prune")
    assert r.json()["skipped"] == "no retention policy"
    r = await client.put("/api/state/retention", json={"keep_last": 2})
    assert r.status_code == 200 and r.json()["keep_last"] == 2
    r = await client.post("/api/state/prune")
    assert r.status_code == 200 and r.json()["checkpoints_dropped"] == 4
    assert (await client.get("/api/state/stats")).json()["checkpoints"] == 2
    platform.services["state"].store(tenant)  # memory in use: stats say how its search finds candidates
    found = (await client.get("/api/state/stats")).json()["vector_search"]
    assert found == "sqlite-vec" or found.startswith(("pgvector ", "numpy"))
    reports = await platform.services["state"].run_retention_once()
    assert [rep["checkpoints_dropped"] for rep in reports] == [0]
