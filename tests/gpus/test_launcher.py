"""The local launcher with harmless commands (no GPU needed: CUDA only reads the variable)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from garrison.gpus.launcher import LocalLauncher, with_vllm_cap
from garrison.gpus.service import GpuService
from garrison.platform import Platform

from .conftest import auth, free_port


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The launcher does not touch the store beyond what test_api covers on both engines."""
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


async def until(predicate: Any, what: str, tries: int = 400) -> None:
    """Poll (the process runs on its own); fail with what was awaited."""
    for _ in range(tries):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def enable(gpus: GpuService, tmp_path: Path) -> LocalLauncher:
    gpus.launcher = LocalLauncher(gpus, tmp_path / "logs", node="n0")
    return gpus.launcher


async def state_of(client: httpx.AsyncClient, wid: str) -> dict[str, Any]:
    return (await client.get(f"/api/gpus/workloads/{wid}")).json()  # type: ignore[no-any-return]


async def test_command_sees_its_gpus_and_memory_share_and_releases_on_exit(
        client: httpx.AsyncClient, cluster: dict, gpus: GpuService, tmp_path: Path) -> None:
    enable(gpus, tmp_path)
    out = tmp_path / "seen.txt"
    script = ("import os, sys; open(sys.argv[1], 'w').write(os.environ['CUDA_VISIBLE_DEVICES'] + ' ' + "
              "os.environ['GARRISON_GPU_FRACTION'] + ' ' + os.environ['GARRISON_GPU_MEMORY_MIB'])")
    r = await client.post("/api/gpus/workloads", json={"queue": "ops-a", "fraction": 0.5,
                                                       "command": [sys.executable, "-c", script, str(out)]})
    assert r.status_code == 201, r.text
    wid = r.json()["id"]
    await gpus.run_cycle()

    async def done() -> bool:
        return (await state_of(client, wid))["state"] == "completed"

    await until(done, "the command to finish")
    body = await state_of(client, wid)
    assert body["placement"] == [] and "status 0" in body["reason"]
    device, fraction, mib = out.read_text().split()
    assert device == "0" and float(fraction) == 0.5 and int(mib) == 40960
    assert (await client.get("/api/gpus/inventory")).json()["allocated"] == 0


async def test_failed_command_and_cancel_stop_the_process(client: httpx.AsyncClient, cluster: dict,
                                                          gpus: GpuService, tmp_path: Path) -> None:
    launcher = enable(gpus, tmp_path)
    failing = (await client.post("/api/gpus/workloads", json={
        "queue": "ops-a", "gpus": 1, "command": [sys.executable, "-c", "raise SystemExit(3)"]})).json()["id"]
    sleeper = (await client.post("/api/gpus/workloads", json={
        "queue": "ops-a", "gpus": 2, "command": [sys.executable, "-c", "import time; time.sleep(120)"]})).json()["id"]
    await gpus.run_cycle()

    async def failed() -> bool:
        return (await state_of(client, failing))["state"] == "failed"

    await until(failed, "the failing command")
    assert "status 3" in (await state_of(client, failing))["reason"]
    assert launcher.is_running(sleeper)
    proc = launcher.running[sleeper].proc
    assert (await client.post(f"/api/gpus/workloads/{sleeper}/cancel")).json()["state"] == "cancelled"
    assert proc.returncode is not None and not launcher.is_running(sleeper)
    assert (await client.get("/api/gpus/inventory")).json()["allocated"] == 0


async def test_an_inference_replica_registers_with_the_llm_gateway(
        client: httpx.AsyncClient, cluster: dict, gpus: GpuService, platform: Platform, tmp_path: Path) -> None:
    llm = platform.services.get("llm")
    assert llm is not None, "the LLM layer is part of this installation"
    enable(gpus, tmp_path)
    port = free_port()
    r = await client.post("/api/gpus/workloads", json={
        "queue": "ops-a", "memory_mib": 20480, "priority_class": "interactive",
        "serve": {"model": "local-replica", "port": port, "kind": "openai"},
        "command": [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]})
    assert r.status_code == 201, r.text
    wid = r.json()["id"]
    await gpus.run_cycle()

    async def registered() -> bool:
        try:
            return any(rep.base_url == f"http://127.0.0.1:{port}/v1" for rep in llm.get_model("local-replica").replicas)
        except Exception:
            return False

    await until(registered, "the replica to register")
    await client.post(f"/api/gpus/workloads/{wid}/cancel")
    assert not await registered()


async def test_commands_need_the_launcher_and_the_operator(client: httpx.AsyncClient, cluster: dict,
                                                           gpus: GpuService, make_key: Any, tmp_path: Path) -> None:
    body = {"queue": "ops-a", "gpus": 1, "command": ["true"]}
    r = await client.post("/api/gpus/workloads", json=body)
    assert r.status_code == 403 and "GARRISON_GPUS_LAUNCHER" in r.json()["detail"]
    enable(gpus, tmp_path)
    writer = await make_key(["gpus:write"], tenant="default")
    r = await client.post("/api/gpus/workloads", json=body, headers=auth(writer))
    assert r.status_code == 403 and "gpus:admin" in r.json()["detail"]
    r = await client.post("/api/gpus/workloads", json={"queue": "ops-a", "gpus": 1,
                                                       "serve": {"model": "m", "port": 8000}})
    assert r.status_code == 400 and "needs a command" in r.json()["detail"]
    r = await client.post("/api/gpus/workloads", json={"queue": "ops-a", "gpus": 1, "command": []})
    assert r.status_code == 422


def test_vllm_gets_its_memory_share() -> None:
    env = {"GARRISON_GPU_FRACTION": "0.2500"}
    assert with_vllm_cap(["vllm", "serve", "m"], env)[-2:] == ["--gpu-memory-utilization", "0.2500"]
    assert with_vllm_cap(["python", "-m", "vllm.entrypoints.openai.api_server"], env)[-1] == "0.2500"
    kept = ["vllm", "serve", "m", "--gpu-memory-utilization=0.5"]
    assert with_vllm_cap(kept, env) == kept
    assert with_vllm_cap(["python", "train.py"], env) == ["python", "train.py"]
    assert with_vllm_cap(["vllm", "serve"], {}) == ["vllm", "serve"]
