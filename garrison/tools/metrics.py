"""Prometheus metrics of the gateway (default registry)."""

from prometheus_client import Counter, Gauge, Histogram

TOOL_CALLS = Counter("garrison_tool_calls_total", "MCP tool calls through the gateway",
                     ["upstream", "outcome"])
TOOL_CALL_SECONDS = Histogram("garrison_tool_call_duration_seconds", "Duration of tool calls",
                              ["upstream"], buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
UPSTREAM_SESSIONS = Gauge("garrison_tool_upstream_sessions", "Open upstream MCP sessions")
TOOL_RETRIES = Counter("garrison_tool_call_retries_total", "Tool calls sent again (idempotent tools only)",
                       ["upstream"])
