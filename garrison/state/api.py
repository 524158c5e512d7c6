"""HTTP routes of the state layer: storage stats and retention, and the memory API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Response

from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.platform import Platform, get_platform
from garrison.state.memory import records
from garrison.state.retention import Policy
from garrison.state.schemas import (
    LABEL,
    EventIn,
    EventOut,
    EventsOut,
    NamespacesOut,
    RecordIn,
    RecordOut,
    SearchIn,
    SearchOut,
    StrategyRunIn,
)
from garrison.state.service import StateService

state_router = APIRouter(prefix="/api/state", tags=["state"])
memory_router = APIRouter(prefix="/api/memory", tags=["memory"])


def _svc(platform: Platform) -> StateService:
    return platform.services["state"]


def _ns(text: str) -> list[str]:
    return [p for p in text.split(".") if p] if text else []


NamespaceQuery = Query(..., min_length=1, max_length=2048, pattern=r"^[A-Za-z0-9_\-:@+=~]+(\.[A-Za-z0-9_\-:@+=~]+)*$",
                       description="Namespace labels joined by '.'.")


@state_router.get("/stats")
async def stats(principal: Principal = Depends(require("state:read")),
                platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    return await _svc(platform).stats(principal.tenant_id)


@state_router.get("/retention")
async def get_retention(principal: Principal = Depends(require("state:read")),
                        platform: Platform = Depends(get_platform)) -> Policy:
    return await _svc(platform).get_policy(principal.tenant_id)


@state_router.put("/retention")
async def set_retention(policy: Policy, principal: Principal = Depends(require("state:admin")),
                        platform: Platform = Depends(get_platform)) -> Policy:
    out = await _svc(platform).set_policy(principal.tenant_id, policy)
    await platform.audit.record_now(principal, "state:admin", f"state/retention/{principal.tenant_id}", "allow",
                                    "retention policy set", context=policy.model_dump())
    return out


@state_router.post("/prune")
async def prune(policy: Policy | None = Body(default=None), principal: Principal = Depends(require("state:admin")),
                platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    report = await _svc(platform).prune(principal.tenant_id, policy)
    platform.audit.record(principal, "state:admin", f"state/prune/{principal.tenant_id}", "allow", "prune",
                          context={k: v for k, v in report.items() if k != "skipped_delta_threads"})
    return report


@memory_router.post("/records", status_code=201)
async def put_record(body: RecordIn, principal: Principal = Depends(require("memory:write")),
                     platform: Platform = Depends(get_platform)) -> RecordOut:
    return await records.put_record(_svc(platform).store(principal.tenant_id), body)


@memory_router.get("/records")
async def get_record(namespace: str = NamespaceQuery, key: str = Query(..., min_length=1, max_length=512, pattern=r"^[^\x00]+$"),
                     principal: Principal = Depends(require("memory:read")),
                     platform: Platform = Depends(get_platform)) -> RecordOut:
    return await records.get_record(_svc(platform).store(principal.tenant_id), _ns(namespace), key)


@memory_router.delete("/records", status_code=204)
async def delete_record(namespace: str = NamespaceQuery, key: str = Query(..., min_length=1, max_length=512, pattern=r"^[^\x00]+$"),
                        principal: Principal = Depends(require("memory:write")),
                        platform: Platform = Depends(get_platform)) -> Response:
    await records.delete_record(_svc(platform).store(principal.tenant_id), _ns(namespace), key)
    return Response(status_code=204)


@memory_router.post("/search")
async def search(body: SearchIn, principal: Principal = Depends(require("memory:read")),
                 platform: Platform = Depends(get_platform)) -> SearchOut:
    return SearchOut(records=await records.search(_svc(platform).store(principal.tenant_id), body))


@memory_router.get("/namespaces")
async def namespaces(prefix: str = Query("", max_length=2048), max_depth: int | None = Query(None, ge=1, le=16),
                     principal: Principal = Depends(require("memory:read")),
                     platform: Platform = Depends(get_platform)) -> NamespacesOut:
    found = await records.namespaces(_svc(platform).store(principal.tenant_id), _ns(prefix), max_depth)
    return NamespacesOut(namespaces=found)


@memory_router.post("/events", status_code=201)
async def add_event(body: EventIn, principal: Principal = Depends(require("memory:write")),
                    platform: Platform = Depends(get_platform)) -> EventOut:
    return await records.add_event(_svc(platform).store(principal.tenant_id), body)


@memory_router.get("/events")
async def list_events(actor_id: str = Query(..., pattern=LABEL), session_id: str = Query(..., pattern=LABEL),
                      limit: int = Query(100, ge=1, le=1000), principal: Principal = Depends(require("memory:read")),
                      platform: Platform = Depends(get_platform)) -> EventsOut:
    events = await records.list_events(_svc(platform).store(principal.tenant_id), actor_id, session_id, limit)
    return EventsOut(events=events)


@memory_router.post("/strategies/{strategy}/run", status_code=202)
async def run_strategy(strategy: str, body: StrategyRunIn, principal: Principal = Depends(require("memory:write")),
                       platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    return await _svc(platform).strategies.submit(principal, strategy, body.actor_id, body.session_id, body.model)


@memory_router.get("/jobs/{job_id}")
async def get_job(job_id: str, principal: Principal = Depends(require("memory:read")),
                  platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    return await _svc(platform).strategies.get(principal, job_id)
