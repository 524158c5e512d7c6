"""Agent Protocol aliases (specs/agent-protocol) on top of the LangGraph paths.

Agent Protocol renamed assistants to agents and addresses runs without their thread; the
SDK keeps the LangGraph paths, which stay the primary ones. ``POST /runs``, ``/runs/wait``
and ``/runs/stream`` (shared with LangGraph's stateless runs) accept ``thread_id`` in the body.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Response
from fastapi.responses import StreamingResponse

from garrison.core.errors import BadRequest
from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.platform import Platform, get_platform
from garrison.runtime.langgraph_api import _final_values, _last_event_id, _stream_response
from garrison.runtime.runs import run_out
from garrison.runtime.threads import _page

router = APIRouter(tags=["agent-protocol"])
READ, INVOKE = require("runtime:read"), require("runtime:invoke")
RUN_STATUSES = {"pending", "running", "success", "error", "interrupted", "timeout"}


def agent_out(row: dict[str, Any]) -> dict[str, Any]:
    return {"agent_id": row["assistant_id"], "name": row["name"], "description": row["description"],
            "metadata": row["metadata"], "capabilities": {"ap.io.messages": False, "ap.io.streaming": True}}


@router.post("/agents/search")
async def search_agents(body: dict[str, Any] = Body(default_factory=dict), principal: Principal = Depends(READ),
                        platform: Platform = Depends(get_platform)) -> list[dict[str, Any]]:
    limit, offset = _page(body)
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise BadRequest("name must be a string")
    rows = await platform.services["runtime"].store.assistants(principal.tenant_id, None, limit, offset)
    return [agent_out(r) for r in rows if name is None or r["name"] == name]


@router.get("/agents/{agent_id}")
async def get_agent(agent_id: str, principal: Principal = Depends(READ),
                    platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    return agent_out(await platform.services["runtime"].runs.assistant_for(principal, agent_id))


@router.post("/runs/search")
async def search_runs(body: dict[str, Any] = Body(default_factory=dict), principal: Principal = Depends(READ),
                      platform: Platform = Depends(get_platform)) -> list[dict[str, Any]]:
    limit, offset = _page(body)
    status, thread_id = body.get("status"), body.get("thread_id")
    if status is not None and status not in RUN_STATUSES:
        raise BadRequest(f"status must be one of {sorted(RUN_STATUSES)}")
    if thread_id is not None and not isinstance(thread_id, str):
        raise BadRequest("thread_id must be a string")
    svc = platform.services["runtime"]
    if thread_id:
        await svc.threads.row(principal, thread_id)
    rows = await svc.store.search_runs(principal.tenant_id, thread_id, status, limit, offset)
    return [run_out(r) for r in rows]


@router.get("/runs/{run_id}")
async def get_run(run_id: str, principal: Principal = Depends(READ),
                  platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    return run_out(await platform.services["runtime"].runs.get(principal, None, run_id))


@router.delete("/runs/{run_id}", status_code=204)
async def delete_run(run_id: str, principal: Principal = Depends(INVOKE),
                     platform: Platform = Depends(get_platform)) -> Response:
    svc = platform.services["runtime"]
    run = await svc.runs.get(principal, None, run_id)
    if run["status"] in ("pending", "running"):
        await svc.runs.cancel(principal, run["thread_id"], run_id, wait=True)
    await svc.store.delete_run(run_id)
    return Response(status_code=204)


@router.get("/runs/{run_id}/wait")
async def wait_run(run_id: str, principal: Principal = Depends(READ),
                   platform: Platform = Depends(get_platform)) -> Any:
    svc = platform.services["runtime"]
    return await _final_values(svc, principal, await svc.runs.get(principal, None, run_id))


@router.get("/runs/{run_id}/stream")
async def stream_run(run_id: str, last_event_id: str | None = Header(default=None),
                     principal: Principal = Depends(READ),
                     platform: Platform = Depends(get_platform)) -> StreamingResponse:
    svc = platform.services["runtime"]
    run = await svc.runs.get(principal, None, run_id)
    return _stream_response(svc, run, _last_event_id(last_event_id), stateless=False)


@router.post("/runs/{run_id}/cancel", status_code=202)
async def cancel_run(run_id: str, wait: bool = False, action: str = "interrupt",
                     principal: Principal = Depends(INVOKE), platform: Platform = Depends(get_platform)) -> Response:
    svc = platform.services["runtime"]
    run = await svc.runs.get(principal, None, run_id)
    await svc.runs.cancel(principal, run["thread_id"], run_id, action=action, wait=wait)
    return Response(status_code=202)



