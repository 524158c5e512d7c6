"""A fake Kubernetes API server for the kube_client tests.

It stands for a real kube-apiserver plus the agent-sandbox controller (neither can be
installed on the test machine), so it speaks the real protocol over a real TLS socket:
server-side apply PATCH (application/apply-patch+yaml, fieldManager, force, conflicts),
GET and DELETE of the agent-sandbox custom resources, RuntimeClass and Namespace;
applied objects are validated against the CRD openAPIV3Schema with the validator of
test_kubernetes.py; errors are ``Status`` objects; bearer tokens or client certificates
are required. As the controller, it marks a SandboxClaim Ready with a sandbox name and
pod IP shortly after it is applied, when its warm pool and template exist. With
``run_agents`` the claimed sandbox's "pod" is a real garrison agent: a local process of
``agent_listen.py`` (the pod's command) with the claim's env, listening on the port of the
template's ``--listen`` at a loopback address of its own (127.0.0.N, the pod IP it
reports); deleting the claim kills that process, as the controller deletes the pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import signal
import ssl
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.sandbox.test_kubernetes import validate

CRD_GROUP = "extensions.agents.x-k8s.io"
CORE_GROUP = "agents.x-k8s.io"
PLURALS = {"sandboxes": "Sandbox", "sandboxtemplates": "SandboxTemplate", "sandboxwarmpools": "SandboxWarmPool",
           "sandboxclaims": "SandboxClaim", "runtimeclasses": "RuntimeClass", "namespaces": "Namespace"}


@dataclass
class Pki:
    ca_pem: str
    server_cert_pem: str
    server_key_pem: str
    client_cert_pem: str
    client_key_pem: str


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False, san: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki() -> Pki:
    ca_key = _key()
    ca = _cert("fake-kube-ca", ca_key, None, ca_key, ca=True)
    server_key, client_key = _key(), _key()
    server = _cert("kube-apiserver", server_key, ca.subject, ca_key, san=True)
    client = _cert("garrison", client_key, ca.subject, ca_key)

    def pem(c: x509.Certificate) -> str:
        return c.public_bytes(serialization.Encoding.PEM).decode()
    return Pki(pem(ca), pem(server), _pem_key(server_key), pem(client), _pem_key(client_key))


def status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": message, "reason": reason, "code": code}, status=code)


@dataclass
class FakeKubeAPI:
    pki: Pki
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    ready_delay: float = 0.2
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    managers: dict[tuple[str, str, str], str] = field(default_factory=dict)
    server: str = ""
    run_agents: bool = False
    workspaces: Path | None = None
    pods: dict[tuple[str, str], subprocess.Popen[bytes]] = field(default_factory=dict)  # (ns, claim) -> agent
    _next_ip: int = 2
    _runner: web.AppRunner | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, tmp: Path) -> None:
        (tmp / "server.crt").write_text(self.pki.server_cert_pem)
        (tmp / "server.key").write_text(self.pki.server_key_pem)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tmp / "server.crt", tmp / "server.key")
        ctx.load_verify_locations(cadata=self.pki.ca_pem)
        ctx.verify_mode = ssl.CERT_OPTIONAL  # like kube-apiserver: a client cert or a token
        app = web.Application(middlewares=[self._auth])
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port = self._runner.addresses[0][1]
        self.server = f"https://127.0.0.1:{port}"

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for key in list(self.pods):
            self._kill_pod(key)
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        if request.headers.get("Authorization") == f"Bearer {self.token}" or peer:
            response: web.StreamResponse = await handler(request)
            return response
        return status(401, "Unauthorized", "Unauthorized")

    def seed(self, obj: dict[str, Any], manager: str) -> None:
        key = (_plural(obj["kind"]), obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        self.objects[key], self.managers[key] = obj, manager

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["version"]:
            return web.json_response({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake"})
        if parts[:1] == ["apis"] and len(parts) == 3:
            if f"{parts[1]}/{parts[2]}" in (f"{CRD_GROUP}/v1beta1", f"{CRD_GROUP}/v1alpha1", f"{CORE_GROUP}/v1beta1",
                                            "node.k8s.io/v1"):
                return web.json_response({"kind": "APIResourceList", "groupVersion": f"{parts[1]}/{parts[2]}",
                                          "resources": []})
            return status(404, "NotFound", "the server could not find the requested resource")
        route = _route(parts)
        if route is None:
            return status(404, "NotFound", "the server could not find the requested resource")
        api_version, plural, namespace, name = route
        if namespace and ("namespaces", "", namespace) not in self.objects:
            return status(404, "NotFound", f'namespaces "{namespace}" not found')
        key = (plural, namespace, name)
        if request.method == "GET":
            if key not in self.objects:
                return status(404, "NotFound", f'{plural} "{name}" not found')
            return web.json_response(self.objects[key])
        if request.method == "DELETE":
            if self.objects.pop(key, None) is None:
                return status(404, "NotFound", f'{plural} "{name}" not found')
            self.managers.pop(key, None)
            if plural == "sandboxclaims":
                self._kill_pod((namespace, name))
            if plural == "namespaces":
                for k in [k for k in self.objects if k[1] == name]:
                    del self.objects[k]
            return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                      "details": {"name": name, "kind": plural}})
        if request.method == "PATCH":
            return await self._apply(request, api_version, plural, namespace, name)
        return status(405, "MethodNotAllowed", f"{request.method} is not supported")

    async def _apply(self, request: web.Request, api_version: str, plural: str, namespace: str,
                     name: str) -> web.Response:
        if request.content_type != "application/apply-patch+yaml":
            return status(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: "
                                                       f"{request.content_type}")
        manager = request.query.get("fieldManager")
        if not manager:
            return status(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: "
                                          "Required value: is required for apply patch")
        try:
            obj = yaml.safe_load(await request.text())
        except yaml.YAMLError as exc:
            return status(400, "BadRequest", f"error decoding YAML: {exc}")
        kind = PLURALS[plural]
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if not isinstance(meta, dict) or obj.get("kind") != kind or obj.get("apiVersion") != api_version:
            return status(400, "BadRequest", f"the body is not a {api_version} {kind}")
        if meta.get("name") != name or (namespace and meta.get("namespace", namespace) != namespace):
            return status(400, "BadRequest", "the name/namespace of the object does not match the URL")
        error = _invalid(obj)
        if error:
            group = api_version.split("/")[0]
            return status(422, "Invalid", f'{kind}.{group} "{name}" is invalid: {error}')
        key = (plural, namespace, name)
        old = self.objects.get(key)
        if old is not None and self.managers.get(key) != manager and request.query.get("force") != "true":
            return status(409, "Conflict", f'Apply failed with 1 conflict: conflict with "{self.managers[key]}": '
                                           ".spec")
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        live = dict(obj)
        live.pop("status", None)  # the status subresource is not written by an apply to the object
        live["metadata"] = {**meta, "uid": (old or {}).get("metadata", {}).get("uid", str(uuid.uuid4())),
                            "resourceVersion": str(len(self.objects) + 1000),
                            "creationTimestamp": (old or {}).get("metadata", {}).get("creationTimestamp", now),
                            "generation": (old or {}).get("metadata", {}).get("generation", 0) + 1}
        if old is not None and "status" in old:
            live["status"] = old["status"]
        self.objects[key], self.managers[key] = live, manager
        if kind == "SandboxClaim":
            task = asyncio.get_running_loop().create_task(self._reconcile_claim(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response(live, status=200 if old is not None else 201)

    async def _reconcile_claim(self, key: tuple[str, str, str]) -> None:
        """The agent-sandbox controller's part: bind the claim to a sandbox of its warm pool."""
        await asyncio.sleep(self.ready_delay)
        claim = self.objects.get(key)
        if claim is None:
            return
        ns = key[1]
        pool = self.objects.get(("sandboxwarmpools", ns, claim["spec"]["warmPoolRef"]["name"]))
        template = pool and self.objects.get(("sandboxtemplates", ns, pool["spec"]["sandboxTemplateRef"]["name"]))
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if pool and template:
            name = f"{pool['metadata']['name']}-{uuid.uuid4().hex[:5]}"
            sandbox = {"apiVersion": f"{CORE_GROUP}/v1beta1", "kind": "Sandbox",
                       "metadata": {"name": name, "namespace": ns, "uid": str(uuid.uuid4())},
                       "spec": {"podTemplate": template["spec"]["podTemplate"]}}
            validate(sandbox)
            self.objects[("sandboxes", ns, name)] = sandbox
            pod_ip = self._start_pod(key, template, claim) if self.run_agents else "10.244.0.7"
            cond = {"type": "Ready", "status": "True", "reason": "SandboxReady", "message": "", "lastTransitionTime": now}
            new_status = {"conditions": [cond], "sandbox": {"name": name, "podIPs": [pod_ip]}}
        else:
            new_status = {"conditions": [{"type": "Ready", "status": "False", "reason": "WarmPoolNotFound",
                                          "message": "the claim's warm pool or its template does not exist",
                                          "lastTransitionTime": now}]}
        updated = {**claim, "status": new_status}
        validate(updated)  # the controller writes only what the CRD's status schema allows
        self.objects[key] = updated


    def _start_pod(self, key: tuple[str, str, str], template: dict[str, Any], claim: dict[str, Any]) -> str:
        """The pod's command, run here: agent_listen.py from this checkout with the claim's env."""
        command = template["spec"]["podTemplate"]["spec"]["containers"][0]["command"]
        port = int(command[command.index("--listen") + 1].rpartition(":")[2])
        ip = f"127.0.0.{self._next_ip}"
        self._next_ip += 1
        env = {e["name"]: e["value"] for e in claim["spec"].get("env") or []}
        assert self.workspaces is not None, "run_agents needs a workspaces directory"
        workspace = self.workspaces / key[2]
        workspace.mkdir(parents=True)
        env.update(GARRISON_WORKSPACE=str(workspace), HOME=str(workspace))  # the pod's /workspace
        src = Path(__file__).resolve().parents[2] / "garrison" / "sandbox"
        self.pods[(key[1], key[2])] = subprocess.Popen(
            [sys.executable, "-I", "-S", "-u", str(src / "agent_listen.py"), "--listen", f"{ip}:{port}",
             str(src / "agent.py")], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            start_new_session=True)
        return ip

    def _kill_pod(self, key: tuple[str, str]) -> None:
        proc = self.pods.pop(key, None)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _plural(kind: str) -> str:
    return {v: k for k, v in PLURALS.items()}[kind]


