"""garrison's own fixture MCP server: real protocol over a real socket, for tests, benchmarks
and the conformance run. ``python -m garrison.tools.fixture_server --port 9300``.

Its tools exercise what a gateway must pass through or contain: progress, logging,
slow and failing calls, huge results, and ``whoami`` (which headers reached the upstream).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings


def build(name: str = "fixture") -> MCPServer:
    server = MCPServer(name, version="1.0.0", log_level="WARNING")

    @server.tool(description="Echo the given text back.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Sleep for the given seconds, then answer 'done'.")
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    @server.tool(description="Always fails with an error result.")
    def fail(message: str = "boom") -> str:
        raise ToolError(message)

    @server.tool(description="Return a text of the given size in bytes.")
    def huge(size: int) -> str:
        return "x" * size

    @server.tool(description="Report progress and log messages in the given number of steps.")
    async def progress(steps: int, ctx: Context) -> str:
        for i in range(steps):
            await ctx.report_progress(i + 1, steps, f"step {i + 1}")
            await ctx.info(f"step {i + 1} of {steps}")
        return f"{steps} steps"

    @server.tool(description="Which Authorization and X-Api-Key headers reached this server.")
    def whoami(ctx: Context) -> dict[str, Any]:
        headers = ctx.headers or {}
        return {"authorization": headers.get("authorization"), "x_api_key": headers.get("x-api-key")}

    return server


def app(name: str = "fixture", *, stateless: bool = False, json_response: bool = False) -> Any:
    return build(name).streamable_http_app(
        stateless_http=stateless, json_response=json_response,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9300)
    parser.add_argument("--stateless", action="store_true")
    args = parser.parse_args()
    uvicorn.run(app(stateless=args.stateless), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
