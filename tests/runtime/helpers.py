"""Helpers shared by the runtime tests."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from garrison.runtime.bundles import pack

AGENTS = Path(__file__).parent / "agents"


def bundle(name: str) -> bytes:
    return pack(AGENTS / name)


async def deploy(client: httpx.AsyncClient, name: str, directory: str | None = None) -> dict:
    r = await client.post(f"/api/runtime/agents/{name}/versions", content=bundle(directory or name),
                          headers={"content-type": "application/gzip"})
    assert r.status_code == 201, r.text
    return r.json()


async def sse_events(response: httpx.Response) -> list[dict]:
    """Parse an SSE body into [{"event", "data", "id"}] (data JSON-decoded)."""
    out: list[dict] = []
    current: dict = {}
    async for line in response.aiter_lines():
        if not line:
            if current:
                out.append(current)
                current = {}
            continue
        field, _, value = line.partition(": ")
        if field == "data":
            current["data"] = json.loads(value)
        elif field in ("event", "id"):
            current[field] = value
    if current:
        out.append(current)
    return out
