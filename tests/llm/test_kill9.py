"""kill -9 of garrison under load: every call whose response completed is in the ledger."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest


@pytest.fixture
def db_url(tmp_path: Path) -> str:  # the journal is what is tested; one store is enough
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start(data: Path, port: int, db: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "GARRISON_DATA_DIR": str(data), "GARRISON_PORT": str(port),
           "GARRISON_DATABASE_URL": db, "GARRISON_CONFIG": str(data / "none.toml")}
    proc = await asyncio.create_subprocess_exec(str(Path(sys.executable).parent / "garrison"), "up", env=env,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    async with httpx.AsyncClient() as c:
        for _ in range(600):
            try:
                if (await c.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError("garrison did not start")


@pytest.mark.slow
async def test_no_completed_call_is_lost_to_kill_9(tmp_path, fake, db_url):
    data, port = tmp_path / "g", _port()
    data.mkdir()
    proc = await _start(data, port, db_url)
    url = f"http://127.0.0.1:{port}"
    try:
        key = (data / "admin.key").read_text().strip()
        h = {"authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=url, headers=h, timeout=10) as c:
            r = await c.post("/api/llm/models", json={"model": "m", "base_url": fake.base_url})
            assert r.status_code == 201
            completed = 0
            stop, enough = asyncio.Event(), asyncio.Event()

            async def load() -> None:
                nonlocal completed
                body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
                while not stop.is_set():
                    try:
                        r = await c.post("/v1/chat/completions", json=body)
                    except httpx.TransportError:
                        return
                    if r.status_code == 200:
                        completed += 1
                        if completed >= 150:
                            enough.set()

            workers = [asyncio.create_task(load()) for _ in range(8)]
            await enough.wait()
            os.kill(proc.pid, signal.SIGKILL)  # mid-load, with entries still in the batcher
            await proc.wait()
            stop.set()
            await asyncio.gather(*workers)
        proc = await _start(data, port, db_url)
        async with httpx.AsyncClient(base_url=url, headers=h, timeout=10) as c:
            entries = (await c.get("/api/usage/entries", params={"limit": 1000})).json()["entries"]
        assert len(entries) >= completed
        assert len({e["id"] for e in entries}) == len(entries)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
