"""The AgentCore client contract: ``POST /runtimes/{agentRuntimeArn}/invocations?qualifier=...``.

boto3's ``bedrock-agentcore`` client (``invoke_agent_runtime``) works against garrison's URL.
A session id (33-256 characters, header ``X-Amzn-Bedrock-AgentCore-Runtime-Session-Id``) maps
to one thread of the agent, owned by the caller; the qualifier names an endpoint
(``DEFAULT`` is ``default``); the payload is the graph's input; each invocation is a durable
run. ``Accept: text/event-stream`` streams the graph's values as ``data: {json}`` frames.

Versions of kind ``agentcore`` (a ``BedrockAgentCoreApp`` main.py, or agent.toml ``kind =
"agentcore"``) run in session sandboxes instead (runtime/sessions.py): the payload goes as is
to the agent's ``POST /invocations`` and its answer, streamed or not, comes back as is.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from garrison.core.errors import BadRequest, NotFound
from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.platform import Platform, get_platform
from garrison.runtime import serde
from garrison.runtime.bundles import NAME_RE
from garrison.runtime.sessions import AgentFailed, manager

router = APIRouter(tags=["agentcore"])

SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
BUFFERED_MAX = 1024 * 1024
SESSION_NAMESPACE = uuid.UUID("0b9e4d4c-5d53-4a52-9d0c-7f3b8f6c2a11")


def agent_name(agent_runtime: str) -> str:
    """``arn:aws:bedrock-agentcore:<region>:<account>:runtime/<name>`` or a plain name."""
    name = agent_runtime.rsplit("runtime/", 1)[-1] if agent_runtime.startswith("arn:") else agent_runtime
    if not NAME_RE.match(name):
        raise NotFound(f"agent runtime {agent_runtime!r} not found")
    return name


def session_id(request: Request) -> str:
    value = request.headers.get(SESSION_HEADER) or str(uuid.uuid4()) + "-" + uuid.uuid4().hex[:8]
    if not 33 <= len(value) <= 256 or not value.isprintable():
        raise BadRequest(f"{SESSION_HEADER} must be 33 to 256 printable characters")
    return value


async def _graph_of(svc: Any, principal: Principal, name: str, endpoint: str) -> dict[str, Any]:
    from garrison.runtime.service import default_assistant_id

    agent = await svc.agent_row(principal, name)
    number = await svc.store.endpoint(agent["id"], endpoint)
    if number is None:
        raise NotFound(f"agent {name!r} has no endpoint {endpoint!r} (qualifier)")
    version = await svc.store.version(agent["id"], number)
    graph_ids = sorted(version["descriptor"].get("graphs", {}))
    graph_id = graph_ids[0] if len(graph_ids) == 1 else (name if name in graph_ids else None)
    if graph_id is None:
        raise BadRequest(f"agent {name!r} has several graphs {graph_ids}; name one of them like the agent "
                         "or invoke it through the LangGraph API with an assistant_id")
    assistant = await svc.store.assistant(principal.tenant_id, default_assistant_id(principal.tenant_id, graph_id))
    if assistant is None:
        raise NotFound(f"graph {graph_id!r} of agent {name!r} has no assistant")
    return assistant


@router.post("/runtimes/{agent_runtime:path}/invocations")
async def invoke(agent_runtime: str, request: Request, qualifier: str = "DEFAULT",
                 principal: Principal = Depends(require("runtime:invoke", traced=True)),
                 platform: Platform = Depends(get_platform)) -> Any:
    svc = platform.services["runtime"]
    name = agent_name(agent_runtime)
    endpoint = "default" if qualifier.upper() == "DEFAULT" else qualifier
    session = session_id(request)
    body = await request.body()
    sessions = manager(svc)
    warm = sessions.sessions.get((principal.tenant_id, name, endpoint, session))
    if warm is not None:  # a live session: no database round trip on the way in
        return await _invoke_session(sessions, principal, request, warm.agent_id, name, endpoint, session, body)
    agent = await svc.agent_row(principal, name)
    number = await svc.store.endpoint(agent["id"], endpoint)
    version = await svc.store.version(agent["id"], number) if number is not None else None
    if version is not None and version["kind"] == "agentcore":
        return await _invoke_session(sessions, principal, request, agent["id"], name, endpoint, session, body)
    try:
        payload = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError as exc:
        raise BadRequest("the payload must be JSON: it becomes the agent graph's input") from exc
    if not isinstance(payload, dict):
        raise BadRequest("the payload must be a JSON object: it becomes the agent graph's input")
    assistant = await _graph_of(svc, principal, name, endpoint)
    thread_id = str(uuid.uuid5(SESSION_NAMESPACE, f"{principal.tenant_id}/{name}/{session}"))
    thread = await svc.store.thread(principal.tenant_id, thread_id)
    if thread is None:
        await svc.threads.insert(principal, thread_id, {"agentcore_session": session, "agent": name})
    elif thread["owner"] != principal.id and not principal.is_admin:
        # Sessions belong to whoever opened them; another caller must not learn it exists.
        raise NotFound(f"session {session!r} not found")
    run = await svc.runs.create(principal, thread_id, {"assistant_id": assistant["assistant_id"], "input": payload,
                                                       "stream_mode": ["values"]}, endpoint=endpoint)
    headers = {SESSION_HEADER: session}
    if "text/event-stream" in request.headers.get("accept", ""):
        async def frames() -> AsyncIterator[bytes]:
            async for event in svc.runs.stream(run["run_id"]):
                if event.event in ("values", "error"):
                    yield b"data: " + serde.dumpb(event.data) + b"\n\n"
        return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)
    final = await svc.runs.wait_final(run["run_id"], run=run)
    if final is not None and final["status"] == "error":
        # AgentCore answers an agent's own failure with 424 (RuntimeClientError), not a 5xx.
        return JSONResponse({"type": "https://garrison.dev/problems/agent-failed", "title": "The agent failed",
                             "status": 424, "detail": final["error"] or "the agent failed"}, status_code=424,
                            headers=headers, media_type="application/problem+json")
    state = await svc.runs.final_state(run)
    return JSONResponse(serde.jsonable(state["values"]), headers=headers)


async def _invoke_session(sessions: Any, principal: Principal, request: Request, agent_id: str, name: str,
                          endpoint: str, session: str, body: bytes) -> Response:
    resp = await sessions.invoke(principal, request.app, agent_id, name, endpoint, session, body,
                                 list(request.headers.items()))
    headers = {SESSION_HEADER: session}
    if resp.status >= 500:
        # The agent's own failure is the client's 424 (RuntimeClientError), never garrison's 5xx.
        detail = (await resp.read()).decode("utf-8", "replace")[:2000]
        raise AgentFailed(f"the agent answered {resp.status}: {detail}", headers=headers)
    media_type = resp.header("content-type") or "application/json"
    length = resp.header("content-length")
    if length is not None and length.isdigit() and int(length) <= BUFFERED_MAX:
        # A complete, small answer (not a stream): one plain response costs less than streaming it.
        return Response(await resp.read(), status_code=resp.status, headers=headers, media_type=media_type)
    return StreamingResponse(resp.body, status_code=resp.status, headers=headers, media_type=media_type)


@router.post("/runtimes/{agent_runtime:path}/stopruntimesession")
async def stop_session(agent_runtime: str, request: Request, qualifier: str = "DEFAULT",
                       principal: Principal = Depends(require("runtime:invoke")),
                       platform: Platform = Depends(get_platform)) -> Any:
    """AgentCore's StopRuntimeSession: ends the session's sandbox now."""
    name = agent_name(agent_runtime)
    endpoint = "default" if qualifier.upper() == "DEFAULT" else qualifier
    session = request.headers.get(SESSION_HEADER) or ""
    sessions = manager(platform.services["runtime"])
    found = [s for s in sessions.find(principal, name, session) if s.endpoint == endpoint]
    if not found:
        raise NotFound(f"session {session!r} of agent {name!r} has no endpoint {endpoint!r}")
    await sessions.end(found[0], "stopped")
    platform.audit.record(principal, "runtime:invoke", f"agent/{name}/session", "allow", "stopped",
                          {"session_id": session, "endpoint": endpoint})
    return JSONResponse({"runtimeSessionId": session, "statusCode": 200}, headers={SESSION_HEADER: session})


@router.get("/api/runtime/agents/{name}/sessions/{session}")
async def describe_session(name: str, session: str, principal: Principal = Depends(require("runtime:invoke")),
                           platform: Platform = Depends(get_platform)) -> list[dict[str, Any]]:
    """A session's state per endpoint: its live sandbox, and the last one that ended and why."""
    sessions = manager(platform.services["runtime"])
    return [serde.jsonable(s.describe()) for s in sessions.find(principal, name, session)]
