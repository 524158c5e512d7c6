"""MCP gateway: virtual servers, upstream sessions, credentials, OpenAPI-to-MCP, tool search."""
