"""Upstream MCP connections: one per (downstream session, upstream), each owned by its own task.

A connection's ``mcp.Client`` lives inside one asyncio task (anyio scopes must exit in the
task that entered them); it does the handshake (initialize or discover), tools/list and ping.

``tools/call`` does not go through the SDK client: profiled, its per-request machinery
(memory streams, a task per POST, a task group per message, pydantic validation of every
message) cost about 2.8 ms of CPU per call, more than the whole budget for the gateway's
added latency. ``call_tool_raw`` sends the same JSON-RPC request on the same HTTP client,
session id and protocol headers the SDK negotiated (the SDK's own request stamp builds them),
reads a JSON or SSE answer itself, and hands the result on as the dict it arrived as.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx2
import mcp_types as types
import orjson
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

log = logging.getLogger("garrison.tools.upstream")

LogSink = Callable[[types.LoggingMessageNotificationParams], Awaitable[None]]


Notify = Callable[[str, dict[str, Any]], Awaitable[None]]  # (method, params) of an upstream notification
_ids = itertools.count(1)
SERVER_INFO_META_KEY = "io.modelcontextprotocol/serverInfo"
HEADER_MISMATCH = -32020  # 2026-07-28: the request's routing headers do not match its body


class UpstreamError(Exception):
    """The upstream could not be reached or broke the protocol (not a tool-level error).

    ``retryable``: the request did not reach a tool (connection refused or reset, 5xx, a lost
    session), so a call marked idempotent may be sent again.
    """

    def __init__(self, message: str, *, retryable: bool = False, session_lost: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable or session_lost
        self.session_lost = session_lost


class UpstreamRPCError(Exception):
    """The upstream answered the request with a JSON-RPC error (the call reached it)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (JSON-RPC error {code})")
        self.code = code


class ResultTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"more than {size} bytes")
        self.size = size


class UpstreamConnection:
    def __init__(self, url: str, headers: dict[str, str], *, connect_timeout_s: float,
                 log_sink: LogSink | None = None, mode: str = "auto",
                 transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self.url, self.headers, self.mode = url, headers, mode
        self.transport = transport  # e.g. into a sandbox through its relay (stdio servers); None: sockets
        self.connect_timeout_s = connect_timeout_s
        self.log_sink = log_sink
        self.client: Client | None = None
        self.http: httpx2.AsyncClient | None = None
        self.session_id: str | None = None  # the upstream's Mcp-Session-Id (legacy protocol), from initialize
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
                    self.connect_timeout_s, read=None), event_hooks={"response": [self._seen]},
                    transport=self.transport) as http:
                self.http = http
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
            self.http = None
            self._ready.set()

    async def _seen(self, response: httpx2.Response) -> None:
        """Remembers the session id the upstream hands out on initialize (used by call_tool_raw)."""
        sid = response.headers.get("mcp-session-id")
        if sid:
            self.session_id = sid

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mcp-upstream {self.url}")
        try:
            await asyncio.wait_for(self._ready.wait(), self.connect_timeout_s)
        except TimeoutError as exc:
            await self.close()
            raise UpstreamError(f"no MCP handshake with {self.url} within {self.connect_timeout_s:g} s",
                                retryable=True) from exc
        if self.client is None:
            err = self._error
            await self.close()
            raise UpstreamError(f"cannot connect to {self.url}: {_describe(err)}", retryable=True)

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

    async def call_tool_raw(self, name: str, arguments: dict[str, Any], *, meta: dict[str, Any] | None = None,
                            notify: Notify | None = None, progress: bool = False,
                            max_bytes: int = 1 << 20) -> dict[str, Any]:
        """One tools/call on the negotiated session; the result as the upstream sent it.

        Progress and log notifications that arrive on the request's stream go to ``notify``.
        Cancelled while in flight, the upstream is told: on the 2025-11-25 protocol with a
        ``notifications/cancelled`` for this request, on 2026-07-28 by closing the request's
        stream (that revision's cancellation signal).
        """
        client, http = self._client(), self.http
        if http is None:
            raise UpstreamError(f"connection to {self.url} is closed")
        self.last_used = time.monotonic()
        rid = f"g{next(_ids)}"  # never collides with the SDK client's integer ids on the same session
        params: dict[str, Any] = {"name": name, "arguments": arguments}
        out_meta = dict(meta or {})
        if progress:
            out_meta["progressToken"] = rid
        legacy = client.session.protocol_version not in ("2026-07-28",)
        for relisted in (False, True):
            data: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                                    "params": dict(params, _meta=dict(out_meta)) if out_meta else dict(params)}
            opts: dict[str, Any] = {}
            # The SDK session's stamp adds what the negotiated revision wants on every request
            # (MCP-Protocol-Version; at 2026-07-28 also Mcp-Method/Mcp-Name, Mcp-Param-* for
            # listed tools, and the _meta envelope).
            client.session._stamp(data, opts)  # type: ignore[arg-type]
            headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
                       **opts.get("headers", {})}
            if self.session_id and legacy:
                headers["mcp-session-id"] = self.session_id
            try:
                return await self._post(http, rid, data, headers, notify, max_bytes)
            except UpstreamRPCError as exc:
                if exc.code != HEADER_MISMATCH or relisted or legacy:
                    raise
                # The tool wants Mcp-Param-* headers, which the stamp builds only for tools this
                # connection has listed: list, then send once more (as the SDK client does).
                await self.list_tools()
            except asyncio.CancelledError:
                if legacy:
                    # Sent from its own task: this one is being cancelled and must not wait on it.
                    asyncio.get_running_loop().create_task(self._send_cancel(http, rid, headers))
                raise
        raise AssertionError("unreachable")

    async def _send_cancel(self, http: httpx2.AsyncClient, rid: str, headers: dict[str, str]) -> None:
        note = {"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": rid, "reason": "cancelled by the downstream caller"}}
        with contextlib.suppress(Exception):
            await http.post(self.url, content=orjson.dumps(note), headers=headers, timeout=self.connect_timeout_s)

    async def _post(self, http: httpx2.AsyncClient, rid: str, data: dict[str, Any], headers: dict[str, str],
                    notify: Notify | None, max_bytes: int) -> dict[str, Any]:
        try:
            async with http.stream("POST", self.url, content=orjson.dumps(data), headers=headers) as resp:
                status = resp.status_code
                ctype = resp.headers.get("content-type", "").lower()
                if status == 404 and "mcp-session-id" in headers:
                    raise UpstreamError(f"{self.url} no longer knows the session", session_lost=True)
                if status >= 500:
                    raise UpstreamError(f"{self.url} answered HTTP {status}{await _error_detail(resp)}",
                                        retryable=True)
                if ctype.startswith("text/event-stream") and status < 400:
                    return await self._read_sse(resp, rid, notify, max_bytes)
                body = await _read_capped(resp, max_bytes)
                if status >= 400 and not ctype.startswith("application/json"):
                    raise UpstreamError(f"{self.url} answered HTTP {status}")
                return _result_of(_parse(body), rid)
        except httpx2.TransportError as exc:
            # Connect errors never reached the upstream; a reset mid-request may have.
            raise UpstreamError(f"cannot reach {self.url}: {type(exc).__name__}: {exc}"[:300],
                                retryable=isinstance(exc, httpx2.ConnectError | httpx2.RemoteProtocolError)) from exc

    async def _read_sse(self, resp: httpx2.Response, rid: str, notify: Notify | None,
                        max_bytes: int) -> dict[str, Any]:
        data: list[str] = []
        size = 0
        lines = resp.aiter_lines()
        async for line in lines:
            if line.startswith("data:"):
                chunk = line[5:].removeprefix(" ")
                size += len(chunk)
                if size > max_bytes:
                    raise ResultTooLarge(max_bytes)
                data.append(chunk)
                continue
            if line or not data:
                continue  # event:, id:, retry:, comments, or a blank line between events
            message, data, size = _parse("\n".join(data).encode()), [], 0
            if not isinstance(message, dict):
                raise UpstreamError(f"{self.url} sent an SSE event that is not a JSON-RPC message")
            method = message.get("method")
            if method is None:
                if message.get("id") == rid:
                    # Read the stream to its end (it ends right after the answer) so the HTTP
                    # connection goes back to the pool; an upstream that holds it open loses it.
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(_drain(lines), 1.0)
                    return _result_of(message, rid)
                continue
            if "id" in message:  # a server-to-client request: the gateway offers no client capabilities
                continue
            if notify is not None and isinstance(message.get("params"), dict):
                await notify(method, message["params"])
        raise UpstreamError(f"{self.url} closed the stream without answering the tool call", retryable=False)

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


