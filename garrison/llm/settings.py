"""Gateway settings: GARRISON_LLM_* environment variables (defaults fit one machine)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from garrison.config import LayerSettings


class LLMSettings(LayerSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_LLM_", extra="ignore")

    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=300.0, gt=0, description="Longest silence from an upstream.")
    retries: int = Field(default=2, ge=0, le=10, description="Retries before the first byte.")
    backoff_base_s: float = Field(default=0.05, ge=0)
    queue_max: int = Field(default=1000, ge=0, description="Queued requests per model.")
    queue_wait_s: float = Field(default=30.0, gt=0, description="Longest wait in the queue.")
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=10.0, gt=0)
    health_interval_s: float = Field(default=10.0, gt=0)
    scrape_interval_s: float = Field(default=0.25, gt=0)
    metrics_stale_s: float = Field(default=1.0, gt=0)
    saturation_waiting: int = Field(default=5, ge=1)
    saturation_kv: float = Field(default=0.8, gt=0, le=1)
    default_max_tokens: int = Field(default=1024, ge=1, description="Assumed output for estimates.")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_connections: int = Field(default=1000, ge=1)
