"""Telemetry settings (GARRISON_TELEMETRY_* environment variables).

Kept in the layer so the foundation's Settings need not know about them; every value
has a default that works on one machine.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from garrison.config import LayerSettings


class TelemetrySettings(LayerSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_TELEMETRY_", extra="ignore")

    # Ingest.
    queue_max_spans: int = Field(default=20_000, ge=1, description="Spans waiting to be written; past it 503.")
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Body cap, after gunzip.")
    max_spans_per_request: int = Field(default=20_000, ge=1)
    max_concurrent_decodes: int = Field(default=8, ge=1, description="Requests decoded at once; past it 503.")
    write_batch_spans: int = Field(default=4_000, ge=1, description="Spans written per transaction.")
    retry_after_s: int = Field(default=2, ge=1)

    # Attribute caps: longer values are truncated and the span flagged.
    max_attribute_chars: int = Field(default=4096, ge=16)
    max_attributes: int = Field(default=128, ge=1)
    max_events: int = Field(default=64, ge=0)

    # Message content (prompts, completions, tool arguments) is stored apart, and only when enabled.
    capture_content: bool = False
    max_content_chars: int = Field(default=65_536, ge=16)

    # Retention by age and by size: bytes of spans plus stored content, every tenant together.
    # On PostgreSQL age retention drops whole day partitions (so up to a day more is kept).
    retention_days: float = Field(default=30.0, gt=0)
    max_store_bytes: int = Field(default=20 * 1024**3, ge=1, description="Oldest spans go first past it.")
    retention_interval_s: float = Field(default=300.0, gt=0)

    # Forwarding to per-tenant OTLP endpoints: spans wait (and are retried) while the endpoint
    # is down, up to export_queue_spans per tenant; past it the oldest are dropped and counted.
    export_queue_spans: int = Field(default=50_000, ge=1)
    export_batch_spans: int = Field(default=512, ge=1)
    export_timeout_s: float = Field(default=10.0, gt=0)
    export_retry_initial_s: float = Field(default=0.5, gt=0)
    export_retry_max_s: float = Field(default=30.0, gt=0)

    # Usage in ingested model-call spans enters the metering ledger (unless it went through the gateway).
    meter_ingested_usage: bool = True

    # Spans from garrison's own layers that carry no tenant attribute land here.
    system_tenant: str = "system"
