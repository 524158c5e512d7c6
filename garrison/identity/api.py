"""Admin API for tenants, keys and session tokens."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from garrison.core.clock import rfc3339
from garrison.core.errors import Forbidden, NotFound
from garrison.core.principal import Principal
from garrison.identity.deps import authenticate, require
from garrison.identity.schemas import (
    KeyCreated,
    KeyIn,
    KeyOut,
    TenantIn,
    TenantOut,
    TokenIn,
    TokenOut,
    WhoAmI,
)
from garrison.platform import Platform, get_platform
from garrison.policy import Resource

router = APIRouter(prefix="/api", tags=["identity"])


def _tenant_out(row: dict) -> TenantOut:
    return TenantOut(id=row["id"], name=row["name"], created_at=rfc3339(row["created_at"]),
                     disabled=bool(row["disabled"]))


@router.get("/whoami", response_model=WhoAmI)
async def whoami(principal: Principal = Depends(authenticate)) -> WhoAmI:
    return WhoAmI(id=principal.id, tenant_id=principal.tenant_id, kind=principal.kind, name=principal.name,
                  scopes=sorted(principal.scopes), key_id=principal.key_id, token_id=principal.token_id,
                  session_id=principal.session_id)


@router.get("/tenants", response_model=list[TenantOut])
async def list_tenants(principal: Principal = Depends(require("tenants:read")),
                       platform: Platform = Depends(get_platform)) -> list[TenantOut]:
    rows = await platform.identity.list_tenants()
    visible = [r for r in rows if platform.policy.authorize(
        principal, "tenants:read", Resource("tenant", r["id"], r["id"])).allowed]
    return [_tenant_out(r) for r in visible]


@router.post("/tenants", response_model=TenantOut, status_code=201)
async def create_tenant(body: TenantIn, principal: Principal = Depends(require("tenants:write")),
                        platform: Platform = Depends(get_platform)) -> TenantOut:
    # Tenants are the host's: a tenant's own admin:* key administers that tenant, never creates others.
    platform.policy.require_operator(principal, "tenants:write", f"tenant/{body.name}",
                                     "tenants are created by the operator: only keys of the operator's "
                                     "tenant may create one", admin=False)
    await platform.policy.check(principal, "tenants:write", Resource("tenant", body.name, None))
    row = await platform.identity.create_tenant(body.name)
    await platform.audit.record_now(principal, "tenants:create", f"tenant/{row['id']}", "allow",
                                    context={"name": body.name})
    return _tenant_out(row)


async def _key_in_scope(platform: Platform, principal: Principal, key_id: str, action: str) -> dict:
    key = await platform.identity.get_key(key_id)
    decision = platform.policy.authorize(principal, action, Resource("key", key_id, key["tenant_id"]))
    if not decision.allowed:
        platform.audit.record(principal, action, f"key/{key_id}", "deny", decision.reason)
        raise NotFound(f"key {key_id!r} does not exist")  # other tenants' keys are invisible
    return key


@router.get("/keys", response_model=list[KeyOut])
async def list_keys(principal: Principal = Depends(require("keys:read")),
                    platform: Platform = Depends(get_platform)) -> list[dict]:
    cross = platform.policy.authorize(principal, "keys:read", Resource("key", "*", "*")).allowed
    return await platform.identity.list_keys(None if cross else principal.tenant_id)


@router.post("/keys", response_model=KeyCreated, status_code=201)
async def create_key(body: KeyIn, principal: Principal = Depends(require("keys:write")),
                     platform: Platform = Depends(get_platform)) -> dict:
    tenant_id = principal.tenant_id
    if body.tenant:
        tenant_id = (await platform.identity.resolve_tenant(body.tenant))["id"]
    await platform.policy.check(principal, "keys:write", Resource("key", "new", tenant_id))
    wider = [s for s in body.scopes if not principal.has_scope(s)]
    if wider:
        platform.audit.record(principal, "keys:create", f"tenant/{tenant_id}", "deny",
                              f"scopes beyond the caller's: {wider}")
        raise Forbidden(f"cannot grant scopes you do not hold: {wider}")
    row, key = await platform.identity.create_key(
        tenant_id, principal_name=body.principal, name=body.name, scopes=body.scopes, kind=body.kind,
        ttl_s=body.ttl_s, attributes=body.attributes)
    await platform.audit.record_now(principal, "keys:create", f"key/{row['id']}", "allow",
                                    context={"scopes": row["scopes"], "tenant_id": tenant_id},
                                    tenant_id=tenant_id)
    return row | {"key": key}


@router.get("/keys/{key_id}", response_model=KeyOut)
async def get_key(key_id: str, principal: Principal = Depends(require("keys:read")),
                  platform: Platform = Depends(get_platform)) -> dict:
    key = await _key_in_scope(platform, principal, key_id, "keys:read")
    key.pop("_secret_hash", None)
    return key


@router.post("/keys/{key_id}/revoke", response_model=KeyOut)
async def revoke_key(key_id: str, principal: Principal = Depends(require("keys:write")),
                     platform: Platform = Depends(get_platform)) -> dict:
    key = await _key_in_scope(platform, principal, key_id, "keys:write")
    row = await platform.identity.revoke_key(key_id)
    await platform.audit.record_now(principal, "keys:revoke", f"key/{key_id}", "allow",
                                    tenant_id=key["tenant_id"])
    return row


@router.post("/keys/{key_id}/rotate", response_model=KeyCreated)
async def rotate_key(key_id: str, principal: Principal = Depends(require("keys:write")),
                     platform: Platform = Depends(get_platform)) -> dict:
    key = await _key_in_scope(platform, principal, key_id, "keys:write")
    row, secret = await platform.identity.rotate_key(key_id)
    await platform.audit.record_now(principal, "keys:rotate", f"key/{key_id}", "allow",
                                    context={"new_key": row["id"]}, tenant_id=key["tenant_id"])
    return row | {"key": secret}


@router.post("/tokens", response_model=TokenOut, status_code=201)
async def mint_token(body: TokenIn, principal: Principal = Depends(authenticate),
                     platform: Platform = Depends(get_platform)) -> dict:
    """Any principal may mint a narrower, short-lived token of its own scopes."""
    try:
        out = platform.identity.mint_token(principal, scopes=body.scopes, ttl_s=body.ttl_s,
                                           session_id=body.session_id, name=body.name)
    except Forbidden as exc:
        platform.audit.record(principal, "tokens:mint", "token/new", "deny", exc.detail)
        raise
    platform.audit.record(principal, "tokens:mint", f"token/{out['token_id']}", "allow",
                          context={"scopes": out["scopes"], "ttl_s": body.ttl_s, "session_id": body.session_id})
    return out
