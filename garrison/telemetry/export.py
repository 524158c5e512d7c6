"""Forwarding stored spans to a tenant's own OTLP/HTTP endpoint (Langfuse, Phoenix, Jaeger...).

Spans are re-encoded as OTLP protobuf from the stored rows (with their message content
put back when the tenant asked for it) and posted off the ingest path. Each tenant has
its own bounded queue and sender: while its endpoint is down or busy the spans wait and
are retried with backoff; only when the queue is full are the oldest dropped, and
counted. Ingest never waits for an endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from garrison.telemetry import metrics

if TYPE_CHECKING:
    from garrison.telemetry.config import TelemetrySettings

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


Item = tuple[dict[str, Any], str | None]  # a stored span row, its content body (JSON) when forwarded
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def _with_content(span: Span, body: str) -> None:
    """Put captured content back as the attributes and events it came from."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    for side in ("input", "output"):
        part = doc.get(side) or {}
        span.attributes.extend(_kvs({k: v for k, v in part.items() if k != "events"}))
        for ev in part.get("events") or []:
            e = span.events.add()
            e.name, e.time_unix_nano = str(ev.get("name", "")), int(ev.get("time_ns") or 0)
            e.attributes.extend(_kvs(ev.get("attributes") or {}))


def encode_rows(rows: list[dict[str, Any]], contents: dict[str, str] | None = None) -> bytes:
    """Stored rows back to an OTLP ExportTraceServiceRequest, one ResourceSpans per resource.

    ``contents`` maps span id to its stored content body; those spans carry it again.
    """
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
            body = contents.get(row["span_id"]) if contents else None
            if body is not None:
                _with_content(span, body)
            ss.spans.append(span)
    return req.SerializeToString()


class _Channel:
    """One tenant's waiting spans and the task that sends them."""

    def __init__(self) -> None:
        self.items: deque[Item] = deque()
        self.inflight = 0
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.task: asyncio.Task[None] | None = None


class Forwarder:
    def __init__(self, settings: TelemetrySettings) -> None:
        self.settings = settings
        self.targets: dict[str, dict[str, Any]] = {}  # enabled ones
        self.configs: dict[str, dict[str, Any]] = {}
        self._channels: dict[str, _Channel] = {}
        self._client: httpx.AsyncClient | None = None
        self._running = False

    def configure(self, targets: list[dict[str, Any]]) -> None:
        self.configs = {t["tenant_id"]: t for t in targets}
        self.targets = {t["tenant_id"]: t for t in targets if t["enabled"]}
        for tenant, ch in self._channels.items():
            if tenant not in self.targets and ch.items:
                metrics.EXPORTED.labels("disabled").inc(len(ch.items))
                ch.items.clear()
                self._gauge()

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.settings.export_timeout_s)
        self._running = True

    def pending(self) -> int:
        return sum(len(ch.items) + ch.inflight for ch in self._channels.values())

    def _gauge(self) -> None:
        metrics.EXPORT_QUEUE.set(self.pending())

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every queued span is sent (or given up); False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                for ch in list(self._channels.values()):
                    while ch.items or ch.inflight:
                        ch.idle.clear()
                        await ch.idle.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        self._running = False
        await self.drain(self.settings.export_timeout_s)
        for ch in self._channels.values():
            if ch.task is not None:
                ch.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ch.task
            left = len(ch.items) + ch.inflight
            if left:
                metrics.EXPORTED.labels("dropped").inc(left)
                log.warning("%d spans not forwarded at shutdown: the endpoint did not take them in time", left)
            ch.items.clear()
        self._channels.clear()
        self._gauge()
        if self._client is not None:
            await self._client.aclose()

    def offer(self, rows: list[dict[str, Any]], contents: list[dict[str, Any]] | None = None) -> None:
        if not self.targets or not self._running:
            return
        by_tenant: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            if row["tenant_id"] in self.targets:
                by_tenant[row["tenant_id"]].append(row)
        if not by_tenant:
            return
        bodies: dict[tuple[str, str, str], str] = {}
        for c in contents or ():
            if c["source"] == "span" and c["tenant_id"] in by_tenant:
                bodies[(c["tenant_id"], c["trace_id"], c["span_id"])] = c["body"]
        cap = self.settings.export_queue_spans
        for tenant, group in by_tenant.items():
            with_content = bool(self.targets[tenant].get("include_content"))
            ch = self._channel(tenant)
            ch.items.extend(
                (r, bodies.get((tenant, r["trace_id"], r["span_id"])) if with_content else None) for r in group)
            self._trim(ch, cap)
            ch.idle.clear()
            ch.wake.set()
        self._gauge()

    @staticmethod
    def _trim(ch: _Channel, cap: int) -> None:
        over = len(ch.items) + ch.inflight - cap
        if over > 0:
            over = min(over, len(ch.items))
            for _ in range(over):
                ch.items.popleft()
            metrics.EXPORTED.labels("dropped").inc(over)
            log.warning("forwarding queue full: %d oldest spans dropped", over)

    def _channel(self, tenant: str) -> _Channel:
        ch = self._channels.get(tenant)
        if ch is None:
            ch = self._channels[tenant] = _Channel()
            ch.task = asyncio.create_task(self._run(tenant, ch), name=f"telemetry-forward-{tenant}")
        return ch

    async def _run(self, tenant: str, ch: _Channel) -> None:
        delay = self.settings.export_retry_initial_s
        while True:
            if not ch.items:
                ch.idle.set()
                ch.wake.clear()
                await ch.wake.wait()
                continue
            target = self.targets.get(tenant)
            if target is None:
                metrics.EXPORTED.labels("disabled").inc(len(ch.items))
                ch.items.clear()
                self._gauge()
                continue
            batch = [ch.items.popleft() for _ in range(min(len(ch.items), self.settings.export_batch_spans))]
            ch.inflight = len(batch)
            try:
                outcome, retry_after = await self._post(target, batch)
            finally:
                ch.inflight = 0
            if outcome == "retry":
                # Back to the head of the queue, oldest first; the cap still holds.
                ch.items.extendleft(reversed(batch))
                self._trim(ch, self.settings.export_queue_spans)
                metrics.EXPORT_RETRIES.inc()
                await asyncio.sleep(retry_after if retry_after is not None else delay)
                delay = min(delay * 2, self.settings.export_retry_max_s)
            else:
                metrics.EXPORTED.labels(outcome).inc(len(batch))
                delay = self.settings.export_retry_initial_s
            self._gauge()

    async def _post(self, target: dict[str, Any], batch: list[Item]) -> tuple[str, float | None]:
        """ok, rejected (the endpoint refused it for good) or retry (down, busy, failing)."""
        assert self._client is not None
        rows = [r for r, _ in batch]
        contents = {r["span_id"]: b for r, b in batch if b is not None}
        body = encode_rows(rows, contents)
        headers = {**target["headers"], "Content-Type": "application/x-protobuf"}
        try:
            resp = await self._client.post(target["endpoint"], content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("forwarding to %s failed: %s", target["endpoint"], exc)
            return "retry", None
        if resp.status_code < 300:
            return "ok", None
        if resp.status_code in RETRY_STATUS:
            after = resp.headers.get("retry-after", "")
            wait = min(float(after), self.settings.export_retry_max_s) if after.isdigit() else None
            return "retry", wait
        log.warning("forwarding to %s refused with %d: %s", target["endpoint"], resp.status_code,
                    resp.text[:200])
        return "rejected", None
