"""Local stdio MCP servers from the registry, run inside a garrison sandbox.

The package is a real wheel built here (a stdlib-only JSON-RPC stdio server with a console
script), put into a temporary wheelhouse; the upstream is made ``from_registry`` and its
tools are called through a virtual server with the ``mcp`` SDK client over a real socket.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import socket
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from garrison.config import Settings
from tests.sandbox.helpers import make_backend
from tests.tools.servers import serve_in_loop
from tests.tools.test_gateway import mcp_client, text

PACKAGE, VERSION, ENTRY = "garrison-test-adder", "1.0.0", "io.github.acme/adder"

SERVER_CODE = r'''
import json, os, socket, sys

TOOLS = [
    {"name": "add", "description": "Add two integers.",
     "inputSchema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                     "required": ["a", "b"]}},
    {"name": "whoami", "description": "Where this process runs.",
     "inputSchema": {"type": "object", "properties": {"port": {"type": "integer"}}}},
    {"name": "crash", "description": "End this server process.", "inputSchema": {"type": "object"}},
    {"name": "kill_all", "description": "Kill every process of the sandbox user.", "inputSchema": {"type": "object"}},
]


def reach(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def answer(msg):
    method, params = msg.get("method"), msg.get("params") or {}
    if method == "initialize":
        return {"protocolVersion": params.get("protocolVersion", "2025-06-18"), "capabilities": {"tools": {}},
                "serverInfo": {"name": "adder", "version": "1.0.0"}}
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "tools/call":
        args = params.get("arguments") or {}
        if params.get("name") == "add":
            return {"content": [{"type": "text", "text": str(args["a"] + args["b"])}]}
        if params.get("name") == "whoami":
            info = {"uid": os.getuid(), "cwd": os.getcwd(), "pid": os.getpid(),
                    "argv": sys.argv[1:], "greeting": os.environ.get("ADDER_GREETING"),
                    "reached_host": reach(int(args.get("port") or 1))}
            return {"content": [{"type": "text", "text": json.dumps(info)}], "structuredContent": info}
        if params.get("name") == "crash":
            os._exit(3)
        if params.get("name") == "kill_all":
            os.kill(-1, 9)
    raise KeyError(method)


def main():
    for line in sys.stdin:
        msg = json.loads(line)
        if "id" not in msg:
            continue
        try:
            out = {"jsonrpc": "2.0", "id": msg["id"], "result": answer(msg)}
        except KeyError:
            out = {"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "unknown method"}}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
'''


FASTMCP_PACKAGE = "garrison-test-fastmcp-adder"
FASTMCP_CODE = """
import os
from mcp.server.fastmcp import FastMCP

mcp = FastMCP("adder")


@mcp.tool()
def add(a: int, b: int) -> int:
    \"\"\"Add two integers.\"\"\"
    return a + b


@mcp.tool()
def whoami() -> dict:
    \"\"\"Where this process runs.\"\"\"
    return {"uid": os.getuid(), "cwd": os.getcwd()}


def main():
    mcp.run()
