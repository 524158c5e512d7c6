"""Prometheus metrics of the telemetry layer, gen_ai metrics included (default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SPANS_RECEIVED = Counter("garrison_telemetry_spans_received_total", "Spans received.", ["source"])
SPANS_STORED = Counter("garrison_telemetry_spans_stored_total", "Spans newly stored.")
SPANS_DUPLICATE = Counter("garrison_telemetry_spans_duplicate_total", "Spans already stored (re-sent).")
SPANS_REJECTED = Counter("garrison_telemetry_spans_rejected_total", "Spans or requests refused.", ["reason"])
SPANS_FLAGGED = Counter("garrison_telemetry_spans_flagged_total", "Spans stored with a flag.", ["flag"])
SELF_SPANS_DROPPED = Counter("garrison_telemetry_self_spans_dropped_total", "Own spans dropped: queue full.")
QUEUE_SPANS = Gauge("garrison_telemetry_queue_spans", "Spans waiting to be written.")
WRITE_SECONDS = Histogram(
    "garrison_telemetry_write_seconds", "Time to write one batch of spans.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EXPORTED = Counter(
    "garrison_telemetry_export_spans_total",
    "Spans given to tenant OTLP endpoints, by result: ok, dropped (forwarding queue full or shutdown), "
    "rejected (the endpoint refused them with a 4xx), disabled (the exporter was turned off).",
    ["result"],
)
EXPORT_RETRIES = Counter("garrison_telemetry_export_retries_total", "Forwarding attempts that will be retried.")
EXPORT_QUEUE = Gauge("garrison_telemetry_export_queue_spans", "Spans waiting to be forwarded.")
METERED = Counter("garrison_telemetry_metered_calls_total", "Model calls sent to metering.", ["result"])

GEN_AI_TOKENS = Counter(
    "garrison_gen_ai_client_token_usage_total", "Tokens used by model calls seen in spans (gen_ai.client.token.usage).",
    ["provider", "model", "type"],
)
GEN_AI_DURATION = Histogram(
    "garrison_gen_ai_client_operation_duration_seconds", "Model call duration (gen_ai.client.operation.duration).",
    ["provider", "model", "operation"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
GEN_AI_ERRORS = Counter("garrison_gen_ai_errors_total", "Spans with an error class.", ["kind", "error_class"])
