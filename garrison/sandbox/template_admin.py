"""Template administration for the sandbox service: list, get, add (built from the
wheelhouse), remove. Templates are shared by every tenant of this host, so changing
them is for an operator admin; reading them is for anyone who may create sandboxes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from garrison.core.errors import BadRequest, Conflict, Forbidden, NotFound
from garrison.core.principal import Principal
from garrison.policy.engine import Resource
from garrison.sandbox.templates import DEFAULT_TEMPLATE, TemplateError, TemplateExists, TemplateStore

if TYPE_CHECKING:
    from garrison.sandbox.config import SandboxSettings
    from garrison.sandbox.pool import WarmPool
    from garrison.sandbox.runtime import Sandbox

log = logging.getLogger("garrison.sandbox")


class TemplateAdmin:
    platform: Any
    settings: SandboxSettings
    state_dir: Path
    templates: TemplateStore
    sandboxes: dict[str, Sandbox]
    pools: dict[str, WarmPool]
    _template_lock: asyncio.Lock

    def wheelhouse(self) -> Path:
        return Path(self.settings.wheelhouse) if self.settings.wheelhouse else self.state_dir / "wheelhouse"

    async def ensure_default_template(self) -> None:
        """The default template's packages, installed from the wheelhouse when they changed."""
        wanted = list(self.settings.default_packages)
        current = self.templates.get(DEFAULT_TEMPLATE)
        if list(current.packages) == wanted:
            return
        try:
            await asyncio.to_thread(self.templates.build, DEFAULT_TEMPLATE, self.wheelhouse(), wanted, replace=True)
            log.info("default sandbox template built with %s", wanted)
        except TemplateError as exc:
            # Sandboxes still start (without the packages); the template API shows what is there.
            log.error("default sandbox template not built: %s", exc)

    async def _check_operator(self, principal: Principal, action: str, name: str) -> None:
        policy = self.platform.policy
        await policy.check(principal, action, Resource("sandbox_template", name, principal.tenant_id, {}))
        if not (principal.is_admin and principal.tenant_id == policy.operator_tenant_id):
            raise Forbidden("sandbox templates are shared by every tenant of this host: "
                            "only an admin of the operator tenant may change them")

    async def list_templates(self, principal: Principal) -> list[dict[str, Any]]:
        return [await self.get_template(principal, n) for n in self.templates.names()]

    async def get_template(self, principal: Principal, name: str) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(self.templates.describe, name)
        except TemplateError as exc:
            raise NotFound(str(exc)) from None

    async def create_template(self, principal: Principal, name: str, packages: list[str],
                              env: dict[str, str]) -> dict[str, Any]:
        await self._check_operator(principal, "sandbox:template:create", name)
        if name == DEFAULT_TEMPLATE:
            raise Conflict("the default 'python' template is configured by GARRISON_SANDBOX_DEFAULT_PACKAGES")
        async with self._template_lock:
            try:
                await asyncio.to_thread(self.templates.build, name, self.wheelhouse(), packages, env)
            except TemplateExists as exc:
                raise Conflict(str(exc)) from None
            except TemplateError as exc:
                raise BadRequest(str(exc)) from None
        out = await asyncio.to_thread(self.templates.describe, name)
        await self.platform.audit.record_now(principal, "sandbox:template:create", f"sandbox_template/{name}",
                                             "allow", "", {"packages": packages, "env_keys": sorted(env),
                                                           "installed": out["installed"]})
        return out

    async def delete_template(self, principal: Principal, name: str) -> None:
        await self._check_operator(principal, "sandbox:template:delete", name)
        if name == DEFAULT_TEMPLATE:
            raise Conflict("the default 'python' template cannot be removed")
        async with self._template_lock:
            if not self.templates.exists(name):
                raise NotFound(f"no sandbox template named {name!r}")
            # Its files are bound into running sandboxes: removing them would pull the
            # packages from under running code.
            users = sum(1 for s in self.sandboxes.values() if s.template == name)
            pooled = [p for p in self.pools.values() if getattr(p, "template_name", "") == name]
            if users or pooled:
                raise Conflict(f"template {name!r} is in use by {users} running sandboxes and "
                               f"{len(pooled)} warm pools; kill them (or wait) first")
            await asyncio.to_thread(self.templates.remove, name)
        await self.platform.audit.record_now(principal, "sandbox:template:delete", f"sandbox_template/{name}",
                                             "allow", "", {})
