"""GPU-seconds in the resource meter: what each workload held, per tenant (SQLite and PostgreSQL).

Most tests drive the service's clock by hand, so every stretch a workload held is known to
the second and the records must add up to it exactly.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from garrison.config import Settings
from garrison.gpus.launcher import LocalLauncher
from garrison.gpus.model import State
from garrison.gpus.scheduler import Scheduler
from garrison.gpus.schemas import InventoryIn, QueuesIn, WorkloadIn
from garrison.gpus.service import GpuService
from garrison.platform import Platform

from .conftest import NODES, QUEUES, auth
from .helpers import gpus as inventory
from .helpers import job, two_teams


class Clock:
    """The service's clock, moved by the test (starts now: records land on today)."""

    def __init__(self) -> None:
        self.t = float(int(time.time()))

    def __call__(self) -> float:
        return self.t


def on(gpus: GpuService) -> Clock:
    clock = Clock()
    gpus.clock = clock
    return clock


async def records(platform: Platform, workload_id: str | None = None) -> list[dict[str, Any]]:
    """The gpu records handed to the meter (committed), oldest stretch first."""
    rows = await platform.services["metering"].resource_entries(None, 1000)
    out = [r for r in rows if r["resource"] == "gpu"
           and (workload_id is None or r["attributes"]["workload_id"] == workload_id)]
    return sorted(out, key=lambda r: r["attributes"]["start"])


def contiguous(rows: list[dict[str, Any]]) -> None:
    """Stretches of one holding follow each other without gap or overlap."""
    for a, b in zip(rows, rows[1:], strict=False):
        assert a["attributes"]["end"] == b["attributes"]["start"], (a["attributes"], b["attributes"])


def epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def test_a_finished_workload_is_metered_to_its_tenant_user_and_agent(
        client: httpx.AsyncClient, cluster: dict, gpus: GpuService, platform: Platform, make_key: Any) -> None:
    clock = on(gpus)
    acme = await make_key(["gpus:read", "gpus:write", "usage:read"], tenant="acme", principal="trainer-bot",
                          attributes={"agent": "trainer"})
    train = (await client.post("/api/gpus/workloads", headers=auth(acme),
                               json={"queue": "acme-a", "gpus": 2, "name": "train"})).json()["id"]
    share = (await client.post("/api/gpus/workloads", json={"queue": "ops-a", "fraction": 0.5})).json()["id"]
    await gpus.run_cycle()
    clock.t += 45.5
    r = await client.post(f"/api/gpus/workloads/{train}/finish", json={}, headers=auth(acme))
    assert r.json()["state"] == "completed"
    clock.t += 10
    assert (await client.post(f"/api/gpus/workloads/{share}/cancel")).json()["state"] == "cancelled"

    done = (await client.get(f"/api/gpus/workloads/{train}", headers=auth(acme))).json()
    held_s = epoch(done["finished_at"]) - epoch(done["started_at"])
    assert held_s == pytest.approx(45.5)
    mine = await records(platform, train)
    assert sum(r["quantity"] for r in mine) == pytest.approx(2 * held_s)
    assert {(r["source"], r["unit"]) for r in mine} == {("gpus", "gpu_second")}
    last = mine[-1]["attributes"]
    tenant = (await platform.identity.tenant_by_name("acme"))["id"]
    assert mine[-1]["tenant_id"] == tenant
    assert last["ended"] is True and last["end_reason"] == "completed"
    assert last["queue"] == "acme-a" and last["workload_name"] == "train" and last["allocated_gpus"] == 2
    assert len(last["gpus"]) == 2 and last["gpu_models"] == ["H100"] and len(last["nodes"]) == 1
    assert last["agent"] == "trainer" and last["key_id"] and last["user"]
    # A shared GPU counts its share: half a GPU for 55.5 s.
    half = await records(platform, share)
    assert sum(r["quantity"] for r in half) == pytest.approx(0.5 * 55.5)
    assert half[-1]["attributes"]["end_reason"] == "cancelled" and half[-1]["attributes"]["allocated_gpus"] == 0.5

    # The tenant sees its GPU-seconds by source; the other tenant's half GPU is not in it.
    rows = (await client.get("/api/usage/resources", params={"by": "source"}, headers=auth(acme))).json()["rows"]
    assert [(r["source"], r["resource"], r["unit"]) for r in rows] == [("gpus", "gpu", "gpu_second")]
    assert rows[0]["quantity"] == pytest.approx(91.0)


