"""Wire contract of the state and memory APIs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

LABEL = r"^[A-Za-z0-9_\-:@+=~]{1,128}$"


def _labels(value: list[str]) -> list[str]:
    import re

    for label in value:
        if not re.match(LABEL, label):
            raise ValueError(f"namespace label {label!r} must be 1-128 characters of letters, digits and _-:@+=~")
    return value


class RecordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    namespace: list[str] = Field(min_length=1, max_length=16)
    key: str = Field(min_length=1, max_length=512, pattern=r"^[^\x00]+$")
    value: dict[str, Any]
    ttl_minutes: float | None = Field(default=None, gt=0, le=525_600)
    index: bool = Field(default=True, description="Embed the value for semantic search.")

    _ns = field_validator("namespace")(_labels)


class RecordOut(BaseModel):
    namespace: list[str]
    key: str
    value: dict[str, Any]
    created_at: str
    updated_at: str
    score: float | None = None


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    namespace_prefix: list[str] = Field(default_factory=list, max_length=16)
    query: str | None = Field(default=None, max_length=8192)
    filter: dict[str, Any] | None = None
    limit: int = Field(default=10, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=10_000)

    _ns = field_validator("namespace_prefix")(_labels)


class SearchOut(BaseModel):
    records: list[RecordOut]


class NamespacesOut(BaseModel):
    namespaces: list[list[str]]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    actor_id: str = Field(pattern=LABEL)
    session_id: str = Field(pattern=LABEL)
    payload: dict[str, Any]


class EventOut(BaseModel):
    event_id: str
    actor_id: str
    session_id: str
    payload: dict[str, Any]
    created_at: str


class EventsOut(BaseModel):
    events: list[EventOut]


class StrategyRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    actor_id: str = Field(pattern=LABEL)
    session_id: str = Field(pattern=LABEL)
    model: str = Field(min_length=1, max_length=256, description="A model of the LLM gateway.")
