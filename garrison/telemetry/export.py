"""Forwarding stored spans to a tenant's own OTLP/HTTP endpoint (Langfuse, Phoenix, Jaeger...).

Spans are re-encoded as OTLP protobuf from the stored rows and posted off the ingest
path through a bounded queue; when the queue is full or the endpoint keeps failing,
spans are dropped and counted, never allowed to slow ingest down.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

import httpx
import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from garrison.telemetry import metrics

log = logging.getLogger("garrison.telemetry.export")


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value) if -(2**63) <= value < 2**63 else AnyValue(string_value=str(value))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(_any(v) for v in value)
        return out
    if isinstance(value, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(KeyValue(key=str(k), value=_any(v)) for k, v in value.items())
        return out
    return AnyValue(string_value="" if value is None else str(value))


def _kvs(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any(v)) for k, v in attrs.items()]


def encode_rows(rows: list[dict[str, Any]]) -> bytes:
    """Stored rows back to an OTLP ExportTraceServiceRequest, one ResourceSpans per resource."""
    req = ExportTraceServiceRequest()
    by_resource: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_resource[row["resource"]].append(row)
    for resource, group in by_resource.items():
        rs = req.resource_spans.add()
        try:
            rs.resource.attributes.extend(_kvs(orjson.loads(resource)))
        except orjson.JSONDecodeError:
            pass
        ss = rs.scope_spans.add()
        for row in group:
            span = Span(
                trace_id=bytes.fromhex(row["trace_id"]),
                span_id=bytes.fromhex(row["span_id"]),
                parent_span_id=bytes.fromhex(row["parent_span_id"]) if row["parent_span_id"] else b"",
                name=row["name"],
                kind=row["otel_kind"],
                start_time_unix_nano=row["start_ns"],
                end_time_unix_nano=row["end_ns"],
                status=Status(code=row["status_code"], message=row["status_message"]),
            )
            span.attributes.extend(_kvs(orjson.loads(row["attributes"])))
            for ev in orjson.loads(row["events"]) if row.get("events") else []:
                e = span.events.add()
                e.name, e.time_unix_nano = ev["name"], ev["time_ns"]
                e.attributes.extend(_kvs(ev["attributes"]))
            ss.spans.append(span)
    return req.SerializeToString()


class Forwarder:
    def __init__(self, *, queue_batches: int, timeout_s: float) -> None:
        self.targets: dict[str, dict[str, Any]] = {}  # enabled ones
        self.configs: dict[str, dict[str, Any]] = {}
        self._queue: asyncio.Queue[tuple[str, list[dict[str, Any]]]] = asyncio.Queue(maxsize=queue_batches)
        self._timeout = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def configure(self, targets: list[dict[str, Any]]) -> None:
        self.configs = {t["tenant_id"]: t for t in targets}
        self.targets = {t["tenant_id"]: t for t in targets if t["enabled"]}

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout)
        self._task = asyncio.create_task(self._run(), name="telemetry-forwarder")

    async def stop(self) -> None:
        if self._task is not None:
            try:
                await asyncio.wait_for(self._queue.join(), timeout=self._timeout)
            except TimeoutError:
                pass
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._client is not None:
            await self._client.aclose()

    def offer(self, rows: list[dict[str, Any]]) -> None:
        if not self.targets:
            return
        by_tenant: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            if row["tenant_id"] in self.targets:
                by_tenant[row["tenant_id"]].append(row)
        for tenant, group in by_tenant.items():
            try:
                self._queue.put_nowait((tenant, group))
            except asyncio.QueueFull:
                metrics.EXPORTED.labels("dropped").inc(len(group))

    async def _run(self) -> None:
        assert self._client is not None
        while True:
            tenant, rows = await self._queue.get()
            try:
                target = self.targets.get(tenant)
                if target is not None:
                    await self._post(target, rows)
            finally:
                self._queue.task_done()

    async def _post(self, target: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        assert self._client is not None
        body = encode_rows(rows)
        headers = {**target["headers"], "Content-Type": "application/x-protobuf"}
        for attempt in range(3):
            try:
                resp = await self._client.post(target["endpoint"], content=body, headers=headers)
            except httpx.HTTPError as exc:
                log.warning("forwarding to %s failed: %s", target["endpoint"], exc)
            else:
                if resp.status_code < 300:
                    metrics.EXPORTED.labels("ok").inc(len(rows))
                    return
                if resp.status_code not in (429, 502, 503, 504):
                    break
            await asyncio.sleep(0.2 * 2**attempt)
        metrics.EXPORTED.labels("failed").inc(len(rows))
