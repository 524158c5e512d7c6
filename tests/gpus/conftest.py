"""GPU layer fixtures: a declared inventory and queues for two tenants."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from garrison.gpus.service import GpuService
from garrison.platform import Platform

NODES = [{"name": "n0", "gpus": 4, "memory_mib": 81920, "model": "H100", "nvlink_groups": [[0, 1], [2, 3]]},
         {"name": "n1", "gpus": 4, "memory_mib": 81920, "model": "H100"}]
QUEUES = [
    {"name": "ops", "tenant": "default", "quota": 4},
    {"name": "ops-a", "parent": "ops", "quota": 4},
    {"name": "acme", "tenant": "acme", "quota": 4},
    {"name": "acme-a", "parent": "acme", "quota": 2, "over_quota_weight": 2},
    {"name": "acme-b", "parent": "acme", "quota": 2},
]


@pytest.fixture
def gpus(platform: Platform) -> GpuService:
    return platform.services["gpus"]  # type: ignore[no-any-return]


@pytest.fixture
async def cluster(client: httpx.AsyncClient, make_key: Any) -> dict[str, Any]:
    """Inventory and queues set by the operator; returns the keys tests use."""
    acme_key = await make_key(["gpus:read", "gpus:write"], tenant="acme")
    r = await client.put("/api/gpus/inventory", json={"nodes": NODES})
    assert r.status_code == 200, r.text
    r = await client.put("/api/gpus/queues", json={"queues": QUEUES})
    assert r.status_code == 200, r.text
    return {"acme": acme_key}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
async def garrison_url(app: Any) -> AsyncIterator[str]:
    """The platform's app served by uvicorn on a real port, for the CLI."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(task, 5)
