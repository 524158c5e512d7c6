"""The gateway's span reaches telemetry marked as the gateway's; Prometheus counts calls."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from garrison.llm.upstreams import parse_load_metrics


def test_load_metrics_parsing_sums_waiting_and_takes_max_kv():
    text = (
        "# HELP vllm:num_requests_waiting waiting\n"
        'vllm:num_requests_waiting{model_name="a"} 3.0\n'
        'vllm:num_requests_waiting{model_name="b"} 2\n'
        'vllm:gpu_cache_usage_perc{engine="0"} 0.25\n'
        'vllm:kv_cache_usage_perc{engine="1",note="a b"} 0.5\n'
        "vllm:num_requests_running 7\n"
        "nonsense line without value\n"
        "vllm:num_requests_waiting{x=\"1\"} not-a-number\n"
    )
    assert parse_load_metrics(text) == (5.0, 0.5)
    assert parse_load_metrics("") == (None, None)


def _walk(spans: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    """The trace view is a tree (server span, FastAPI's spans, then ours): flatten it."""
    out = []
    for s in spans:
        out.append(s)
        out.extend(_walk(s.get("children") or []))
    return out


async def test_gateway_span_is_stored_by_telemetry_with_gen_ai_usage(client, platform, fake, add_model):
    await add_model("m", fake)
    r = await client.post("/v1/chat/completions", json={"model": "m", "max_tokens": 4,
                                                         "messages": [{"role": "user", "content": "a b c"}]})
    assert r.status_code == 200
    answered_trace = r.headers["traceparent"].split("-")[1]
    metering = platform.services["metering"]
    await metering.ledger.drain()
    entry = (await metering.entries(None))[0]
    assert entry["trace_id"] == answered_trace
    telemetry = platform.services.get("telemetry")
    assert telemetry is not None, "the telemetry layer stores garrison's own spans"
    span = None
    for _ in range(50):  # spans travel through the exporter thread and the store's batcher
        await telemetry.flush()
        r = await client.get(f"/api/traces/{entry['trace_id']}")
        found = [s for s in _walk(r.json().get("spans", [])) if s["name"] == "chat m"] if r.status_code == 200 else []
        if found:
            span = found[0]
            break
        await asyncio.sleep(0.1)
    assert span is not None, "the gateway's span never reached the trace store"
    # The caller sent no trace context: the gateway's span is the root of the trace the response
    # named, not the child of a span id that nothing recorded.
    assert span["parent_span_id"] is None and r.json()["orphan_count"] == 0, r.json()
    assert span["gateway"] is True and span["attributes"]["garrison.gateway"] is True
    assert span["usage"]["input_tokens"] == 6 and span["usage"]["output_tokens"] == 4
    assert span["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]
    before = REGISTRY.get_sample_value("garrison_llm_requests_total", {"model": "m", "status": "ok"})
    assert before is not None and before >= 1
    metrics = await client.get("/metrics")
    assert "garrison_llm_requests_total" in metrics.text and "garrison_llm_queue_depth" in metrics.text
