"""Local stdio MCP servers (registry packages with transport ``stdio``), run inside sandboxes.

An upstream made ``from_registry`` of an entry whose package is a PyPI stdio server gets:

- a sandbox template with that package, installed offline from the sandbox wheelhouse
  (``pip --no-index``): a package the wheelhouse lacks is a 400 that names it;
- one long-lived sandbox (no network, as every sandbox) running :mod:`stdio_bridge`, which
  serves MCP streamable HTTP on the sandbox's loopback and starts one stdio server process
  per MCP session;
- an httpx transport that sends the upstream client's requests through the sandbox relay
  instead of a socket, so the gateway treats it like any remote upstream.

A sandbox that ended (killed, out of memory, past its lifetime) is noticed on the next use:
what ended it is kept in :attr:`StdioServer.last_sandbox` and logged, and a fresh sandbox
starts. The upstream's URL records what runs: ``stdio-sandbox://pypi/<package>==<version>``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
import orjson

from garrison.core.clock import utcnow
from garrison.core.errors import BadRequest, ServiceUnavailable
from garrison.core.principal import Principal
from garrison.sandbox.relay import Relay, RelayError

if TYPE_CHECKING:
    from garrison.platform import Platform

log = logging.getLogger("garrison.tools.stdio")
URL_PREFIX = "stdio-sandbox://pypi/"
BRIDGE_URL = "http://stdio-sandbox/mcp"  # what the upstream client sees; the transport never resolves it
BRIDGE_PORT = 8765
BRIDGE_PATH = ".garrison/stdio_bridge.py"  # in the sandbox's workspace
SANDBOX_PYTHON = "/usr/bin/python3"
START_TIMEOUT_S = 60.0
RELAY_TIMEOUT_S = 3600.0  # the gateway's per-call timeout (asyncio.wait_for) ends calls long before this


class StdioPackageError(BadRequest):
    slug = "stdio-package"


@dataclass(frozen=True)
class StdioPackage:
    identifier: str
    version: str | None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.identifier}=={self.version}" if self.version else self.identifier

    @property
    def url(self) -> str:
        return URL_PREFIX + self.requirement

    @property
    def template(self) -> str:
        return "mcp-" + hashlib.sha256(self.requirement.encode()).hexdigest()[:16]


def is_stdio_url(url: str) -> bool:
    return url.startswith(URL_PREFIX)


def _static_args(items: Any) -> list[str]:
    """Package arguments with fixed values; those the user must fill in are left out."""
    out: list[str] = []
    for arg in items if isinstance(items, list) else []:
        if not isinstance(arg, dict):
            continue
        value = arg.get("value", arg.get("default"))
        if arg.get("type") == "named" and isinstance(arg.get("name"), str):
            out.append(arg["name"])
            if isinstance(value, str) and "{" not in value:
                out.append(value)
        elif isinstance(value, str) and "{" not in value:
            out.append(value)
    return out


def stdio_package(name: str, server: dict[str, Any]) -> StdioPackage:
    """The entry's runnable stdio package, or a 400 that says why there is none."""
    packages = [p for p in server.get("packages") or [] if (p.get("transport") or {}).get("type") == "stdio"]
    pypi = next((p for p in packages if p.get("registryType") == "pypi"), None)
    if pypi is None:
        kinds = sorted({str(p.get("registryType")) for p in packages})
        raise StdioPackageError(f"{name} is a local stdio server packaged as {', '.join(kinds)}: garrison runs "
                                "stdio servers from PyPI packages (registryType 'pypi') only; publish a pypi "
                                "package or register a remote URL instead")
    identifier = str(pypi.get("identifier") or "")
    version = pypi.get("version")
    env = []
    for var in pypi.get("environmentVariables") or []:
        if isinstance(var, dict) and isinstance(var.get("name"), str):
            value = var.get("value", var.get("default"))
            if isinstance(value, str) and "{" not in value:
                env.append((var["name"], value))
    pkg = StdioPackage(identifier, str(version) if version else None,
                       tuple(_static_args(pypi.get("packageArguments"))), tuple(env))
    from garrison.sandbox.templates import PACKAGE_RE

    if not PACKAGE_RE.match(pkg.requirement):
        raise StdioPackageError(f"{name}: the pypi package {pkg.requirement!r} is not a valid requirement")
    return pkg


def package_of_url(url: str) -> StdioPackage:
    req = url.removeprefix(URL_PREFIX)
    identifier, _, version = req.partition("==")
    return StdioPackage(identifier, version or None)


