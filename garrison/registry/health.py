"""Health checks of remote registry entries: initialize (or discover) and tools/list with the
stored credential; status, latency and tool-list history; unhealthy entries are marked and the
gateway leaves them out until they pass again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from garrison.core.clock import rfc3339, utcnow

if TYPE_CHECKING:
    from garrison.registry.schemas import Entry
    from garrison.registry.service import RegistryService

log = logging.getLogger("garrison.registry.health")


async def probe(url: str, transport: str, headers: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """One check: ok, latency (ms), the tool list, or the error."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            if transport == "sse":
                client = Client(sse_client(url, headers=headers), mode="legacy")  # type: ignore[arg-type]
                async with client:
                    result = await client.list_tools()
            else:
                async with httpx2.AsyncClient(headers=headers, timeout=timeout_s) as http:
                    async with Client(streamable_http_client(url, http_client=http)) as client:  # type: ignore[arg-type]
                        result = await client.list_tools()
        tools = [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in result.tools]
        return {"ok": True, "latency_ms": (time.perf_counter() - started) * 1000, "tools": tools, "error": None}
    except BaseException as exc:  # every failure is a data point, never a crash of the checker
        if isinstance(exc, asyncio.CancelledError) and asyncio.current_task().cancelling():  # type: ignore[union-attr]
            raise
        return {"ok": False, "latency_ms": (time.perf_counter() - started) * 1000, "tools": None,
                "error": _describe(exc)}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:300]


def remote_of(entry: Entry) -> tuple[str, str] | None:
    for remote in entry.server.get("remotes") or []:
        url = remote.get("url", "")
        if remote.get("type") in ("streamable-http", "sse") and "{" not in url:
            return url, remote["type"]
    return None


class HealthChecker:
    def __init__(self, service: RegistryService) -> None:
        self.service = service
        self._task: asyncio.Task[None] | None = None
        self._failures: dict[tuple[str, str], int] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="registry-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.service.settings.health_interval_s)
            try:
                await self.run_once()
            except Exception:
                log.exception("health round failed")

    async def _headers(self, name: str) -> dict[str, str]:
        platform = self.service.platform
        tools = platform.services.get("tools") if platform is not None else None
        hook = getattr(tools, "registry_headers", None)
        return await hook(name) if hook is not None else {}

    async def check(self, entry: Entry) -> dict[str, Any] | None:
        remote = remote_of(entry)
        if remote is None:
            return None
        key = (entry.name, entry.version)
        try:
            headers = await self._headers(entry.name)
        except Exception as exc:  # a credential that cannot be obtained is a failed check
            result: dict[str, Any] = {"ok": False, "latency_ms": 0.0, "tools": None, "error": str(exc)[:300]}
        else:
            result = await probe(remote[0], remote[1], headers, self.service.settings.health_timeout_s)
        now = utcnow()
        failures = 0 if result["ok"] else self._failures.get(key, 0) + 1
        self._failures[key] = failures
        previous = self.service.health.get(key, {})
        status = "healthy" if result["ok"] else (
            "unhealthy" if failures >= self.service.settings.unhealthy_after else previous.get("status", "unknown"))
        info: dict[str, Any] = {"status": status, "checkedAt": rfc3339(now),
                                "latencyMs": round(result["latency_ms"], 2), "consecutiveFailures": failures}
        if result["error"]:
            info["error"] = result["error"]
        if result["tools"] is not None:
            info["toolCount"] = len(result["tools"])
            changes = await self.service.observe_tools(entry.name, entry.version, result["tools"])
            if changes:
                info["toolsChanged"] = changes
        self.service.health[key] = info
        await self.service.store.record_health([{
            "name": entry.name, "version": entry.version, "checked_at": now, "ok": result["ok"],
            "latency_ms": result["latency_ms"], "tool_count": info.get("toolCount"), "error": result["error"],
        }])
        return info

    async def run_once(self, name: str | None = None) -> dict[str, dict[str, Any]]:
        entries = await self.service.store.all_entries(include_deleted=False)
        targets = [e for e in entries if e.is_latest and (name is None or e.name == name)]
        results: dict[str, dict[str, Any]] = {}
        sem = asyncio.Semaphore(16)

        async def one(e: Entry) -> None:
            async with sem:
                info = await self.check(e)
            if info is not None:
                results[f"{e.name}@{e.version}"] = info

        await asyncio.gather(*(one(e) for e in targets))
        return results
