"""LLM gateway fixtures: the fake upstream and garrison, each on a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from garrison.llm.fake_upstream import FakeConfig, FakeUpstream


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(FakeConfig(completion_tokens=8)) as upstream:
        yield upstream


@pytest.fixture
async def fake2() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(FakeConfig(completion_tokens=8)) as upstream:
        yield upstream



@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
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


@pytest.fixture
async def garrison_url(app) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """The garrison app (the `platform` fixture's) served by uvicorn on a real port."""
    async with serve(app) as url:
        yield url


@pytest.fixture
def add_model(client):  # type: ignore[no-untyped-def]
    """``await add_model("name", fake, kind="vllm")``: register a model (or one more replica)."""

    async def add(name: str, upstream: FakeUpstream, **extra: Any) -> dict[str, Any]:
        r = await client.post("/api/llm/models", json={"model": name, "base_url": upstream.base_url, **extra})
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    return add
