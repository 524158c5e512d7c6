"""kubernetes backend: a sandbox is an agent-sandbox SandboxClaim on a template's warm pool.

Start: apply a SandboxClaim (env: the sandbox's environment plus a fresh secret token),
wait for it to be Ready with a pod IP, connect to the agent's TCP port there
(``agent_listen.py`` in the pod), send the token as the first line, and from then on the
socket is the same JSON-lines stream the other backends get from the agent's stdio.
Kill: delete the claim (the controller deletes the pod); the connection is closed too.

Enabled only by ``GARRISON_SANDBOX_KUBERNETES_ENABLED`` with a usable cluster
configuration; never chosen by ``auto``. The isolation reported is the RuntimeClass's:
gVisor is ``kernel``, Kata is ``vm``, anything else ``container``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from datetime import timedelta

from garrison.core.clock import utcnow
from garrison.sandbox.backends import kube_client
from garrison.sandbox.backends import kubernetes as k8s
from garrison.sandbox.backends.base import Backend, BackendError, SandboxHandle, SandboxSpec
from garrison.sandbox.config import SandboxSettings
from garrison.sandbox.protocol import MAX_LINE

log = logging.getLogger("garrison.sandbox.kubernetes")
TOKEN_ENV = "GARRISON_AGENT_TOKEN"


def isolation_of(runtime_class: str | None) -> str:
    name = (runtime_class or "").lower()
    if "kata" in name:
        return "vm"
    if "gvisor" in name or "runsc" in name:
        return "kernel"
    return "container"


def claim_name(sandbox_id: str) -> str:
    """A DNS-1123 name from the sandbox id (ids hold '_' and upper case)."""
    return "garrison-" + re.sub(r"[^a-z0-9-]", "-", sandbox_id.lower())[:50].strip("-")


class KubernetesHandle(SandboxHandle):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, backend: KubernetesBackend,
                 claim: str, sandbox_name: str, pod_ip: str) -> None:
        super().__init__(reader, writer, None)  # no cgroup here: usage is the cluster's
        self.backend = backend
        self.claim = claim
        self.sandbox_name = sandbox_name
        self.pod_ip = pod_ip
        self.deleted = False

    async def kill(self) -> None:
        self.close_pipes()
        if not self.deleted:
            self.deleted = await self.backend.delete_claim(self.claim)  # retried by destroy() when it failed

    async def destroy(self) -> None:
        await self.kill()


class KubernetesBackend(Backend):
    name = "kubernetes"

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.isolation = isolation_of(settings.kubernetes_runtime_class)
        self.config: kube_client.KubeConfig | None = None
        self._client: kube_client.KubeClient | None = None

    def check(self) -> tuple[bool, str]:
        s = self.settings
        if not s.kubernetes_enabled:
            return False, "disabled (set GARRISON_SANDBOX_KUBERNETES_ENABLED=true with a kubeconfig or in-cluster account)"
        try:
            self.config = kube_client.load_config(s.kubernetes_kubeconfig, s.kubernetes_context)
        except Exception as exc:  # KubeNotConfigured, KubeConfigError: say why, never fall back
            return False, f"no usable cluster configuration: {exc}"
        return True, f"cluster {self.config.server}, namespace {s.kubernetes_namespace}, " \
                     f"runtime class {s.kubernetes_runtime_class} ({self.isolation})"

    def client(self) -> kube_client.KubeClient:
        if self._client is None:
            if self.config is None:
                ok, why = self.check()
                if not ok:
                    raise BackendError(why)
            assert self.config is not None
            self._client = kube_client.KubeClient(self.config)
        return self._client

    async def delete_claim(self, name: str) -> bool:
        """True when the claim is gone (deleted now or already)."""
        try:
            await self.client().delete(k8s.API_EXT, "SandboxClaim", name, self.settings.kubernetes_namespace)
        except Exception as exc:
            # The claim's shutdownTime still ends it in the cluster; say so rather than hide it.
            log.warning("could not delete SandboxClaim %s: %s", name, exc)
            return False
        return True

    async def start(self, spec: SandboxSpec) -> SandboxHandle:
        s = self.settings
        kube = self.client()
        token = secrets.token_urlsafe(32)
        name = claim_name(spec.sandbox_id)
        pool = s.kubernetes_warm_pool or f"{spec.template.name}-pool"
        # A backstop: if garrison dies, the cluster still ends the sandbox at its longest lifetime.
        shutdown = utcnow() + timedelta(seconds=s.max_lifetime_s)
        claim = k8s.sandbox_claim(name, s.kubernetes_namespace, pool, tenant_id=None,
                                  envs={**spec.sandbox_env(), TOKEN_ENV: token}, shutdown_time=shutdown,
                                  labels={"garrison.dev/sandbox": name})
        deadline = time.monotonic() + s.kubernetes_claim_timeout_s
        try:
            await kube.apply(claim)
        except Exception as exc:
            raise BackendError(f"SandboxClaim {name} not created: {exc}") from exc
        try:
            ready = await kube.wait_claim_ready(name, s.kubernetes_namespace,
                                                timeout_s=max(0.1, deadline - time.monotonic()))
            if not ready.pod_ips:
                raise BackendError(f"SandboxClaim {name} is Ready but its sandbox has no pod IP")
            reader, writer = await self._connect(ready.pod_ips[0], s.kubernetes_agent_port, deadline)
            writer.write(token.encode() + b"\n")
            await writer.drain()
        except BaseException as exc:
            await self.delete_claim(name)
            if isinstance(exc, BackendError | asyncio.CancelledError):
                raise
            raise BackendError(f"SandboxClaim {name}: {exc}") from exc
        return KubernetesHandle(reader, writer, self, name, ready.sandbox_name, ready.pod_ips[0])

    @staticmethod
    async def _connect(host: str, port: int, deadline: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The pod can be Ready a moment before its agent listens: retry until the deadline."""
        while True:
            try:
                return await asyncio.wait_for(asyncio.open_connection(host, port, limit=MAX_LINE),
                                              max(0.1, deadline - time.monotonic()))
            except (OSError, TimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise BackendError(f"agent at {host}:{port} not reachable: {exc}") from None
                await asyncio.sleep(0.1)

    async def aclose(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None
