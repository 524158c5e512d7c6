"""Base clients over httpx. Every non-2xx answer becomes a typed :class:`ApiError`."""

from __future__ import annotations

from typing import Any

import httpx

from garrison.client.errors import ApiError, error_for

__all__ = ["ApiError", "AsyncClient", "Client"]
DEFAULT_URL = "http://127.0.0.1:8400"


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        problem = response.json()
        if not isinstance(problem, dict):
            problem = {"detail": str(problem)}
    except ValueError:
        problem = {"detail": response.text[:500] or response.reason_phrase}
    raise error_for(response.status_code, problem)


def _decode(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    if "json" in response.headers.get("content-type", ""):
        return response.json()
    return response.text


class _Foundation:
    """Foundation endpoints shared by the sync and async clients (built on `request`)."""

    def whoami(self) -> Any:
        return self.request("GET", "/api/whoami")  # type: ignore[attr-defined]

    def list_tenants(self) -> Any:
        return self.request("GET", "/api/tenants")  # type: ignore[attr-defined]

    def create_tenant(self, name: str) -> Any:
        return self.request("POST", "/api/tenants", json={"name": name})  # type: ignore[attr-defined]

    def create_key(self, scopes: list[str], *, name: str = "api key", principal: str = "service",
                   kind: str = "service", tenant: str | None = None, ttl_s: int | None = None,
                   attributes: dict[str, Any] | None = None) -> Any:
        body = {"scopes": scopes, "name": name, "principal": principal, "kind": kind, "tenant": tenant,
                "ttl_s": ttl_s, "attributes": attributes or {}}
        return self.request("POST", "/api/keys", json=body)  # type: ignore[attr-defined]

    def list_keys(self) -> Any:
        return self.request("GET", "/api/keys")  # type: ignore[attr-defined]

    def revoke_key(self, key_id: str) -> Any:
        return self.request("POST", f"/api/keys/{key_id}/revoke")  # type: ignore[attr-defined]

    def rotate_key(self, key_id: str) -> Any:
        return self.request("POST", f"/api/keys/{key_id}/rotate")  # type: ignore[attr-defined]

    def mint_token(self, scopes: list[str] | None = None, ttl_s: int = 900, session_id: str | None = None) -> Any:
        body = {"scopes": scopes, "ttl_s": ttl_s, "session_id": session_id}
        return self.request("POST", "/api/tokens", json=body)  # type: ignore[attr-defined]

    def audit_tail(self, limit: int = 50) -> Any:
        return self.request("GET", "/api/audit", params={"limit": limit})  # type: ignore[attr-defined]

    def audit_verify(self) -> Any:
        return self.request("POST", "/api/audit/verify")  # type: ignore[attr-defined]


class Client(_Foundation):
    def __init__(self, url: str = DEFAULT_URL, key: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None, verify: Any = True) -> None:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport,
                                 verify=verify)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        response = self.http.request(method, path, **kw)
        _raise_for(response)
        return _decode(response)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    def __init__(self, url: str = DEFAULT_URL, key: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None, verify: Any = True) -> None:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout, transport=transport,
                                      verify=verify)

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        response = await self.http.request(method, path, **kw)
        _raise_for(response)
        return _decode(response)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # The async twins of the foundation calls.
    async def whoami(self) -> Any:
        return await self.request("GET", "/api/whoami")

    async def create_key(self, scopes: list[str], **kw: Any) -> Any:
        body = {"scopes": scopes, **{k: v for k, v in kw.items() if v is not None}}
        return await self.request("POST", "/api/keys", json=body)

    async def revoke_key(self, key_id: str) -> Any:
        return await self.request("POST", f"/api/keys/{key_id}/revoke")

    async def mint_token(self, scopes: list[str] | None = None, ttl_s: int = 900,
                         session_id: str | None = None) -> Any:
        return await self.request("POST", "/api/tokens",
                                  json={"scopes": scopes, "ttl_s": ttl_s, "session_id": session_id})
