"""One agent step across garrison's layers is one trace, and every layer's span names its tenant.

The agent (this test, instrumented with OpenTelemetry like any agent) opens one span and,
inside it, calls garrison over real sockets in one garrison process: a chat completion
through the LLM gateway (W3C ``traceparent`` header) and an MCP ``tools/call`` of the
sandbox's ``execute_code`` tool through the tools gateway (``params._meta.traceparent``),
which runs code in a real sandbox. Spans are captured as the layers made them, before the
telemetry layer fills in a missing tenant from other spans of the trace.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from garrison.llm.fake_upstream import FakeConfig, FakeUpstream
from tests.sandbox.helpers import make_backend
from tests.tools.servers import serve_in_loop

LAYERS = {
    # layer: (tracer scope, span name)
    "llm": ("garrison.llm", "chat m"),
    "tools": ("garrison.tools", "tools/call sandbox__execute_code"),
    "sandbox": ("garrison.sandbox", "sandbox.run_code"),
}


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    # Tracing does not depend on the store engine: SQLite only.
    yield f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


class Capture(SpanProcessor):
    """Spans as the layers ended them, for one trace (attributes untouched by telemetry)."""

    def __init__(self) -> None:
        self.trace_id: int | None = None
        self.spans: list[ReadableSpan] = []
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        if self.trace_id is not None and span.context is not None and span.context.trace_id == self.trace_id:
            with self._lock:
                self.spans.append(span)

    def find(self, scope: str, name: str) -> ReadableSpan | None:
        with self._lock:
            return next((s for s in self.spans if s.name == name and s.instrumentation_scope is not None
                         and s.instrumentation_scope.name == scope), None)


@asynccontextmanager
async def capture() -> AsyncIterator[Capture]:
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "the telemetry layer installs the SDK tracer provider"
    cap = Capture()
    provider.add_span_processor(cap)
    try:
        yield cap
    finally:
        cap.trace_id = None  # the provider keeps its processors; this one goes quiet


def spans_by_layer(cap: Capture) -> dict[str, ReadableSpan | None]:
    return {layer: cap.find(scope, name) for layer, (scope, name) in LAYERS.items()}


async def one_agent_step(app: Any, client: httpx.AsyncClient, platform: Any, admin_key: str,
                         tmp_path: Path) -> tuple[int, dict[str, ReadableSpan | None], str]:
    """Run the step; returns (trace id, each layer's span or None, /metrics text afterwards)."""
    make_backend("bubblewrap", tmp_path)  # skips, with the reason, where bubblewrap cannot run
    platform.services["sandbox"].default_backend = "bubblewrap"
    async with FakeUpstream(FakeConfig(completion_tokens=8)) as upstream:
        r = await client.post("/api/llm/models", json={"model": "m", "base_url": upstream.base_url})
        assert r.status_code == 201, r.text
        r = await client.post("/api/tools/virtual-servers", json={
            "name": "agents", "tools": [{"upstream": "sandbox", "tool": "execute_code"}]})
        assert r.status_code == 201, r.text
        async with serve_in_loop(app) as base, capture() as cap:
            with trace.get_tracer("tests.agent").start_as_current_span("invoke_agent e2e") as root:
                cap.trace_id = root.get_span_context().trace_id
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                auth = {"Authorization": f"Bearer {admin_key}"}
                async with httpx.AsyncClient(timeout=60) as http:
                    r = await http.post(f"{base}/v1/chat/completions", headers={**auth, **carrier}, json={
                        "model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "plan"}]})
                    assert r.status_code == 200, r.text
                async with httpx2.AsyncClient(headers=auth, timeout=60) as http2:
                    async with Client(streamable_http_client(f"{base}/mcp/agents", http_client=http2),
                                      mode="legacy") as mcp:
                        result = await mcp.call_tool("sandbox__execute_code", {"code": "6 * 7"},
                                                     meta={"traceparent": carrier["traceparent"]})
                assert not result.is_error, result
                assert "42" in "".join(c.text for c in result.content if c.type == "text")
            trace_id = cap.trace_id
            found: dict[str, ReadableSpan | None] = {}
            for _ in range(100):  # spans end on the layers' own tasks
                found = spans_by_layer(cap)
                if all(found.values()):
                    break
                await asyncio.sleep(0.05)
        await platform.services["telemetry"].flush()
        metrics = (await client.get("/metrics")).text
    return trace_id, found, metrics


@pytest.mark.parametrize("layer", [
    "llm",
    "tools",
    "sandbox",
])
async def test_each_layer_joins_the_agents_trace(app, client, platform, admin_key, tmp_path, layer) -> None:  # type: ignore[no-untyped-def]
    trace_id, found, _ = await one_agent_step(app, client, platform, admin_key, tmp_path)
    span = found[layer]
    assert span is not None and span.context is not None, f"no {LAYERS[layer][1]!r} span in the agent's trace"
    assert span.context.trace_id == trace_id


@pytest.mark.parametrize("layer", [
    "llm",
    "tools",
    "sandbox",
])
async def test_each_layers_span_carries_the_tenant(app, client, platform, admin_key, tmp_path, layer) -> None:  # type: ignore[no-untyped-def]
    _, found, _ = await one_agent_step(app, client, platform, admin_key, tmp_path)
    span = found[layer]
    assert span is not None and span.attributes is not None, f"no {LAYERS[layer][1]!r} span in the agent's trace"
    tenant = (await platform.identity.tenant_by_name("default"))["id"]
    assert span.attributes.get("garrison.tenant_id") == tenant


def _walk(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for s in spans:
        out.append(s)
        out.extend(_walk(s.get("children") or []))
    return out


async def test_the_trace_is_stored_whole_and_gen_ai_metrics_count_it(app, client, platform, admin_key,  # type: ignore[no-untyped-def]
                                                                      tmp_path) -> None:
    trace_id, found, metrics = await one_agent_step(app, client, platform, admin_key, tmp_path)
    # The sandbox ran inside the tool call: its span is the tool span's child.
    tools_span, sandbox_span = found["tools"], found["sandbox"]
    assert tools_span is not None and sandbox_span is not None and sandbox_span.parent is not None
    assert tools_span.context is not None and sandbox_span.parent.span_id == tools_span.context.span_id
    # The telemetry layer stored the whole step as one trace of the caller's tenant.
    stored: list[dict[str, Any]] = []
    for _ in range(50):
        await platform.services["telemetry"].flush()
        r = await client.get(f"/api/traces/{trace_id:032x}")
        stored = _walk(r.json().get("spans", [])) if r.status_code == 200 else []
        if {name for _, name in LAYERS.values()} <= {s["name"] for s in stored}:
            break
        await asyncio.sleep(0.1)
    names = {s["name"] for s in stored}
    assert {"invoke_agent e2e", *(name for _, name in LAYERS.values())} <= names, names
    # gen_ai.client.token.usage and gen_ai.client.operation.duration under their Prometheus names,
    # from the gateway's own model call.
    assert 'garrison_gen_ai_client_token_usage_total{model="m",provider=' in metrics
    assert 'type="input"' in metrics and 'type="output"' in metrics
    assert "garrison_gen_ai_client_operation_duration_seconds_bucket{" in metrics
    count = [line for line in metrics.splitlines()
             if line.startswith("garrison_gen_ai_client_operation_duration_seconds_count") and 'model="m"' in line]
    assert count and float(count[0].rsplit(" ", 1)[1]) >= 1
