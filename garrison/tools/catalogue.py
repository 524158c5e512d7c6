"""What a virtual server exposes: tools resolved from upstreams and local tool servers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from garrison.core.principal import Principal

SEARCH_TOOL = "search_tools"


@dataclass(slots=True)
class LocalTool:
    """A tool served in process by another garrison layer (e.g. the sandbox's execute_code).

    ``handler(principal, arguments)`` returns a string, a dict (structured content), or an
    ``mcp_types.CallToolResult``; the layer that owns it enforces its own policy.
    """

    name: str
    description: str
    input_schema: dict[str, Any]
    handler: Callable[[Principal, dict[str, Any]], Awaitable[Any]]
    idempotent: bool = False


@dataclass(slots=True)
class CatalogueTool:
    exposed: str
    upstream: str  # upstream or local server name
    tool: str  # name at the upstream
    description: str | None
    input_schema: dict[str, Any]
    upstream_id: str | None = None  # None for local tools
    local: LocalTool | None = None
    annotations: dict[str, Any] = field(default_factory=dict)

    def as_mcp(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.exposed, "inputSchema": self.input_schema or {"type": "object"}}
        if self.description:
            out["description"] = self.description
        if self.annotations:
            out["annotations"] = self.annotations
        return out


SEARCH_TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "description": "What the tool should do, in a few words."},
        "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
    },
    "required": ["query"],
}
SEARCH_TOOL_DESCRIPTION = ("Find tools of this server by what they do: returns the best matching tool names, "
                           "descriptions and input schemas, so only those need loading.")
