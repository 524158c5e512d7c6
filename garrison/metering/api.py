"""HTTP routes: usage reports, budgets and custom prices."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Response

from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.metering.budgets import BudgetState
from garrison.metering.schemas import BudgetIn, BudgetOut, PriceIn, PriceOut
from garrison.platform import Platform, get_platform

router = APIRouter(tags=["metering"])


def _operator(principal: Principal, platform: Platform) -> bool:
    return platform.policy.is_operator(principal)


def _tenant_filter(principal: Principal, platform: Platform, tenant: str | None) -> str | None:
    """Own tenant, unless the operator's admin asks for another one or for all ('*')."""
    if tenant is None or tenant == principal.tenant_id:
        return principal.tenant_id
    platform.policy.require_operator(principal, "metering:read", f"tenant/{tenant}/usage",
                                     "only the operator's admin may read another tenant's usage")
    return None if tenant == "*" else tenant


def _budget_out(b: BudgetState) -> BudgetOut:
    return BudgetOut(
        id=b.id, tenant_id=b.tenant_id, scope=b.scope, scope_id=b.scope_id, window=b.window,
        limit_usd=_usd(b.limit_usd), spent_usd=_usd(b.spent), reserved_usd=_usd(b.reserved),
        remaining_usd=_usd(b.remaining), window_start=b.window_start, window_end=b.window_end,
    )