def _route(parts: list[str]) -> tuple[str, str, str, str] | None:
    """(apiVersion, plural, namespace, name) of an object path, or None."""
    if parts[:2] == ["api", "v1"] and len(parts) == 4 and parts[2] == "namespaces":
        return "v1", "namespaces", "", parts[3]
    if parts[:3] == ["apis", "node.k8s.io", "v1"] and len(parts) == 5 and parts[3] == "runtimeclasses":
        return "node.k8s.io/v1", "runtimeclasses", "", parts[4]
    if (len(parts) == 7 and parts[0] == "apis" and parts[3] == "namespaces" and parts[2] in ("v1beta1", "v1alpha1")
            and ((parts[1] == CRD_GROUP and parts[5] in ("sandboxtemplates", "sandboxwarmpools", "sandboxclaims"))
                 or (parts[1] == CORE_GROUP and parts[5] == "sandboxes"))):
        return f"{parts[1]}/{parts[2]}", parts[5], parts[4], parts[6]
    return None


def _invalid(obj: dict[str, Any]) -> str | None:
    kind = obj["kind"]
    if kind == "RuntimeClass":
        return None if isinstance(obj.get("handler"), str) and obj["handler"] else "handler: Required value"
    if kind == "Namespace":
        return None
    try:
        validate(obj)
    except jsonschema.ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path)
        return f"{path or '<root>'}: {exc.message}"
    return None
