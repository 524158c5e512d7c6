"""The one `authorize(principal, action, resource, context)` every boundary calls.

Order: the scope named by the action, then tenant isolation (never configurable), then
the Cedar policy set in ``<data dir>/policies/*.cedar`` (default deny; forbid wins).
Decisions are pure functions of their inputs, so they are memoized until the policies
change: a cached decision costs a dict lookup instead of a Cedar evaluation.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cedarpy
import orjson

from garrison.core.errors import BadRequest, Forbidden
from garrison.core.principal import Principal

BASELINE = Path(__file__).with_name("baseline.cedar")
# Admin actions that the operator's admin (the default tenant's admin:* principal) may take
# on other tenants; everything else is confined to the caller's own tenant.
CROSS_TENANT_ADMIN_ACTIONS = ("tenants:", "keys:", "audit:", "policies:")
_CACHE_MAX = 50_000


@dataclass(frozen=True, slots=True)
class Resource:
    type: str
    id: str
    tenant_id: str | None
    attrs: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __str__(self) -> str:
        return f"{self.type}/{self.id}"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    enforced: bool = True  # False: a Cedar deny let through in log_only mode


class PolicyEngine:
    def __init__(self, directory: Path, *, mode: str = "enforce", operator_tenant_id: str = "") -> None:
        self.dir = directory
        self.mode = mode
        self.operator_tenant_id = operator_tenant_id
        self._policies: cedarpy.PolicySet | None = None
        self._cache: dict[tuple[Any, ...], Decision] = {}
        self.audit: Any = None  # set by the platform (avoids an import cycle)

    # -- loading -----------------------------------------------------------------------------
    def load(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not any(self.dir.glob("*.cedar")):
            shutil.copy(BASELINE, self.dir / "00-baseline.cedar")
        text = "\n".join(p.read_text() for p in sorted(self.dir.glob("*.cedar")))
        self._policies = self.parse(text)
        self._cache.clear()

    @staticmethod
    def parse(text: str) -> cedarpy.PolicySet:
        try:
            return cedarpy.PolicySet.from_str(text)
        except ValueError as exc:
            raise BadRequest(f"Cedar policy does not parse: {exc}") from exc

    def list_files(self) -> dict[str, str]:
        return {p.name: p.read_text() for p in sorted(self.dir.glob("*.cedar"))}

    def write_file(self, name: str, text: str) -> None:
        if not name.endswith(".cedar") or "/" in name or name.startswith(".") or len(name) > 100:
            raise BadRequest("policy file name must be a plain name ending in .cedar")
        others = "\n".join(t for n, t in self.list_files().items() if n != name)
        self.parse(others + "\n" + text)  # refuse a file that would break the set
        (self.dir / name).write_text(text)
        self.load()

    def delete_file(self, name: str) -> bool:
        path = self.dir / name
        if path.parent != self.dir or not path.exists():
            return False
        path.unlink()
        self.load()
        return True

    # -- deciding ----------------------------------------------------------------------------
    def is_operator(self, principal: Principal, *, admin: bool = True) -> bool:
        """The operator's admin: an ``admin:*`` principal of the operator's (default) tenant.
        ``admin:*`` alone is not enough: the operator may grant it to a tenant's key, and that key
        administers its own tenant only, never what every tenant shares. ``admin=False``: any
        principal of the operator's tenant (its scopes say what it may do)."""
        ours = bool(self.operator_tenant_id) and principal.tenant_id == self.operator_tenant_id
        return ours and (principal.is_admin or not admin)

    def require_operator(self, principal: Principal, action: str, resource: str, detail: str,
                         *, admin: bool = True) -> None:
        """Audit a deny and raise Forbidden(``detail``) unless ``is_operator(principal, admin=admin)``."""
        if self.is_operator(principal, admin=admin):
            return
        if self.audit is not None:
            why = "not the operator's admin" if admin else "not of the operator's tenant"
            self.audit.record(principal, action, resource, "deny", why)
        raise Forbidden(detail)

    def authorize(self, principal: Principal, action: str, resource: Resource,
                  context: dict[str, Any] | None = None) -> Decision:
        if not principal.has_scope(action):
            return Decision(False, f"missing scope {action}")
        if resource.tenant_id is not None and resource.tenant_id != principal.tenant_id:
            cross_ok = self.is_operator(principal) and action.startswith(CROSS_TENANT_ADMIN_ACTIONS)
            if not cross_ok:
                return Decision(False, "resource belongs to another tenant")
        ctx_key = json.dumps(context, sort_keys=True, default=str) if context else ""
        key = (principal.id, principal.tenant_id, principal.kind, principal.scopes, action,
               resource.type, resource.id, resource.tenant_id, ctx_key,
               json.dumps(resource.attrs, sort_keys=True, default=str) if resource.attrs else "")
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cedar(principal, action, resource, context or {})
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def _cedar(self, principal: Principal, action: str, resource: Resource, context: dict[str, Any]) -> Decision:
        if self._policies is None:
            self.load()
        assert self._policies is not None
        p_uid = {"type": "Garrison::Principal", "id": principal.id}
        r_uid = {"type": "Garrison::Resource", "id": f"{resource.type}/{resource.id}"}
        res_attrs = {k: v for k, v in resource.attrs.items() if isinstance(v, (str, int, bool))}
        entities = [
            {"uid": p_uid, "parents": [], "attrs": {
                "tenant": principal.tenant_id, "kind": principal.kind, "name": principal.name,
                "scopes": sorted(principal.scopes),
                "operator": self.is_operator(principal)}},
            {"uid": r_uid, "parents": [], "attrs": {
                **res_attrs, "tenant": resource.tenant_id or principal.tenant_id, "type": resource.type}},
        ]
        request = {
            "principal": f'Garrison::Principal::"{principal.id}"',
            "action": f"Garrison::Action::{json.dumps(action)}",
            "resource": f"Garrison::Resource::{json.dumps(r_uid['id'])}",
            "context": {k: v for k, v in context.items() if isinstance(v, (str, int, bool))},
        }
        # Entities as a JSON string: cedarpy parses that faster than it converts Python objects.
        result = cedarpy.is_authorized(request, self._policies, orjson.dumps(entities).decode())
        reasons = list(getattr(result.diagnostics, "reasons", []) or [])
        if result.allowed:
            return Decision(True, "permitted by " + (", ".join(reasons) or "policy"))
        why = ("forbidden by " + ", ".join(reasons)) if reasons else "no policy permits it (default deny)"
        if self.mode == "log_only":
            return Decision(True, why + " [log_only: allowed]", enforced=False)
        return Decision(False, why)

    async def check(self, principal: Principal, action: str, resource: Resource,
                    context: dict[str, Any] | None = None) -> Decision:
        """Authorize, audit a deny (or a log_only pass), and raise Forbidden on deny."""
        decision = self.authorize(principal, action, resource, context)
        if self.audit is not None and (not decision.allowed or not decision.enforced):
            self.audit.record(principal, action, str(resource),
                              "deny" if not decision.allowed else "allow", decision.reason)
        if not decision.allowed:
            raise Forbidden(f"{action} on {resource} denied: {decision.reason}")
        return decision
