"""OTLP/HTTP decoding (protobuf and JSON) into plain span and log dictionaries.

Both encodings land in the same :class:`RawSpan` so everything after decoding has
one code path. Bad input raises :class:`OtlpError` (a 400 for the client); a span
with unusable ids is rejected alone and counted as a partial success.
"""

from __future__ import annotations

import base64
import gzip
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
JSON_TYPES = ("application/json",)

_JSON_KINDS = {
    "SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5,
}
_JSON_STATUS = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


class OtlpError(ValueError):
    """The request as a whole cannot be decoded; the message says what to fix."""


class UnsupportedMediaType(OtlpError):
    pass


@dataclass(slots=True)
class RawSpan:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    otel_kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class RawLog:
    trace_id: str | None
    span_id: str | None
    time_ns: int
    event_name: str
    body: Any
    attributes: dict[str, Any]


@dataclass(slots=True)
class Decoded:
    spans: list[RawSpan]
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def reject(self, why: str) -> None:
        self.rejected += 1
        if len(self.errors) < 5:
            self.errors.append(why)


def media_kind(content_type: str | None) -> str:
    """``protobuf`` or ``json`` from a Content-Type header, else UnsupportedMediaType."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base in PROTOBUF_TYPES:
        return "protobuf"
    if base in JSON_TYPES:
        return "json"
    raise UnsupportedMediaType(
        f"Content-Type {base or '(none)'!r} is not OTLP: send application/x-protobuf or application/json"
    )


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo Content-Encoding (gzip, deflate), refusing to inflate past ``limit`` bytes."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        if len(body) > limit:
            raise PayloadTooBig(limit)
        return body
    if enc not in ("gzip", "deflate", "x-gzip"):
        raise UnsupportedMediaType(f"Content-Encoding {enc!r} is not supported: use gzip or none")
    wbits = 16 + zlib.MAX_WBITS if enc in ("gzip", "x-gzip") else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise OtlpError(f"body is not valid {enc}: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooBig(limit)
    if not inflater.eof:
        raise OtlpError(f"body is truncated {enc}")
    return out


class PayloadTooBig(OtlpError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes after decompression: send smaller batches")
        self.limit = limit


# ---------------------------------------------------------------- protobuf


def _any_value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        return v.double_value
    if which == "bool_value":
        return v.bool_value
    if which == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return None


def _pb_attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


def _hex_id(raw: bytes, size: int) -> str | None:
    if len(raw) != size or not any(raw):
        return None
    return raw.hex()


def decode_traces_protobuf(body: bytes) -> Decoded:
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise OtlpError(f"body is not a valid OTLP ExportTraceServiceRequest protobuf: {exc}") from exc
    out = Decoded(spans=[])
    for rs in req.resource_spans:
        resource = _pb_attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for sp in ss.spans:
                trace_id = _hex_id(sp.trace_id, 16)
                span_id = _hex_id(sp.span_id, 8)
                if trace_id is None or span_id is None:
                    out.reject(f"span {sp.name!r}: traceId must be 16 bytes and spanId 8 bytes, not all zero")
                    continue
                out.spans.append(RawSpan(
                    trace_id=trace_id,
                    span_id=span_id,
                    parent_span_id=_hex_id(sp.parent_span_id, 8),
                    name=sp.name,
                    otel_kind=int(sp.kind),
                    start_ns=int(sp.start_time_unix_nano),
                    end_ns=int(sp.end_time_unix_nano),
                    status_code=int(sp.status.code),
                    status_message=sp.status.message,
                    attributes=_pb_attrs(sp.attributes),
                    resource=resource,
                    scope=scope,
                    events=[
                        {"name": ev.name, "time_ns": int(ev.time_unix_nano), "attributes": _pb_attrs(ev.attributes)}
                        for ev in sp.events
                    ],
                ))
    return out


def decode_logs_protobuf(body: bytes) -> list[RawLog]:
    req = ExportLogsServiceRequest()
    try:
        req.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise OtlpError(f"body is not a valid OTLP ExportLogsServiceRequest protobuf: {exc}") from exc
    logs: list[RawLog] = []
    for rl in req.resource_logs:
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                attrs = _pb_attrs(rec.attributes)
                name = getattr(rec, "event_name", "") or str(attrs.get("event.name", ""))
                logs.append(RawLog(
                    trace_id=_hex_id(rec.trace_id, 16),
                    span_id=_hex_id(rec.span_id, 8),
                    time_ns=int(rec.time_unix_nano or rec.observed_time_unix_nano),
                    event_name=name,
                    body=_any_value(rec.body) if rec.HasField("body") else None,
                    attributes=attrs,
                ))
    return logs


# ---------------------------------------------------------------- JSON


def _json_value(v: Any) -> Any:
    if not isinstance(v, dict):
        raise OtlpError("an attribute value must be an AnyValue object such as {\"stringValue\": \"x\"}")
    if "stringValue" in v:
        return str(v["stringValue"])
    if "intValue" in v:
        try:
            return int(v["intValue"])
        except (TypeError, ValueError) as exc:
            raise OtlpError("intValue must be an integer or a decimal string") from exc
    if "doubleValue" in v:
        try:
            return float(v["doubleValue"])
        except (TypeError, ValueError) as exc:
            raise OtlpError("doubleValue must be a number") from exc
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [_json_value(x) for x in _list((v["arrayValue"] or {}).get("values"), "arrayValue.values")]
    if "kvlistValue" in v:
        return _json_attrs((v["kvlistValue"] or {}).get("values"))
    if "bytesValue" in v:
        return str(v["bytesValue"])
    return None


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpError(f"{what} must be a JSON array")
    return value


def _obj(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OtlpError(f"{what} must be a JSON object")
    return value


def _json_attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in _list(kvs, "attributes"):
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise OtlpError("each attribute must be an object {\"key\": ..., \"value\": {...}}")
        out[kv["key"]] = _json_value(kv.get("value") or {})
    return out


def _json_id(value: Any, size: int) -> str | None:
    """OTLP/JSON ids are hex; some senders use base64 as protobuf's JSON mapping does."""
    if not isinstance(value, str) or not value:
        return None
    raw: bytes | None = None
    if len(value) == size * 2:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError:
            return None
    return _hex_id(raw, size)


