"""Clients for the state API (/api/state) and the memory API (/api/memory).

``Memory(Client(url, key)).put(["users", "alice"], "seat", {"text": "window seat"})``
"""

from __future__ import annotations

from typing import Any

from garrison.client.base import AsyncClient, Client


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class State:
    def __init__(self, client: Client) -> None:
        self.c = client

    def stats(self) -> Any:
        return self.c.request("GET", "/api/state/stats")

    def retention(self) -> Any:
        return self.c.request("GET", "/api/state/retention")

    def set_retention(self, *, keep_last: int | None = None, max_age_s: float | None = None,
                      idle_thread_s: float | None = None) -> Any:
        return self.c.request("PUT", "/api/state/retention",
                              json={"keep_last": keep_last, "max_age_s": max_age_s, "idle_thread_s": idle_thread_s})

    def prune(self, *, keep_last: int | None = None, max_age_s: float | None = None,
              idle_thread_s: float | None = None) -> Any:
        policy = _drop_none({"keep_last": keep_last, "max_age_s": max_age_s, "idle_thread_s": idle_thread_s})
        return self.c.request("POST", "/api/state/prune", json=policy or None)


class Memory:
    def __init__(self, client: Client) -> None:
        self.c = client

    def put(self, namespace: list[str], key: str, value: dict[str, Any], *, ttl_minutes: float | None = None,
            index: bool = True) -> Any:
        return self.c.request("POST", "/api/memory/records", json=_drop_none(
            {"namespace": namespace, "key": key, "value": value, "ttl_minutes": ttl_minutes, "index": index}))

    def get(self, namespace: list[str], key: str) -> Any:
        return self.c.request("GET", "/api/memory/records", params={"namespace": ".".join(namespace), "key": key})

    def delete(self, namespace: list[str], key: str) -> Any:
        return self.c.request("DELETE", "/api/memory/records",
                              params={"namespace": ".".join(namespace), "key": key})

    def search(self, namespace_prefix: list[str] | None = None, *, query: str | None = None,
               filter: dict[str, Any] | None = None, limit: int = 10, offset: int = 0) -> Any:
        body = _drop_none({"namespace_prefix": namespace_prefix or [], "query": query, "filter": filter,
                           "limit": limit, "offset": offset})
        return self.c.request("POST", "/api/memory/search", json=body)["records"]

    def namespaces(self, prefix: list[str] | None = None, max_depth: int | None = None) -> Any:
        params = _drop_none({"prefix": ".".join(prefix or []) or None, "max_depth": max_depth})
        return self.c.request("GET", "/api/memory/namespaces", params=params)["namespaces"]

    def add_event(self, actor_id: str, session_id: str, payload: dict[str, Any]) -> Any:
        return self.c.request("POST", "/api/memory/events",
                              json={"actor_id": actor_id, "session_id": session_id, "payload": payload})

    def events(self, actor_id: str, session_id: str, limit: int = 100) -> Any:
        return self.c.request("GET", "/api/memory/events",
                              params={"actor_id": actor_id, "session_id": session_id, "limit": limit})["events"]


class AsyncMemory:
    def __init__(self, client: AsyncClient) -> None:
        self.c = client

    async def put(self, namespace: list[str], key: str, value: dict[str, Any], *,
                  ttl_minutes: float | None = None, index: bool = True) -> Any:
        return await self.c.request("POST", "/api/memory/records", json=_drop_none(
            {"namespace": namespace, "key": key, "value": value, "ttl_minutes": ttl_minutes, "index": index}))

    async def get(self, namespace: list[str], key: str) -> Any:
        return await self.c.request("GET", "/api/memory/records",
                                    params={"namespace": ".".join(namespace), "key": key})

    async def search(self, namespace_prefix: list[str] | None = None, *, query: str | None = None,
                     filter: dict[str, Any] | None = None, limit: int = 10, offset: int = 0) -> Any:
        body = _drop_none({"namespace_prefix": namespace_prefix or [], "query": query, "filter": filter,
                           "limit": limit, "offset": offset})
        return (await self.c.request("POST", "/api/memory/search", json=body))["records"]

    async def add_event(self, actor_id: str, session_id: str, payload: dict[str, Any]) -> Any:
        return await self.c.request("POST", "/api/memory/events",
                                    json={"actor_id": actor_id, "session_id": session_id, "payload": payload})

    async def events(self, actor_id: str, session_id: str, limit: int = 100) -> Any:
        return (await self.c.request("GET", "/api/memory/events",
                                     params={"actor_id": actor_id, "session_id": session_id,
                                             "limit": limit}))["events"]
