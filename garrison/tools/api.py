"""Gateway HTTP API: /mcp/{virtual_server} (MCP) and /api/tools/* (management, search)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from garrison.core.errors import BadRequest, Forbidden
from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.tools.schemas import (
    OpenAPIIn,
    ToolOut,
    UpstreamIn,
    UpstreamOut,
    VirtualServerIn,
    VirtualServerOut,
)
from garrison.tools.service import ToolsService

router = APIRouter(tags=["tools"])


def _service(request: Request) -> ToolsService:
    return request.app.state.platform.services["tools"]  # type: ignore[no-any-return]


class _ASGIPassThrough(Response):
    """Lets the MCP SDK answer the request itself (streaming, SSE) after FastAPI auth ran."""

    def __init__(self, handler: Any) -> None:
        super().__init__()
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handler(scope, receive, send)


LOOPBACK = ("localhost", "127.0.0.1", "::1")


def _check_origin(request: Request, allowed: list[str], bound_host: str) -> None:
    """Browsers send Origin: allow listed origins and same-origin calls. On a server bound to
    loopback, a same-origin call must also name a loopback Host (DNS rebinding protection)."""
    origin = request.headers.get("origin")
    if not origin or origin in allowed:
        return
    host = urlsplit(f"//{request.headers.get('host', '')}").hostname or ""
    same = urlsplit(origin).netloc == request.headers.get("host")
    if same and (host in LOOPBACK or bound_host not in LOOPBACK):
        return
    raise Forbidden(f"Origin {origin} is not allowed to call MCP here (GARRISON_TOOLS_ALLOWED_ORIGINS)")


@router.api_route("/mcp/{virtual_server}", methods=["GET", "POST", "DELETE"], include_in_schema=False)
async def mcp_endpoint(request: Request, virtual_server: str,  # each tool call is audited by the gateway
                       principal: Principal = Depends(require("tools:call", audit_allow=False))) -> Response:
    svc = _service(request)
    _check_origin(request, svc.settings.allowed_origins, request.app.state.platform.settings.host)
    vs = svc.get_virtual_server(principal, virtual_server)

    async def run(scope: Scope, receive: Receive, send: Send) -> None:
        await svc.gateway.handle(scope, receive, send, principal, vs)

    return _ASGIPassThrough(run)


@router.get("/api/tools/upstreams")
async def list_upstreams(request: Request, principal: Principal = Depends(require("tools:read"))) -> list[UpstreamOut]:
    return [UpstreamOut(**u.public()) for u in _service(request).list_upstreams(principal)]


@router.post("/api/tools/upstreams", status_code=201)
async def create_upstream(request: Request, body: UpstreamIn,
                          principal: Principal = Depends(require("tools:admin"))) -> UpstreamOut:
    return UpstreamOut(**(await _service(request).create_upstream(principal, body)).public())


@router.post("/api/tools/openapi", status_code=201)
async def create_openapi(request: Request, body: OpenAPIIn,
                         principal: Principal = Depends(require("tools:admin"))) -> UpstreamOut:
    return UpstreamOut(**(await _service(request).create_openapi_upstream(principal, body)).public())


@router.get("/api/tools/upstreams/{name}")
async def get_upstream(request: Request, name: str, principal: Principal = Depends(require("tools:read"))) -> UpstreamOut:
    return UpstreamOut(**_service(request).get_upstream(principal, name).public())


@router.get("/api/tools/upstreams/{name}/tools")
async def upstream_tools(request: Request, name: str, refresh: bool = False,
                         principal: Principal = Depends(require("tools:read"))) -> list[dict[str, Any]]:
    svc = _service(request)
    return await svc.upstream_tools(svc.get_upstream(principal, name), refresh=refresh)


@router.delete("/api/tools/upstreams/{name}", status_code=204)
async def delete_upstream(request: Request, name: str, principal: Principal = Depends(require("tools:admin"))) -> Response:
    await _service(request).delete_upstream(principal, name)
    return Response(status_code=204)


@router.get("/api/tools/virtual-servers")
async def list_virtual_servers(request: Request,
                               principal: Principal = Depends(require("tools:read"))) -> list[VirtualServerOut]:
    return [VirtualServerOut(**v.public()) for v in _service(request).list_virtual_servers(principal)]


@router.post("/api/tools/virtual-servers", status_code=201)
async def create_virtual_server(request: Request, body: VirtualServerIn,
                                principal: Principal = Depends(require("tools:admin"))) -> VirtualServerOut:
    vs = await _service(request).put_virtual_server(principal, body, replace=False)
    return VirtualServerOut(**vs.public())


@router.put("/api/tools/virtual-servers/{name}")
async def put_virtual_server(request: Request, name: str, body: VirtualServerIn,
                             principal: Principal = Depends(require("tools:admin"))) -> VirtualServerOut:
    if body.name != name:
        raise BadRequest("the body's name must equal the name in the URL")
    vs = await _service(request).put_virtual_server(principal, body, replace=True)
    return VirtualServerOut(**vs.public())


@router.get("/api/tools/virtual-servers/{name}")
async def get_virtual_server(request: Request, name: str,
                             principal: Principal = Depends(require("tools:read"))) -> VirtualServerOut:
    return VirtualServerOut(**_service(request).get_virtual_server(principal, name).public())


@router.delete("/api/tools/virtual-servers/{name}", status_code=204)
async def delete_virtual_server(request: Request, name: str,
                                principal: Principal = Depends(require("tools:admin"))) -> Response:
    await _service(request).delete_virtual_server(principal, name)
    return Response(status_code=204)


@router.get("/api/tools/virtual-servers/{name}/tools")
async def virtual_server_tools(request: Request, name: str,
                               principal: Principal = Depends(require("tools:read"))) -> list[dict[str, Any]]:
    svc = _service(request)
    return await svc.list_tools(principal, svc.get_virtual_server(principal, name))


@router.get("/api/tools/search")
async def search_tools(request: Request, q: str = Query(min_length=1, max_length=500),
                       virtual_server: str = Query(max_length=64), limit: int = Query(10, ge=1, le=50),
                       principal: Principal = Depends(require("tools:read"))) -> list[ToolOut]:
    svc = _service(request)
    hits = await svc.search(principal, svc.get_virtual_server(principal, virtual_server), q, limit)
    out = []
    for h in hits:
        upstream, _, tool = h["name"].partition("__")
        out.append(ToolOut(name=h["name"], upstream=upstream, tool=tool or h["name"],
                           description=h.get("description"), inputSchema=h["inputSchema"], score=h["score"]))
    return out
