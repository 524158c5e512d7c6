"""Policy API: read and change the Cedar policy files (admin only, audited before answering)."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Path

from garrison.core.errors import NotFound, PayloadTooLarge
from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.platform import Platform, get_platform
from garrison.policy import Resource

router = APIRouter(prefix="/api/policies", tags=["policy"])
NAME = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,94}\.cedar$", max_length=100)
MAX_POLICY_BYTES = 256 * 1024


def _operator_tenant(platform: Platform, principal: Principal, action: str, resource: str) -> None:
    """The policy files govern every tenant of this host: only keys of the operator's tenant (with
    the policies:* scope) may read or change them, never another tenant's admin:* key."""
    platform.policy.require_operator(
        principal, action, resource, "the Cedar policy files apply to every tenant of this host: only keys "
        "of the operator's tenant may read or change them", admin=False)


@router.get("")
async def list_policies(principal: Principal = Depends(require("policies:read")),
                        platform: Platform = Depends(get_platform)) -> dict[str, object]:
    _operator_tenant(platform, principal, "policies:read", "policy/*")
    await platform.policy.check(principal, "policies:read", Resource("policy", "*", None))
    return {"mode": platform.policy.mode, "files": platform.policy.list_files()}


@router.put("/{name}")
async def put_policy(name: str = NAME, text: str = Body(..., media_type="text/plain"),
                     principal: Principal = Depends(require("policies:write")),
                     platform: Platform = Depends(get_platform)) -> dict[str, str]:
    _operator_tenant(platform, principal, "policies:write", f"policy/{name}")
    await platform.policy.check(principal, "policies:write", Resource("policy", name, None))
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise PayloadTooLarge(f"a policy file may be at most {MAX_POLICY_BYTES} bytes")
    platform.policy.write_file(name, text)
    await platform.audit.record_now(principal, "policies:write", f"policy/{name}", "allow",
                                    context={"bytes": len(text)})
    return {"name": name, "status": "loaded"}


@router.delete("/{name}", status_code=204)
async def delete_policy(name: str = NAME, principal: Principal = Depends(require("policies:write")),
                        platform: Platform = Depends(get_platform)) -> None:
    _operator_tenant(platform, principal, "policies:write", f"policy/{name}")
    await platform.policy.check(principal, "policies:write", Resource("policy", name, None))
    if not platform.policy.delete_file(name):
        raise NotFound(f"policy file {name!r} does not exist")
    await platform.audit.record_now(principal, "policies:delete", f"policy/{name}", "allow")