async def test_preempted_work_counts_each_holding(client: httpx.AsyncClient, cluster: dict, gpus: GpuService,
                                                   platform: Platform) -> None:
    clock = on(gpus)
    t0 = clock.t
    big = (await client.post("/api/gpus/workloads", json={"queue": "ops-a", "gpus": 4, "gang_size": 2,
                                                          "priority_class": "training"})).json()["id"]
    await gpus.run_cycle()
    assert (await client.get(f"/api/gpus/workloads/{big}")).json()["state"] == "running"
    clock.t += 30
    urgent = (await client.post("/api/gpus/workloads", json={"queue": "ops-a", "gpus": 1,
                                                             "priority_class": "interactive"})).json()["id"]
    await gpus.run_cycle()
    body = (await client.get(f"/api/gpus/workloads/{big}")).json()
    assert body["state"] == "pending" and body["preemptions"] == 1
    first = await records(platform, big)
    assert [r["quantity"] for r in first] == pytest.approx([8 * 30])
    assert first[0]["attributes"]["end_reason"] == "preempted" and first[0]["attributes"]["ended"] is True

    clock.t += 5
    await client.post(f"/api/gpus/workloads/{urgent}/finish", json={})
    await gpus.run_cycle()
    assert (await client.get(f"/api/gpus/workloads/{big}")).json()["state"] == "running"
    clock.t += 20
    await client.post(f"/api/gpus/workloads/{big}/cancel")
    both = await records(platform, big)
    assert sum(r["quantity"] for r in both) == pytest.approx(8 * 30 + 8 * 20)  # not the 5 s it waited
    assert epoch(both[-1]["attributes"]["start"]) == pytest.approx(t0 + 35)
    assert sum(r["quantity"] for r in await records(platform, urgent)) == pytest.approx(5)


async def test_long_running_work_is_metered_every_interval(client: httpx.AsyncClient, cluster: dict,
                                                           gpus: GpuService, platform: Platform) -> None:
    clock = on(gpus)
    gpus.meter_every_s = 30
    wid = (await client.post("/api/gpus/workloads", json={"queue": "ops-a", "gpus": 3})).json()["id"]
    await gpus.run_cycle()
    for step in (31, 14, 25, 40):  # at 31, 70 and 110 s: at least 30 s since the last record
        clock.t += step
        await gpus.run_cycle()
    running = await records(platform, wid)
    assert [r["attributes"]["seconds"] for r in running] == [31, 39, 40]
    assert all(r["attributes"]["ended"] is False for r in running)
    clock.t += 7
    await client.post(f"/api/gpus/workloads/{wid}/finish", json={})
    rows = await records(platform, wid)
    contiguous(rows)
    body = (await client.get(f"/api/gpus/workloads/{wid}")).json()
    assert sum(r["quantity"] for r in rows) == pytest.approx(3 * (epoch(body["finished_at"]) - epoch(body["started_at"])))
    assert sum(r["quantity"] for r in rows) == pytest.approx(3 * 117)


async def test_the_scheduler_loop_meters_on_its_own(client: httpx.AsyncClient, cluster: dict, gpus: GpuService,
                                                    platform: Platform) -> None:
    """Real clock, the background loop: records appear while it runs and add up to its time."""
    gpus.meter_every_s, gpus.interval_s = 0.1, 0.05
    wid = (await client.post("/api/gpus/workloads", json={"queue": "ops-a", "fraction": 0.25})).json()["id"]
    for _ in range(200):
        if len(await records(platform, wid)) >= 2:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("no periodic GPU-second records while the workload ran")
    await client.post(f"/api/gpus/workloads/{wid}/finish", json={})
    rows = await records(platform, wid)
    contiguous(rows)
    body = (await client.get(f"/api/gpus/workloads/{wid}")).json()
    held_s = epoch(body["finished_at"]) - epoch(body["started_at"])
    assert sum(r["quantity"] for r in rows) == pytest.approx(0.25 * held_s, abs=1e-4)