async def _error_detail(resp: httpx2.Response) -> str:
    """The JSON-RPC error message of a failed answer, when it carries one (e.g. why a stdio
    server's process ended), as ': message'; else ''."""
    if not resp.headers.get("content-type", "").lower().startswith("application/json"):
        return ""
    try:
        body = await _read_capped(resp, 8192)
        message = orjson.loads(body).get("error", {}).get("message")
    except Exception:  # a detail only: the status already says what went wrong
        return ""
    return f": {message[:1000]}" if isinstance(message, str) and message else ""


async def _drain(lines: AsyncIterator[str]) -> None:
    async for _ in lines:
        pass


async def _read_capped(resp: httpx2.Response, max_bytes: int) -> bytes:
    chunks, size = [], 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise ResultTooLarge(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"the upstream answered with something that is not JSON: {body[:80]!r}") from exc


def _result_of(message: Any, rid: str) -> dict[str, Any]:
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise UpstreamError("the upstream answered with something that is not a JSON-RPC message")
    error = message.get("error")
    if isinstance(error, dict):
        raise UpstreamRPCError(int(error.get("code", -32603)) if isinstance(error.get("code"), int) else -32603,
                               str(error.get("message", ""))[:500])
    result = message.get("result")
    if message.get("id") != rid or not isinstance(result, dict) or not isinstance(result.get("content", []), list):
        raise UpstreamError("the upstream's answer is not a tool result for this request")
    meta = result.get("_meta")
    if isinstance(meta, dict) and SERVER_INFO_META_KEY in meta:
        # The upstream's identity stamp: the caller's answer comes from the gateway, which stamps its own.
        result = {**result, "_meta": {k: v for k, v in meta.items() if k != SERVER_INFO_META_KEY}}
        if not result["_meta"]:
            del result["_meta"]
    return result


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
                  headers: Callable[[], Awaitable[dict[str, str]]], log_sink: LogSink | None = None,
                  transport: Callable[[], httpx2.AsyncBaseTransport] | None = None) -> UpstreamConnection:
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
                                      log_sink=log_sink, transport=transport() if transport else None)
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
