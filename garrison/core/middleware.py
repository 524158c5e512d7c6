"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path).

Request ids, W3C trace context, a body-size cap, NUL-free URLs, and request metrics.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
from prometheus_client import Counter, Histogram

from garrison.core.errors import PROBLEM_CONTENT_TYPE, BadRequest, PayloadTooLarge, Problem
from garrison.core.ids import new_id
from garrison.core.logs import request_id_var, trace_id_var
from garrison.core.trace_ids import request_trace_id

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

HTTP_REQUESTS = Counter("garrison_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram("garrison_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
                         buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))


def _route_of(scope: dict[str, Any]) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class RequestContextMiddleware:
    def __init__(self, app: Any, max_body_bytes: int, body_limits: list[tuple[str, int]] | None = None) -> None:
        self.app = app
        self.max_body = max_body_bytes
        # Routes that take large uploads (and enforce their own cap) name a larger limit.
        self.body_limits = [(re.compile(rx), limit) for rx, limit in (body_limits or [])]

    def _limit_for(self, path: str) -> int:
        for rx, limit in self.body_limits:
            if rx.match(path):
                return limit
        return self.max_body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or new_id("req")
        tp = TRACEPARENT.match(headers.get(b"traceparent", b"").decode("latin-1"))
        # FastAPI's native telemetry wraps every middleware: where it opened this request's server span
        # (from the same traceparent), that span is the request's, and the spans of the layers are its
        # children. Replacing it with the bare inbound context would make them its siblings.
        server = getattr(scope.get("fastapi.telemetry"), "span", None)
        own = server.get_span_context() if server is not None else None
        if own is not None and own.is_valid:
            trace_id, span_id = format(own.trace_id, "032x"), format(own.span_id, "016x")
        else:
            own = None
            trace_id = tp.group(1) if tp and tp.group(1) != "0" * 32 else os.urandom(16).hex()
            span_id = os.urandom(8).hex()
        scope.setdefault("state", {})
        scope["state"].update(request_id=rid, trace_id=trace_id, parent_span_id=tp.group(2) if tp else None,
                              span_id=span_id)
        request_id_var.set(rid)
        trace_id_var.set(trace_id)
        # No route takes a NUL in its path or query, and PostgreSQL text cannot hold one: every
        # id or name that reached a query with it was a 500 there. One check here covers them all.
        if "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b""):
            await _send_problem(send, BadRequest("the URL's path and query must not contain NUL (%00)"), rid)
            return
        max_body = self._limit_for(scope.get("path", ""))
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            await _send_problem(send, PayloadTooLarge(
                f"request body exceeds the {max_body} byte limit"), rid)
            return
        received = 0

        async def capped_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    raise PayloadTooLarge(f"request body exceeds the {max_body} byte limit")
            return message

        status_holder = [500]
        extra = [(b"x-request-id", rid.encode("latin-1")),
                 (b"traceparent", f"00-{trace_id}-{span_id}-01".encode())]

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        # Spans that garrison's layers open during this request join the caller's trace. Without a
        # caller context the first of them is the root, with this request's trace id (not the child
        # of a span id that nothing records).
        token = root = None
        if own is None and tp is not None:
            parent = SpanContext(int(trace_id, 16), int(tp.group(2), 16), is_remote=True,
                                 trace_flags=TraceFlags(0x01))
            token = otel_context.attach(set_span_in_context(NonRecordingSpan(parent)))
        elif own is None:
            root = request_trace_id.set(int(trace_id, 16))
        start = time.perf_counter()
        try:
            await self.app(scope, capped_receive, send_with_headers)
        finally:
            if token is not None:
                otel_context.detach(token)
            if root is not None:
                request_trace_id.reset(root)
            route = _route_of(scope)
            HTTP_REQUESTS.labels(scope["method"], route, str(status_holder[0])).inc()
            HTTP_LATENCY.labels(scope["method"], route).observe(time.perf_counter() - start)


async def _send_problem(send: Any, problem: Problem, rid: str) -> None:
    import json

    body = json.dumps(problem.to_dict()).encode()
    await send({"type": "http.response.start", "status": problem.status, "headers": [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode("latin-1"))]})
    await send({"type": "http.response.body", "body": body})