@dataclass
class StdioServer:
    """The sandbox that runs one upstream's stdio server."""

    upstream_id: str
    tenant_id: str
    name: str
    package: StdioPackage
    sandbox: Any = None
    relay: Relay | None = None
    pid: int | None = None
    sandboxes_started: int = 0
    last_sandbox: dict[str, Any] | None = None
    suspect: bool = False  # the bridge refused a connection: check its process on the next use
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def alive(self) -> bool:
        sbx = self.sandbox
        return sbx is not None and sbx.state == "running" and sbx.runtime.alive()

    def describe(self) -> dict[str, Any]:
        sbx = self.sandbox
        return {"package": self.package.requirement, "state": "running" if self.alive() else "stopped",
                "sandbox_id": sbx.id if self.alive() else None,
                "backend": sbx.backend if sbx is not None else None,
                "sandboxes_started": self.sandboxes_started, "last_sandbox": self.last_sandbox}

    def gone_text(self) -> str:
        sbx = self.sandbox
        if sbx is None:
            return f"the sandbox of stdio server {self.name} is not running"
        reason = sbx.killed_reason or "exited"
        return (f"the sandbox {sbx.id} of stdio server {self.name} ended ({reason}); "
                "garrison starts a new one on the next call")


class RelayStream(httpx2.AsyncByteStream):
    def __init__(self, body: AsyncIterator[bytes], server: StdioServer) -> None:
        self.body, self.server = body, server

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.body:
                yield chunk
        except RelayError as exc:
            raise httpx2.ReadError(f"{self.server.gone_text()}: {exc}" if exc.kind == "SandboxGone" else str(exc)) \
                from exc

    async def aclose(self) -> None:
        closer = getattr(self.body, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()


class RelayTransport(httpx2.AsyncBaseTransport):
    """Sends each HTTP request into the stdio server's sandbox through the agent relay."""

    def __init__(self, server: StdioServer) -> None:
        self.server = server

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        relay = self.server.relay
        if relay is None or not self.server.alive():
            raise httpx2.ConnectError(self.server.gone_text(), request=request)
        body = await request.aread()
        path = request.url.raw_path.decode("ascii", "replace")
        try:
            resp = await relay.request(BRIDGE_PORT, request.method, path, list(request.headers.multi_items()),
                                       body, timeout_s=RELAY_TIMEOUT_S)
        except RelayError as exc:
            if exc.kind == "ConnectionRefused":
                self.server.suspect = True  # the next use checks the bridge and restarts the sandbox if it ended
                raise httpx2.ConnectError(await self._bridge_text(), request=request) from exc
            if exc.kind == "SandboxGone":  # it may have reached the tool: not a connect error, never retried
                raise httpx2.ReadError(self.server.gone_text(), request=request) from exc
            # The bridge dropped the connection (its process killed, say): name the sandbox and,
            # once the bridge is seen gone, why; the next use checks it and restarts the sandbox.
            self.server.suspect = True
            text = await self._bridge_text(settle_s=1.0)
            raise httpx2.ReadError(f"{text} ({exc.kind}: {exc})", request=request) from exc
        return httpx2.Response(resp.status, headers=resp.headers, stream=RelayStream(resp.body, self.server),
                               request=request)

    async def _bridge_text(self, settle_s: float = 0.0) -> str:
        server, sbx = self.server, self.server.sandbox
        where = f"the stdio bridge in sandbox {sbx.id if sbx is not None else '-'} of {server.name}"
        deadline = asyncio.get_running_loop().time() + settle_s
        while True:
            if not server.alive():
                return server.gone_text()
            try:
                status = await sbx.runtime.conn.call("proc_status", pid=server.pid)
            except Exception:
                return f"{where} is not listening"
            # A dropped connection is seen before the process that dropped it is reaped.
            if not status.get("running") or asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.05)
        if status.get("running"):
            return f"{where} is not listening"
        return (f"{where} exited with code {status.get('exit_code')}; garrison starts a new sandbox on the next "
                f"call. Its output ends with: {str(status.get('log_tail', ''))[-500:]}")

    async def aclose(self) -> None:
        return None  # the sandbox outlives the connections made through it


