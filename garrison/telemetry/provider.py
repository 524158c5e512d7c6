"""Self-tracing: the OpenTelemetry SDK TracerProvider whose spans land in the store in process.

Other layers call ``opentelemetry.trace.get_tracer("garrison.<layer>")``. The provider
is installed once per process (OpenTelemetry allows one global provider); every
started telemetry service registers as a sink, and a BatchSpanProcessor thread hands
finished spans to the sinks' event loops without a network hop. The tenant of a span
is its ``garrison.tenant_id`` attribute.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from garrison.core.trace_ids import RequestTraceIds
from garrison.telemetry.otlp import RawSpan

log = logging.getLogger("garrison.telemetry.provider")

Sink = Callable[[list[RawSpan]], None]

_lock = threading.Lock()
_sinks: dict[int, tuple[asyncio.AbstractEventLoop, Sink]] = {}
_processor: BatchSpanProcessor | None = None


def _id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def to_raw(span: ReadableSpan) -> RawSpan | None:
    ctx = span.context
    if ctx is None:
        return None
    return RawSpan(
        trace_id=_id(ctx.trace_id, 32),
        span_id=_id(ctx.span_id, 16),
        parent_span_id=_id(span.parent.span_id, 16) if span.parent is not None else None,
        name=span.name,
        otel_kind=span.kind.value + 1,  # the API counts INTERNAL from 0, OTLP from 1
        start_ns=span.start_time or 0,
        end_ns=span.end_time or 0,
        status_code=span.status.status_code.value,
        status_message=span.status.description or "",
        attributes=dict(span.attributes or {}),
        resource=dict(span.resource.attributes),
        scope=span.instrumentation_scope.name if span.instrumentation_scope else "",
        events=[{"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})}
                for e in span.events],
    )


class _DispatchExporter(SpanExporter):
    """Runs on the processor's thread: converts spans and passes them to each sink's loop."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raws = [r for r in (to_raw(s) for s in spans) if r is not None]
        with _lock:
            sinks = list(_sinks.values())
        for loop, sink in sinks:
            try:
                loop.call_soon_threadsafe(sink, raws)
            except RuntimeError:  # the loop has closed; its service is stopping
                continue
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def install(sink: Sink, *, schedule_delay_ms: int = 200) -> int:
    """Register ``sink`` (called on the current loop) and make sure the provider is installed."""
    global _processor
    loop = asyncio.get_running_loop()
    with _lock:
        if _processor is None:
            _processor = BatchSpanProcessor(
                _DispatchExporter(), schedule_delay_millis=schedule_delay_ms, max_queue_size=8192,
                max_export_batch_size=512,
            )
            current = trace.get_tracer_provider()
            if isinstance(current, TracerProvider):
                current.add_span_processor(_processor)  # someone installed an SDK provider: join it
            else:
                provider = TracerProvider(resource=Resource.create({"service.name": "garrison"}),
                                          id_generator=RequestTraceIds())
                provider.add_span_processor(_processor)
                trace.set_tracer_provider(provider)
        token = id(sink)
        _sinks[token] = (loop, sink)
    return token


def uninstall(token: int) -> None:
    with _lock:
        _sinks.pop(token, None)


def flush(timeout_ms: int = 5000) -> bool:
    """Push finished spans to the sinks now (tests, shutdown)."""
    processor = _processor
    return processor.force_flush(timeout_ms) if processor is not None else True


def sink_count() -> int:
    with _lock:
        return len(_sinks)


def emit_span(name: str, *, trace_id: str, span_id: str, parent_span_id: str | None, start_ns: int, end_ns: int,
              attributes: dict[str, Any], scope: str, error: str | None = None,
              kind: SpanKind = SpanKind.INTERNAL) -> bool:
    """Record a span whose ids were chosen before it ended, possibly in another process.

    A durable run outlives any one request and may end in another worker: its span id is
    chosen when the run is created (its steps name it as their parent) and the span is
    recorded when the run ends, from what the run's row carries. The SDK cannot start a
    span with a given id, so the finished span is handed to garrison's processor directly.
    False where the provider is not installed (nothing would store it).
    """
    processor = _processor
    if processor is None:
        return False
    provider = trace.get_tracer_provider()
    resource = provider.resource if isinstance(provider, TracerProvider) else Resource.create(
        {"service.name": "garrison"})
    flags = TraceFlags(TraceFlags.SAMPLED)
    parent = SpanContext(int(trace_id, 16), int(parent_span_id, 16), is_remote=True, trace_flags=flags) \
        if parent_span_id else None
    span = ReadableSpan(
        name, context=SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False, trace_flags=flags),
        parent=parent, resource=resource, attributes=attributes, kind=kind,
        status=Status(StatusCode.ERROR, error) if error else Status(StatusCode.UNSET),
        start_time=start_ns, end_time=max(end_ns, start_ns), instrumentation_scope=InstrumentationScope(scope))
    processor.on_end(span)
    return True


def current_provider() -> Any:
    return trace.get_tracer_provider()
