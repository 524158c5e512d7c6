"""garrison's own fixture MCP server: real protocol over a real socket, for tests, benchmarks
and the conformance run. ``python -m garrison.tools.fixture_server --port 9300``.

Its tools exercise what a gateway must pass through or contain: progress, logging,
slow and failing calls, huge results, and ``whoami`` (which headers reached the upstream).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import Field

EVENTS: list[tuple[str, str]] = []
"""(tool, what happened) for ``wait``: started, finished, cancelled; read by tests in process."""


def build(name: str = "fixture") -> MCPServer:
    server = MCPServer(name, version="1.0.0", log_level="WARNING")

    @server.tool(description="Report the trace context (_meta traceparent, tracestate) this request carried.")
    def trace_context(ctx: Context) -> dict[str, Any]:
        meta = ctx.request_context.meta or {}
        get = meta.get if isinstance(meta, dict) else lambda k: getattr(meta, k, None)
        return {"traceparent": get("traceparent"), "tracestate": get("tracestate")}

    @server.tool(description="Echo the region, which 2026-07-28 clients also send as an Mcp-Param-Region header.")
    def region(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
        return region

    @server.tool(description="Wait the given seconds unless cancelled first; records what happened.")
    async def wait(seconds: float, label: str = "wait") -> str:
        EVENTS.append((label, "started"))
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            EVENTS.append((label, "cancelled"))
            raise
        EVENTS.append((label, "finished"))
        return "waited"

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

    _conformance_tools(server)
    return server


# A 1x1 PNG and a tiny WAV: the content types the MCP conformance suite asks for.
_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
_WAV = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA="


def _conformance_tools(server: MCPServer) -> None:
    """The tool names and results of the MCP conformance suite's server scenarios."""
    import mcp_types as types

    def resource() -> types.EmbeddedResource:
        return types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."))

    @server.tool(name="test_simple_text", description="Returns simple text content.")
    def simple_text() -> str:
        return "This is a simple text response for testing."

    @server.tool(name="test_image_content", description="Returns image content.")
    def image_content() -> list[Any]:
        return [types.ImageContent(type="image", data=_PNG, mime_type="image/png")]

    @server.tool(name="test_audio_content", description="Returns audio content.")
    def audio_content() -> list[Any]:
        return [types.AudioContent(type="audio", data=_WAV, mime_type="audio/wav")]

    @server.tool(name="test_embedded_resource", description="Returns an embedded resource.")
    def embedded_resource() -> list[Any]:
        return [resource()]

    @server.tool(name="test_multiple_content_types", description="Returns text, image and resource content.")
    def multiple() -> list[Any]:
        return [types.TextContent(type="text", text="Multiple content types test:"),
                types.ImageContent(type="image", data=_PNG, mime_type="image/png"), resource()]

    @server.tool(name="test_tool_with_logging", description="Sends log messages while running.")
    async def with_logging(ctx: Context) -> str:
        for message in ("Tool execution started", "Tool processing data", "Tool execution completed"):
            await ctx.info(message)
            await asyncio.sleep(0.05)
        return "Logging test completed"

    @server.tool(name="test_error_handling", description="Always returns an error result.")
    def error_handling() -> str:
        raise ToolError("This tool intentionally returns an error for testing")

    @server.tool(name="test_tool_with_progress", description="Reports progress while running.")
    async def with_progress(ctx: Context) -> str:
        for step in (0, 50, 100):
            await ctx.report_progress(step, 100, f"Completed step {step} of 100")
            await asyncio.sleep(0.05)
        return "Progress test completed"


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
