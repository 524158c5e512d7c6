"""A small async Kubernetes API client for the agent-sandbox resources.

Only what the kubernetes backend needs: configuration from a kubeconfig file or the
in-cluster service account, server-side apply, get, delete, and waiting for a
SandboxClaim to report its sandbox ready. It speaks the REST protocol with httpx rather
than pulling in the (large, synchronous) official client.

Errors: an unreachable, unauthenticated or forbidden cluster (and any 5xx) is a
``BackendUnavailable`` carrying the API server's ``Status`` message; 404 is ``KubeNotFound``,
400/409/422 is ``KubeRejected``; no kubeconfig and no in-cluster account is
``KubeNotConfigured`` (409); a claim that does not become ready in time is ``KubeTimeout``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from garrison.core.errors import Problem
from garrison.sandbox.errors import BackendUnavailable

FIELD_MANAGER = "garrison"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# kind -> (plural, namespaced). Only the kinds garrison applies; anything else is refused
# instead of guessed, since a wrong plural would silently hit another resource's path.
RESOURCES: dict[str, tuple[str, bool]] = {
    "Namespace": ("namespaces", False),
    "RuntimeClass": ("runtimeclasses", False),
    "Sandbox": ("sandboxes", True),
    "SandboxTemplate": ("sandboxtemplates", True),
    "SandboxWarmPool": ("sandboxwarmpools", True),
    "SandboxClaim": ("sandboxclaims", True),
}


class KubeNotFound(Problem):
    status, slug, title = 404, "kube-not-found", "Kubernetes object not found"


class KubeRejected(Problem):
    status, slug, title = 422, "kube-rejected", "Kubernetes API server rejected the object"


class KubeTimeout(Problem):
    status, slug, title = 504, "kube-timeout", "Kubernetes object did not become ready in time"


class KubeConfigError(BackendUnavailable):
    slug, title = "kube-config", "Kubernetes configuration unusable"


class KubeNotConfigured(Problem):
    """No kubeconfig anywhere and not in a pod: the cluster is not down, there is none to use.
    A 409 (this server's state refuses the request), not a 503 that says "retry later"."""
    status, slug, title = 409, "kube-not-configured", "No Kubernetes cluster configured"


@dataclass
class KubeConfig:
    server: str
    namespace: str = "default"
    ca_pem: str | None = None          # PEM text of the cluster CA (None: system trust store)
    client_cert_pem: str | None = None
    client_key_pem: str | None = None
    token: str | None = None
    token_file: Path | None = None     # re-read on each request: service-account tokens rotate
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    in_cluster: bool = False           # from the pod's service account: namespace is garrison's own
    source: str = field(default="", repr=False)

    def bearer(self) -> str | None:
        if self.token_file is not None:
            try:
                return self.token_file.read_text().strip()
            except OSError as exc:
                raise KubeConfigError(f"cannot read the service account token {self.token_file}: {exc}") from None
        return self.token

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https://"):
            return False
        if self.insecure_skip_tls_verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_pem:
            ctx = ssl.create_default_context(cadata=self.ca_pem)
        else:
            ctx = ssl.create_default_context()
        if self.client_cert_pem and self.client_key_pem:
            # ssl only loads a key pair from files: write them to a private temporary
            # directory that is gone as soon as they are loaded.
            with tempfile.TemporaryDirectory(prefix="garrison-kube-") as tmp:
                cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
                for path, text in ((cert, self.client_cert_pem), (key, self.client_key_pem)):
                    path.touch(mode=0o600)
                    path.write_text(text)
                ctx.load_cert_chain(cert, key)
        return ctx


def _data_or_file(entry: dict[str, Any], key: str, base: Path) -> str | None:
    data = entry.get(f"{key}-data")
    if data:
        return base64.b64decode(data).decode()
    path = entry.get(key)
    if path:
        p = Path(path)
        p = p if p.is_absolute() else base / p  # kubeconfig paths are relative to the file
        try:
            return p.read_text()
        except OSError as exc:
            raise KubeConfigError(f"kubeconfig {key} {p}: {exc}") from None
    return None


def _named(items: Any, name: str, what: str, source: str) -> dict[str, Any]:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name:
            return dict(item.get(what) or {})
    raise KubeConfigError(f"kubeconfig {source}: no {what} named {name!r}")


def load_kubeconfig(path: str | Path | None = None, context: str | None = None) -> KubeConfig:
    """The cluster, user and namespace of ``context`` (default: current-context) in the
    kubeconfig at ``path`` (default: the first file in $KUBECONFIG, else ~/.kube/config)."""
    if path is None:
        env = os.environ.get("KUBECONFIG", "")
        path = env.split(os.pathsep)[0] if env else Path.home() / ".kube" / "config"
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise KubeConfigError(f"cannot read kubeconfig {p}: {exc}") from None
    if not isinstance(doc, dict):
        raise KubeConfigError(f"kubeconfig {p} is not a mapping")
    name = context or doc.get("current-context")
    if not name:
        raise KubeConfigError(f"kubeconfig {p} has no current-context")
    ctx = _named(doc.get("contexts"), name, "context", str(p))
    cluster = _named(doc.get("clusters"), str(ctx.get("cluster")), "cluster", str(p))
    user = _named(doc.get("users"), str(ctx.get("user")), "user", str(p)) if ctx.get("user") else {}
    if "exec" in user or "auth-provider" in user:
        raise KubeConfigError(f"kubeconfig {p} user {ctx.get('user')!r} uses an exec/auth-provider plugin, "
                              "which garrison does not run: use a token or client certificate")
    server = cluster.get("server")
    if not server:
        raise KubeConfigError(f"kubeconfig {p} cluster {ctx.get('cluster')!r} has no server")
    token = user.get("token")
    token_file = user.get("tokenFile")
    return KubeConfig(
        server=str(server).rstrip("/"), namespace=str(ctx.get("namespace") or "default"),
        ca_pem=_data_or_file(cluster, "certificate-authority", p.parent),
        client_cert_pem=_data_or_file(user, "client-certificate", p.parent),
        client_key_pem=_data_or_file(user, "client-key", p.parent),
        token=str(token) if token else None, token_file=Path(token_file) if token_file and not token else None,
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name"), source=str(p))


def load_incluster(root: Path = SERVICE_ACCOUNT_DIR) -> KubeConfig:
    """The pod's service account, as client-go's rest.InClusterConfig reads it."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeNotConfigured("no Kubernetes cluster configured: no kubeconfig ($KUBECONFIG, ~/.kube/config "
                                "or GARRISON_SANDBOX_KUBERNETES_KUBECONFIG) and not in a cluster "
                                "(KUBERNETES_SERVICE_HOST/PORT are not set)")
    if not (root / "token").is_file():
        raise KubeConfigError(f"not in a cluster: no service account token in {root}")
    try:
        ca = (root / "ca.crt").read_text()
        ns_file = root / "namespace"
        namespace = ns_file.read_text().strip() if ns_file.is_file() else "default"
    except OSError as exc:
        raise KubeConfigError(f"service account files in {root}: {exc}") from None
    host = f"[{host}]" if ":" in host else host
    return KubeConfig(server=f"https://{host}:{port}", namespace=namespace, ca_pem=ca,
                      token_file=root / "token", source=str(root), in_cluster=True)


def load_config(path: str | Path | None = None, context: str | None = None) -> KubeConfig:
    """An explicit kubeconfig, else $KUBECONFIG or ~/.kube/config, else the in-cluster account."""
    if path is not None or os.environ.get("KUBECONFIG") or (Path.home() / ".kube" / "config").is_file():
        return load_kubeconfig(path, context)
    return load_incluster()


def resource_path(api_version: str, kind: str, name: str | None = None, namespace: str | None = None) -> str:
    try:
        plural, namespaced = RESOURCES[kind]
    except KeyError:
        raise KubeRejected(f"garrison does not manage Kubernetes kind {kind!r}") from None
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespaced:
        if not namespace:
            raise KubeRejected(f"{kind} {name!r} needs a namespace")
        base += f"/namespaces/{namespace}"
    return f"{base}/{plural}" + (f"/{name}" if name else "")


@dataclass
class ClaimReady:
    sandbox_name: str
    pod_ips: list[str]
    claim: dict[str, Any]


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return None


class KubeClient:
    def __init__(self, config: KubeConfig, *, timeout: float = 30.0) -> None:
        self.config = config
        extensions = {"sni_hostname": config.tls_server_name} if config.tls_server_name else None
        self._extensions = extensions
        self._http = httpx.AsyncClient(base_url=config.server, verify=config.ssl_context(), timeout=timeout,
                                       headers={"Accept": "application/json", "User-Agent": "garrison"})

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                      content: bytes | None = None, content_type: str | None = None) -> dict[str, Any]:
        headers: dict[str, str] = {}
        token = self.config.bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        try:
            resp = await self._http.request(method, path, params=params, content=content, headers=headers,
                                            extensions=self._extensions)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"Kubernetes API server {self.config.server} unreachable: "
                                     f"{type(exc).__name__}: {exc}") from None
        try:
            body = orjson.loads(resp.content) if resp.content else {}
        except orjson.JSONDecodeError:
            body = {"message": resp.text[:500]}
        if resp.is_success:
            return body if isinstance(body, dict) else {}
        message = body.get("message") if isinstance(body, dict) else None
        detail = f"{method} {path}: {resp.status_code} {message or resp.reason_phrase}"
        reason = body.get("reason") if isinstance(body, dict) else None
        if resp.status_code == 404:
            raise KubeNotFound(detail, reason=reason)
        if resp.status_code in (400, 409, 422):
            raise KubeRejected(detail, reason=reason)
        # 401/403, 429 and 5xx: the cluster is not usable by garrison right now.
        raise BackendUnavailable(f"Kubernetes API server: {detail}", reason=reason)

    async def version(self) -> dict[str, Any]:
        return await self.request("GET", "/version")

    async def has_api(self, group_version: str) -> bool:
        try:
            await self.request("GET", f"/apis/{group_version}")
        except KubeNotFound:
            return False
        return True

    async def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply: the API server merges the fields garrison manages and returns the live object."""
        meta = obj.get("metadata") or {}
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("name"), meta.get("namespace"))
        params = {"fieldManager": FIELD_MANAGER}
        if force:
            params["force"] = "true"  # garrison owns these objects: take over fields another manager set
        # JSON is YAML, so the apply-patch+yaml body can be the object serialised as JSON.
        return await self.request("PATCH", path, params=params, content=orjson.dumps(obj),
                                  content_type="application/apply-patch+yaml")

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return await self.request("GET", resource_path(api_version, kind, name, namespace))

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
                     missing_ok: bool = True) -> bool:
        """True when the object was deleted, False when it was already gone (and ``missing_ok``)."""
        body = orjson.dumps({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"})
        try:
            await self.request("DELETE", resource_path(api_version, kind, name, namespace), content=body,
                               content_type="application/json")
        except KubeNotFound:
            if not missing_ok:
                raise
            return False
        return True

    async def wait_claim_ready(self, name: str, namespace: str, *, timeout_s: float = 120.0,
                               interval: float = 0.5, api_version: str = "extensions.agents.x-k8s.io/v1beta1"
                               ) -> ClaimReady:
        """Poll the SandboxClaim until its Ready condition is True and status.sandbox.name is set.

        Polling rather than a watch: a claim is waited on once, for seconds, and a poll
        survives API server restarts and proxies that cut long-lived responses."""
        deadline = time.monotonic() + timeout_s
        last = "no status yet"
        while True:
            try:
                claim = await self.get(api_version, "SandboxClaim", name, namespace)
            except KubeNotFound:
                claim, last = {}, "claim not found"
            ready = _condition(claim, "Ready")
            sandbox = (claim.get("status") or {}).get("sandbox") or {}
            if ready is not None:
                last = f"Ready={ready.get('status')} {ready.get('reason', '')}: {ready.get('message', '')}".strip()
                if ready.get("status") == "True" and sandbox.get("name"):
                    return ClaimReady(str(sandbox["name"]), [str(ip) for ip in sandbox.get("podIPs") or []], claim)
            if time.monotonic() >= deadline:
                raise KubeTimeout(f"SandboxClaim {namespace}/{name} not ready after {timeout_s:g}s ({last})")
            await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
