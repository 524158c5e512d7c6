"""A lean JSON-RPC path for ``tools/call`` on /mcp/{virtual_server}.

Why: profiled on the gateway, the `mcp` SDK's server transport spends more CPU per tool
call than the budget for the gateway's whole added latency (3 ms at p50): per request it
builds memory streams, a task per message, an SSE response with four tasks of its own
(sse-starlette), and validates every message and result with pydantic both ways. A tool
call is one request and one answer, so this module answers it directly on the ASGI
connection: orjson in, the upstream's result dict out, as ``application/json``; the answer
switches to ``text/event-stream`` only once a progress or log notification must go out
before the result (as the SDK's own 2026-07-28 path does).

Only what it can answer exactly as the SDK would is taken; everything else (initialize,
every other method, batches, malformed bodies, a session it has not seen through the SDK
yet, unknown or foreign sessions, Mcp-Param headers) goes to the SDK unchanged, with the
body replayed. So the protocol surface stays the SDK's, and the conformance suite and SDK
client tests cover both paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.shared._otel import extract_trace_context
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    classify_inbound_request,
    find_duplicated_routing_header,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.types import Message, Receive, Scope, Send

from garrison.core.errors import NotFound, Problem
from garrison.core.principal import Principal
from garrison.tools.service import step_headers
from garrison.tools.store import VirtualServer

if TYPE_CHECKING:
    from garrison.tools.gateway import Gateway

INVALID_PARAMS, INTERNAL_ERROR = -32602, -32603
SERVER_INFO_META_KEY = "io.modelcontextprotocol/serverInfo"
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache, no-transform"),
               (b"x-accel-buffering", b"no")]
Fallback = Callable[[Receive], Awaitable[None]]


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the already-read body to the SDK, then the connection's own events."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def _sse(message: dict[str, Any]) -> bytes:
    return b"event: message\r\ndata: " + orjson.dumps(message) + b"\r\n\r\n"


class FastPath:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.inflight: dict[tuple[str, Any], asyncio.Future[Any]] = {}  # (session id, request id) -> call
        self.served = 0  # tool calls answered here (the rest went to the SDK)

    async def handle(self, scope: Scope, receive: Receive, send: Send, principal: Principal, vs: VirtualServer,
                     fallback: Fallback) -> None:
        headers: dict[bytes, bytes] = dict(scope["headers"])
        accept = headers.get(b"accept", b"")
        length = headers.get(b"content-length", b"0")
        if (scope["method"] != "POST" or not headers.get(b"content-type", b"").startswith(b"application/json")
                or b"application/json" not in accept or b"text/event-stream" not in accept
                or not length.isdigit() or int(length) > self.gateway.service.settings.max_body_bytes):
            return await fallback(receive)
        body = await self._body(receive)
        if body is None:
            return await fallback(receive)  # oversized or chunked past the cap: the SDK answers it
        replay = _replay(body, receive)
        try:
            msg = orjson.loads(body)
        except orjson.JSONDecodeError:
            return await fallback(replay)
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
            return await fallback(replay)
        pv = headers.get(b"mcp-protocol-version", b"").decode("latin-1") or None
        sid = headers.get(b"mcp-session-id", b"").decode("latin-1") or None
        method = msg.get("method")
        if method == "notifications/cancelled" and sid is not None and "id" not in msg:
            if await self._cancel(sid, msg, send):
                return
            return await fallback(replay)
        rid, params = msg.get("id"), msg.get("params")
        if (method != "tools/call" or isinstance(rid, bool) or not isinstance(rid, str | int)
                or not isinstance(params, dict) or not isinstance(params.get("name"), str)
                or not isinstance(params.get("arguments", {}), dict)):
            return await fallback(replay)
        if sid is not None:
            transport = self._legacy_session(scope, sid, pv)
            if transport is None:
                return await fallback(replay)
            modern = False
        elif pv in MODERN_PROTOCOL_VERSIONS:
            if not self._modern_ok(msg, headers, scope):
                return await fallback(replay)
            transport, modern = None, True
        else:
            return await fallback(replay)
        await self._serve(scope, receive, send, principal, vs, msg, sid, modern, transport)

    async def _body(self, receive: Receive) -> bytes | None:
        cap = self.gateway.service.settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    def _legacy_session(self, scope: Scope, sid: str, pv: str | None) -> Any:
        """The SDK transport of a live session this caller opened, or None (the SDK decides then)."""
        if pv is not None and pv not in HANDSHAKE_PROTOCOL_VERSIONS:
            return None
        manager = self.gateway.manager
        transport = manager._server_instances.get(sid)
        if transport is None or transport.is_terminated or sid not in self.gateway.cleanup_registered:
            return None
        user = scope.get("user")
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        if manager._session_owners.get(sid) != requestor:
            return None
        idle = transport.idle_scope
        if idle is not None and idle.cancel_called:
            return None
        return transport

    @staticmethod
    def _modern_ok(msg: dict[str, Any], headers: dict[bytes, bytes], scope: Scope) -> bool:
        """The 2026-07-28 checks the SDK runs; any rejection is left to the SDK to phrase."""
        if any(k.startswith(b"mcp-param-") for k in headers):
            return False
        pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        if find_duplicated_routing_header(pairs) is not None:
            return False
        verdict = classify_inbound_request(msg, headers={k.decode("latin-1"): v.decode("latin-1")
                                                         for k, v in headers.items()})
        return not hasattr(verdict, "code")

    async def _cancel(self, sid: str, msg: dict[str, Any], send: Send) -> bool:
        params = msg.get("params")
        rid = params.get("requestId") if isinstance(params, dict) else None
        task = self.inflight.get((sid, rid))
        if task is None:
            return False
        task.cancel()
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return True

    async def _serve(self, scope: Scope, receive: Receive, send: Send, principal: Principal, vs: VirtualServer,
                     msg: dict[str, Any], sid: str | None, modern: bool, transport: Any) -> None:
        gw = self.gateway
        self.served += 1
        rid, params = msg["id"], msg["params"]
        meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
        token = meta.get("progressToken")
        extra = [(b"mcp-session-id", sid.encode("latin-1"))] if sid else []
        streaming = False

        async def notify(method: str, p: dict[str, Any]) -> None:
            nonlocal streaming
            if method == "notifications/progress":
                if not isinstance(token, str | int) or isinstance(token, bool):
                    return
                p = {**p, "progressToken": token}
            elif method != "notifications/message" or sid is None:
                return  # logs reach sessions only, as on the SDK path
            with contextlib.suppress(Exception):  # a gone downstream must not fail the call
                if not streaming:
                    streaming = True
                    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + extra})
                await send({"type": "http.response.body", "body": _sse({"jsonrpc": "2.0", "method": method,
                                                                        "params": p}), "more_body": True})

        owner = f"s:{sid}" if sid else f"p:{principal.id}"
        call = asyncio.ensure_future(gw.service.call_tool(
            principal, vs, params["name"], params.get("arguments") or {}, owner=owner, session_id=sid,
            notify=notify, progress=token is not None, parent=extract_trace_context(meta),
            headers=step_headers(scope)))
        key = (sid or "", rid)
        if sid:
            self.inflight[key] = call
        watcher = asyncio.ensure_future(self._watch_disconnect(receive, call)) if modern else None
        hold = self._hold(transport)
        try:
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "result": self._shape(await call, modern)}
            status = 200
        except asyncio.CancelledError:
            if not call.cancelled():
                call.cancel()  # this request itself is being torn down: so is its call
                raise
            # Cancelled by the caller: no answer is owed (the SDK path sends none either).
            reply, status = {}, 0
        except NotFound as exc:
            reply, status = self._error(rid, INVALID_PARAMS, exc.detail, modern)
        except Problem as exc:  # denied, rate limited, unavailable: the agent reads why
            result = {"content": [{"type": "text", "text": f"{exc.title}: {exc.detail}"}], "isError": True}
            reply, status = {"jsonrpc": "2.0", "id": rid, "result": self._shape(result, modern)}, 200
        except Exception:  # internals never reach the wire
            reply, status = self._error(rid, INTERNAL_ERROR, "Internal error", modern)
        finally:
            self.inflight.pop(key, None)
            if watcher is not None:
                watcher.cancel()
            self._release(transport, hold)
        if streaming:
            await send({"type": "http.response.body", "body": _sse(reply) if reply else b"", "more_body": False})
        elif reply:
            await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS + extra})
            await send({"type": "http.response.body", "body": orjson.dumps(reply)})
        else:
            await send({"type": "http.response.start", "status": 202, "headers": extra})
            await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _watch_disconnect(receive: Receive, call: asyncio.Future[Any]) -> None:
        """At 2026-07-28 a caller cancels by closing the request's stream."""
        while (await receive())["type"] != "http.disconnect":
            pass
        call.cancel()

    def _shape(self, result: dict[str, Any], modern: bool) -> dict[str, Any]:
        if not modern:
            return {k: v for k, v in result.items() if k != "resultType"} if "resultType" in result else result
        out = result if "resultType" in result else {**result, "resultType": "complete"}
        meta = out.get("_meta")  # the SDK's serverInfo stamp (spec #3002), unless a _meta of another shape
        if meta is None or (isinstance(meta, dict) and meta.get(SERVER_INFO_META_KEY) is None):
            out = {**out, "_meta": {**(meta or {}), SERVER_INFO_META_KEY: self.gateway.server.server_info_stamp}}
        return out

    @staticmethod
    def _error(rid: Any, code: int, message: str, modern: bool) -> tuple[dict[str, Any], int]:
        status = ERROR_CODE_HTTP_STATUS.get(code, 200) if modern else 200
        return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}, status

    # The SDK expires a session after an idle period with no request in flight; a call
    # answered here counts as one, exactly as in the SDK's transport.handle_request.
    @staticmethod
    def _hold(transport: Any) -> bool:
        if transport is None or transport.idle_scope is None or transport._idle_timeout is None:
            return False
        transport._requests_in_flight += 1
        transport.idle_scope.deadline = math.inf
        return True

    @staticmethod
    def _release(transport: Any, held: bool) -> None:
        if not held:
            return
        transport._requests_in_flight -= 1
        if not transport._requests_in_flight:
            transport.idle_scope.deadline = anyio.current_time() + transport._idle_timeout
