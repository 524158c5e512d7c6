"""Registry HTTP API: the official MCP Registry API v0.1, also served under /v0.

Reads answer CORS so browser tools can list servers; they need a key (scope
``registry:read``) unless GARRISON_REGISTRY_PUBLIC_READS opens them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from garrison.core.errors import BadRequest, PayloadTooLarge
from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.registry.schemas import StatusIn, render, server_list
from garrison.registry.service import RegistryService

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "86400",
}
_require_read = require("registry:read")
_require_publish = require("registry:publish")


def _service(request: Request) -> RegistryService:
    return request.app.state.platform.services["registry"]  # type: ignore[no-any-return]


async def reader(request: Request) -> Principal | None:
    """Reads need ``registry:read`` unless the registry is configured open."""
    if _service(request).settings.public_reads:
        return None
    return await _require_read(request)


def _json(body: bytes, status: int = 200, cors: bool = True) -> Response:
    return Response(body, status_code=status, media_type="application/json",
                    headers=CORS_HEADERS if cors else None)


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise BadRequest("updated_since must be an RFC 3339 time such as 2025-08-07T13:15:04Z") from exc
    if parsed.tzinfo is None:
        raise BadRequest("updated_since needs a time zone (e.g. a trailing Z)")
    return parsed


async def read_json(request: Request, limit: int) -> Any:
    """Read a JSON body of at most ``limit`` bytes, refusing larger ones before buffering them."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes; a server.json must be smaller")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"body is larger than {limit} bytes; a server.json must be smaller")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc


def build_router(prefix: str) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=["registry"])

    @router.get("/servers")
    async def list_servers(
        request: Request,
        cursor: str | None = Query(None, max_length=2048),
        limit: int | None = Query(None),
        search: str | None = Query(None, max_length=200),
        updated_since: str | None = Query(None, max_length=64),
        version: str | None = Query(None, max_length=255),
        include_deleted: bool = Query(False),
        _: Principal | None = Depends(reader),
    ) -> Response:
        entries, next_cursor = await _service(request).list_servers(
            cursor=cursor, limit=limit, search=search, updated_since=_parse_time(updated_since),
            version=version, include_deleted=include_deleted,
        )
        return _json(server_list(entries, next_cursor))

    @router.get("/servers/{name:path}/versions")
    async def list_versions(
        request: Request, name: str, include_deleted: bool = Query(False),
        _: Principal | None = Depends(reader),
    ) -> Response:
        entries = await _service(request).versions(name, include_deleted=include_deleted)
        return _json(server_list(entries, None))

    @router.patch("/servers/{name:path}/versions/{version}/status")
    async def version_status(
        request: Request, name: str, version: str, body: StatusIn,
        principal: Principal = Depends(_require_publish),
    ) -> Response:
        entries = await _service(request).set_status(principal, name, version, body.status, body.statusMessage)
        return _json(render(entries[0].envelope()), cors=False)

    @router.get("/servers/{name:path}/versions/{version}")
    async def get_version(
        request: Request, name: str, version: str, include_deleted: bool = Query(False),
        _: Principal | None = Depends(reader),
    ) -> Response:
        entry = await _service(request).get(name, version, include_deleted=include_deleted)
        return _json(render(entry.envelope()))

    @router.put("/servers/{name:path}/versions/{version}")
    async def put_version(
        request: Request, name: str, version: str, principal: Principal = Depends(_require_publish),
    ) -> Response:
        svc = _service(request)
        doc = await read_json(request, svc.settings.max_body_bytes)
        entry = await svc.update(principal, name, version, doc)
        return _json(render(entry.envelope()), cors=False)

    @router.delete("/servers/{name:path}/versions/{version}")
    async def delete_version(
        request: Request, name: str, version: str, principal: Principal = Depends(_require_publish),
    ) -> Response:
        entry = await _service(request).delete(principal, name, version)
        return _json(render(entry.envelope()), cors=False)

    @router.patch("/servers/{name:path}/status")
    async def server_status(
        request: Request, name: str, body: StatusIn, principal: Principal = Depends(_require_publish),
    ) -> Response:
        entries = await _service(request).set_status(principal, name, None, body.status, body.statusMessage)
        payload = {"updatedCount": len(entries), "servers": [e.envelope() for e in entries]}
        return _json(render(payload), cors=False)

    @router.post("/publish")
    async def publish(request: Request, force: bool = Query(False),
                      principal: Principal = Depends(_require_publish)) -> Response:
        svc = _service(request)
        doc = await read_json(request, svc.settings.max_body_bytes)
        entry = await svc.publish(principal, doc, force=force)
        return _json(render(entry.envelope()), cors=False)

    @router.options("/servers")
    @router.options("/servers/{rest:path}")
    async def preflight(rest: str = "") -> Response:
        return Response(status_code=204, headers=CORS_HEADERS)

    return router


