"""MCP sub-registry (official Registry API v0.1), offline sync, health checks, tool schema diffs."""
