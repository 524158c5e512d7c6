"""HTTP routes: OTLP/HTTP ingest (and the Langfuse alias), trace and session queries,
usage summaries, per-tenant OTLP forwarding and retention."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from garrison.core.errors import BadRequest
from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.platform import Platform, get_platform
from garrison.telemetry.schemas import ExporterIn, ExporterOut
from garrison.telemetry.service import TelemetryService
from garrison.telemetry.store import TraceFilter

router = APIRouter(tags=["telemetry"])
TRACE_ID = re.compile(r"^[0-9a-fA-F]{32}$")
PROTOBUF = "application/x-protobuf"


def _service(platform: Platform) -> TelemetryService:
    return platform.services["telemetry"]  # type: ignore[no-any-return]


def _length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


def _otlp_response(kind: str, rejected: int, errors: list[str], logs: bool = False) -> Response:
    message = "; ".join(errors)
    if kind == "protobuf":
        if logs:
            return Response(ExportLogsServiceResponse().SerializeToString(), media_type=PROTOBUF)
        out = ExportTraceServiceResponse()
        if rejected:
            out.partial_success.rejected_spans = rejected
            out.partial_success.error_message = message
        return Response(out.SerializeToString(), media_type=PROTOBUF)
    body: dict[str, Any] = {}
    if rejected:
        body = {"partialSuccess": {"rejectedSpans": rejected, "errorMessage": message}}
    return Response(orjson.dumps(body), media_type="application/json")


async def _ingest_traces(request: Request, principal: Principal, platform: Platform) -> Response:
    service = _service(platform)
    async with service.admission(_length(request)) as slot:
        body = await request.body()
        kind, _, rejected, errors = await service.ingest_traces(
            principal, body, request.headers.get("content-type"), request.headers.get("content-encoding"), slot)
    return _otlp_response(kind, rejected, errors)


@router.post("/v1/traces", summary="OTLP/HTTP traces (protobuf or JSON, gzip)")
async def otlp_traces(request: Request, principal: Principal = Depends(require("telemetry:write")),
                      platform: Platform = Depends(get_platform)) -> Response:
    return await _ingest_traces(request, principal, platform)


@router.post("/api/public/otel/v1/traces", summary="OTLP/HTTP traces at Langfuse's path")
async def otlp_traces_langfuse(request: Request, principal: Principal = Depends(require("telemetry:write")),
                               platform: Platform = Depends(get_platform)) -> Response:
    return await _ingest_traces(request, principal, platform)


async def _ingest_logs(request: Request, principal: Principal, platform: Platform) -> Response:
    service = _service(platform)
    async with service.admission(_length(request)):
        body = await request.body()
        kind, _ = await service.ingest_logs(principal, body, request.headers.get("content-type"),
                                            request.headers.get("content-encoding"))
    return _otlp_response(kind, 0, [], logs=True)


@router.post("/v1/logs", summary="OTLP/HTTP logs (GenAI events)")
async def otlp_logs(request: Request, principal: Principal = Depends(require("telemetry:write")),
                    platform: Platform = Depends(get_platform)) -> Response:
    return await _ingest_logs(request, principal, platform)


@router.post("/api/public/otel/v1/logs", summary="OTLP/HTTP logs at Langfuse's path")
async def otlp_logs_langfuse(request: Request, principal: Principal = Depends(require("telemetry:write")),
                             platform: Platform = Depends(get_platform)) -> Response:
    return await _ingest_logs(request, principal, platform)


def clamp_ns(ns: int) -> int:
    """Times far in the past or future still compare right, inside a 64-bit column."""
    return max(0, min(ns, 2**63 - 1))


def _ns(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return clamp_ns(int(value.timestamp() * 1e9))


def _attr_filters(values: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key or len(key) > 256:
            raise BadRequest(f"attr filter {item[:80]!r} must look like key=value")
        out.append((key, value))
    return tuple(out)


@router.get("/api/traces", summary="Search traces")
async def list_traces(
    principal: Principal = Depends(require("telemetry:read")),
    platform: Platform = Depends(get_platform),
    since: datetime | None = None,
    until: datetime | None = None,
    agent: Annotated[str | None, Query(max_length=128)] = None,
    session_id: Annotated[str | None, Query(max_length=256)] = None,
    user: Annotated[str | None, Query(max_length=256)] = None,
    model: Annotated[str | None, Query(max_length=128)] = None,
    kind: Annotated[str | None, Query(pattern="^(agent|workflow|model|tool|retrieval|guardrail|sandbox|other)$")] = None,
    status: Annotated[str | None, Query(pattern="^(ok|error)$")] = None,
    min_cost_usd: Annotated[float | None, Query(ge=0)] = None,
    min_duration_ms: Annotated[float | None, Query(ge=0)] = None,
    attr: Annotated[list[str], Query(max_length=10, description="key=value, repeatable")] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> dict[str, Any]:
    f = TraceFilter(since_ns=_ns(since), until_ns=_ns(until), agent=agent, session_id=session_id, user_id=user,
                    model=model, kind=kind, status=status, min_cost_usd=min_cost_usd,
                    min_duration_ms=min_duration_ms, attributes=_attr_filters(attr))
    return await _service(platform).list_traces(principal, f, limit, cursor)


@router.get("/api/traces/{trace_id}", summary="One trace: span tree, decision chain, summary")
async def get_trace(trace_id: str, principal: Principal = Depends(require("telemetry:read")),
                    platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    if not TRACE_ID.match(trace_id):
        raise BadRequest("trace_id must be 32 hexadecimal digits")
    return await _service(platform).get_trace(principal, trace_id)


@router.get("/api/sessions/{session_id}", summary="A conversation's traces in order")
async def get_session(session_id: str, principal: Principal = Depends(require("telemetry:read")),
                      platform: Platform = Depends(get_platform),
                      limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> dict[str, Any]:
    if len(session_id) > 256:
        raise BadRequest("session_id is at most 256 characters")
    return await _service(platform).session(principal, session_id, limit)


@router.get("/api/telemetry/usage", summary="Cost by model by day, latency by model")
async def usage(principal: Principal = Depends(require("telemetry:read")),
                platform: Platform = Depends(get_platform),
                since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=7)
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    return await _service(platform).usage_summary(principal, since, until)


@router.get("/api/telemetry/exporter", summary="This tenant's OTLP forwarding")
async def get_exporter(principal: Principal = Depends(require("telemetry:read")),
                       platform: Platform = Depends(get_platform)) -> ExporterOut:
    return ExporterOut(**_service(platform).exporter_view(principal.tenant_id))


@router.put("/api/telemetry/exporter", summary="Forward this tenant's spans to an OTLP endpoint")
async def put_exporter(body: ExporterIn, principal: Principal = Depends(require("telemetry:admin")),
                       platform: Platform = Depends(get_platform)) -> ExporterOut:
    out = await _service(platform).set_exporter(principal, body.endpoint, body.headers, body.enabled,
                                                body.include_content)
    await platform.audit.record_now(principal, "telemetry:exporter.set", f"tenant/{principal.tenant_id}/exporter",
                                    "allow", "", {"endpoint": body.endpoint, "enabled": body.enabled,
                                                  "include_content": body.include_content})
    return ExporterOut(**out)


@router.delete("/api/telemetry/exporter", status_code=204, summary="Stop forwarding")
async def delete_exporter(principal: Principal = Depends(require("telemetry:admin")),
                          platform: Platform = Depends(get_platform)) -> Response:
    await _service(platform).delete_exporter(principal)
    await platform.audit.record_now(principal, "telemetry:exporter.delete",
                                    f"tenant/{principal.tenant_id}/exporter", "allow")
    return Response(status_code=204)


@router.post("/api/telemetry/retention", summary="Apply retention now (operator only)")
async def retention(principal: Principal = Depends(require("telemetry:admin")),
                    platform: Platform = Depends(get_platform)) -> dict[str, int]:
    platform.policy.require_operator(
        principal, "telemetry:retention", "telemetry/spans",
        "retention deletes the spans of every tenant: only the operator's admin (an admin:* key of the "
        "operator's tenant) may run it")
    result = await _service(platform).apply_retention()
    await platform.audit.record_now(principal, "telemetry:retention", "telemetry/spans", "allow", "", result)
    return result
