"""The FastAPI dependency that turns a request into a Principal, or a 401/403."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable

from fastapi import Request
from opentelemetry import trace

from garrison.core.errors import Forbidden, Unauthorized
from garrison.core.principal import Principal
from garrison.policy import Resource

_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def credential_from(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("missing credentials: send 'Authorization: Bearer <garrison key or token>'")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme == "basic" and value:
        # Langfuse-style exporters send Basic auth: the garrison key is the password.
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthorized("malformed Basic credentials") from exc
        _, sep, password = decoded.partition(":")
        if sep and password:
            return password
    raise Unauthorized("malformed Authorization header: expected 'Bearer <garrison key or token>'")


async def authenticate(request: Request) -> Principal:
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    platform = request.app.state.platform
    try:
        principal = await platform.identity.authenticate(credential_from(request))
    except Unauthorized as exc:
        platform.audit.record(None, "auth:authenticate", request.url.path, "deny", exc.detail,
                              {"client": request.client.host if request.client else None})
        raise
    request.state.principal = principal
    return principal


def _route_template(request: Request) -> str:
    """The matched route's template (``/api/keys/{key_id}``): stable for policies and the
    decision cache, and free of whatever bytes a client put in the path."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or request.url.path[:256]


def trace_context() -> dict[str, str]:
    """An audit entry's context naming the trace it was decided in (none outside a trace)."""
    ctx = trace.get_current_span().get_span_context()
    return {"trace_id": f"{ctx.trace_id:032x}"} if ctx.is_valid else {}


def require(scope: str, *, audit_allow: bool = True, traced: bool = False) -> Callable[[Request], Awaitable[Principal]]:
    """Authenticate, check ``scope`` through the policy engine, audit, return the Principal.

    Denies are always audited; allows are audited for requests that change state, unless
    the route writes its own, more specific entry for every call (``audit_allow=False``).
    ``traced``: the entries name the request's trace (an invocation's, found from its audit entry).
    """

    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        platform = request.app.state.platform
        resource = Resource("route", _route_template(request), principal.tenant_id)
        decision = platform.policy.authorize(principal, scope, resource, {"method": request.method})
        context = trace_context() if traced else None
        if not decision.allowed:
            platform.audit.record(principal, scope, request.url.path, "deny", decision.reason, context)
            raise Forbidden(f"{scope} denied: {decision.reason}")
        if (audit_allow and request.method in _MUTATING) or not decision.enforced:
            platform.audit.record(principal, scope, request.url.path, "allow", decision.reason, context)
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_').replace('*', 'all')}"
    return dependency
