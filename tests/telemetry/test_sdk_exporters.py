"""The real OpenTelemetry SDK OTLP/HTTP exporters (protobuf and JSON) against a live garrison."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter as JsonSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as ProtoSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from garrison.config import Settings
from tests.telemetry.live import live_garrison


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """Real clients against the HTTP surface: the store engine is covered elsewhere, SQLite keeps CI short."""
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"

TRACES = 30


def _emit(provider: TracerProvider, session: str) -> list[str]:
    """TRACES agent runs of 4 spans each, in gen_ai semconv, through the SDK."""
    tracer = provider.get_tracer("agent-app")
    trace_ids = []
    for i in range(TRACES):
        with tracer.start_as_current_span("invoke_agent helper", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "helper",
            "gen_ai.conversation.id": session,
        }) as root:
            trace_ids.append(format(root.get_span_context().trace_id, "032x"))
            with tracer.start_as_current_span("chat gpt-4o-mini", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 100 + i,
                "gen_ai.usage.output_tokens": 10,
            }):
                pass
            with tracer.start_as_current_span("execute_tool search", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
            }) as tool:
                if i % 10 == 0:
                    tool.set_status(Status(StatusCode.ERROR, "search backend down"))
            with tracer.start_as_current_span("chat gpt-4o-mini", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.system": "openai", "gen_ai.usage.prompt_tokens": 200, "gen_ai.usage.completion_tokens": 20,
            }):
                pass
    return trace_ids


def _check(url: str, key: str, trace_ids: list[str], session: str) -> None:
    h = {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=h, timeout=30) as c:
        listed = c.get("/api/traces", params={"session_id": session, "limit": 200}).json()["traces"]
        assert sorted(t["trace_id"] for t in listed) == sorted(trace_ids)
        assert all(t["span_count"] == 4 for t in listed)
        errors = c.get("/api/traces", params={"session_id": session, "status": "error", "limit": 200}).json()
        assert len(errors["traces"]) == TRACES // 10
        tree = c.get(f"/api/traces/{trace_ids[3]}").json()
        assert tree["summary"]["input_tokens"] == 100 + 3 + 200
        assert tree["summary"]["output_tokens"] == 30
        [root] = tree["spans"]
        assert [s["kind"] for s in root["children"]] == ["model", "tool", "model"]
        sess = c.get(f"/api/sessions/{session}").json()
        assert sess["trace_count"] == TRACES
        assert sess["input_tokens"] == sum(100 + i + 200 for i in range(TRACES))


@pytest.mark.slow
def test_protobuf_exporter_with_gzip(settings: Settings) -> None:
    with live_garrison(settings) as (url, key, _):
        exporter = ProtoSpanExporter(endpoint=f"{url}/v1/traces", headers={"authorization": f"Bearer {key}"},
                                     compression=Compression.Gzip)
        provider = TracerProvider(resource=Resource.create({"service.name": "sdk-proto"}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        ids = _emit(provider, "sdk-proto-session")
        assert provider.force_flush(30_000)
        provider.shutdown()
        _check(url, key, ids, "sdk-proto-session")


@pytest.mark.slow
def test_json_exporter_to_langfuse_path_with_basic_auth(settings: Settings) -> None:
    with live_garrison(settings) as (url, key, _):
        basic = base64.b64encode(f"pk-lf-public:{key}".encode()).decode()
        exporter = JsonSpanExporter(endpoint=f"{url}/api/public/otel/v1/traces",
                                    headers={"authorization": f"Basic {basic}"})
        provider = TracerProvider(resource=Resource.create({"service.name": "sdk-json"}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        ids = _emit(provider, "sdk-json-session")
        assert provider.force_flush(30_000)
        provider.shutdown()
        _check(url, key, ids, "sdk-json-session")
