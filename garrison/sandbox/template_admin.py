"""Template administration for the sandbox service: list, get, add (built from the
wheelhouse), remove, apply to a Kubernetes cluster as agent-sandbox resources. Templates are shared by every tenant of this host, so changing
them is for an operator admin; reading them is for anyone who may create sandboxes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from garrison.core.errors import BadRequest, Conflict, NotFound, Problem
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
        policy.require_operator(principal, action, f"sandbox_template/{name}",
                                "sandbox templates are shared by every tenant of this host: "
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

    async def apply_kubernetes(self, principal: Principal, name: str, *, image: str, replicas: int,
                               runtime_class: str | None, install_runtime_class: bool) -> dict[str, Any]:
        """Server-side apply of a SandboxTemplate and SandboxWarmPool for template ``name``
        (and optionally the RuntimeClass) to the configured cluster. The image must already
        hold the template's packages: garrison does not build images."""
        from garrison.sandbox.backends import kube_client
        from garrison.sandbox.backends import kubernetes as k8s

        await self._check_operator(principal, "sandbox:template:kubernetes", name)
        if name not in self.templates.names():
            raise NotFound(f"no sandbox template named {name!r}")
        s = self.settings
        rc = runtime_class if runtime_class is not None else s.kubernetes_runtime_class
        cfg = await asyncio.to_thread(kube_client.load_config, s.kubernetes_kubeconfig, s.kubernetes_context)
        # Only garrison's own pods may reach the agent port: in a cluster garrison knows its
        # namespace; from outside one only the setting can say (else the token alone guards it).
        garrison_ns = s.kubernetes_garrison_namespace or (cfg.namespace if cfg.in_cluster else None)
        docs = [k8s.runtime_class(rc, "runsc" if rc == "gvisor" else "kata")] if install_runtime_class else []
        docs += [k8s.sandbox_template(name, s.kubernetes_namespace, image=image, runtime_class=rc,
                                      memory_mib=s.memory_mib, cpus=s.cpus, workspace_mib=s.workspace_mib,
                                      agent_port=s.kubernetes_agent_port, garrison_namespace=garrison_ns),
                 k8s.sandbox_warm_pool(f"{name}-pool", s.kubernetes_namespace, name, replicas)]
        applied: list[dict[str, Any]] = []
        context = {"server": cfg.server, "namespace": s.kubernetes_namespace, "image": image, "replicas": replicas,
                   "runtime_class": rc, "objects": applied}
        try:
            async with kube_client.KubeClient(cfg) as kube:
                for doc in docs:
                    live = await kube.apply(doc)
                    meta = live.get("metadata") or {}
                    applied.append({"apiVersion": doc["apiVersion"], "kind": doc["kind"], "name": meta.get("name"),
                                    "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                                    "resourceVersion": meta.get("resourceVersion")})
        except Problem as exc:
            # A partial apply changed the cluster: the audit log says what was written before the failure.
            await self.platform.audit.record_now(principal, "sandbox:template:kubernetes", f"sandbox_template/{name}",
                                                 "allow", f"failed: {exc.detail}"[:500], context)
            if isinstance(exc, kube_client.KubeNotFound):  # e.g. the namespace: the route itself exists
                raise BadRequest(f"the cluster refused: {exc.detail}") from None
            raise
        await self.platform.audit.record_now(principal, "sandbox:template:kubernetes", f"sandbox_template/{name}",
                                             "allow", "", context)
        return {"server": cfg.server, "namespace": s.kubernetes_namespace, "objects": applied}
