"""Builds the ASGI app: each layer's routers, middleware, problem+json errors, lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from garrison import __version__
from garrison.config import Settings
from garrison.core.errors import PROBLEM_BASE, PROBLEM_CONTENT_TYPE, Problem
from garrison.core.middleware import RequestContextMiddleware
from garrison.platform import Platform, layer_modules

log = logging.getLogger("garrison.server")

_STATUS_SLUGS = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
                 405: "method-not-allowed", 406: "not-acceptable", 409: "conflict", 413: "payload-too-large",
                 415: "unsupported-media-type", 422: "validation-failed", 429: "too-many-requests"}


def _problem_response(request: Request, status: int, body: dict[str, Any],
                      headers: dict[str, str] | None = None) -> JSONResponse:
    rid = getattr(request.state, "request_id", None)
    if rid:
        body.setdefault("request_id", rid)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_CONTENT_TYPE)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return _problem_response(request, exc.status, exc.to_dict(request.url.path), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()][:50]
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
        body = {"type": PROBLEM_BASE + "validation-failed", "title": "Request validation failed",
                "status": 422, "detail": f"fix these fields and retry: {where}", "errors": errors,
                "instance": request.url.path}
        return _problem_response(request, 422, body)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = _STATUS_SLUGS.get(exc.status_code, "http-error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; see /openapi.json"
        body = {"type": PROBLEM_BASE + slug, "title": slug.replace("-", " ").capitalize(),
                "status": exc.status_code, "detail": detail, "instance": request.url.path}
        return _problem_response(request, exc.status_code, body, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        body = {"type": PROBLEM_BASE + "internal-error", "title": "Internal server error", "status": 500,
                "detail": "garrison failed to handle this request; the request id is in the server log",
                "instance": request.url.path}
        return _problem_response(request, 500, body)


def _has_own_span(scope: Any) -> bool:
    """Routes under /v1/ (the OpenAI-compatible gateway, the OTLP receivers) get no FastAPI
    HTTP server span: the gateway records one GenAI span per call itself, and tracing the
    trace ingest only feeds spans back into it. FastAPI's native telemetry is on once the
    telemetry layer installs a tracer provider; its per-dependency and per-endpoint
    operation spans are off everywhere. Those spans (four per model call, each stored)
    were about 45% of the gateway's CPU per request."""
    from garrison.runtime.invoke_fastpath import is_invocation

    # AgentCore invocations get one span from runtime/invoke_fastpath.py instead.
    return str(scope.get("path", "")).startswith("/v1/") or is_invocation(scope)


def create_app(settings: Settings | None = None, platform: Platform | None = None,
               on_started: Any = None) -> FastAPI:
    """The whole platform as one ASGI app. Pass ``platform`` to manage its life yourself."""
    settings = settings or (platform.settings if platform else Settings())
    owned = platform is None
    plat = platform or Platform(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            await plat.start()
        if on_started is not None:
            on_started(plat)
        try:
            yield
        finally:
            if owned:
                await plat.stop()

    app = FastAPI(title="garrison", version=__version__, lifespan=lifespan,
                  description="On-premises infrastructure for AI agents.",
                  telemetry={"operation_spans": False, "exclude": _has_own_span})
    app.state.platform = plat
    _install_error_handlers(app)

    from garrison.audit.api import router as audit_router
    from garrison.identity.api import router as identity_router
    from garrison.policy.api import router as policy_router

    for router in (identity_router, audit_router, policy_router):
        app.include_router(router)
    body_limits: list[tuple[str, int]] = []
    for mod in layer_modules():
        for router in mod.routers():
            app.include_router(router)
        if hasattr(mod, "body_limits"):
            body_limits.extend(mod.body_limits())

    @app.get("/healthz", tags=["ops"], include_in_schema=True)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> Response:
        try:
            await plat.db.ping()
        except Exception as exc:
            log.warning("readiness: store unreachable: %s", exc)
            return JSONResponse({"status": "unavailable", "store": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ready", "store": plat.db.dialect,
                             "layers": sorted(plat.services), "startup_s": plat.startup_s})

    from fastapi import Depends

    from garrison.identity.deps import require

    @app.get("/metrics", tags=["ops"], dependencies=[Depends(require("metrics:read"))])
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    from garrison.llm.fastpath import GatewayFastPath
    from garrison.runtime.invoke_fastpath import InvokeFastPath

    app.add_middleware(InvokeFastPath)  # inside RequestContextMiddleware: ids, trace, body cap, metrics
    app.add_middleware(GatewayFastPath)  # the same, for the gateway's model calls (llm/fastpath.py)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes, body_limits=body_limits)
    return app
