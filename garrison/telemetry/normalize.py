"""Turns a decoded span into one canonical row: kind, model, provider, usage, tool,
session, user, agent and error class, whatever convention the sender used.

Usage is kept only on model-call spans, so a parent that repeats its children's
totals (Langfuse traces, some agent frameworks) never counts twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import orjson

from garrison.telemetry import semconv as sc
from garrison.telemetry.otlp import RawSpan

DAY_NS = 86_400 * 1_000_000_000
FUTURE_SKEW_NS = 24 * 3600 * 1_000_000_000
PAST_SKEW_NS = 365 * DAY_NS


@dataclass(slots=True, frozen=True)
class Caps:
    max_attribute_chars: int = 4096
    max_attributes: int = 128
    max_events: int = 64
    max_content_chars: int = 65_536
    capture_content: bool = False


@dataclass(slots=True)
class Normalized:
    row: dict[str, Any]
    content: dict[str, Any] | None


def _first(attrs: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value not in (None, ""):
            return value
    return None


def _text(value: Any, limit: int = 256) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        value = value[0] if value else None
        if value is None:
            return None
    return str(value)[:limit]


def _int(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        return 0
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        try:
            return max(0, int(float(value)))
        except (TypeError, ValueError):
            return 0


def _langfuse_usage(attrs: dict[str, Any]) -> dict[str, int]:
    raw = attrs.get("langfuse.observation.usage_details")
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {}
    if not isinstance(raw, dict):
        return {}
    return {
        "input": _int(raw.get("input") or raw.get("prompt_tokens") or raw.get("input_tokens")),
        "output": _int(raw.get("output") or raw.get("completion_tokens") or raw.get("output_tokens")),
        "cached": _int(raw.get("cache_read_input_tokens") or raw.get("input_cached_tokens")),
        "reasoning": _int(raw.get("output_reasoning_tokens") or raw.get("reasoning_tokens")),
    }


def span_kind(name: str, attrs: dict[str, Any]) -> str:
    explicit = attrs.get("garrison.kind")
    if isinstance(explicit, str) and explicit in sc.KINDS:
        return explicit
    op = attrs.get("gen_ai.operation.name")
    if isinstance(op, str) and op in sc.OPERATION_KIND:
        return sc.OPERATION_KIND[op]
    oi = attrs.get("openinference.span.kind")
    if isinstance(oi, str) and oi.upper() in sc.OPENINFERENCE_KIND:
        return sc.OPENINFERENCE_KIND[oi.upper()]
    lf = attrs.get("langfuse.observation.type")
    if isinstance(lf, str) and lf.lower() in sc.LANGFUSE_KIND:
        return sc.LANGFUSE_KIND[lf.lower()]
    tl = attrs.get("traceloop.span.kind")
    if isinstance(tl, str) and tl.lower() in sc.TRACELOOP_KIND:
        return sc.TRACELOOP_KIND[tl.lower()]
    if attrs.get("llm.request.type") in ("chat", "completion", "embedding"):
        return "model"
    if attrs.get("mcp.method.name") == "tools/call":
        return "tool"
    if name.startswith("sandbox") or "garrison.sandbox.id" in attrs:
        return "sandbox"
    if "guardrail" in name.lower():
        return "guardrail"
    if _first(attrs, sc.MODEL) and _first(attrs, sc.PROVIDER):
        return "model"
    return "other"


def error_class(kind: str, status_code: int, attrs: dict[str, Any], events: list[dict[str, Any]]) -> str | None:
    """model_refusal, tool_failure, timeout, prompt_injection, model_error or error."""
    finish = attrs.get("gen_ai.response.finish_reasons") or attrs.get("llm.response.finish_reason")
    reasons = [str(x).lower() for x in (finish if isinstance(finish, list) else [finish] if finish else [])]
    if kind == "model" and any(r in ("content_filter", "refusal", "safety") for r in reasons):
        return "model_refusal"
    if kind == "model" and attrs.get("gen_ai.response.refusal"):
        return "model_refusal"
    marker = " ".join(str(attrs.get(k, "")) for k in ("garrison.guardrail.finding", "guardrail.finding"))
    if "prompt_injection" in marker or "prompt-injection" in marker:
        return "prompt_injection"
    err = str(_first(attrs, sc.ERROR_TYPE) or "")
    for ev in events:
        if ev.get("name") == "exception" and not err:
            err = str(ev.get("attributes", {}).get("exception.type", ""))
    low = err.lower()
    if "injection" in low:
        return "prompt_injection"
    if status_code != 2 and not err:
        return None
    if "timeout" in low or "timedout" in low or "deadline" in low:
        return "timeout"
    if status_code != 2:
        return None
    if kind == "tool":
        return "tool_failure"
    if kind == "model":
        return "model_error"
    return "error"


def _is_content(key: str) -> str | None:
    for prefix in sc.INPUT_CONTENT_PREFIXES:
        if key.startswith(prefix):
            return "input"
    for prefix in sc.OUTPUT_CONTENT_PREFIXES:
        if key.startswith(prefix):
            return "output"
    return None


def _cap_value(value: Any, limit: int) -> tuple[Any, bool]:
    if isinstance(value, str):
        return (value[:limit], True) if len(value) > limit else (value, False)
    if isinstance(value, list | dict):
        encoded = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        if len(encoded) > limit:
            return encoded[:limit].decode("utf-8", "ignore"), True
    return value, False


def _cap_resource(resource: dict[str, Any], caps: Caps, truncated_keys: list[str], flags: list[str]) -> str:
    """A resource too big to keep whole: each value capped, at most max_attributes keys, and the
    whole still valid JSON within max_attribute_chars (a cut string would not parse again)."""
    kept: dict[str, Any] = {}
    budget = caps.max_attribute_chars - 2
    per_value = max(16, caps.max_attribute_chars // 8)
    for key, value in resource.items():
        if len(kept) >= caps.max_attributes:
            flags.append("attributes_dropped")
            break
        capped, cut = _cap_value(value, per_value)
        cost = len(orjson.dumps({key[:256]: capped}, option=orjson.OPT_NON_STR_KEYS)) - 1
        if cost > budget:
            flags.append("attributes_dropped")
            truncated_keys.append(f"resource:{key[:64]}")
            continue
        budget -= cost
        kept[key[:256]] = capped
        if cut:
            truncated_keys.append(f"resource:{key[:64]}")
    return orjson.dumps(kept, option=orjson.OPT_NON_STR_KEYS).decode()


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def without_nul(raw: RawSpan) -> RawSpan:
    """NUL becomes U+FFFD: PostgreSQL text and jsonb cannot hold it, and one such span (OTLP
    strings may carry NUL) failed its whole write batch, other requests' spans with it. The
    check allocates nothing, so spans without NUL (all real ones) cost only the scan."""
    fields = (raw.name, raw.status_message, raw.scope, raw.attributes, raw.resource, raw.events)
    if not any(_has_nul(f) for f in fields):
        return raw
    return replace(raw, name=_scrub(raw.name), status_message=_scrub(raw.status_message), scope=_scrub(raw.scope),
                   attributes=_scrub(raw.attributes), resource=_scrub(raw.resource), events=_scrub(raw.events))


def normalize(raw: RawSpan, tenant_id: str, caps: Caps, *, received_ns: int | None = None) -> Normalized:
    raw = without_nul(raw)
    attrs = raw.attributes
    now = received_ns or time.time_ns()
    flags: list[str] = []

    # Content is split off first so it never lands in the attribute JSON.
    kept: dict[str, Any] = {}
    content: dict[str, dict[str, Any]] = {"input": {}, "output": {}}
    truncated_keys: list[str] = []
    for key, value in attrs.items():
        side = _is_content(key)
        if side is not None:
            if caps.capture_content:
                content[side][key], cut = _cap_value(value, caps.max_content_chars)
                if cut:
                    truncated_keys.append(key)
            continue
        if len(kept) >= caps.max_attributes:
            flags.append("attributes_dropped")
            continue
        kept[key[:256]], cut = _cap_value(value, caps.max_attribute_chars)
        if cut:
            truncated_keys.append(key)
    events: list[dict[str, Any]] = []
    for ev in raw.events[: caps.max_events]:
        if ev["name"] in sc.CONTENT_EVENTS:
            if caps.capture_content:
                content["input" if ev["name"] != "gen_ai.choice" else "output"].setdefault("events", []).append(ev)
            continue
        ev_attrs = {}
        for k, v in list(ev["attributes"].items())[:32]:
            ev_attrs[k[:256]], cut = _cap_value(v, caps.max_attribute_chars)
            if cut:
                truncated_keys.append(f"event:{ev['name'][:64]}:{k[:64]}")
        if len(ev["attributes"]) > 32:
            flags.append("attributes_dropped")
        events.append({"name": ev["name"][:256], "time_ns": ev["time_ns"], "attributes": ev_attrs})
    if len(raw.events) > caps.max_events:
        flags.append("events_dropped")
    if len(raw.name) > 256:
        truncated_keys.append("span.name")
    if len(raw.status_message) > 1024:
        truncated_keys.append("status.message")
    resource = orjson.dumps(raw.resource, option=orjson.OPT_NON_STR_KEYS).decode()
    if len(resource) > caps.max_attribute_chars:
        resource = _cap_resource(raw.resource, caps, truncated_keys, flags)
    if truncated_keys:
        flags.append("truncated")
        kept["garrison.truncated_keys"] = truncated_keys[:32]

    start, end = raw.start_ns, raw.end_ns
    if start <= 0 or start > now + FUTURE_SKEW_NS or start < now - PAST_SKEW_NS:
        # Clock skew: keep the sender's time in the attributes, file the span under arrival time.
        kept["garrison.original_start_ns"] = start
        span_len = end - start if end >= start > 0 else 0
        start, end = now - span_len, now
        flags.append("clock_skew")
    if end < start:
        kept["garrison.original_end_ns"] = end
        end = start
        flags.append("clock_skew")

    kind = span_kind(raw.name, attrs)
    model = _text(_first(attrs, sc.MODEL), 128)
    provider = _text(_first(attrs, sc.PROVIDER), 64)
    usage = {"input": 0, "output": 0, "cached": 0, "reasoning": 0}
    if kind == "model":
        usage["input"] = _int(_first(attrs, sc.INPUT_TOKENS))
        usage["output"] = _int(_first(attrs, sc.OUTPUT_TOKENS))
        usage["cached"] = _int(_first(attrs, sc.CACHED_TOKENS))
        usage["reasoning"] = _int(_first(attrs, sc.REASONING_TOKENS))
        if not usage["input"] and not usage["output"]:
            lf = _langfuse_usage(attrs)
            usage.update({k: v for k, v in lf.items() if v})
    agent = _text(_first(attrs, sc.AGENT), 128)
    if agent is None and kind == "agent":
        agent = _text(attrs.get("traceloop.entity.name"), 128) or raw.name[:128]
    tool = _text(_first(attrs, sc.TOOL_NAME), 128)
    if tool is None and kind == "tool":
        tool = _text(attrs.get("traceloop.entity.name"), 128)
    service = raw.resource.get("service.name")
    row: dict[str, Any] = {
        "tenant_id": tenant_id,
        "trace_id": raw.trace_id,
        "span_id": raw.span_id,
        "parent_span_id": raw.parent_span_id,
        "name": raw.name[:256],
        "kind": kind,
        "otel_kind": raw.otel_kind,
        "service_name": str(service)[:128] if service is not None else None,
        "scope": raw.scope[:128],
        "start_ns": start,
        "end_ns": end,
        "day": start // DAY_NS,
        "duration_ms": (end - start) / 1e6,
        "status_code": raw.status_code,
        "status_message": raw.status_message[:1024],
        "error_class": error_class(kind, raw.status_code, attrs, raw.events),
        "operation": _text(_first(attrs, sc.OPERATION), 64),
        "model": model,
        "provider": provider,
        "input_tokens": usage["input"],
        "output_tokens": usage["output"],
        "cached_tokens": usage["cached"],
        "reasoning_tokens": usage["reasoning"],
        "cost_usd": None,
        "tool_name": tool,
        "tool_call_id": _text(_first(attrs, sc.TOOL_CALL_ID), 128),
        "session_id": _text(_first(attrs, sc.SESSION), 256),
        "user_id": _text(_first(attrs, sc.USER), 256),
        "agent_name": agent,
        "gateway": attrs.get("garrison.gateway") in (True, "true", "True", 1),
        "flags": ",".join(sorted(set(flags))) or None,
        "attributes": orjson.dumps(kept, option=orjson.OPT_NON_STR_KEYS).decode(),
        "resource": resource,
        "events": orjson.dumps(events, option=orjson.OPT_NON_STR_KEYS).decode() if events else None,
    }
    stored_content = None
    if caps.capture_content and (content["input"] or content["output"]):
        stored_content = {k: v for k, v in content.items() if v}
    return Normalized(row=row, content=stored_content)
