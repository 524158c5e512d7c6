"""OTLP decoding of both encodings, compression and hostile bodies (no store needed)."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from garrison.telemetry import otlp
from tests.telemetry.spans import json_request, new_trace_id, protobuf_request, span


def test_protobuf_and_json_decode_to_the_same_spans() -> None:
    tid = new_trace_id()
    spans = [span(tid, "root", {"a": 1, "b": True, "c": 1.5, "d": "x", "e": [1, 2]}),
             span(tid, "child", {"k": "v"}, error=True)]
    spans[1]["parent"] = spans[0]["span_id"]
    a = otlp.decode_traces(protobuf_request(spans), "protobuf").spans
    b = otlp.decode_traces(json.dumps(json_request(spans)).encode(), "json").spans
    assert a == b
    assert a[0].attributes == {"a": 1, "b": True, "c": 1.5, "d": "x", "e": [1, 2]}
    assert a[1].parent_span_id == spans[0]["span_id"] and a[1].status_code == 2
    assert a[0].resource == {"service.name": "agent-app"}


def test_json_accepts_string_enums_and_base64_ids() -> None:
    import base64

    tid = bytes(range(1, 17))
    sid = bytes(range(1, 9))
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": base64.b64encode(tid).decode(), "spanId": base64.b64encode(sid).decode(), "name": "n",
        "kind": "SPAN_KIND_CLIENT", "status": {"code": "STATUS_CODE_ERROR"}, "startTimeUnixNano": 5,
    }]}]}]}
    [s] = otlp.decode_traces(json.dumps(doc).encode(), "json").spans
    assert (s.trace_id, s.span_id, s.otel_kind, s.status_code) == (tid.hex(), sid.hex(), 3, 2)


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [("application/x-protobuf", "protobuf"), ("application/protobuf", "protobuf"),
     ("application/json; charset=utf-8", "json"), ("APPLICATION/JSON", "json")],
)
def test_media_kinds(content_type: str, kind: str) -> None:
    assert otlp.media_kind(content_type) == kind


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/grpc", "multipart/form-data"])
def test_unsupported_media(content_type: str | None) -> None:
    with pytest.raises(otlp.UnsupportedMediaType):
        otlp.media_kind(content_type)


def test_decompression_is_capped() -> None:
    data = b"x" * 10_000
    assert otlp.decompress(gzip.compress(data), "gzip", 10_000) == data
    assert otlp.decompress(zlib.compress(data), "deflate", 10_000) == data
    with pytest.raises(otlp.PayloadTooBig):
        otlp.decompress(gzip.compress(data), "gzip", 9_999)
    with pytest.raises(otlp.PayloadTooBig):
        otlp.decompress(data, None, 100)
    with pytest.raises(otlp.OtlpError):
        otlp.decompress(gzip.compress(data)[:-20], "gzip", 10_000)


@pytest.mark.parametrize(
    "body",
    [b"\x0a\xff\xff\xff\xff\x0f", b"\xff" * 64, bytes(range(256))],
)
def test_malformed_protobuf(body: bytes) -> None:
    with pytest.raises(otlp.OtlpError):
        otlp.decode_traces(body, "protobuf")


@pytest.mark.parametrize(
    "doc",
    [
        b"[]", b"null", b'{"resourceSpans": {}}', b'{"resourceSpans": [1]}',
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0102030405060708090a0b0c0d0e0f10",'
        b' "spanId": "0102030405060708", "startTimeUnixNano": "soon"}]}]}]}',
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0102030405060708090a0b0c0d0e0f10",'
        b' "spanId": "0102030405060708", "attributes": [{"key": "a", "value": 5}]}]}]}]}',
    ],
)
def test_malformed_json(doc: bytes) -> None:
    with pytest.raises(otlp.OtlpError):
        otlp.decode_traces(doc, "json")


def test_empty_request_is_valid() -> None:
    assert otlp.decode_traces(b"", "protobuf").spans == []
    assert otlp.decode_traces(b"{}", "json").spans == []