def _nanos(value: Any) -> int:
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise OtlpError("*TimeUnixNano must be an integer or a decimal string") from exc


def _enum(value: Any, names: dict[str, int]) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return names.get(value, 0)
    return 0


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OtlpError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise OtlpError("body must be a JSON object with resourceSpans or resourceLogs")
    return doc


def decode_traces_json(body: bytes) -> Decoded:
    doc = _parse_json(body)
    out = Decoded(spans=[])
    for rs in _list(doc.get("resourceSpans"), "resourceSpans"):
        rs = _obj(rs, "resourceSpans[]")
        resource = _json_attrs(_obj(rs.get("resource"), "resource").get("attributes"))
        for ss in _list(rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans"), "scopeSpans"):
            ss = _obj(ss, "scopeSpans[]")
            scope = str(_obj(ss.get("scope"), "scope").get("name") or "")
            for sp in _list(ss.get("spans"), "spans"):
                sp = _obj(sp, "spans[]")
                name = str(sp.get("name") or "")
                trace_id = _json_id(sp.get("traceId"), 16)
                span_id = _json_id(sp.get("spanId"), 8)
                if trace_id is None or span_id is None:
                    out.reject(f"span {name!r}: traceId must be 32 hex digits and spanId 16, not all zero")
                    continue
                status = _obj(sp.get("status"), "status")
                out.spans.append(RawSpan(
                    trace_id=trace_id,
                    span_id=span_id,
                    parent_span_id=_json_id(sp.get("parentSpanId"), 8),
                    name=name,
                    otel_kind=_enum(sp.get("kind"), _JSON_KINDS),
                    start_ns=_nanos(sp.get("startTimeUnixNano")),
                    end_ns=_nanos(sp.get("endTimeUnixNano")),
                    status_code=_enum(status.get("code"), _JSON_STATUS),
                    status_message=str(status.get("message") or ""),
                    attributes=_json_attrs(sp.get("attributes")),
                    resource=resource,
                    scope=scope,
                    events=[
                        {
                            "name": str(_obj(ev, "events[]").get("name") or ""),
                            "time_ns": _nanos(ev.get("timeUnixNano")),
                            "attributes": _json_attrs(ev.get("attributes")),
                        }
                        for ev in _list(sp.get("events"), "events")
                    ],
                ))
    return out


def decode_logs_json(body: bytes) -> list[RawLog]:
    doc = _parse_json(body)
    logs: list[RawLog] = []
    for rl in _list(doc.get("resourceLogs"), "resourceLogs"):
        for sl in _list(_obj(rl, "resourceLogs[]").get("scopeLogs"), "scopeLogs"):
            for rec in _list(_obj(sl, "scopeLogs[]").get("logRecords"), "logRecords"):
                rec = _obj(rec, "logRecords[]")
                attrs = _json_attrs(rec.get("attributes"))
                body_val = rec.get("body")
                logs.append(RawLog(
                    trace_id=_json_id(rec.get("traceId"), 16),
                    span_id=_json_id(rec.get("spanId"), 8),
                    time_ns=_nanos(rec.get("timeUnixNano") or rec.get("observedTimeUnixNano")),
                    event_name=str(rec.get("eventName") or attrs.get("event.name") or ""),
                    body=_json_value(body_val) if isinstance(body_val, dict) else None,
                    attributes=attrs,
                ))
    return logs


def decode_traces(body: bytes, kind: str) -> Decoded:
    return decode_traces_protobuf(body) if kind == "protobuf" else decode_traces_json(body)


def decode_logs(body: bytes, kind: str) -> list[RawLog]:
    return decode_logs_protobuf(body) if kind == "protobuf" else decode_logs_json(body)


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1)


def json_dumps(value: Any) -> bytes:
    return orjson.dumps(value)
