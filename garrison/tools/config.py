"""Gateway settings (GARRISON_TOOLS_* environment variables), kept inside the layer."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from garrison.config import LayerSettings


class ToolsSettings(LayerSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_TOOLS_", extra="ignore")

    call_timeout_s: float = Field(default=30.0, gt=0, description="Default per-call upstream timeout.")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    max_result_bytes: int = Field(default=1024 * 1024, ge=1024, description="Larger tool results are refused.")
    rate_limit_per_min: int = Field(default=600, ge=1, description="Tool calls per principal and virtual server.")
    retries: int = Field(default=2, ge=0, le=5, description="Retries of calls marked idempotent.")
    breaker_failures: int = Field(default=5, ge=1, description="Failures in a row that open the breaker.")
    breaker_reset_s: float = Field(default=30.0, gt=0)
    catalogue_ttl_s: float = Field(default=60.0, gt=0, description="How long an upstream's tool list is cached.")
    session_idle_timeout_s: float = Field(default=1800.0, gt=0)
    stateless_idle_s: float = Field(default=300.0, gt=0, description="Idle life of a stateless caller's upstreams.")
    allowed_origins: list[str] = Field(default_factory=list, description="Browser origins allowed on /mcp.")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
