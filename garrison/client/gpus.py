"""Client for the GPU scheduling API (/api/gpus).

``Gpus(Client(url, key)).submit("team-a", fraction=0.25, priority_class="interactive")``
"""

from __future__ import annotations

from typing import Any

from garrison.client.base import AsyncClient, Client


def _body(queue: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"queue": queue, **{k: v for k, v in fields.items() if v is not None}}


class Gpus:
    def __init__(self, client: Client) -> None:
        self.c = client

    def submit(self, queue: str, **fields: Any) -> Any:
        return self.c.request("POST", "/api/gpus/workloads", json=_body(queue, fields))

    def list_workloads(self, state: str | None = None, queue: str | None = None, limit: int = 50,
             cursor: str | None = None) -> Any:
        params = {k: v for k, v in {"state": state, "queue": queue, "limit": limit, "cursor": cursor}.items()
                  if v is not None}
        return self.c.request("GET", "/api/gpus/workloads", params=params)

    def get(self, workload_id: str) -> Any:
        return self.c.request("GET", f"/api/gpus/workloads/{workload_id}")

    def explain(self, workload_id: str) -> Any:
        return self.c.request("GET", f"/api/gpus/workloads/{workload_id}/explain")

    def cancel(self, workload_id: str) -> Any:
        return self.c.request("POST", f"/api/gpus/workloads/{workload_id}/cancel")

    def finish(self, workload_id: str, failed: bool = False) -> Any:
        return self.c.request("POST", f"/api/gpus/workloads/{workload_id}/finish", json={"failed": failed})

    def queues(self) -> Any:
        return self.c.request("GET", "/api/gpus/queues")

    def set_queues(self, queues: list[dict[str, Any]]) -> Any:
        return self.c.request("PUT", "/api/gpus/queues", json={"queues": queues})

    def inventory(self) -> Any:
        return self.c.request("GET", "/api/gpus/inventory")

    def set_inventory(self, nodes: list[dict[str, Any]] | None = None, discover: bool = False) -> Any:
        body: dict[str, Any] = {"discover": True} if discover else {"nodes": nodes or []}
        return self.c.request("PUT", "/api/gpus/inventory", json=body)

    def export_k8s(self, namespace: str = "default", topology: str = "default", image: str = "busybox") -> Any:
        return self.c.request("GET", "/api/gpus/export/k8s",
                              params={"namespace": namespace, "topology": topology, "image": image})


class AsyncGpus:
    def __init__(self, client: AsyncClient) -> None:
        self.c = client

    async def submit(self, queue: str, **fields: Any) -> Any:
        return await self.c.request("POST", "/api/gpus/workloads", json=_body(queue, fields))

    async def get(self, workload_id: str) -> Any:
        return await self.c.request("GET", f"/api/gpus/workloads/{workload_id}")

    async def explain(self, workload_id: str) -> Any:
        return await self.c.request("GET", f"/api/gpus/workloads/{workload_id}/explain")

    async def cancel(self, workload_id: str) -> Any:
        return await self.c.request("POST", f"/api/gpus/workloads/{workload_id}/cancel")

    async def finish(self, workload_id: str, failed: bool = False) -> Any:
        return await self.c.request("POST", f"/api/gpus/workloads/{workload_id}/finish", json={"failed": failed})
