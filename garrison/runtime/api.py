"""garrison's own runtime API: deploy agents, move endpoints, read runs, hand input to a waiting run."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from garrison.core.errors import BadRequest
from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.platform import Platform, get_platform
from garrison.runtime.runs import run_out

router = APIRouter(prefix="/api/runtime", tags=["runtime"])

BUNDLE_TYPES = ("application/gzip", "application/x-gzip", "application/x-tar", "application/octet-stream")


class EndpointIn(BaseModel):
    version: int = Field(ge=1, description="The agent version this endpoint serves.")


class InputIn(BaseModel):
    value: Any = Field(description="The answer to the graph's interrupt(); it becomes Command(resume=value).")


@router.post("/agents/{name}/versions", status_code=201)
async def deploy(name: str, request: Request, promote: bool = True,
                 principal: Principal = Depends(require("runtime:deploy")),
                 platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    """Upload a tar.gz of the agent directory; it becomes the next immutable version."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in BUNDLE_TYPES:
        raise BadRequest("send the agent bundle as a tar.gz body with Content-Type: application/gzip")
    body = await request.body()
    if not body:
        raise BadRequest("the bundle is empty")
    return await platform.services["runtime"].deploy(principal, name, body, promote=promote)  # type: ignore[no-any-return]


@router.get("/agents")
async def list_agents(principal: Principal = Depends(require("runtime:read")),
                      platform: Platform = Depends(get_platform)) -> list[dict[str, Any]]:
    return await platform.services["runtime"].list_agents(principal)  # type: ignore[no-any-return]


@router.get("/agents/{name}")
async def get_agent(name: str, principal: Principal = Depends(require("runtime:read")),
                    platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    return await platform.services["runtime"].describe_agent(principal, name)  # type: ignore[no-any-return]


@router.put("/agents/{name}/endpoints/{endpoint}")
async def set_endpoint(name: str, endpoint: str, body: EndpointIn,
                       principal: Principal = Depends(require("runtime:deploy")),
                       platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    """Point a named endpoint at a version: roll-out and roll-back are this one call."""
    return await platform.services["runtime"].set_endpoint(principal, name, endpoint, body.version)  # type: ignore[no-any-return]


@router.get("/runs/{run_id}")
async def get_run(run_id: str, principal: Principal = Depends(require("runtime:read")),
                  platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    run = await platform.services["runtime"].runs.get(principal, None, run_id)
    return {**run_out(run), "steps": run["steps"], "error": run["error"]}


@router.post("/runs/{run_id}/input", status_code=202)
async def provide_input(run_id: str, body: InputIn, principal: Principal = Depends(require("runtime:invoke")),
                        platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    """Answer a run that waits for human input (created with ``hold_for_input_s``): a Temporal signal."""
    input_id = await platform.services["runtime"].runs.provide_input(principal, run_id, body.value)
    return {"run_id": run_id, "input_id": input_id}


@router.get("/status")
async def status(principal: Principal = Depends(require("runtime:read")),
                 platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    """Where durable runs execute (embedded dev server or cluster) and whether it is up."""
    return {"temporal": platform.services["runtime"].engine.describe()}
