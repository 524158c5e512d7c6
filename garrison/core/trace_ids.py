"""The trace id of a request that came without a trace context, for the spans it opens first.

The request middleware picks a trace id for every request (its logs and its response's
``traceparent`` name it). Where FastAPI opened no server span (the gateway's fast path, the
AgentCore route) and the caller sent no context, the first span a layer opens is the trace's
root: the SDK would give it a new trace id, so garrison's tracer provider asks this generator,
which returns the request's. Written by hand because OpenTelemetry has no hook to seed a root
span's trace id other than the id generator.
"""

from __future__ import annotations

import contextvars

from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

request_trace_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "garrison_request_trace_id", default=None)


class RequestTraceIds(RandomIdGenerator):
    """Random ids, except a root span's trace id while a request without trace context is served."""

    def generate_trace_id(self) -> int:
        return request_trace_id.get() or super().generate_trace_id()
