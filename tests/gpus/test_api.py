"""The HTTP API on a real platform (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import httpx

from garrison.gpus.service import GpuService
from garrison.platform import Platform

from .conftest import auth


async def submit(client: httpx.AsyncClient, key: str | None = None, **body: Any) -> httpx.Response:
    return await client.post("/api/gpus/workloads", json=body, headers=auth(key) if key else None)


async def test_submit_schedule_explain_finish(client: httpx.AsyncClient, cluster: dict, gpus: GpuService,
                                              platform: Platform) -> None:
    r = await submit(client, queue="ops-a", gpus=2, priority_class="training", name="train")
    assert r.status_code == 201, r.text
    wid = r.json()["id"]
    assert r.json()["state"] == "pending" and wid.startswith("gpw_")
    await gpus.run_cycle()
    r = await client.get(f"/api/gpus/workloads/{wid}")
    body = r.json()
    assert body["state"] == "running" and len(body["placement"]) == 2 and body["allocated_gpus"] == 2
    r = await client.get(f"/api/gpus/workloads/{wid}/explain")
    assert r.status_code == 200 and "quota" in r.json()["reason"]
    assert [h["action"] for h in r.json()["history"]] == ["pending", "start"]
    inv = (await client.get("/api/gpus/inventory")).json()
    assert inv["allocated"] == 2 and inv["capacity"] == 8
    r = await client.post(f"/api/gpus/workloads/{wid}/finish", json={})
    assert r.json()["state"] == "completed" and r.json()["placement"] == []
    r = await client.post(f"/api/gpus/workloads/{wid}/finish", json={})
    assert r.status_code == 422 and "already completed" in r.json()["detail"]
    await platform.audit.flush()
    actions = {e["action"] for e in (await client.get("/api/audit", params={"limit": 100})).json()}
    assert {"gpus:submit", "gpus:start", "gpus:finish"} <= actions


async def test_pending_work_says_why_and_cancel_releases(client: httpx.AsyncClient, cluster: dict,
                                                         gpus: GpuService) -> None:
    ids = []
    for _ in range(3):
        r = await submit(client, queue="ops-a", gpus=4, gang_size=1, priority_class="training")
        ids.append(r.json()["id"])
    await gpus.run_cycle()
    states = [(await client.get(f"/api/gpus/workloads/{i}")).json()["state"] for i in ids]
    assert states.count("running") == 2 and states.count("pending") == 1
    waiting = ids[states.index("pending")]
    why = (await client.get(f"/api/gpus/workloads/{waiting}/explain")).json()
    assert why["reason_code"] == "no-capacity" and "whole GPU" in why["reason"]
    assert why["queue_status"]["name"] == "ops-a"
    running = ids[states.index("running")]
    r = await client.post(f"/api/gpus/workloads/{running}/cancel")
    assert r.json()["state"] == "cancelled"
    await gpus.run_cycle()
    assert (await client.get(f"/api/gpus/workloads/{waiting}")).json()["state"] == "running"


async def test_tenants_are_isolated(client: httpx.AsyncClient, cluster: dict, gpus: GpuService) -> None:
    mine = (await submit(client, queue="ops-a", gpus=1)).json()["id"]
    acme = cluster["acme"]
    r = await submit(client, acme, queue="ops-a", gpus=1)
    assert r.status_code == 404 and "does not exist" in r.json()["detail"]
    theirs = await submit(client, acme, queue="acme-a", gpus=1)
    assert theirs.status_code == 201, theirs.text
    for path in (f"/api/gpus/workloads/{mine}", f"/api/gpus/workloads/{mine}/explain"):
        assert (await client.get(path, headers=auth(acme))).status_code == 404
    assert (await client.post(f"/api/gpus/workloads/{mine}/cancel", headers=auth(acme))).status_code == 404
    listed = (await client.get("/api/gpus/workloads", headers=auth(acme))).json()["items"]
    assert [w["id"] for w in listed] == [theirs.json()["id"]]
    queues = (await client.get("/api/gpus/queues", headers=auth(acme))).json()
    assert {q["name"] for q in queues["queues"]} == {"acme", "acme-a", "acme-b"}
    inv = (await client.get("/api/gpus/inventory", headers=auth(acme))).json()
    assert all(g["workloads"] is None for g in inv["gpus"])
    export = (await client.get("/api/gpus/export/k8s", headers=auth(acme))).json()["items"]
    assert {d["metadata"]["name"] for d in export if d["kind"] == "Queue"} == {"acme", "acme-a", "acme-b"}


async def test_pagination_and_bad_cursor(client: httpx.AsyncClient, cluster: dict) -> None:
    for _ in range(5):
        await submit(client, queue="ops-a", fraction=0.1)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/gpus/workloads", params=params)).json()
        seen += [w["id"] for w in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 5
    assert (await client.get("/api/gpus/workloads", params={"cursor": "!!!"})).status_code == 400
    assert (await client.get("/api/gpus/workloads", params={"limit": 100000})).status_code == 422
    r = await client.put("/api/gpus/queues", json={"queues": [{"name": "other", "tenant": "default"}]})
    assert r.status_code == 400 and "still has" in r.json()["detail"]  # its live work would be orphaned


async def test_text_the_database_cannot_hold_is_422_naming_the_field(client: httpx.AsyncClient, cluster: dict) -> None:
    # A NUL in a workload's name (or a queue's display name) reached PostgreSQL's INSERT: a 500 there.
    r = await submit(client, queue="ops-a", gpus=1, name="train\x00")
    assert r.status_code == 422 and "name" in r.text, r.text
    r = await client.put("/api/gpus/queues", json={"queues": [{"name": "q", "display_name": "Q\x00"}]})
    assert r.status_code == 422 and "display_name" in r.text, r.text
    assert (await client.get("/api/gpus/workloads")).json()["items"] == []
