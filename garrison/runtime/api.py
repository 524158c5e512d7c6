"""garrison's own runtime API: deploy agents, move endpoints, read runs, hand input to a waiting run."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from garrison.core.errors import BadRequest, PayloadTooLarge
from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.platform import Platform, get_platform
from garrison.runtime import serde
from garrison.runtime.events import MAX_SEQ
from garrison.runtime.runs import run_out

router = APIRouter(prefix="/api/runtime", tags=["runtime"])

BUNDLE_TYPES = ("application/gzip", "application/x-gzip", "application/x-tar", "application/octet-stream")


class EndpointIn(BaseModel):
    version: int = Field(ge=1, le=2**31 - 1, description="The agent version this endpoint serves.")


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


FOLLOW_S = 25.0
STREAM_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class EventIn(BaseModel):
    event: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_./:-]+$",
                       description="The event's name (the SSE `event:` field).")
    data: Any = Field(default=None, description="Any JSON value.")


def _stream_key(principal: Principal, name: str) -> str:
    if not STREAM_NAME.match(name):
        raise BadRequest("stream names are 1-128 letters, digits, '_', '.', ':' or '-'")
    return f"t:{principal.tenant_id}:{name}"  # tenants never share a stream


def _events_out(events: list[Any]) -> dict[str, Any]:
    return {"events": [{"seq": e.seq, "event": e.event, "data": e.data} for e in events],
            "last_seq": events[-1].seq if events else None}


@router.post("/streams/{name}/events", status_code=201)
async def publish(name: str, body: EventIn, principal: Principal = Depends(require("runtime:invoke")),
                  platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    """Publish to a tenant's event stream (inter-agent messaging: supervisor, hand-off)."""
    key = _stream_key(principal, name)
    size = len(serde.dumpb(body.data))
    if size > 1024 * 1024:
        raise PayloadTooLarge(f"event data is {size} bytes; the limit is 1 MiB: pass large data by reference")
    seq = await platform.services["runtime"].events.publish(key, body.event, body.data)
    return {"stream": name, "seq": seq}


@router.get("/streams/{name}/events", response_model=None)
async def read_stream(name: str, request: Request, after: int = Query(0, ge=0, le=MAX_SEQ), limit: int = Query(100, ge=1, le=1000),
                      follow: bool = False, last_event_id: str | None = Header(default=None),
                      principal: Principal = Depends(require("runtime:read")),
                      platform: Platform = Depends(get_platform)) -> dict[str, Any] | StreamingResponse:
    """Events after offset ``after`` (replay); ``follow=true`` keeps an SSE stream open for new ones."""
    key = _stream_key(principal, name)
    events = platform.services["runtime"].events
    if last_event_id:
        if not last_event_id.isdigit() or int(last_event_id) > MAX_SEQ:
            raise BadRequest("Last-Event-ID must be the seq of an event this stream sent")
        after = int(last_event_id)
    if not follow:
        return _events_out(await events.read(key, after, limit))

    async def frames() -> AsyncIterator[bytes]:
        # A follow ends after FOLLOW_S; SSE clients reconnect with Last-Event-ID and lose nothing.
        position = after
        loop = asyncio.get_running_loop()
        ends = loop.time() + FOLLOW_S
        while loop.time() < ends and not await request.is_disconnected():
            for event in await events.read(key, position, limit):
                position = event.seq
                yield (f"event: {event.event}\ndata: ".encode() + serde.dumpb(event.data)
                       + f"\nid: {event.seq}\n\n".encode())
            await events.wait(key)

    return StreamingResponse(frames(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


@router.get("/runs/{run_id}/events")
async def run_events(run_id: str, after: int = Query(0, ge=0, le=MAX_SEQ), limit: int = Query(100, ge=1, le=1000),
                     principal: Principal = Depends(require("runtime:read")),
                     platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    """A run's event stream (what its SSE stream sent), from an offset."""
    runtime = platform.services["runtime"]
    await runtime.runs.get(principal, None, run_id)
    return _events_out(await runtime.events.read(run_id, after, limit))


@router.get("/status")
async def status(principal: Principal = Depends(require("runtime:read")),
                 platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    """Where durable runs execute (embedded dev server or cluster) and whether it is up."""
    return {"temporal": platform.services["runtime"].engine.describe()}
