"""Runtime fixtures: one Temporal dev server for the session, agents deployed from tests/runtime/agents."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvicorn

from garrison.config import Settings
from garrison.runtime.temporal_server import EmbeddedTemporal


@pytest.fixture(scope="session")
def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Temporal dev server shared by the runtime tests (each platform has its own task queue)."""
    server = EmbeddedTemporal(tmp_path_factory.mktemp("temporal"))
    address = server.launch()
    yield address
    asyncio.run(server.stop())


@pytest.fixture
def settings(data_dir: Path, db_url: str, temporal_address: str) -> Settings:
    return Settings(data_dir=data_dir, database_url=db_url, audit_flush_ms=20, temporal_address=temporal_address)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def live_url(app) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """The app served over a real socket in this event loop (for SDK clients that open their own connections)."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    for _ in range(500):  # noqa: ASYNC110 (uvicorn offers no started event)
        if server.started:
            break
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
