"""Client for the MCP gateway's management API (/api/tools). For tool calls use any MCP client
on ``<garrison>/mcp/<virtual server>`` with a garrison key (scope tools:call)."""

from __future__ import annotations

from typing import Any

from garrison.client.base import Client


class Tools:
    def __init__(self, client: Client) -> None:
        self.c = client

    def add_upstream(self, name: str, url: str | None = None, *, from_registry: str | None = None,
                     auth: dict[str, Any] | None = None, **fields: Any) -> Any:
        body = {"name": name, "url": url, "from_registry": from_registry, "auth": auth or {"kind": "none"}, **fields}
        return self.c.request("POST", "/api/tools/upstreams", json={k: v for k, v in body.items() if v is not None})

    def add_openapi(self, name: str, base_url: str, document: dict[str, Any], **fields: Any) -> Any:
        return self.c.request("POST", "/api/tools/openapi",
                              json={"name": name, "base_url": base_url, "document": document, **fields})

    def upstreams(self) -> Any:
        return self.c.request("GET", "/api/tools/upstreams")

    def remove_upstream(self, name: str) -> Any:
        return self.c.request("DELETE", f"/api/tools/upstreams/{name}")

    def create_virtual_server(self, name: str, tools: list[dict[str, Any]], **fields: Any) -> Any:
        return self.c.request("POST", "/api/tools/virtual-servers", json={"name": name, "tools": tools, **fields})

    def virtual_servers(self) -> Any:
        return self.c.request("GET", "/api/tools/virtual-servers")

    def remove_virtual_server(self, name: str) -> Any:
        return self.c.request("DELETE", f"/api/tools/virtual-servers/{name}")

    def search(self, virtual_server: str, query: str, limit: int = 10) -> Any:
        return self.c.request("GET", "/api/tools/search",
                              params={"virtual_server": virtual_server, "q": query, "limit": limit})
