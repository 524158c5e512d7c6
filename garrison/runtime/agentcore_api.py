"""The AgentCore client contract: ``POST /runtimes/{agentRuntimeArn}/invocations?qualifier=...``.

boto3's ``bedrock-agentcore`` client (``invoke_agent_runtime``) works against garrison's URL.
A session id (33-256 characters, header ``X-Amzn-Bedrock-AgentCore-Runtime-Session-Id``) maps
to one thread of the agent, owned by the caller; the qualifier names an endpoint
(``DEFAULT`` is ``default``); the payload is the graph's input; each invocation is a durable
run. ``Accept: text/event-stream`` streams the graph's values as ``data: {json}`` frames.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from garrison.core.errors import BadRequest, NotFound
from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.platform import Platform, get_platform
from garrison.runtime import serde
from garrison.runtime.bundles import NAME_RE

router = APIRouter(tags=["agentcore"])

SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
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
                 principal: Principal = Depends(require("runtime:invoke")),
                 platform: Platform = Depends(get_platform)) -> Any:
    svc = platform.services["runtime"]
    name = agent_name(agent_runtime)
    endpoint = "default" if qualifier.upper() == "DEFAULT" else qualifier
    session = session_id(request)
    body = await request.body()
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
    final = await svc.runs.wait_final(run["run_id"])
    if final is not None and final["status"] == "error":
        # AgentCore answers an agent's own failure with 424 (RuntimeClientError), not a 5xx.
        return JSONResponse({"type": "https://garrison.dev/problems/agent-failed", "title": "The agent failed",
                             "status": 424, "detail": final["error"] or "the agent failed"}, status_code=424,
                            headers=headers, media_type="application/problem+json")
    state = await svc.runs.final_state(run)
    return JSONResponse(serde.jsonable(state["values"]), headers=headers)
