"""Audit API: the tail of the log and a verification run."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from garrison.audit.verify import verify
from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.platform import Platform, get_platform
from garrison.policy import Resource

router = APIRouter(prefix="/api/audit", tags=["audit"])


class AuditEntry(BaseModel):
    seq: int
    ts: str
    tenant_id: str | None
    principal_id: str | None
    action: str
    resource: str
    decision: str
    reason: str
    context: str
    prev_hash: str
    hash: str


class VerifyOut(BaseModel):
    ok: bool
    entries: int
    last_seq: int
    checkpoints: int
    problems: list[str]


@router.get("", response_model=list[AuditEntry])
async def tail(limit: int = Query(50, ge=1, le=1000), principal: Principal = Depends(require("audit:read")),
               platform: Platform = Depends(get_platform)) -> list[dict[str, Any]]:
    everything = platform.policy.authorize(principal, "audit:read", Resource("audit", "*", "*")).allowed
    return await platform.audit.tail(limit, None if everything else principal.tenant_id)


@router.post("/verify", response_model=VerifyOut)
async def run_verify(principal: Principal = Depends(require("audit:verify")),
                     platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    await platform.policy.check(principal, "audit:verify", Resource("audit", "*", "*"))
    await platform.audit.flush()
    res = await asyncio.to_thread(verify, platform.settings.resolved_database_url,
                                  platform.settings.data_dir / "audit")
    return {"ok": res.ok, "entries": res.entries, "last_seq": res.last_seq,
            "checkpoints": res.checkpoints, "problems": res.problems}
