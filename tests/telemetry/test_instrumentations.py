"""Two real OpenAI instrumentations, a real openai client and a fake OpenAI server speaking
the real protocol: every span arrives at garrison with the right usage and cost."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInferenceInstrumentor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as OtelOpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from garrison.config import Settings
from garrison.telemetry.pricing import cost_usd
from tests.telemetry.live import USAGE, fake_openai, live_garrison, serve


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """Real clients against the HTTP surface: the store engine is covered elsewhere, SQLite keeps CI short."""
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"

CALLS = 3


def _drive(upstream: str) -> None:
    client = openai.OpenAI(base_url=f"{upstream}/v1", api_key="sk-fake", max_retries=0)
    for _ in range(CALLS):
        out = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert out.usage is not None and out.usage.prompt_tokens == USAGE["prompt_tokens"]
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                            stream=True, stream_options={"include_usage": True})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello"


def _assert_stored(url: str, key: str, service: str) -> None:
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30) as c:
        listed = c.get("/api/traces", params={"model": "gpt-4o-mini", "limit": 100}).json()["traces"]
        trees = [c.get(f"/api/traces/{t['trace_id']}").json() for t in listed]
    spans = [s for t in trees for s in t["spans"] if s["service"] == service]
    assert len(spans) == CALLS + 1  # every call, the streamed one included
    for s in spans:
        assert s["kind"] == "model"
        assert s["model"] == "gpt-4o-mini" and s["provider"] == "openai"
        assert s["usage"]["input_tokens"] == USAGE["prompt_tokens"]
        assert s["usage"]["output_tokens"] == USAGE["completion_tokens"]
    expected = cost_usd("gpt-4o-mini", "openai", USAGE["prompt_tokens"], USAGE["completion_tokens"],
                        spans[0]["usage"]["cached_tokens"])
    assert expected is not None and expected > 0
    assert all(s["cost_usd"] == pytest.approx(expected) for s in spans)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("instrumentor", "service"),
    [(OtelOpenAIInstrumentor, "otel-openai-v2"), (OpenInferenceInstrumentor, "openinference-openai")],
)
def test_openai_instrumentation_end_to_end(settings: Settings, instrumentor: type, service: str) -> None:
    with live_garrison(settings) as (url, key, _), serve(fake_openai()) as upstream:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers={"authorization": f"Bearer {key}"})
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        inst = instrumentor()
        inst.instrument(tracer_provider=provider)
        try:
            _drive(upstream)
        finally:
            inst.uninstrument()
        provider.shutdown()
        _assert_stored(url, key, service)
