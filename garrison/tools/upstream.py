"""Upstream MCP connections: one per (downstream session, upstream), each owned by its own task.

A connection's ``mcp.Client`` lives inside one asyncio task (anyio scopes must exit in the
task that entered them); callers on other tasks use it through the client's streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

log = logging.getLogger("garrison.tools.upstream")

LogSink = Callable[[types.LoggingMessageNotificationParams], Awaitable[None]]


class UpstreamError(Exception):
    """The upstream could not be reached or broke the protocol (not a tool-level error)."""


class UpstreamConnection:
    def __init__(self, url: str, headers: dict[str, str], *, connect_timeout_s: float,
                 log_sink: LogSink | None = None, mode: str = "auto") -> None:
        self.url, self.headers, self.mode = url, headers, mode
        self.connect_timeout_s = connect_timeout_s
        self.log_sink = log_sink
        self.client: Client | None = None
        self.last_used = time.monotonic()
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    async def _on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        if self.log_sink is not None:
            with contextlib.suppress(Exception):  # a gone downstream must not break the upstream
                await self.log_sink(params)

    async def _run(self) -> None:
        try:
            async with httpx2.AsyncClient(headers=self.headers, timeout=httpx2.Timeout(
                    self.connect_timeout_s, read=None)) as http:
                transport = streamable_http_client(self.url, http_client=http)
                async with Client(transport, mode=self.mode, logging_callback=self._on_log,  # type: ignore[arg-type]
                                  log_level="debug" if self.log_sink else None) as client:
                    self.client = client
                    self._ready.set()
                    await self._closing.wait()
        except BaseException as exc:  # reported to whoever waits for the connection
            self._error = exc
            if not isinstance(exc, asyncio.CancelledError | GeneratorExit):
                log.debug("upstream %s closed with %r", self.url, exc)
        finally:
            self.client = None
            self._ready.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mcp-upstream {self.url}")
        try:
            await asyncio.wait_for(self._ready.wait(), self.connect_timeout_s)
        except TimeoutError as exc:
            await self.close()
            raise UpstreamError(f"no MCP handshake with {self.url} within {self.connect_timeout_s:g} s") from exc
        if self.client is None:
            err = self._error
            await self.close()
            raise UpstreamError(f"cannot connect to {self.url}: {_describe(err)}")

    @property
    def alive(self) -> bool:
        return self.client is not None and self._task is not None and not self._task.done()

    async def list_tools(self) -> list[types.Tool]:
        client = self._client()
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(100):  # bounded: a hostile upstream cannot page forever
            result = await client.list_tools(cursor=cursor) if cursor else await client.list_tools()
            tools.extend(result.tools)
            cursor = result.next_cursor
            if not cursor:
                break
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any], *, progress: Any = None,
                        meta: dict[str, Any] | None = None) -> types.CallToolResult:
        self.last_used = time.monotonic()
        return await self._client().call_tool(name, arguments, progress_callback=progress,
                                              meta=meta)  # type: ignore[arg-type]

    async def ping(self) -> None:
        client = self._client()
        if client.session.protocol_version in ("2026-07-28",):
            await client.list_tools()
        else:
            await client.send_ping()

    def _client(self) -> Client:
        if self.client is None:
            raise UpstreamError(f"connection to {self.url} is closed")
        return self.client

    async def close(self) -> None:
        self._closing.set()
        task = self._task
        if task is not None and not task.done() and self.client is None:
            task.cancel()  # still handshaking with an upstream that does not answer: nothing to end politely
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 5)
            except (TimeoutError, Exception):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


def _describe(err: BaseException | None) -> str:
    if err is None:
        return "connection closed"
    if isinstance(err, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in err.exceptions[:3])
    return f"{type(err).__name__}: {err}"[:300]


class UpstreamPool:
    """Connections keyed by (owner, upstream id); an owner is a downstream session (or caller)."""

    def __init__(self, connect_timeout_s: float) -> None:
        self.connect_timeout_s = connect_timeout_s
        self._conns: dict[tuple[str, str], UpstreamConnection] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def __len__(self) -> int:
        return len(self._conns)

    async def get(self, owner: str, upstream_id: str, url: str,
                  headers: Callable[[], Awaitable[dict[str, str]]], log_sink: LogSink | None = None) -> UpstreamConnection:
        key = (owner, upstream_id)
        conn = self._conns.get(key)
        if conn is not None and conn.alive:
            conn.log_sink = log_sink or conn.log_sink  # logs go to the caller of the latest call
            return conn
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._conns.get(key)
            if conn is not None and conn.alive:
                return conn
            if conn is not None:
                await conn.close()
            conn = UpstreamConnection(url, await headers(), connect_timeout_s=self.connect_timeout_s,
                                      log_sink=log_sink)
            await conn.start()
            self._conns[key] = conn
            return conn

    async def drop(self, owner: str, upstream_id: str) -> None:
        conn = self._conns.pop((owner, upstream_id), None)
        self._locks.pop((owner, upstream_id), None)
        if conn is not None:
            await conn.close()

    async def close_owner(self, owner: str) -> None:
        for key in [k for k in self._conns if k[0] == owner]:
            await self.drop(*key)

    async def close_upstream(self, upstream_id: str) -> None:
        for key in [k for k in self._conns if k[1] == upstream_id]:
            await self.drop(*key)

    async def sweep(self, prefix: str, idle_s: float) -> None:
        now = time.monotonic()
        for key in [k for k, c in self._conns.items() if k[0].startswith(prefix) and now - c.last_used > idle_s]:
            await self.drop(*key)

    def owners(self) -> set[str]:
        return {k[0] for k in self._conns}

    async def close_all(self) -> None:
        for key in list(self._conns):
            await self.drop(*key)
