"""Client for the telemetry layer: trace search, one trace, sessions, usage, OTLP forwarding."""

from __future__ import annotations

from typing import Any

from garrison.client.base import Client


class Telemetry:
    """``Telemetry(Client(url, key)).traces(session_id="conv-1")``."""

    def __init__(self, client: Client) -> None:
        self.c = client

    def traces(self, **filters: Any) -> Any:
        """Filters: since, until, agent, session_id, user, model, kind, status, min_cost_usd,
        min_duration_ms, attr (list of "key=value"), limit, cursor."""
        return self.c.request("GET", "/api/traces", params={k: v for k, v in filters.items() if v is not None})

    def trace(self, trace_id: str) -> Any:
        return self.c.request("GET", f"/api/traces/{trace_id}")

    def session(self, session_id: str, limit: int = 200) -> Any:
        return self.c.request("GET", f"/api/sessions/{session_id}", params={"limit": limit})

    def usage(self, since: str | None = None, until: str | None = None) -> Any:
        params = {k: v for k, v in (("since", since), ("until", until)) if v is not None}
        return self.c.request("GET", "/api/telemetry/usage", params=params)

    def exporter(self) -> Any:
        return self.c.request("GET", "/api/telemetry/exporter")

    def set_exporter(self, endpoint: str, headers: dict[str, str] | None = None, enabled: bool = True,
                     include_content: bool = False) -> Any:
        return self.c.request("PUT", "/api/telemetry/exporter",
                              json={"endpoint": endpoint, "headers": headers or {}, "enabled": enabled,
                                    "include_content": include_content})

    def delete_exporter(self) -> Any:
        return self.c.request("DELETE", "/api/telemetry/exporter")

    def apply_retention(self) -> Any:
        return self.c.request("POST", "/api/telemetry/retention")
