"""schemathesis over garrison's own OpenAPI for /api/gpus: no input makes a 500."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from garrison.config import Settings
from garrison.server import create_app

from .conftest import NODES, QUEUES, free_port


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    data: Path = tmp_path_factory.mktemp("gpus-fuzz")
    app = create_app(Settings(data_dir=data, database_url=f"sqlite+aiosqlite:///{data}/g.db"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("garrison server did not start")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {(data / 'admin.key').read_text().strip()}"}
    try:
        httpx.post(f"{url}/api/tenants", json={"name": "acme"}, headers=headers).raise_for_status()
        httpx.put(f"{url}/api/gpus/inventory", json={"nodes": NODES}, headers=headers).raise_for_status()
        httpx.put(f"{url}/api/gpus/queues", json={"queues": QUEUES}, headers=headers).raise_for_status()
        yield url, headers
    finally:
        server.should_exit = True
        thread.join(10)


def _gpu_schema() -> Any:
    """The /api/gpus part of garrison's own OpenAPI (building the app starts nothing)."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = create_app(Settings(data_dir=Path(tmp))).openapi()
    spec["paths"] = {p: ops for p, ops in spec["paths"].items() if p.startswith("/api/gpus")}
    return schemathesis.openapi.from_dict(spec)


schema = _gpu_schema()


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error(case: Any, live: tuple[str, dict[str, str]]) -> None:
    url, headers = live
    response = case.call(base_url=url, headers=headers)
    case.validate_response(response, checks=[not_a_server_error])
