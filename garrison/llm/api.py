"""HTTP routes: the OpenAI-compatible /v1 surface and /api/llm/models administration."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from garrison.core.errors import Problem
from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.llm.errors import with_openai_error
from garrison.llm.schemas import ModelIn, ModelOut, ModelUpdate
from garrison.platform import Platform, get_platform

v1 = APIRouter(prefix="/v1", tags=["llm"])
admin = APIRouter(prefix="/api/llm", tags=["llm"])

# Each model call's own record is its usage-ledger entry (who, key, agent, model, tokens,
# cost, trace id); the audit log gets the denies (scope, policy, allowlist, limits, budget).
# An audit entry per allowed call doubled that record and cost about 5% of the gateway's CPU.
INVOKE = Depends(require("llm:invoke", audit_allow=False))


def _operator_only(platform: Platform, principal: Principal, name: str) -> None:
    """Models and their replicas serve every tenant: a tenant's own key (admin:* included) must not
    add, repoint or remove them, or it could read or break other tenants' calls."""
    platform.policy.require_operator(
        principal, "llm:admin", f"llm_model/{name}",
        "models are shared by every tenant of this host: only an llm:admin key of the operator's tenant "
        "may add, change or remove them", admin=False)


async def _call(op: str, request: Request, principal: Principal) -> Response:
    # The platform straight from the app: a sync dependency would cost a thread hop per call.
    platform: Platform = request.app.state.platform
    raw = await request.body()
    try:
        return await platform.services["llm"].call(principal, op, raw, request.headers, request.state)  # type: ignore[no-any-return]
    except Problem as exc:
        with_openai_error(exc)
        raise


@v1.post("/chat/completions", summary="OpenAI chat completions (streaming or not)")
async def chat(request: Request, principal: Principal = INVOKE) -> Response:
    return await _call("chat", request, principal)


@v1.post("/completions", summary="OpenAI text completions")
async def completions(request: Request, principal: Principal = INVOKE) -> Response:
    return await _call("text_completion", request, principal)


@v1.post("/embeddings", summary="OpenAI embeddings")
async def embeddings(request: Request, principal: Principal = INVOKE) -> Response:
    return await _call("embeddings", request, principal)


@v1.get("/models", summary="The models this key may use")
async def models(principal: Principal = INVOKE, platform: Platform = Depends(get_platform)) -> Any:
    return platform.services["llm"].visible_models(principal)


@admin.get("/models")
async def list_models(principal: Principal = Depends(require("llm:read")),
                      platform: Platform = Depends(get_platform)) -> list[ModelOut]:
    return platform.services["llm"].list_models()  # type: ignore[no-any-return]


@admin.get("/models/{name:path}")
async def get_model(name: str, principal: Principal = Depends(require("llm:read")),
                    platform: Platform = Depends(get_platform)) -> ModelOut:
    return platform.services["llm"].get_model(name)  # type: ignore[no-any-return]


@admin.post("/models", status_code=201, summary="Add a model, or one more replica of a model")
async def add_model(body: ModelIn, principal: Principal = Depends(require("llm:admin")),
                    platform: Platform = Depends(get_platform)) -> ModelOut:
    _operator_only(platform, principal, body.model)
    out = await platform.services["llm"].add(body)
    await platform.audit.record_now(principal, "llm:admin", f"llm_model/{body.model}", "allow", "model added",
                                    context={"base_url": body.base_url, "kind": body.kind})
    return out  # type: ignore[no-any-return]


@admin.patch("/models/{name:path}")
async def update_model(name: str, body: ModelUpdate, principal: Principal = Depends(require("llm:admin")),
                       platform: Platform = Depends(get_platform)) -> ModelOut:
    _operator_only(platform, principal, name)
    out = await platform.services["llm"].update(name, body)
    await platform.audit.record_now(principal, "llm:admin", f"llm_model/{name}", "allow", "model updated",
                                    context=body.model_dump(exclude_unset=True))
    return out  # type: ignore[no-any-return]


@admin.delete("/models/{name:path}", status_code=204)
async def remove_model(name: str, replica: str | None = None,
                       principal: Principal = Depends(require("llm:admin")),
                       platform: Platform = Depends(get_platform)) -> Response:
    _operator_only(platform, principal, name)
    service = platform.services["llm"]
    if replica:
        await service.remove_replica(name, replica)
    else:
        await service.remove(name)
    await platform.audit.record_now(principal, "llm:admin", f"llm_model/{name}", "allow",
                                    "replica removed" if replica else "model removed")
    return Response(status_code=204)
