"""GPU layer fixtures: a declared inventory and queues for two tenants."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

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


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}
