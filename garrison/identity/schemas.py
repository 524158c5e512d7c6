from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from garrison.core.inputs import DbJson, DbText


class TenantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")


class TenantOut(BaseModel):
    id: str
    name: str
    created_at: str | None
    disabled: bool


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: DbText = Field(default="api key", min_length=1, max_length=128)
    principal: DbText = Field(default="service", min_length=1, max_length=128,
                           description="Name of the principal the key acts as (created if new).")
    kind: str = Field(default="service", pattern="^(user|service|agent)$")
    scopes: list[DbText] = Field(min_length=1, max_length=64)
    tenant: DbText | None = Field(default=None, max_length=128, description="Tenant id or name; default: yours.")
    ttl_s: int | None = Field(default=None, gt=0, le=10 * 365 * 86400)
    attributes: Annotated[dict[str, Any], DbJson] = Field(default_factory=dict, max_length=64)


class KeyPrincipal(BaseModel):
    id: str
    name: str
    kind: str


class KeyOut(BaseModel):
    id: str
    tenant_id: str
    principal_id: str
    principal: KeyPrincipal | None = None
    name: str
    scopes: list[str]
    attributes: dict[str, Any]
    created_at: str | None
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None
    rotated_from: str | None


class KeyCreated(KeyOut):
    key: str = Field(description="The secret key. Shown once; garrison stores only its hash.")


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scopes: list[DbText] | None = Field(default=None, max_length=64)
    ttl_s: int = Field(default=900, ge=1)
    session_id: DbText | None = Field(default=None, max_length=256)
    name: DbText | None = Field(default=None, max_length=128)


class TokenOut(BaseModel):
    token: str
    token_id: str
    scopes: list[str]
    session_id: str | None
    expires_at: str | None


class WhoAmI(BaseModel):
    id: str
    tenant_id: str
    kind: str
    name: str
    scopes: list[str]
    key_id: str | None
    token_id: str | None
    session_id: str | None
