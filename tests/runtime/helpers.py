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


def as_an_older_runner(templates: Path, old: str, new: str, count: int) -> None:
    """Make the deployed version's runner one from before a protocol mark: its ``count`` occurrences of
    ``old`` become ``new`` (as a runner baked into a template deployed earlier would read)."""
    from garrison.runtime.deploy_sandbox import RUNNER_FILE

    runners = list(templates.glob(f"graph-*/site-packages/{RUNNER_FILE}"))
    assert len(runners) == 1, runners
    text = runners[0].read_text()
    assert text.count(old) == count
    older = runners[0].with_name("older.tmp")
    older.write_text(text.replace(old, new))
    older.chmod(0o644)
    older.replace(runners[0])  # a new entry in site-packages: a sandbox backend's copy of it is made anew