@router.get("/api/usage", summary="Usage totals grouped by tenant, key, model, agent, agent version or day")
async def usage(
    by: Literal["tenant", "key", "model", "agent", "agent_version", "day"] = "model",
    since: date | None = None,
    until: date | None = None,
    tenant: str | None = Query(default=None, max_length=40, description="operator admin: a tenant id or '*'"),
    principal: Principal = Depends(require("usage:read")),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    tenant_id = _tenant_filter(principal, platform, tenant)
    rows = await platform.services["metering"].report(by=by, tenant_id=tenant_id, since=since, until=until)
    return {"by": by, "rows": rows}


@router.get("/api/usage/entries", summary="The newest ledger entries")
async def entries(
    limit: int = Query(default=100, ge=1, le=1000),
    tenant: str | None = Query(default=None, max_length=40),
    principal: Principal = Depends(require("usage:read")),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    tenant_id = _tenant_filter(principal, platform, tenant)
    rows = await platform.services["metering"].entries(tenant_id, limit)
    for r in rows:
        r["cost_usd"] = None if r["cost_usd"] is None else str(r["cost_usd"])
    return {"entries": rows}


@router.get("/api/usage/resources", summary="Resource usage (CPU-, GiB- and GPU-seconds) grouped by "
            "tenant, source, resource or day")
async def resources(
    by: Literal["tenant", "source", "resource", "day"] = "resource",
    since: date | None = None,
    until: date | None = None,
    tenant: str | None = Query(default=None, max_length=40, description="operator admin: a tenant id or '*'"),
    principal: Principal = Depends(require("usage:read")),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    tenant_id = _tenant_filter(principal, platform, tenant)
    rows = await platform.services["metering"].resource_report(by=by, tenant_id=tenant_id, since=since,
                                                               until=until)
    return {"by": by, "rows": rows}


@router.get("/api/usage/resources/entries", summary="The newest resource-usage records")
async def resource_entries(
    limit: int = Query(default=100, ge=1, le=1000),
    tenant: str | None = Query(default=None, max_length=40),
    principal: Principal = Depends(require("usage:read")),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    tenant_id = _tenant_filter(principal, platform, tenant)
    return {"entries": await platform.services["metering"].resource_entries(tenant_id, limit)}


@router.get("/api/metering/budgets")
async def list_budgets(principal: Principal = Depends(require("metering:read")),
                       platform: Platform = Depends(get_platform)) -> list[BudgetOut]:
    tenant_id = None if _operator(principal, platform) else principal.tenant_id
    return [_budget_out(b) for b in await platform.services["metering"].list_budgets(tenant_id)]


@router.post("/api/metering/budgets", status_code=201)
async def create_budget(body: BudgetIn, principal: Principal = Depends(require("metering:admin")),
                        platform: Platform = Depends(get_platform)) -> BudgetOut:
    tenant_id = principal.tenant_id
    if body.tenant_id and body.tenant_id != tenant_id:
        platform.policy.require_operator(principal, "metering:admin", f"tenant/{body.tenant_id}/budget",
                                         "only the operator's admin may set another tenant's budget")
        tenant_id = body.tenant_id
    scope_id = body.scope_id or (tenant_id if body.scope == "tenant" else None)
    if not scope_id:
        from garrison.core.errors import BadRequest

        raise BadRequest(f"scope_id is required for a {body.scope} budget")
    b = await platform.services["metering"].create_budget(tenant_id, body.scope, scope_id, body.window,
                                                          body.limit_usd)
    await platform.audit.record_now(principal, "metering:admin", f"budget/{b.id}", "allow", "budget created",
                                    context={"scope": body.scope, "scope_id": scope_id, "window": body.window,
                                             "limit_usd": str(body.limit_usd)}, tenant_id=tenant_id)
    return _budget_out(b)


@router.delete("/api/metering/budgets/{budget_id}", status_code=204)
async def delete_budget(budget_id: str, principal: Principal = Depends(require("metering:admin")),
                        platform: Platform = Depends(get_platform)) -> Response:
    tenant_id = None if _operator(principal, platform) else principal.tenant_id
    await platform.services["metering"].delete_budget(budget_id, tenant_id)
    await platform.audit.record_now(principal, "metering:admin", f"budget/{budget_id}", "allow", "budget deleted")
    return Response(status_code=204)


def _usd(value: Any) -> str:
    """Decimal as plain text without the store's trailing zeros (2000000, 0.25)."""
    return format(Decimal(value).normalize(), "f")


def _price_out(p: Any) -> PriceOut:
    def text(v: Any) -> str | None:
        return None if v is None else _usd(v)

    return PriceOut(
        id=p.id, model=p.model, input_per_mtok=_usd(p.input_per_mtok), output_per_mtok=_usd(p.output_per_mtok),
        cached_input_per_mtok=text(p.cached_input_per_mtok), gpu_second_usd=text(p.gpu_second_usd),
        valid_from=p.valid_from,
    )


@router.get("/api/metering/prices", summary="Custom prices (genai-prices covers the rest)")
async def list_prices(principal: Principal = Depends(require("metering:read")),
                      platform: Platform = Depends(get_platform)) -> list[PriceOut]:
    return [_price_out(p) for p in platform.services["metering"].list_prices()]


@router.post("/api/metering/prices", status_code=201)
async def set_price(body: PriceIn, principal: Principal = Depends(require("metering:admin")),
                    platform: Platform = Depends(get_platform)) -> PriceOut:
    platform.policy.require_operator(principal, "metering:admin", f"price/{body.model}",
                                     "prices apply to every tenant: only the operator's admin may set them")
    p = await platform.services["metering"].set_price(
        body.model, input_per_mtok=body.input_per_mtok, output_per_mtok=body.output_per_mtok,
        cached_input_per_mtok=body.cached_input_per_mtok, gpu_second_usd=body.gpu_second_usd,
        valid_from=body.valid_from,
    )
    await platform.audit.record_now(principal, "metering:admin", f"price/{p.id}", "allow", "price set",
                                    context={"model": body.model})
    return _price_out(p)


@router.delete("/api/metering/prices/{price_id}", status_code=204)
async def delete_price(price_id: str, principal: Principal = Depends(require("metering:admin")),
                       platform: Platform = Depends(get_platform)) -> Response:
    platform.policy.require_operator(principal, "metering:admin", f"price/{price_id}",
                                     "only the operator's admin may change prices")
    await platform.services["metering"].delete_price(price_id)
    await platform.audit.record_now(principal, "metering:admin", f"price/{price_id}", "allow", "price deleted")
    return Response(status_code=204)
