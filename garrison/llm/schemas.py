"""Wire contract of /api/llm/models (the /v1 bodies are OpenAI's, checked in requests.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from garrison.core.inputs import DbText

# The columns are INTEGER (32-bit on PostgreSQL): a larger number is a 422 that names the
# field, not a storage error; 2**31 - 1 per minute is still far above any real deployment.
MAX_RATE = 2**31 - 1

ModelName = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")


class ModelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fallbacks: list[DbText] | None = Field(default=None, max_length=16)
    context_window: int | None = Field(default=None, ge=1, le=MAX_RATE)
    provider: DbText | None = Field(default=None, max_length=64, description="genai-prices provider id")
    rpm: int | None = Field(default=None, ge=1, le=MAX_RATE)
    tpm: int | None = Field(default=None, ge=1, le=MAX_RATE)
    tenant_rpm: int | None = Field(default=None, ge=1, le=MAX_RATE)
    tenant_tpm: int | None = Field(default=None, ge=1, le=MAX_RATE)


class ModelIn(ModelUpdate):
    model: str = ModelName
    base_url: DbText = Field(min_length=8, max_length=1000, description="OpenAI base URL, e.g. http://host:8000/v1")
    kind: Literal["openai", "vllm", "ollama", "llamacpp"] = "openai"
    upstream_model: DbText | None = Field(default=None, max_length=200)
    api_key: DbText | None = Field(default=None, max_length=1000, description="held by garrison, never shown")
    max_concurrency: int = Field(default=64, ge=1, le=100_000)
    priority_scheduling: bool = Field(default=False, description="vLLM --scheduling-policy priority")


class ReplicaOut(BaseModel):
    id: str
    base_url: str
    kind: str
    upstream_model: str | None
    max_concurrency: int
    priority_scheduling: bool
    has_api_key: bool
    in_flight: int
    healthy: bool
    breaker: str
    waiting: float | None
    kv_cache_usage: float | None


class ModelOut(BaseModel):
    name: str
    fallbacks: list[str]
    context_window: int | None
    provider: str | None
    rpm: int | None
    tpm: int | None
    tenant_rpm: int | None
    tenant_tpm: int | None
    queue_depth: int
    replicas: list[ReplicaOut]
