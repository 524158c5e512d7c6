"""Builders of OTLP requests (protobuf and JSON) for the telemetry tests."""

from __future__ import annotations

import os
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


def new_trace_id() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(_any(v) for v in value)
        return out
    return AnyValue(string_value=str(value))


def span(trace_id: str, name: str, attrs: dict[str, Any] | None = None, *, span_id: str | None = None,
         parent: str | None = None, start_ns: int | None = None, duration_ms: float = 10.0,
         error: bool = False, kind: int = 1) -> dict[str, Any]:
    start = start_ns if start_ns is not None else time.time_ns()
    return {
        "trace_id": trace_id, "span_id": span_id or new_span_id(), "parent": parent, "name": name,
        "attrs": attrs or {}, "start": start, "end": start + int(duration_ms * 1e6), "error": error, "kind": kind,
    }


def protobuf_request(spans: list[dict[str, Any]], service: str = "agent-app",
                     resource: dict[str, Any] | None = None) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=_any(service)))
    rs.resource.attributes.extend(KeyValue(key=k, value=_any(v)) for k, v in (resource or {}).items())
    ss = rs.scope_spans.add()
    ss.scope.name = "tests"
    for s in spans:
        pb = Span(
            trace_id=bytes.fromhex(s["trace_id"]), span_id=bytes.fromhex(s["span_id"]),
            parent_span_id=bytes.fromhex(s["parent"]) if s["parent"] else b"", name=s["name"], kind=s["kind"],
            start_time_unix_nano=s["start"], end_time_unix_nano=s["end"],
            status=Status(code=2 if s["error"] else 0, message="failed" if s["error"] else ""),
        )
        pb.attributes.extend(KeyValue(key=k, value=_any(v)) for k, v in s["attrs"].items())
        for name, attrs in s.get("events", []):
            ev = pb.events.add()
            ev.name, ev.time_unix_nano = name, s["start"]
            ev.attributes.extend(KeyValue(key=k, value=_any(v)) for k, v in attrs.items())
        ss.spans.append(pb)
    return req.SerializeToString()


def _json_any(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_json_any(v) for v in value]}}
    return {"stringValue": str(value)}


def json_request(spans: list[dict[str, Any]], service: str = "agent-app") -> dict[str, Any]:
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "tests"}, "spans": [
            {
                "traceId": s["trace_id"], "spanId": s["span_id"], "parentSpanId": s["parent"] or "",
                "name": s["name"], "kind": s["kind"], "startTimeUnixNano": str(s["start"]),
                "endTimeUnixNano": str(s["end"]),
                "attributes": [{"key": k, "value": _json_any(v)} for k, v in s["attrs"].items()],
                "status": {"code": 2 if s["error"] else 0, "message": "failed" if s["error"] else ""},
            }
            for s in spans
        ]}],
    }]}


def agent_run(trace_id: str, *, session: str = "sess-1", user: str = "alice", model: str = "gpt-4o-mini",
              tool_error: bool = False) -> list[dict[str, Any]]:
    """An agent run in gen_ai semconv 1.37+: agent -> chat -> tool -> chat."""
    root = span(trace_id, "invoke_agent planner", {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner",
        "gen_ai.conversation.id": session, "user.id": user,
        # A parent repeating its children's totals must not count twice.
        "gen_ai.usage.input_tokens": 999, "gen_ai.usage.output_tokens": 999,
    }, duration_ms=300)
    t0 = root["start"]
    chat1 = span(trace_id, f"chat {model}", {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": model, "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 200,
        "gen_ai.response.finish_reasons": ["tool_calls"], "gen_ai.conversation.id": session,
    }, parent=root["span_id"], start_ns=t0 + 1_000_000, duration_ms=100)
    tool = span(trace_id, "execute_tool get_weather", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather",
        "gen_ai.tool.call.id": "call_1", "gen_ai.tool.call.arguments": '{"city": "Paris"}',
        **({"error.type": "ToolError"} if tool_error else {}),
    }, parent=root["span_id"], start_ns=t0 + 110_000_000, duration_ms=20, error=tool_error)
    chat2 = span(trace_id, f"chat {model}", {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": model, "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": 1500, "gen_ai.usage.output_tokens": 100,
        "gen_ai.usage.cache_read.input_tokens": 1000, "gen_ai.response.finish_reasons": ["stop"],
    }, parent=root["span_id"], start_ns=t0 + 140_000_000, duration_ms=150)
    return [root, chat1, tool, chat2]
