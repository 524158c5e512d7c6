"""Client for the runtime API (/api/runtime): deploy agents, move endpoints, read runs.

``Agents(Client(url, key)).deploy("support", Path("./support"))``. For threads and runs,
use ``langgraph-sdk`` (``get_client(url=..., headers={"Authorization": "Bearer <key>"})``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from garrison.client.base import Client
from garrison.runtime.bundles import pack


class Agents:
    def __init__(self, client: Client) -> None:
        self.c = client

    def deploy(self, name: str, directory: Path, *, promote: bool = True) -> Any:
        """Upload ``directory`` (agent.toml or langgraph.json inside) as the agent's next version."""
        return self.c.request("POST", f"/api/runtime/agents/{name}/versions", content=pack(directory),
                              params={"promote": str(promote).lower()},
                              headers={"content-type": "application/gzip"})

    def list(self) -> Any:
        return self.c.request("GET", "/api/runtime/agents")

    def get(self, name: str) -> Any:
        return self.c.request("GET", f"/api/runtime/agents/{name}")

    def set_endpoint(self, name: str, endpoint: str, version: int) -> Any:
        return self.c.request("PUT", f"/api/runtime/agents/{name}/endpoints/{endpoint}", json={"version": version})

    def run(self, run_id: str) -> Any:
        return self.c.request("GET", f"/api/runtime/runs/{run_id}")

    def provide_input(self, run_id: str, value: Any) -> Any:
        return self.c.request("POST", f"/api/runtime/runs/{run_id}/input", json={"value": value})

    def status(self) -> Any:
        return self.c.request("GET", "/api/runtime/status")
