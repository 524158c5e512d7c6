"""Sandbox records in the store (SQLite and PostgreSQL): history survives a restart,
sandboxes of a dead garrison process are marked killed (garrison_restart), usage is
metered per tenant, and every execution span names its tenant, sandbox and backend."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from garrison.config import Settings
from garrison.core.clock import utcnow
from garrison.platform import Platform
from garrison.sandbox.store import SandboxRecord, owner_token
from garrison.server import create_app
from tests.conftest import _pg_database
from tests.sandbox.helpers import make_backend


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_available: str | None,
           migrated_templates: dict[str, str]) -> Iterator[str]:
    """Unlike the rest of tests/sandbox, records are tested on both stores."""
    if request.param == "sqlite":
        target = tmp_path / "garrison.db"
        shutil.copyfile(migrated_templates["sqlite"], target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    yield from _pg_database(pg_available, template=migrated_templates.get("postgresql"))


@pytest.fixture(autouse=True)
def _bwrap(tmp_path: Path) -> None:
    make_backend("bubblewrap", tmp_path / "probe")  # skips (fails in CI) when unavailable


@pytest.fixture
def settings(data_dir: Path, db_url: str) -> Settings:
    return Settings(data_dir=data_dir, database_url=db_url, audit_flush_ms=20)


async def started(settings: Settings) -> Platform:
    plat = Platform(settings)
    await plat.start()
    return plat


async def http(plat: Platform) -> AsyncIterator[httpx.AsyncClient]:
    key = plat.settings.admin_key_path.read_text().strip()
    transport = httpx.ASGITransport(app=create_app(platform=plat))
    async with httpx.AsyncClient(transport=transport, base_url="http://garrison.test",
                                 headers={"authorization": f"Bearer {key}"}) as c:
        yield c


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def stale(tenant: str, owner: str) -> SandboxRecord:
    now = utcnow()
    return SandboxRecord(id="sbx_" + secrets.token_hex(8), tenant_id=tenant, principal_id=None, template="python",
                         backend="bubblewrap", isolation="process",
                         limits={"memory_mib": 64, "cpus": 0.5, "pids": 32, "workspace_mib": 8,
                                 "output_cap_bytes": 1024, "network": "none", "timeout_s": 60},
                         metadata={"k": "v"}, pooled=False, state="running", killed_reason=None, owner=owner,
                         created_at=now, expires_at=now + timedelta(seconds=60))


async def test_history_survives_restart_and_orphans_are_marked(settings: Settings) -> None:
    plat = await started(settings)
    try:
        async for c in http(plat):
            r = await c.post("/api/sandboxes", json={"backend": "bubblewrap", "metadata": {"job": "a"},
                                                     "limits": {"memory_mib": 128, "pids": 64}})
            assert r.status_code == 201, r.text
            killed = r.json()["id"]
            r = await c.post(f"/api/sandboxes/{killed}/run_code", json={"code": "sum(range(10**6))"})
            assert r.json()["text"] == "499999500000"
            assert (await c.delete(f"/api/sandboxes/{killed}")).json()["killed_reason"] == "killed_by_user"
            r = await c.post("/api/sandboxes", json={"backend": "bubblewrap", "timeout_s": 120})
            left_running = r.json()["id"]
            tenant = r.json()["tenant_id"]
        svc = plat.services["sandbox"]
        assert svc.store is not None
        host = owner_token("x").split(":")[0]
        crashed = stale(tenant, f"{host}:{dead_pid()}:sbi_old")  # its garrison process is gone
        elsewhere = stale(tenant, "another-host:4242:sbi_x")  # another host's: not ours to judge
        alive = stale(tenant, f"{host}:1:sbi_init")  # a live process on this host
        for rec in (crashed, elsewhere, alive):
            await svc.store.insert(rec)
    finally:
        await plat.stop()

    plat = await started(settings)  # the restart
    try:
        async for c in http(plat):
            one = (await c.get(f"/api/sandboxes/{killed}")).json()
            assert one["state"] == "killed" and one["killed_reason"] == "killed_by_user"
            assert one["metadata"] == {"job": "a"} and one["backend"] == "bubblewrap"
            assert one["isolation"] == "process" and one["ended_at"] is not None
            assert one["limits"]["memory_mib"] == 128 and one["limits"]["pids"] == 64
            assert one["usage"]["cpu_seconds"] > 0
            assert (await c.get(f"/api/sandboxes/{left_running}")).json()["killed_reason"] == "shutdown"
            got = (await c.get(f"/api/sandboxes/{crashed.id}")).json()
            assert got["state"] == "killed" and got["killed_reason"] == "garrison_restart", got
            assert (await c.get(f"/api/sandboxes/{elsewhere.id}")).json()["state"] == "running"
            assert (await c.get(f"/api/sandboxes/{alive.id}")).json()["state"] == "running"
            # A sandbox another process runs cannot be driven from here: 409, never a 500.
            r = await c.post(f"/api/sandboxes/{elsewhere.id}/run_code", json={"code": "1"})
            assert r.status_code == 409 and "another garrison process" in r.json()["detail"]
            r = await c.post(f"/api/sandboxes/{crashed.id}/run_code", json={"code": "1"})
            assert r.status_code == 410 and r.json()["killed_reason"] == "garrison_restart"
            listed = {s["id"]: s for s in (await c.get("/api/sandboxes", params={"include_ended": True})).json()["items"]}
            assert {killed, left_running, crashed.id, elsewhere.id, alive.id} <= set(listed)
            running = {s["id"] for s in (await c.get("/api/sandboxes")).json()["items"]}
            assert killed not in running and crashed.id not in running and elsewhere.id in running
            # Another tenant sees none of it.
            other = await plat.identity.create_tenant("other")
            _, key = await plat.identity.create_key(other["id"], principal_name="o", name="k",
                                                    scopes=["sandbox:read"])
            r = await c.get(f"/api/sandboxes/{killed}", headers={"authorization": f"Bearer {key}"})
            assert r.status_code == 404
            r = await c.get("/api/sandboxes", params={"include_ended": True},
                            headers={"authorization": f"Bearer {key}"})
            assert r.json()["items"] == []
        await asyncio.sleep(0.2)
        events = [e for e in await plat.audit.tail(200) if e["action"] == "sandbox:kill"]
        assert any(crashed.id in json.dumps(e) and "garrison_restart" in json.dumps(e) for e in events), events
    finally:
        await plat.stop()


async def test_teardown_meters_cpu_and_memory_per_tenant(settings: Settings) -> None:
    plat = await started(settings)
    try:
        if plat.services.get("metering") is None:
            pytest.skip("the metering layer is not installed")
        async for c in http(plat):
            r = await c.post("/api/sandboxes", json={"backend": "bubblewrap"})
            sid = r.json()["id"]
            r = await c.post(f"/api/sandboxes/{sid}/run_code",
                             json={"code": "buf = bytearray(40 << 20)\nsum(i * i for i in range(2 * 10**6))"})
            assert r.status_code == 200 and r.json()["error"] is None, r.text
            await asyncio.sleep(1.2)  # one memory sample by the reaper with the 40 MiB held
            await c.delete(f"/api/sandboxes/{sid}")
            usage = (await c.get(f"/api/sandboxes/{sid}")).json()["usage"]
            assert usage["cpu_seconds"] > 0.05
            rows: list[dict] = []
            for _ in range(50):  # the meter commits in batches (~0.2 s)
                r = await c.get("/api/usage/resources", params={"by": "source"})
                assert r.status_code == 200, r.text
                rows = [x for x in r.json()["rows"] if x["source"] == "sandbox"]
                if {x["resource"] for x in rows} >= {"cpu", "memory"}:
                    break
                await asyncio.sleep(0.1)
            by = {x["resource"]: x for x in rows}
            await plat.services["sandbox"].settle_records()  # record writes are behind the request
            stored = await plat.services["sandbox"].store.get(sid)
            assert stored is not None
            assert by["cpu"]["unit"] == "cpu_second"
            assert float(by["cpu"]["quantity"]) == pytest.approx(stored.usage["cpu_seconds"], rel=0.01, abs=1e-3)
            assert float(by["cpu"]["quantity"]) == pytest.approx(usage["cpu_seconds"], rel=0.01, abs=1e-3)
            # 40 MiB held for over a second: well over 0.03 GiB-seconds, and what the record says.
            assert by["memory"]["unit"] == "gib_second" and float(by["memory"]["quantity"]) >= 0.03
            assert float(by["memory"]["quantity"]) == pytest.approx(stored.usage["memory_gib_seconds"], rel=0.01)
    finally:
        await plat.stop()


async def test_execution_spans_carry_tenant_sandbox_and_backend(settings: Settings) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    seen: list[ReadableSpan] = []

    class Keep(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def, override]
            seen.extend(spans)
            return SpanExportResult.SUCCESS

    plat = await started(settings)
    try:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            pytest.skip("no SDK tracer provider installed (the telemetry layer installs it)")
        provider.add_span_processor(SimpleSpanProcessor(Keep()))
        async for c in http(plat):
            r = await c.post("/api/sandboxes", json={"backend": "bubblewrap"})
            sid, tenant = r.json()["id"], r.json()["tenant_id"]
            await c.post(f"/api/sandboxes/{sid}/run_code", json={"code": "1 + 1"})
            await c.post(f"/api/sandboxes/{sid}/commands", json={"cmd": "true"})
            await c.delete(f"/api/sandboxes/{sid}")
        mine = {s.name: dict(s.attributes or {}) for s in seen if (s.attributes or {}).get("sandbox.id") == sid}
        for name in ("sandbox.create", "sandbox.run_code", "sandbox.command"):
            assert name in mine, sorted(mine)
            assert mine[name]["garrison.tenant_id"] == tenant
            assert mine[name]["sandbox.backend"] == "bubblewrap"
    finally:
        await plat.stop()

