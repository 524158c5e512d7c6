"""Prometheus metrics of the LLM gateway (default registry, served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter("garrison_llm_requests_total", "LLM gateway calls", ["model", "status"])
TOKENS = Counter("garrison_llm_tokens_total", "Tokens through the gateway", ["model", "type"])
DURATION = Histogram(
    "garrison_llm_request_duration_seconds", "LLM call duration", ["model"], buckets=LATENCY_BUCKETS
)
TTFT = Histogram(
    "garrison_llm_time_to_first_token_seconds", "Time to first token", ["model"], buckets=LATENCY_BUCKETS
)
QUEUE_DEPTH = Gauge("garrison_llm_queue_depth", "Requests waiting for a replica slot", ["model"])
QUEUE_WAIT = Histogram(
    "garrison_llm_queue_wait_seconds", "Time spent waiting for a replica slot", ["model"],
    buckets=LATENCY_BUCKETS,
)
REJECTIONS = Counter("garrison_llm_rejections_total", "Refused LLM calls", ["reason"])
UPSTREAM_ERRORS = Counter("garrison_llm_upstream_errors_total", "Failed upstream attempts", ["replica", "kind"])
