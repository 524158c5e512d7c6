"""The LangGraph Platform API subset that ``langgraph-sdk`` (``get_client``, ``RemoteGraph``) calls.

Paths are LangGraph's (the SDK does not follow the Agent Protocol renames); Agent Protocol
aliases live in ``agent_protocol.py``. Every run is a durable Temporal workflow; streaming
replays the run's event stream, so a client reconnecting with ``Last-Event-ID`` loses nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Response
from fastapi.responses import StreamingResponse

from garrison.core.errors import BadRequest
from garrison.core.inputs import check_storable
from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.platform import Platform, get_platform
from garrison.runtime import serde
from garrison.runtime.events import MAX_SEQ
from garrison.runtime.runs import run_out
from garrison.runtime.threads import _page

router = APIRouter(tags=["langgraph"])

READ, INVOKE, DEPLOY = require("runtime:read"), require("runtime:invoke"), require("runtime:deploy")
JsonBody = Body(default_factory=dict)


def _svc(platform: Platform) -> Any:
    return platform.services["runtime"]


def _uuid(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{what}_id must be a UUID string")
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise BadRequest(f"{what}_id {value!r} is not a UUID") from exc


@router.get("/ok", include_in_schema=False)
async def ok(principal: Principal = Depends(READ)) -> dict[str, bool]:
    return {"ok": True}


@router.get("/info")
async def info(principal: Principal = Depends(READ)) -> dict[str, Any]:
    return {"version": "garrison", "flags": {"assistants": True, "crons": False, "langsmith": False}}


# Assistants.
def assistant_out(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("assistant_id", "graph_id", "config", "context", "metadata", "created_at",
                                "updated_at", "version", "name", "description")}


def _check_texts(body: dict[str, Any]) -> None:
    for key in ("name", "description"):
        value = body.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > 4096):
            raise BadRequest(f"{key} must be a string of at most 4096 characters")
        check_storable(value, key)  # PostgreSQL text cannot hold NUL


def _graph_filter(body: dict[str, Any]) -> str | None:
    graph_id = body.get("graph_id")
    if graph_id is not None and not isinstance(graph_id, str):
        raise BadRequest("graph_id must be a string")
    check_storable(graph_id, "graph_id")  # compared in SQL: a NUL was a 500 on PostgreSQL
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise BadRequest("metadata must be an object")
    return graph_id


@router.post("/assistants")
async def create_assistant(body: dict[str, Any] = JsonBody, principal: Principal = Depends(DEPLOY),
                           platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    svc = _svc(platform)
    graph_id = body.get("graph_id")
    if not isinstance(graph_id, str):
        raise BadRequest("graph_id is required: the name of a deployed graph")
    base = await svc.runs.assistant_for(principal, graph_id)
    assistant_id = _uuid(body.get("assistant_id") or str(uuid.uuid4()), "assistant")
    existing = await svc.store.assistant(principal.tenant_id, assistant_id)
    if existing is not None:
        if body.get("if_exists") == "do_nothing":
            return assistant_out(existing)
        raise BadRequest(f"assistant {assistant_id} already exists")
    for key in ("config", "context", "metadata"):
        if not isinstance(body.get(key) or {}, dict):
            raise BadRequest(f"{key} must be an object")
    _check_texts(body)
    from garrison.core.clock import utcnow

    now = utcnow()
    await svc.store.put_assistant({"assistant_id": assistant_id, "tenant_id": principal.tenant_id,
                                   "agent_id": base["agent_id"], "graph_id": base["graph_id"],
                                   "name": str(body.get("name") or "Untitled"), "description": body.get("description"),
                                   "config": body.get("config") or {}, "context": body.get("context") or {},
                                   "metadata": body.get("metadata") or {}, "version": 1, "created_at": now,
                                   "updated_at": now})
    platform.audit.record(principal, "runtime:deploy", f"assistant/{assistant_id}", "allow")
    return assistant_out(await svc.store.assistant(principal.tenant_id, assistant_id))


@router.get("/assistants/{assistant_id}")
async def get_assistant(assistant_id: str, principal: Principal = Depends(READ),
                        platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    return assistant_out(await _svc(platform).runs.assistant_for(principal, assistant_id))


@router.patch("/assistants/{assistant_id}")
async def patch_assistant(assistant_id: str, body: dict[str, Any] = JsonBody, principal: Principal = Depends(DEPLOY),
                          platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    svc = _svc(platform)
    row = await svc.runs.assistant_for(principal, assistant_id)
    for key in ("config", "context", "metadata"):
        if key in body and not isinstance(body[key], dict):
            raise BadRequest(f"{key} must be an object")
    _check_texts(body)
    from garrison.core.clock import utcnow

    row = {**row, **{k: body[k] for k in ("config", "context", "name", "description") if k in body},
           "metadata": {**row["metadata"], **(body.get("metadata") or {})}, "version": row["version"] + 1,
           "updated_at": utcnow()}
    row.pop("created_at")
    await svc.store.put_assistant(row)
    platform.audit.record(principal, "runtime:deploy", f"assistant/{row['assistant_id']}", "allow")
    return assistant_out(await svc.store.assistant(principal.tenant_id, row["assistant_id"]))


@router.delete("/assistants/{assistant_id}", status_code=204)
async def delete_assistant(assistant_id: str, principal: Principal = Depends(DEPLOY),
                           platform: Platform = Depends(get_platform)) -> Response:
    svc = _svc(platform)
    row = await svc.runs.assistant_for(principal, assistant_id)
    await svc.store.delete_assistant(principal.tenant_id, row["assistant_id"])
    platform.audit.record(principal, "runtime:deploy", f"assistant/{row['assistant_id']}", "allow", "deleted")
    return Response(status_code=204)


@router.post("/assistants/search")
async def search_assistants(body: dict[str, Any] = JsonBody, principal: Principal = Depends(READ),
                            platform: Platform = Depends(get_platform)) -> list[dict[str, Any]]:
    limit, offset = _page(body)
    rows = await _svc(platform).store.assistants(principal.tenant_id, _graph_filter(body), limit, offset)
    wanted = body.get("metadata") or {}
    return [assistant_out(r) for r in rows if all(r["metadata"].get(k) == v for k, v in wanted.items())]


@router.post("/assistants/count")
async def count_assistants(body: dict[str, Any] = JsonBody, principal: Principal = Depends(READ),
                           platform: Platform = Depends(get_platform)) -> int:
    return len(await _svc(platform).store.assistants(principal.tenant_id, _graph_filter(body), 1000, 0))


# Threads.
@router.post("/threads")
async def create_thread(body: dict[str, Any] = JsonBody, principal: Principal = Depends(INVOKE),
                        platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    return await _svc(platform).threads.create(principal, body)  # type: ignore[no-any-return]


@router.post("/threads/search")
async def search_threads(body: dict[str, Any] = JsonBody, principal: Principal = Depends(READ),
                         platform: Platform = Depends(get_platform)) -> list[dict[str, Any]]:
    return await _svc(platform).threads.search(principal, body)  # type: ignore[no-any-return]


@router.post("/threads/count")
async def count_threads(body: dict[str, Any] = JsonBody, principal: Principal = Depends(READ),
                        platform: Platform = Depends(get_platform)) -> int:
    return len(await _svc(platform).threads.search(principal, {**body, "limit": 1000, "offset": 0}))


@router.get("/threads/{thread_id}")
async def get_thread(thread_id: str, principal: Principal = Depends(READ),
                     platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    return await _svc(platform).threads.get(principal, thread_id)  # type: ignore[no-any-return]


@router.patch("/threads/{thread_id}")
async def patch_thread(thread_id: str, body: dict[str, Any] = JsonBody, principal: Principal = Depends(INVOKE),
                       platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    return await _svc(platform).threads.patch(principal, thread_id, body)  # type: ignore[no-any-return]


@router.delete("/threads/{thread_id}", status_code=204)
async def delete_thread(thread_id: str, principal: Principal = Depends(INVOKE),
                        platform: Platform = Depends(get_platform)) -> Response:
    await _svc(platform).threads.delete(principal, thread_id)
    return Response(status_code=204)


@router.get("/threads/{thread_id}/state")
async def thread_state(thread_id: str, subgraphs: bool = False, principal: Principal = Depends(READ),
                       platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    return await _svc(platform).threads.state(principal, thread_id, subgraphs=subgraphs)  # type: ignore[no-any-return]


@router.get("/threads/{thread_id}/state/{checkpoint_id}")
async def thread_state_at(thread_id: str, checkpoint_id: str, subgraphs: bool = False,
                          principal: Principal = Depends(READ),
                          platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    return await _svc(platform).threads.state(  # type: ignore[no-any-return]
        principal, thread_id, checkpoint={"checkpoint_id": checkpoint_id}, subgraphs=subgraphs)


@router.post("/threads/{thread_id}/state/checkpoint")
async def thread_state_checkpoint(thread_id: str, body: dict[str, Any] = JsonBody,
                                  principal: Principal = Depends(READ),
                                  platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    subgraphs = body.get("subgraphs")
    if subgraphs is not None and not isinstance(subgraphs, bool):
        raise BadRequest("subgraphs must be true or false")
    return await _svc(platform).threads.state(principal, thread_id, checkpoint=body.get("checkpoint"),  # type: ignore[no-any-return]
                                              subgraphs=bool(subgraphs))


@router.post("/threads/{thread_id}/state")
async def update_thread_state(thread_id: str, body: dict[str, Any] = JsonBody, principal: Principal = Depends(INVOKE),
                              platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    return await _svc(platform).threads.update_state(principal, thread_id, body)  # type: ignore[no-any-return]


@router.post("/threads/{thread_id}/history")
async def thread_history(thread_id: str, body: dict[str, Any] = JsonBody, principal: Principal = Depends(READ),
                         platform: Platform = Depends(get_platform)) -> list[dict[str, Any]]:
    return await _svc(platform).threads.history(principal, thread_id, body)  # type: ignore[no-any-return]


@router.get("/threads/{thread_id}/history")
async def thread_history_get(thread_id: str, limit: int = 10, principal: Principal = Depends(READ),
                             platform: Platform = Depends(get_platform)) -> list[dict[str, Any]]:
    return await _svc(platform).threads.history(principal, thread_id, {"limit": limit})  # type: ignore[no-any-return]


# Runs.
def _sse(events: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    async def frames() -> AsyncIterator[bytes]:
        async for event in events:
            yield (f"event: {event.event}\ndata: ".encode() + serde.dumpb(event.data)
                   + f"\nid: {event.seq}\n\n".encode())
    return frames()


def _last_event_id(value: str | None) -> int:
    if not value:
        return 0
    try:
        seq = int(value)
    except ValueError as exc:
        raise BadRequest("Last-Event-ID must be the id of an event this stream sent") from exc
    if seq > MAX_SEQ:
        raise BadRequest("Last-Event-ID must be the id of an event this stream sent")
    return max(seq, 0)


def _stream_response(svc: Any, run: dict[str, Any], after: int, *, stateless: bool) -> StreamingResponse:
    run_id, thread_id = run["run_id"], run["thread_id"]
    base = f"/runs/{run_id}" if stateless else f"/threads/{thread_id}/runs/{run_id}"

    async def events() -> AsyncIterator[Any]:
        try:
            async for event in svc.runs.stream(run_id, after):
                yield event
        finally:
            if stateless and run["spec"].get("on_completion") == "delete":
                final = await svc.store.run(run_id)
                if final is None or final["status"] not in ("pending", "running"):
                    await svc.threads.delete_quietly(run["tenant_id"], thread_id)

    headers = {"Content-Location": base, "Cache-Control": "no-store"}
    if not stateless:
        headers["Location"] = f"{base}/stream"
    return StreamingResponse(_sse(events()), media_type="text/event-stream", headers=headers)


def _body_thread(body: dict[str, Any]) -> str | None:
    """Agent Protocol's ``POST /runs`` names the thread in the body; LangGraph's stateless runs do not."""
    thread_id = body.get("thread_id")
    if thread_id is not None and not isinstance(thread_id, str):
        raise BadRequest("thread_id must be a string")
    return thread_id or None


@router.post("/threads/{thread_id}/runs")
async def create_run(thread_id: str, response: Response, body: dict[str, Any] = JsonBody,
                     principal: Principal = Depends(INVOKE), platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    run = await _svc(platform).runs.create(principal, thread_id, body)
    response.headers["Content-Location"] = f"/threads/{thread_id}/runs/{run['run_id']}"
    return run_out(run)


@router.post("/runs")
async def create_stateless_run(response: Response, body: dict[str, Any] = JsonBody,
                               principal: Principal = Depends(INVOKE),
                               platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    thread_id = _body_thread(body)
    run = await _svc(platform).runs.create(principal, thread_id, body)
    response.headers["Content-Location"] = (f"/threads/{thread_id}/runs/{run['run_id']}" if thread_id
                                            else f"/runs/{run['run_id']}")
    return run_out(run)


@router.post("/threads/{thread_id}/runs/stream")
async def stream_run(thread_id: str, body: dict[str, Any] = JsonBody, principal: Principal = Depends(INVOKE),
                     platform: Platform = Depends(get_platform)) -> StreamingResponse:
    svc = _svc(platform)
    run = await svc.runs.create(principal, thread_id, body)
    return _stream_response(svc, run, 0, stateless=False)


@router.post("/runs/stream")
async def stream_stateless_run(body: dict[str, Any] = JsonBody, principal: Principal = Depends(INVOKE),
                               platform: Platform = Depends(get_platform)) -> StreamingResponse:
    svc = _svc(platform)
    thread_id = _body_thread(body)
    run = await svc.runs.create(principal, thread_id, body, caller_deletes=thread_id is None)
    return _stream_response(svc, run, 0, stateless=thread_id is None)


async def _final_values(svc: Any, principal: Principal, run: dict[str, Any]) -> Any:
    final = await svc.runs.wait_final(run["run_id"], run=run)
    if final is not None and final["status"] == "error":
        return {"__error__": {"error": "RunError", "message": final["error"] or "the run failed"}}
    state = await svc.runs.final_state(run)
    pending = [i for task in state["tasks"] for i in task["interrupts"]]
    if pending and isinstance(state["values"], dict):
        return {**state["values"], "__interrupt__": pending}  # what the last values event of the run carried
    return state["values"]


@router.post("/threads/{thread_id}/runs/wait")
async def wait_run(thread_id: str, response: Response, body: dict[str, Any] = JsonBody,
                   principal: Principal = Depends(INVOKE), platform: Platform = Depends(get_platform)) -> Any:
    svc = _svc(platform)
    run = await svc.runs.create(principal, thread_id, body)
    response.headers["Content-Location"] = f"/threads/{thread_id}/runs/{run['run_id']}"
    return await _final_values(svc, principal, run)


@router.post("/runs/wait")
async def wait_stateless_run(response: Response, body: dict[str, Any] = JsonBody,
                             principal: Principal = Depends(INVOKE), platform: Platform = Depends(get_platform)) -> Any:
    svc = _svc(platform)
    thread_id = _body_thread(body)
    if thread_id is not None:
        run = await svc.runs.create(principal, thread_id, body)
        response.headers["Content-Location"] = f"/threads/{thread_id}/runs/{run['run_id']}"
        return await _final_values(svc, principal, run)
    run = await svc.runs.create(principal, None, body, caller_deletes=True)
    response.headers["Content-Location"] = f"/runs/{run['run_id']}"
    try:
        return await _final_values(svc, principal, run)
    finally:
        if run["spec"].get("on_completion") == "delete":
            await svc.threads.delete_quietly(run["tenant_id"], run["thread_id"])


@router.get("/threads/{thread_id}/runs")
async def list_runs(thread_id: str, limit: int = 10, offset: int = 0, status: str | None = None,
                    principal: Principal = Depends(READ), platform: Platform = Depends(get_platform)) -> list[dict[str, Any]]:
    svc = _svc(platform)
    await svc.threads.row(principal, thread_id)
    limit, offset = _page({"limit": limit, "offset": offset})
    return [run_out(r) for r in await svc.store.runs(thread_id, status, limit, offset)]


@router.get("/threads/{thread_id}/runs/{run_id}")
async def get_run(thread_id: str, run_id: str, principal: Principal = Depends(READ),
                  platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    return run_out(await _svc(platform).runs.get(principal, thread_id, run_id))


@router.delete("/threads/{thread_id}/runs/{run_id}", status_code=204)
async def delete_run(thread_id: str, run_id: str, principal: Principal = Depends(INVOKE),
                     platform: Platform = Depends(get_platform)) -> Response:
    svc = _svc(platform)
    run = await svc.runs.get(principal, thread_id, run_id)
    if run["status"] in ("pending", "running"):
        await svc.runs.cancel(principal, thread_id, run_id, wait=True)
    await svc.store.delete_run(run_id)
    return Response(status_code=204)


@router.post("/threads/{thread_id}/runs/{run_id}/cancel", status_code=202)
async def cancel_run(thread_id: str, run_id: str, wait: int = 0, action: str = "interrupt",
                     principal: Principal = Depends(INVOKE), platform: Platform = Depends(get_platform)) -> Response:
    await _svc(platform).runs.cancel(principal, thread_id, run_id, action=action, wait=bool(wait))
    return Response(status_code=202)


@router.get("/threads/{thread_id}/runs/{run_id}/join")
async def join_run(thread_id: str, run_id: str, principal: Principal = Depends(READ),
                   platform: Platform = Depends(get_platform)) -> Any:
    svc = _svc(platform)
    run = await svc.runs.get(principal, thread_id, run_id)
    return await _final_values(svc, principal, run)


@router.get("/threads/{thread_id}/runs/{run_id}/stream")
async def join_stream(thread_id: str, run_id: str, last_event_id: str | None = Header(default=None),
                      principal: Principal = Depends(READ), platform: Platform = Depends(get_platform)) -> StreamingResponse:
    svc = _svc(platform)
    run = await svc.runs.get(principal, thread_id, run_id)
    return _stream_response(svc, run, _last_event_id(last_event_id), stateless=False)
