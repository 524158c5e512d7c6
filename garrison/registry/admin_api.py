"""garrison's own registry endpoints beside the official API: import, tool lists and diffs, health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from garrison.core.errors import BadRequest
from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.registry.api import _service, read_json

router = APIRouter(prefix="/api/registry", tags=["registry"])
MAX_IMPORT_BYTES = 32 * 1024 * 1024
MAX_IMPORT_ENTRIES = 5000


@router.post("/import")
async def import_snapshot(request: Request, principal: Principal = Depends(require("registry:publish"))) -> dict[str, Any]:
    """Body: a JSON list of server.json documents or ServerResponse envelopes, or {"servers": [...]}."""
    body = await read_json(request, MAX_IMPORT_BYTES)
    items = body.get("servers") if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise BadRequest("send a JSON list of server.json entries, or an object with a 'servers' list")
    if len(items) > MAX_IMPORT_ENTRIES:
        raise BadRequest(f"at most {MAX_IMPORT_ENTRIES} entries per request; send the snapshot in batches")
    return await _service(request).import_entries(principal, items)


@router.put("/servers/{name:path}/versions/{version}/tools")
async def put_tools(request: Request, name: str, version: str, force: bool = Query(False),
                    principal: Principal = Depends(require("registry:publish"))) -> dict[str, Any]:
    svc = _service(request)
    tools = await read_json(request, svc.settings.max_body_bytes * 4)
    if isinstance(tools, dict):
        tools = tools.get("tools")
    return await svc.record_tools(principal, name, version, tools, force=force)


@router.get("/servers/{name:path}/versions/{version}/tools")
async def get_tools(request: Request, name: str, version: str,
                    principal: Principal = Depends(require("registry:read"))) -> dict[str, Any]:
    return {"tools": await _service(request).tools_of(name, version)}


@router.get("/servers/{name:path}/versions/{version}/diff")
async def tool_diff(request: Request, name: str, version: str, from_version: str | None = Query(None, alias="from"),
                    principal: Principal = Depends(require("registry:read"))) -> dict[str, Any]:
    return await _service(request).tool_diff(name, version, from_version)


@router.get("/servers/{name:path}/health")
async def health_history(request: Request, name: str, version: str = Query("latest"),
                         limit: int = Query(50, ge=1, le=1000),
                         principal: Principal = Depends(require("registry:read"))) -> dict[str, Any]:
    svc = _service(request)
    entry = await svc.get(name, version)
    rows = await svc.store.health_history(entry.name, entry.version, limit)
    return {"name": entry.name, "version": entry.version, "current": svc.health.get((entry.name, entry.version)),
            "history": rows}


@router.post("/health/check")
async def run_health(request: Request, name: str | None = Query(None, max_length=200),
                     principal: Principal = Depends(require("registry:publish"))) -> dict[str, Any]:
    """Check now (all latest remote entries, or one server) instead of waiting for the next round."""
    return {"results": await _service(request).checker.run_once(name)}
