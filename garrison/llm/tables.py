"""The LLM gateway's tables: model pools and their replicas."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, ForeignKey, Integer, String, Table

from garrison.db import metadata

llm_models = Table(
    "llm_models",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("fallbacks", JSON, nullable=False),  # model names tried in order when this one fails
    Column("context_window", Integer, nullable=True),
    Column("provider", String(64), nullable=True),  # genai-prices provider id, for pricing
    Column("rpm", Integer, nullable=True),  # whole model
    Column("tpm", Integer, nullable=True),
    Column("tenant_rpm", Integer, nullable=True),  # each tenant on this model
    Column("tenant_tpm", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

llm_replicas = Table(
    "llm_replicas",
    metadata,
    Column("id", String(40), primary_key=True),
    Column(
        "model", String(200), ForeignKey("llm_models.name", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("base_url", String(1000), nullable=False),
    Column("kind", String(16), nullable=False),  # openai | vllm | ollama | llamacpp
    Column("upstream_model", String(200), nullable=True),
    Column("api_key", String(1000), nullable=True),  # held by garrison, never returned
    Column("max_concurrency", Integer, nullable=False),
    Column("priority_scheduling", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
