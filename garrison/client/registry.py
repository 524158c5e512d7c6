"""Client for the MCP registry (official API v0.1) and garrison's registry extras (/api/registry)."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from garrison.client.base import Client


def _enc(value: str) -> str:
    return quote(value, safe="")


class Registry:
    """``Registry(Client(url, key)).publish({...server.json...})``."""

    def __init__(self, client: Client) -> None:
        self.c = client

    def list(self, **params: Any) -> Any:
        return self.c.request("GET", "/v0.1/servers", params={k: v for k, v in params.items() if v is not None})

    def iter_all(self, *, include_deleted: bool = True, updated_since: str | None = None,
                 page: int = 100) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            body = self.list(cursor=cursor, limit=page, include_deleted=str(include_deleted).lower(),
                             updated_since=updated_since)
            yield from body.get("servers", [])
            cursor = (body.get("metadata") or {}).get("nextCursor")
            if not cursor:
                return

    def versions(self, name: str) -> Any:
        return self.c.request("GET", f"/v0.1/servers/{_enc(name)}/versions")

    def get(self, name: str, version: str = "latest") -> Any:
        return self.c.request("GET", f"/v0.1/servers/{_enc(name)}/versions/{_enc(version)}")

    def publish(self, server_json: dict[str, Any], *, force: bool = False) -> Any:
        return self.c.request("POST", "/v0.1/publish", json=server_json, params={"force": "true"} if force else None)

    def set_status(self, name: str, status: str, message: str | None = None, version: str | None = None) -> Any:
        path = f"/v0.1/servers/{_enc(name)}" + (f"/versions/{_enc(version)}" if version else "") + "/status"
        return self.c.request("PATCH", path, json={"status": status, "statusMessage": message})

    def delete(self, name: str, version: str) -> Any:
        return self.c.request("DELETE", f"/v0.1/servers/{_enc(name)}/versions/{_enc(version)}")

    def import_entries(self, entries: builtins.list[Any]) -> Any:
        return self.c.request("POST", "/api/registry/import", json=entries)

    def diff(self, name: str, version: str, from_version: str | None = None) -> Any:
        params = {"from": from_version} if from_version else None
        return self.c.request("GET", f"/api/registry/servers/{_enc(name)}/versions/{_enc(version)}/diff", params=params)

    def health(self, name: str) -> Any:
        return self.c.request("GET", f"/api/registry/servers/{_enc(name)}/health")

    def check_health(self, name: str | None = None) -> Any:
        return self.c.request("POST", "/api/registry/health/check", params={"name": name} if name else None)
