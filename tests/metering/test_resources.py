"""The resource meter: CPU-, memory GiB- and GPU-seconds handed off by other layers."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from garrison.cli.main import app as cli
from garrison.core.clock import utcnow
from garrison.metering.resources import ResourceEntry, ResourceWriter
from garrison.metering.service import MeteringService
from tests.llm.conftest import serve


async def _tenant(platform, name: str) -> str:  # type: ignore[no-untyped-def]
    row = await platform.identity.tenant_by_name(name) or await platform.identity.create_tenant(name)
    return str(row["id"])


async def test_recorded_resources_are_reported_per_tenant(client, platform, make_key):
    metering = platform.services["metering"]
    acme = await _tenant(platform, "acme")
    other = await _tenant(platform, "other")
    yesterday = utcnow() - timedelta(days=1)
    metering.record_resource(acme, "sandbox", "cpu", 1.5, attributes={"sandbox_id": "sbx_1"})
    metering.record_resource(acme, "sandbox", "cpu", 2.25, "cpu_second", {"sandbox_id": "sbx_2"})
    metering.record_resource(acme, "sandbox", "memory", 0.5, ts=yesterday)
    metering.record_resource(acme, "gpus", "gpu", 30, attributes={"device": "H100"})
    rid = metering.record_resource(other, "sandbox", "cpu", 100.0)
    assert rid.startswith("res")

    key = await make_key(["usage:read"], tenant="acme")
    h = {"authorization": f"Bearer {key}"}
    rows = (await client.get("/api/usage/resources", headers=h)).json()["rows"]
    assert [(r["resource"], r["unit"], r["quantity"], r["records"]) for r in rows] == [
        ("cpu", "cpu_second", 3.75, 2),  # the other tenant's 100 s are not acme's
        ("gpu", "gpu_second", 30.0, 1),
        ("memory", "gib_second", 0.5, 1),
    ]
    by_source = (await client.get("/api/usage/resources", params={"by": "source"}, headers=h)).json()["rows"]
    assert {(r["source"], r["resource"]) for r in by_source} == {("gpus", "gpu"), ("sandbox", "cpu"),
                                                                 ("sandbox", "memory")}
    by_day = (await client.get("/api/usage/resources", params={"by": "day"}, headers=h)).json()["rows"]
    assert {r["day"] for r in by_day} == {yesterday.date().isoformat(), utcnow().date().isoformat()}
    today = (await client.get("/api/usage/resources", params={"since": utcnow().date().isoformat()},
                              headers=h)).json()["rows"]
    assert "memory" not in {r["resource"] for r in today}
    entries = (await client.get("/api/usage/resources/entries", headers=h)).json()["entries"]
    assert len(entries) == 4 and {e["tenant_id"] for e in entries} == {acme}
    assert {"sandbox_id": "sbx_2"} in [e["attributes"] for e in entries]

    # The operator's admin sees every tenant; a tenant may not ask for another's.
    everyone = (await client.get("/api/usage/resources", params={"by": "tenant", "tenant": "*"})).json()["rows"]
    assert {r["tenant"] for r in everyone} == {acme, other}
    r = await client.get("/api/usage/resources", params={"tenant": other}, headers=h)
    assert r.status_code == 403
    r = await client.get("/api/usage/resources", params={"by": "model"}, headers=h)
    assert r.status_code == 422 and "by" in r.text
    nokey = await make_key(["llm:invoke"], tenant="acme")
    r = await client.get("/api/usage/resources", headers={"authorization": f"Bearer {nokey}"})
    assert r.status_code == 403


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("t", "sandbox", "cpu", -1.0), {}, "zero or more"),
        (("t", "sandbox", "cpu", float("nan")), {}, "finite"),
        (("t", "sandbox", "cpu", "3"), {}, "number"),
        (("t", "sandbox", "cpu", 1.0, "gib_second"), {}, "cpu_second"),
        (("t", "sandbox", "disk", 1.0), {}, "unit is required"),
        (("", "sandbox", "cpu", 1.0), {}, "tenant_id"),
        (("t", "", "cpu", 1.0), {}, "source"),
        (("t", "sandbox", "cpu", 1.0), {"attributes": {"x": object()}}, "JSON"),
    ],
)
async def test_bad_records_are_refused_with_the_reason(platform, args, kwargs, message):
    metering = platform.services["metering"]
    with pytest.raises(ValueError, match=message):
        metering.record_resource(*args, **kwargs)
    # A resource of its own kind is fine when it names its unit.
    metering.record_resource("t", "sandbox", "disk", 4.0, "gib_second")


async def test_nothing_is_lost_at_shutdown_or_after_a_crash(platform, tmp_path):
    journal = tmp_path / "journal"
    svc = MeteringService(platform.db, journal, flush_interval_s=60)  # no flush before stop
    await svc.start()
    for i in range(50):
        svc.record_resource("t_stop", "sandbox", "cpu", 0.1, attributes={"i": i})
    await svc.stop()
    rows = await MeteringService(platform.db, None).resource_report(by="tenant", tenant_id="t_stop")
    assert rows == [{"tenant": "t_stop", "resource": "cpu", "unit": "cpu_second", "quantity": 5.0, "records": 50}]

    # A process killed before its batch was written leaves a journal; the next start commits it once.
    crashed = ResourceWriter(platform.db, journal, flush_interval_s=60)
    crashed._journal = crashed._open_journal()  # as start() does, without the batcher
    now = utcnow()
    for i in range(3):
        crashed.append(ResourceEntry(f"res_crash{i}", now, "t_crash", "sandbox", "memory", 2.0, "gib_second", {}))
    await svc.start()  # replays the left-over journal
    await svc.stop()
    fresh = ResourceWriter(platform.db, journal)
    assert await fresh.replay() == 0
    rows = await svc.resource_report(by="resource", tenant_id="t_crash")
    assert rows == [{"resource": "memory", "unit": "gib_second", "quantity": 6.0, "records": 3}]


async def test_usage_cli_reports_resources(platform, app, admin_key):
    platform.services["metering"].record_resource("t_cli", "sandbox", "cpu", 1.0)
    async with serve(app) as url:
        runner = CliRunner()
        base = ["--url", url, "--key", admin_key, "--tenant", "*"]
        out = await asyncio.to_thread(runner.invoke, cli, ["usage", "--resources", "--by", "tenant",
                                                           "--format", "json", *base])
        assert out.exit_code == 0, out.output
        rows = json.loads(out.output)
        assert [(r["tenant"], r["resource"], r["quantity"]) for r in rows] == [("t_cli", "cpu", 1.0)]
        out = await asyncio.to_thread(runner.invoke, cli, ["usage", "--resources", "--format", "csv", *base])
        assert out.exit_code == 0 and out.output.splitlines()[0] == "resource,unit,quantity,records"
        out = await asyncio.to_thread(runner.invoke, cli, ["usage", "--resources", "--by", "model", *base])
        assert out.exit_code != 0