"""
ROOT = Path(__file__).resolve().parents[2]
MCP_WHEELS = ROOT / ".garrison-test-cache" / "mcp-sdk-wheelhouse"


def build_wheel(directory: Path, package: str = PACKAGE, code: str = SERVER_CODE, requires: str = "") -> Path:
    """A pure-Python wheel of a stdio server, with a console script named like the package."""
    module, dist = package.replace("-", "_"), f"{package.replace('-', '_')}-{VERSION}"
    files = {
        f"{module}/__init__.py": code.encode(),
        f"{dist}.dist-info/METADATA": (f"Metadata-Version: 2.1\nName: {package}\nVersion: {VERSION}\n"
                                       + (f"Requires-Dist: {requires}\n" if requires else "")).encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: garrison-tests\nRoot-Is-Purelib: true\n"
                                   b"Tag: py3-none-any\n",
        f"{dist}.dist-info/entry_points.txt": f"[console_scripts]\n{package} = {module}:main\n".encode(),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("wheelhouse")
    directory.chmod(0o755)
    build_wheel(directory)
    build_wheel(directory, FASTMCP_PACKAGE, FASTMCP_CODE, "mcp>=1.9,<2")
    if not list(MCP_WHEELS.glob("mcp-*.whl")):  # the public mcp SDK and its dependencies, fetched once and kept
        MCP_WHEELS.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--only-binary=:all:", "mcp>=1.9,<2", "-d", str(MCP_WHEELS)], check=True, timeout=600)
    for wheel in MCP_WHEELS.glob("*.whl"):
        shutil.copy(wheel, directory)
    return directory


@pytest.fixture(params=["bubblewrap", "gvisor"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    make_backend(request.param, tmp_path)  # skips (fails in CI) when the backend is missing
    return str(request.param)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


@pytest.fixture
def settings(data_dir: Path, db_url: str, wheelhouse: Path, backend: str,
             monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("GARRISON_SANDBOX_WHEELHOUSE", str(wheelhouse))
    monkeypatch.setenv("GARRISON_SANDBOX_BACKEND", backend)
    return Settings(data_dir=data_dir, database_url=db_url, audit_flush_ms=20)


@pytest.fixture
async def base_url(app) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    async with serve_in_loop(app) as url:
        yield url


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A listener on the host's loopback: a sandboxed process must not reach it."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        yield int(srv.getsockname()[1])


async def publish(client, name: str, identifier: str) -> None:  # type: ignore[no-untyped-def]
    """A registry entry whose package is a pypi stdio server."""
    doc = {"name": name, "description": "a local stdio server", "version": "1.0.0", "packages": [{
        "registryType": "pypi", "identifier": identifier, "version": VERSION, "transport": {"type": "stdio"},
        "packageArguments": [{"type": "positional", "value": "--fast"}],
        "environmentVariables": [{"name": "ADDER_GREETING", "default": "hello"}]}]}
    r = await client.post("/v0.1/publish", json=doc)
    assert r.status_code == 200, r.text


async def test_stdio_server_runs_in_a_sandbox(client, platform, base_url, admin_key, host_listener, backend):
    await publish(client, ENTRY, PACKAGE)
    r = await client.post("/api/tools/upstreams", json={"name": "adder", "from_registry": ENTRY})
    assert r.status_code == 201, r.text
    assert r.json()["url"] == f"stdio-sandbox://pypi/{PACKAGE}=={VERSION}"
    r = await client.post("/api/tools/virtual-servers", json={"name": "local", "tools": [{"upstream": "adder"}]})
    assert r.status_code == 201, r.text
    tools = platform.services["tools"]

    async with mcp_client(f"{base_url}/mcp/local", admin_key) as mcp:
        names = {t.name for t in (await mcp.list_tools()).tools}
        assert {"adder__add", "adder__whoami"} <= names
        result = await mcp.call_tool("adder__add", {"a": 2, "b": 40})
        assert not result.is_error and text(result) == "42"
        who = await mcp.call_tool("adder__whoami", {"port": host_listener})
        info = who.structured_content
        # The server process runs as the sandbox user, in its workspace, without the host's network,
        # with the registry entry's fixed argument and environment variable.
        assert info["uid"] == 1000 and info["cwd"] == "/workspace"
        assert info["reached_host"] is False
        assert info["argv"] == ["--fast"] and info["greeting"] == "hello"

    up = tools.get_upstream(_admin(platform), "adder")
    status = tools.stdio.describe(up.id)
    assert status["state"] == "running" and status["backend"] == backend and status["sandboxes_started"] == 1
    sandbox = platform.services["sandbox"]
    sbx = sandbox.sandboxes[status["sandbox_id"]]
    assert sbx.metadata["tools_upstream"] == "adder"

    # The sandbox dies: the next call reports nothing broken to the caller, starts a new
    # sandbox, and the upstream's status says which sandbox ended and why.
    await sandbox.terminate(sbx, "killed_by_test")
    async with mcp_client(f"{base_url}/mcp/local", admin_key) as mcp:
        result = await mcp.call_tool("adder__add", {"a": 1, "b": 2})
        assert not result.is_error and text(result) == "3"
        # The server process itself ends mid-call: that call fails with the reason, and the
        # next one gets a new process (a new MCP session) in the same sandbox.
        crashed = await mcp.call_tool("adder__crash", {})
        assert crashed.is_error and "ended" in text(crashed)
        result = await mcp.call_tool("adder__add", {"a": 5, "b": 5})
        assert not result.is_error and text(result) == "10"
    status = tools.stdio.describe(up.id)
    assert status["sandboxes_started"] == 2 and status["state"] == "running"
    assert status["last_sandbox"]["id"] == sbx.id and status["last_sandbox"]["killed_reason"] == "killed_by_test"

    # The sandbox dies under a call (its processes killed from inside): the call fails naming the
    # sandbox, and the next call runs in a third sandbox.
    second = status["sandbox_id"]
    async with mcp_client(f"{base_url}/mcp/local", admin_key) as mcp:
        killed = await mcp.call_tool("adder__kill_all", {})
        # (bubblewrap: the in-sandbox agent dies too, so the sandbox ends; gVisor: the agent is
        # out of the sandbox user's reach, so the bridge is reported as exited.)
        assert killed.is_error and second in text(killed), text(killed)
        assert "ended" in text(killed) or "exited" in text(killed), text(killed)
        result = await mcp.call_tool("adder__add", {"a": 20, "b": 22})
        assert not result.is_error and text(result) == "42"
    status = tools.stdio.describe(up.id)
    assert status["sandboxes_started"] == 3 and status["last_sandbox"]["id"] == second

    # Deleting the upstream ends its sandbox.
    r = await client.delete("/api/tools/upstreams/adder")
    assert r.status_code == 204, r.text
    assert status["sandbox_id"] not in sandbox.sandboxes


async def test_stdio_package_missing_from_the_wheelhouse_is_a_clear_400(client, backend):
    await publish(client, "io.github.acme/missing", "garrison-no-such-package")
    r = await client.post("/api/tools/upstreams", json={"name": "missing", "from_registry": "io.github.acme/missing"})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "garrison-no-such-package==1.0.0" in detail and "wheelhouse" in detail
    doc = {"name": "io.github.acme/npm", "description": "stdio", "version": "1.0.0", "packages": [
        {"registryType": "npm", "identifier": "@acme/local", "version": "1.0.0", "transport": {"type": "stdio"}}]}
    assert (await client.post("/v0.1/publish", json=doc)).status_code == 200
    r = await client.post("/api/tools/upstreams", json={"name": "npm", "from_registry": "io.github.acme/npm"})
    assert r.status_code == 400 and "pypi" in r.json()["detail"]


async def test_an_mcp_sdk_fastmcp_stdio_server_runs_in_a_sandbox(client, base_url, admin_key, backend):
    """The public mcp SDK's FastMCP server, unmodified, over stdio inside the sandbox."""
    await publish(client, "io.github.acme/fastmcp", FASTMCP_PACKAGE)
    r = await client.post("/api/tools/upstreams", json={"name": "fast", "from_registry": "io.github.acme/fastmcp"})
    assert r.status_code == 201, r.text
    r = await client.post("/api/tools/virtual-servers", json={"name": "sdk", "tools": [{"upstream": "fast"}]})
    assert r.status_code == 201, r.text
    async with mcp_client(f"{base_url}/mcp/sdk", admin_key) as mcp:
        assert {"fast__add", "fast__whoami"} <= {t.name for t in (await mcp.list_tools()).tools}
        result = await mcp.call_tool("fast__add", {"a": 2, "b": 40})
        assert not result.is_error and "42" in text(result)
        who = await mcp.call_tool("fast__whoami", {})
        assert '"uid": 1000' in text(who) and "/workspace" in text(who)


def _admin(platform):  # type: ignore[no-untyped-def]
    from garrison.core.principal import Principal

    tenant = next(t for (t, _) in platform.services["tools"].upstreams)
    return Principal(id="test", tenant_id=tenant, kind="service", scopes=frozenset(), name="test")
