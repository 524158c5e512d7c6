"""Wire contract of the gateway's management API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from garrison.core.inputs import DbJson, DbText
from garrison.tools.naming import UPSTREAM_NAME


class AuthIn(BaseModel):
    kind: Literal["none", "bearer", "api_key_header", "oauth_client_credentials"] = "none"
    header: str | None = Field(default=None, max_length=128, pattern=r"^[A-Za-z0-9-]+$")
    secret: DbText | None = Field(default=None, max_length=8192)
    token_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")
    client_id: DbText | None = Field(default=None, max_length=256)
    scope: DbText | None = Field(default=None, max_length=512)


class UpstreamIn(BaseModel):
    name: str = Field(description="Short name; prefixes the tool names it contributes (upstream__tool).")
    url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://[^\s]+$")
    from_registry: DbText | None = Field(default=None, max_length=200,
                                      description="Take the URL from this registry entry's latest remote.")
    auth: AuthIn = Field(default_factory=AuthIn)
    timeout_s: float | None = Field(default=None, gt=0, le=600)
    idempotent_tools: list[DbText] = Field(default_factory=list, max_length=1000)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not UPSTREAM_NAME.match(v):
            raise ValueError("upstream name must be 1-40 characters of a-z, 0-9 and '-', starting alnum")
        return v


class OpenAPIIn(BaseModel):
    name: str
    base_url: str = Field(max_length=2048, pattern=r"^https?://[^\s]+$")
    document: Annotated[dict[str, Any], DbJson]
    auth: AuthIn = Field(default_factory=AuthIn)
    timeout_s: float | None = Field(default=None, gt=0, le=600)

    _check_name = field_validator("name")(UpstreamIn._name.__func__)  # type: ignore[attr-defined]


class UpstreamOut(BaseModel):
    id: str
    name: str
    kind: str
    url: str
    registry_name: str | None
    auth_kind: str
    timeout_s: float | None
    idempotent_tools: list[str]
    created_at: datetime
    updated_at: datetime


class ToolRef(BaseModel):
    upstream: DbText = Field(max_length=64, description="Upstream name, or a local tool server's name.")
    tool: DbText = Field(default="*", max_length=256, description="An upstream tool name, or * for all of them.")
    alias: str | None = Field(default=None, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")


class VirtualServerIn(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    description: DbText = Field(default="", max_length=1000)
    tools: list[ToolRef] = Field(default_factory=list, max_length=2000)
    rate_limit_per_min: int | None = Field(default=None, ge=1, le=1_000_000)


class VirtualServerOut(BaseModel):
    id: str
    name: str
    description: str
    tools: list[ToolRef]
    rate_limit_per_min: int | None
    url_path: str
    created_at: datetime
    updated_at: datetime


class ToolOut(BaseModel):
    name: str
    upstream: str
    tool: str
    description: str | None = None
    inputSchema: dict[str, Any] = Field(default_factory=dict)
    score: float | None = None


class CallIn(BaseModel):
    arguments: dict[str, Any] = Field(default_factory=dict)
