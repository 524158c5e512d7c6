"""HTTP routes of the GPU layer: /api/gpus/..."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from garrison.core.principal import Principal
from garrison.gpus.schemas import (
    ExplainOut,
    FinishIn,
    HealthIn,
    InventoryIn,
    InventoryOut,
    QueuesIn,
    QueuesOut,
    WorkloadIn,
    WorkloadOut,
    WorkloadPage,
)
from garrison.gpus.service import GpuService
from garrison.identity.deps import require
from garrison.platform import Platform, get_platform

router = APIRouter(tags=["gpus"])
WorkloadId = Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
GpuId = Path(min_length=3, max_length=200, pattern=r"^[^/]+/[0-9]+$")


def _svc(platform: Platform) -> GpuService:
    return platform.services["gpus"]  # type: ignore[no-any-return]


@router.post("/api/gpus/workloads", status_code=201, summary="Submit a GPU workload")
async def submit(body: WorkloadIn, principal: Principal = Depends(require("gpus:write")),
                 platform: Platform = Depends(get_platform)) -> WorkloadOut:
    return await _svc(platform).submit(principal, body)


@router.get("/api/gpus/workloads", summary="The caller's workloads, newest first")
async def list_workloads(
    state: Literal["pending", "running", "completed", "cancelled", "failed"] | None = None,
    queue: str | None = Query(None, max_length=63),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=512),
    principal: Principal = Depends(require("gpus:read")), platform: Platform = Depends(get_platform),
) -> WorkloadPage:
    return await _svc(platform).list_workloads(principal, state=state, queue=queue, limit=limit, cursor=cursor)


@router.get("/api/gpus/workloads/{workload_id}", summary="One workload")
async def get_workload(workload_id: str = WorkloadId, principal: Principal = Depends(require("gpus:read")),
                       platform: Platform = Depends(get_platform)) -> WorkloadOut:
    return await _svc(platform).get(principal, workload_id)


@router.get("/api/gpus/workloads/{workload_id}/explain", summary="Why a workload is where it is")
async def explain(workload_id: str = WorkloadId, principal: Principal = Depends(require("gpus:read")),
                  platform: Platform = Depends(get_platform)) -> ExplainOut:
    return await _svc(platform).explain(principal, workload_id)


@router.post("/api/gpus/workloads/{workload_id}/cancel", summary="Cancel; running work gives its GPUs back")
async def cancel(workload_id: str = WorkloadId, principal: Principal = Depends(require("gpus:write")),
                 platform: Platform = Depends(get_platform)) -> WorkloadOut:
    return await _svc(platform).cancel(principal, workload_id)


@router.post("/api/gpus/workloads/{workload_id}/finish", summary="Report a running workload done")
async def finish(body: FinishIn, workload_id: str = WorkloadId,
                 principal: Principal = Depends(require("gpus:write")),
                 platform: Platform = Depends(get_platform)) -> WorkloadOut:
    return await _svc(platform).finish(principal, workload_id, failed=body.failed)


@router.get("/api/gpus/queues", summary="Queues with quota, fair share and allocation")
async def queues(principal: Principal = Depends(require("gpus:read")),
                 platform: Platform = Depends(get_platform)) -> QueuesOut:
    return await _svc(platform).queues(principal)


@router.put("/api/gpus/queues", summary="Replace the queue configuration (operator)")
async def set_queues(body: QueuesIn, principal: Principal = Depends(require("gpus:admin")),
                     platform: Platform = Depends(get_platform)) -> QueuesOut:
    return await _svc(platform).set_queues(principal, body)


@router.get("/api/gpus/inventory", summary="GPUs, their health and what is free")
async def inventory(principal: Principal = Depends(require("gpus:read")),
                    platform: Platform = Depends(get_platform)) -> InventoryOut:
    return await _svc(platform).inventory(principal)


@router.put("/api/gpus/inventory", summary="Declare the inventory, or discover it through NVML (operator)")
async def set_inventory(body: InventoryIn, principal: Principal = Depends(require("gpus:admin")),
                        platform: Platform = Depends(get_platform)) -> InventoryOut:
    return await _svc(platform).set_inventory(principal, body)


@router.put("/api/gpus/inventory/{gpu_id:path}/health", summary="Mark a GPU healthy or not (operator)")
async def set_health(body: HealthIn, gpu_id: str = GpuId, principal: Principal = Depends(require("gpus:admin")),
                     platform: Platform = Depends(get_platform)) -> InventoryOut:
    return await _svc(platform).set_health(principal, gpu_id, body.healthy)


@router.get("/api/gpus/export/k8s", summary="KAI Scheduler Queue, PodGroup and Pod resources")
async def export_k8s(
    namespace: str = Query("default", max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
    topology: str = Query("default", max_length=63, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
    image: str = Query("busybox", max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$"),
    principal: Principal = Depends(require("gpus:read")), platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    items = await _svc(platform).export_k8s(principal, namespace, topology, image)
    return {"apiVersion": "v1", "kind": "List", "items": items}
