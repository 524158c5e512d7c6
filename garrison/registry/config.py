"""Registry settings (GARRISON_REGISTRY_* environment variables), kept inside the layer."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from garrison.config import LayerSettings


class RegistrySettings(LayerSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_REGISTRY_", extra="ignore")

    public_reads: bool = Field(default=False, description="Serve GET endpoints without a key.")
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, description="Largest server.json accepted.")
    health_interval_s: float = Field(default=60.0, gt=0, description="Seconds between health rounds.")
    health_timeout_s: float = Field(default=10.0, gt=0)
    health_enabled: bool = Field(default=True)
    unhealthy_after: int = Field(default=2, ge=1, description="Failed checks in a row before unhealthy.")