async def test_a_restart_neither_counts_twice_nor_loses_the_running_stretch(settings: Settings) -> None:
    clock = Clock()
    t0 = clock.t
    first = Platform(settings)
    await first.start()
    try:
        admin = await first.identity.authenticate(settings.admin_key_path.read_text().strip())
        gpus = first.services["gpus"]
        gpus.clock = clock
        await gpus.set_inventory(admin, InventoryIn.model_validate({"nodes": NODES}))
        await first.identity.create_tenant("acme")
        await gpus.set_queues(admin, QueuesIn.model_validate({"queues": QUEUES}))
        w = await gpus.submit(admin, WorkloadIn(queue="ops-a", gpus=2))
        await gpus.run_cycle()
        clock.t += 100
        await gpus.run_cycle()  # a periodic record: [0, 100]
        clock.t += 30
    finally:
        await first.stop()  # metered up to 130 on the way down

    second = Platform(settings)
    await second.start()
    try:
        gpus = second.services["gpus"]
        gpus.clock = clock
        admin = await second.identity.authenticate(settings.admin_key_path.read_text().strip())
        assert (await gpus.get(admin, w.id)).state == "running"
        assert gpus.sched.workloads[w.id].metered_until == pytest.approx(t0 + 130)
        clock.t += 70
        done = await gpus.finish(admin, w.id)
        rows = await records(second, w.id)
        contiguous(rows)
        assert [r["attributes"]["seconds"] for r in rows] == [100, 30, 70]
        held_s = done.finished_at.timestamp() - done.started_at.timestamp()  # type: ignore[union-attr]
        assert sum(r["quantity"] for r in rows) == pytest.approx(2 * held_s) == pytest.approx(400)
    finally:
        await second.stop()


async def test_a_launched_process_that_exits_is_metered(client: httpx.AsyncClient, cluster: dict,
                                                        gpus: GpuService, platform: Platform, tmp_path: Path) -> None:
    gpus.launcher = LocalLauncher(gpus, tmp_path / "logs", node="n0")
    r = await client.post("/api/gpus/workloads", json={
        "queue": "ops-a", "gpus": 1, "command": [sys.executable, "-c", "import time; time.sleep(0.2)"]})
    wid = r.json()["id"]
    await gpus.run_cycle()
    for _ in range(400):
        body = (await client.get(f"/api/gpus/workloads/{wid}")).json()
        if body["state"] == "completed":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the command did not finish")
    async with gpus.lock:  # the state shows before the exit's write and metering (under the lock) end
        pass
    rows = await records(platform, wid)
    held_s = epoch(body["finished_at"]) - epoch(body["started_at"])
    assert held_s > 0 and sum(r["quantity"] for r in rows) == pytest.approx(held_s, abs=1e-4)  # API times: microseconds
    assert rows[-1]["attributes"]["end_reason"] == "completed"


async def test_without_the_metering_layer_nothing_is_sent_and_nothing_fails(
        client: httpx.AsyncClient, cluster: dict, gpus: GpuService, platform: Platform) -> None:
    clock = on(gpus)
    metering = platform.services.pop("metering")
    try:
        wid = (await client.post("/api/gpus/workloads", json={"queue": "ops-a", "gpus": 1})).json()["id"]
        await gpus.run_cycle()
        clock.t += 10
        assert (await client.post(f"/api/gpus/workloads/{wid}/finish", json={})).json()["state"] == "completed"
    finally:
        platform.services["metering"] = metering
    assert await records(platform, wid) == []


def test_every_way_of_letting_go_of_gpus_is_cut_once() -> None:
    """Scheduler level: unhealthy GPU, new inventory (kept or lost), finish; the simulator
    (held is None) collects nothing."""
    s = Scheduler(inventory(1, 2), two_teams(1, 1))
    s.held = []
    w = job("w1", gpus=1)
    s.submit(w, 0)
    s.cycle(0)
    gpu = w.placement[0][0]
    s.set_health(gpu, False, 10)  # back to pending: [0, 10]
    s.cycle(12)
    assert w.state is State.running and w.placement[0][0] != gpu
    s.replace_inventory(inventory(1, 2), 20)  # same GPUs: it keeps running, cut at 20
    assert w.state is State.running and w.started_at == 12
    s.meter(25, 10)  # only 5 s since the cut: nothing
    s.meter(50, 10)
    s.finish("w1", 50)  # nothing left to cut
    cuts = [(h.start, h.end, h.allocated) for h in s.take_held()]
    assert cuts == [(0, 10, 1.0), (12, 20, 1.0), (20, 50, 1.0)]
    assert s.take_held() == []

    s.submit(w2 := job("w2", gpus=1), 60)
    s.cycle(60)
    s.replace_inventory(inventory(1, 1, memory_mib=40960), 70)  # a different GPU: requeued
    assert w2.state is State.pending and [(h.start, h.end) for h in s.take_held()] == [(60, 70)]

    sim = Scheduler(inventory(1, 2), two_teams(1, 1))
    sim.submit(job("w3", gpus=1), 0)
    sim.cycle(0)
    sim.finish("w3", 9)
    assert sim.held is None and sim.take_held() == []


async def test_the_interval_is_a_setting(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARRISON_GPUS_METER_S", "5")
    plat = Platform(settings)
    await plat.start()
    try:
        assert plat.services["gpus"].meter_every_s == 5
    finally:
        await plat.stop()
