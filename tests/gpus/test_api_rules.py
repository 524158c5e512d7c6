"""API rules that do not depend on the store engine (SQLite only; test_api covers both)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from prometheus_client import REGISTRY

from garrison.gpus.service import GpuService

from .conftest import auth
from .test_api import submit
from .test_kai import crd_schema


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


async def test_fractions_share_a_gpu_and_metrics_show_it(client: httpx.AsyncClient, cluster: dict,
                                                         gpus: GpuService) -> None:
    waits_before = REGISTRY.get_sample_value("garrison_gpus_queue_wait_seconds_count",
                                             {"priority_class": "interactive"}) or 0.0
    for _ in range(4):
        r = await submit(client, queue="ops-a", fraction=0.25, priority_class="interactive")
        assert r.status_code == 201
    await gpus.run_cycle()
    page = (await client.get("/api/gpus/workloads", params={"state": "running"})).json()
    assert len(page["items"]) == 4
    assert len({p["gpu"] for w in page["items"] for p in w["placement"]}) == 1
    await submit(client, queue="ops-a", gpus=1)
    await gpus.run_cycle()
    text = (await client.get("/metrics")).text
    assert "garrison_gpus_utilisation_ratio 0.25" in text  # two GPUs of eight: one in quarters, one whole
    assert 'garrison_gpus_queue_allocated{queue="ops-a"} 2.0' in text
    assert "garrison_gpus_queue_wait_seconds_count" in text
    # Counters are process-wide: compare with what this test found.
    assert REGISTRY.get_sample_value("garrison_gpus_queue_wait_seconds_count",
                                     {"priority_class": "interactive"}) == waits_before + 4


REFUSALS = [
    ({"queue": "ops-a", "gpus": 16}, "largest node has 4"),
    ({"queue": "ops-a", "fraction": 1.5}, "not below 1"),
    ({"queue": "ops-a", "gpus": 4, "gang_size": 3}, "cluster has 8"),
    ({"queue": "ops-a", "memory_mib": 200000}, "largest GPU"),
    ({"queue": "ops-a"}, "exactly one"),
    ({"queue": "ops", "gpus": 1}, "child queues"),
    ({"queue": "ops-a", "gpus": 4, "gang_size": 2, "priority_class": "interactive"}, "within quota"),
]
MALFORMED = [
    {"queue": "ops-a", "gpus": 1, "unknown": True},
    {"queue": "ops-a", "gpus": -1},
    {"queue": "ops-a", "gpus": "many"},
    {"queue": "x" * 100, "gpus": 1},
    {"queue": "ops-a", "gpus": 1, "gang_size": 10**9},
    {"queue": "ops-a", "gpus": 1, "priority_class": "vip"},
    {"queue": "ops-a", "gpus": 1, "command": ["x"] * 1000},
    {"gpus": 1},
]


async def test_impossible_and_malformed_requests_are_4xx_with_the_reason(
        client: httpx.AsyncClient, cluster: dict, gpus: GpuService) -> None:
    for body, message in REFUSALS:
        r = await submit(client, **body)
        assert r.status_code == 422, body
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"].endswith("gpu-request-refused") and message in r.json()["detail"], body
    for body in MALFORMED:
        r = await submit(client, **body)
        assert r.status_code == 422, body
    r = await client.post("/api/gpus/workloads", content=b'{"queue": "ops-a", "fraction": NaN}',
                          headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500
    r = await client.post("/api/gpus/workloads", content=b"[" * 5000, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500
    assert not gpus.sched.workloads  # nothing was accepted


async def test_scopes_and_operator_only_configuration(client: httpx.AsyncClient, anon_client: httpx.AsyncClient,
                                                      cluster: dict, make_key: Any) -> None:
    reader = await make_key(["gpus:read"], tenant="acme")
    assert (await submit(client, reader, queue="acme-a", gpus=1)).status_code == 403
    tenant_admin = await make_key(["gpus:admin", "gpus:read"], tenant="acme")
    r = await client.put("/api/gpus/queues", json={"queues": []}, headers=auth(tenant_admin))
    assert r.status_code == 403 and "operator" in r.json()["detail"]
    r = await client.put("/api/gpus/inventory", json={"nodes": []}, headers=auth(tenant_admin))
    assert r.status_code == 403
    assert (await anon_client.get("/api/gpus/workloads")).status_code == 401
    assert (await anon_client.post("/api/gpus/workloads", json={"queue": "acme-a", "gpus": 1})).status_code == 401


async def test_queue_configuration_validation(client: httpx.AsyncClient, cluster: dict) -> None:
    over = [{"name": "big", "tenant": "default", "quota": 100}, {"name": "big-a", "parent": "big", "quota": 100}]
    r = await client.put("/api/gpus/queues", json={"queues": over})
    assert r.status_code == 200 and any("proportionally" in w for w in r.json()["warnings"])
    cases = [
        ([{"name": "root", "quota": 1}], 400, "needs a tenant"),
        ([{"name": "root", "tenant": "nobody"}], 400, "does not exist"),
        ([{"name": "kid", "parent": "ghost"}], 400, "does not exist"),
        ([{"name": "Bad Name", "tenant": "default"}], 422, ""),
        ([{"name": "root", "tenant": "default", "quota": -3}], 422, ""),
    ]
    for queues, status, message in cases:
        r = await client.put("/api/gpus/queues", json={"queues": queues})
        assert r.status_code == status, (queues, r.text)
        assert message in r.json()["detail"] if message else True


async def test_bad_inventory_and_health(client: httpx.AsyncClient, cluster: dict, gpus: GpuService) -> None:
    r = await client.put("/api/gpus/inventory", json={"nodes": [{"name": "a", "gpus": 2, "memory_mib": 10,
                                                                  "nvlink_groups": [[0, 5]]}]})
    assert r.status_code == 400 and "NVLink" in r.json()["detail"]
    r = await client.put("/api/gpus/inventory", json={})
    assert r.status_code == 400
    r = await client.put("/api/gpus/inventory", json={"discover": True})
    assert r.status_code in (200, 422)  # 422 on hosts without NVML, with the reason
    if r.status_code == 422:
        assert "NVML" in r.json()["detail"]
        wid = (await submit(client, queue="ops-a", gpus=1)).json()["id"]
        await gpus.run_cycle()
        gpu = (await client.get(f"/api/gpus/workloads/{wid}")).json()["placement"][0]["gpu"]
        r = await client.put(f"/api/gpus/inventory/{gpu}/health", json={"healthy": False})
        assert r.status_code == 200
        assert next(g for g in r.json()["gpus"] if g["id"] == gpu)["healthy"] is False
        await gpus.run_cycle()  # the scheduler may already have moved it: either way, off that GPU
        moved = (await client.get(f"/api/gpus/workloads/{wid}")).json()
        assert moved["state"] == "running" and moved["placement"][0]["gpu"] != gpu
        history = (await client.get(f"/api/gpus/workloads/{wid}/explain")).json()["history"]
        assert any("unhealthy" in h["reason"] for h in history) and moved["preemptions"] == 1
    assert (await client.put("/api/gpus/inventory/n9/0/health", json={"healthy": True})).status_code == 404


async def test_export_validates_against_kai_crds(client: httpx.AsyncClient, cluster: dict) -> None:
    await submit(client, queue="ops-a", gpus=1, gang_size=2, topology="node")
    await submit(client, queue="ops-a", memory_mib=20480, priority_class="interactive")
    items = (await client.get("/api/gpus/export/k8s", params={"namespace": "agents"})).json()["items"]
    queues, groups = crd_schema("scheduling.run.ai_queues.yaml"), crd_schema("scheduling.run.ai_podgroups.yaml")
    kinds = [d["kind"] for d in items]
    assert kinds.count("Queue") == 5 and kinds.count("PodGroup") == 2 and kinds.count("Pod") == 3
    for d in items:
        if d["kind"] == "Queue":
            jsonschema.validate(d, queues)
        elif d["kind"] == "PodGroup":
            jsonschema.validate(d, groups)
            assert d["metadata"]["namespace"] == "agents"
    bad = await client.get("/api/gpus/export/k8s", params={"namespace": "Not Valid"})
    assert bad.status_code == 422


async def test_a_tenant_cannot_flood_the_scheduler(client: httpx.AsyncClient, cluster: dict,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from garrison.gpus import service as service_module

    monkeypatch.setattr(service_module, "MAX_ACTIVE_PER_TENANT", 2)
    for _ in range(2):
        assert (await submit(client, queue="ops-a", fraction=0.1)).status_code == 201
    r = await submit(client, queue="ops-a", fraction=0.1)
    assert r.status_code == 429 and r.headers["retry-after"] == "30" and "cancel some" in r.json()["detail"]
    other = await submit(client, cluster["acme"], queue="acme-a", fraction=0.1)
    assert other.status_code == 201  # another tenant is not affected


async def test_concurrent_submissions_cancels_and_cycles_stay_consistent(
        client: httpx.AsyncClient, cluster: dict, gpus: GpuService) -> None:
    import asyncio

    bodies = [{"queue": "ops-a", "fraction": 0.25} if i % 3 else {"queue": "ops-a", "gpus": 1, "gang_size": 2}
              for i in range(40)]
    responses = await asyncio.gather(*(submit(client, **b) for b in bodies), *(gpus.run_cycle() for _ in range(5)))
    ids = [r.json()["id"] for r in responses[:40] if isinstance(r, httpx.Response) and r.status_code == 201]
    assert len(ids) == 40
    cancels = await asyncio.gather(*(client.post(f"/api/gpus/workloads/{i}/cancel") for i in ids[::2]),
                                   gpus.run_cycle(), gpus.run_cycle())
    assert all(r.status_code == 200 for r in cancels[:20])
    await gpus.run_cycle()
    async with gpus.lock:  # no cycle in between: the store must say what memory says
        for wid in ids:
            stored, live = await gpus.store.get(wid), gpus.sched.get(wid)
            assert stored is not None and live is not None and stored["state"] == live.state.value
            assert stored["allocated"] == pytest.approx(live.allocated)
        held = sum(w.allocated for w in gpus.sched.running.values())
        assert sum(s.spec.memory_mib - s.free_mib for s in gpus.sched.cluster.slots) / 81920 == pytest.approx(held)
    rows = {w["id"]: w for w in (await client.get("/api/gpus/workloads", params={"limit": 100})).json()["items"]}
    assert all(rows[i]["state"] == "cancelled" for i in ids[::2])