class StdioSandboxes:
    """One sandbox per stdio upstream, started on first use and again after it ends."""

    def __init__(self, platform: Platform | None) -> None:
        self.platform = platform
        self.servers: dict[str, StdioServer] = {}
        self._template_lock = asyncio.Lock()

    def _sandbox(self) -> Any:
        sandbox = self.platform.services.get("sandbox") if self.platform is not None else None
        if sandbox is None:
            raise ServiceUnavailable("local stdio servers run inside garrison sandboxes, and the sandbox layer "
                                     "is not installed here", slug="sandbox-unavailable")
        return sandbox

    async def ensure_template(self, name: str, pkg: StdioPackage) -> str:
        """The template with the package installed from the wheelhouse (built once per requirement)."""
        from garrison.sandbox.templates import TemplateError

        sandbox = self._sandbox()
        async with self._template_lock:
            if sandbox.templates.exists(pkg.template):
                return pkg.template
            wheelhouse: Path = sandbox.wheelhouse()
            try:
                await asyncio.to_thread(sandbox.templates.build, pkg.template, wheelhouse, [pkg.requirement],
                                        {"GARRISON_MCP_PACKAGE": pkg.identifier})
            except TemplateError as exc:
                raise StdioPackageError(f"{name}: the stdio package {pkg.requirement} cannot be installed from the "
                                        f"sandbox wheelhouse {wheelhouse}: add its wheel (and its dependencies') "
                                        f"there, or set GARRISON_SANDBOX_WHEELHOUSE. pip said: {exc}") from None
        log.info("sandbox template %s built for stdio package %s", pkg.template, pkg.requirement)
        return pkg.template

    async def ensure(self, upstream_id: str, tenant_id: str, name: str, pkg: StdioPackage) -> tuple[StdioServer, bool]:
        """The running server for this upstream; ``True`` when a (new) sandbox was started now."""
        server = self.servers.get(upstream_id)
        if server is None:
            server = self.servers.setdefault(upstream_id, StdioServer(upstream_id, tenant_id, name, pkg))
        if server.alive() and not server.suspect:
            return server, False
        async with server.lock:
            if server.alive() and server.suspect:
                server.suspect = False
                status = await server.sandbox.runtime.conn.call("proc_status", pid=server.pid)
                if status["running"]:
                    return server, False
                await self._drop(server, "bridge_exited")
            if server.alive():
                return server, False
            if server.sandbox is not None:
                self._note_ended(server)
            await self._start(server)
            return server, True

    def _note_ended(self, server: StdioServer) -> None:
        sbx = server.sandbox
        reason = sbx.killed_reason or ("exited" if not sbx.runtime.alive() else "unknown")
        if server.last_sandbox is None or server.last_sandbox.get("id") != sbx.id:
            server.last_sandbox = {"id": sbx.id, "killed_reason": reason, "ended_at": sbx.ended_at or utcnow()}
            log.warning("sandbox %s of stdio upstream %s ended (%s)", sbx.id, server.name, reason)
        server.sandbox, server.relay, server.pid = None, None, None

    async def _start(self, server: StdioServer) -> None:
        from garrison.sandbox.schemas import CreateIn

        sandbox = self._sandbox()
        template = await self.ensure_template(server.name, server.package)
        lifetime = int(sandbox.settings.max_lifetime_s)
        principal = Principal(id=f"tools/stdio/{server.name}", tenant_id=server.tenant_id, kind="service",
                              scopes=frozenset({"sandbox:create", "sandbox:delete"}),
                              name=f"stdio tool server {server.name}")
        sbx = await sandbox.create(principal, CreateIn(
            template=template, timeout_s=lifetime, idle_timeout_s=lifetime, pooled=False,
            metadata={"tools_upstream": server.name, "tools_package": server.package.requirement}))
        server.sandbox, server.relay = sbx, Relay(sbx.runtime.conn)
        server.sandboxes_started += 1
        try:
            code = (Path(__file__).parent / "stdio_bridge.py").read_bytes()
            await sbx.runtime.conn.call("write", path=BRIDGE_PATH, data=base64.b64encode(code).decode())
            config = {"package": server.package.identifier, "args": list(server.package.args),
                      "env": dict(server.package.env)}
            spawned = await sbx.runtime.conn.call("spawn", cmd=[
                SANDBOX_PYTHON, f"/workspace/{BRIDGE_PATH}", str(BRIDGE_PORT), orjson.dumps(config).decode()])
            server.pid = int(spawned["pid"])
            await self._wait_ready(server)
        except BaseException:
            await self._drop(server, "bridge_failed_to_start")
            raise

    async def _wait_ready(self, server: StdioServer) -> None:
        assert server.relay is not None and server.sandbox is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        delay = 0.02
        while time.monotonic() < deadline:
            with contextlib.suppress(RelayError):
                resp = await server.relay.request(BRIDGE_PORT, "GET", "/healthz", timeout_s=5)
                await resp.read()
                if resp.status == 200:
                    return
            status = await server.sandbox.runtime.conn.call("proc_status", pid=server.pid)
            if not status["running"]:
                raise ServiceUnavailable(f"the stdio bridge of {server.name} exited with code {status['exit_code']}; "
                                         f"its output ends with: {status['log_tail'][-1500:]}",
                                         slug="stdio-server-failed")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)
        raise ServiceUnavailable(f"the stdio bridge of {server.name} did not start within {START_TIMEOUT_S:.0f} s",
                                 slug="stdio-server-failed")

    async def _drop(self, server: StdioServer, reason: str) -> None:
        sbx = server.sandbox
        if sbx is not None and sbx.state == "running":
            sandbox = self.platform.services.get("sandbox") if self.platform is not None else None
            if sandbox is not None:
                await sandbox.terminate(sbx, reason)
        if sbx is not None:
            self._note_ended(server)

    async def stop(self, upstream_id: str) -> None:
        server = self.servers.pop(upstream_id, None)
        if server is not None:
            await self._drop(server, "upstream_deleted")

    async def stop_all(self) -> None:
        for upstream_id in list(self.servers):
            with contextlib.suppress(Exception):
                await self.stop(upstream_id)

    def describe(self, upstream_id: str) -> dict[str, Any] | None:
        server = self.servers.get(upstream_id)
        return server.describe() if server is not None else None
