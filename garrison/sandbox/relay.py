"""Host side of the HTTP relay through the in-sandbox agent's stdio channel.

The sandbox keeps no network at all (only its own loopback). HTTP crosses the agent's
JSON-lines channel instead (see ``Relay`` in agent.py):

- ingress: :meth:`Relay.request` asks the agent to send a request to 127.0.0.1:PORT inside
  the sandbox; the response head and body chunks stream back as they arrive (SSE passes
  through);
- egress: :class:`EgressPump` makes the agent listen on 127.0.0.1:PORT inside the sandbox
  and hands each request it accepts to a host callback, which answers it (streaming).
  What the callback may reach is the caller's decision; :func:`egress_path_allowed` and
  :func:`asgi_request` are what the runtime uses to send it to garrison's own API only.

Everything from the sandbox is untrusted: heads are size-capped and parsed defensively.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import posixpath
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson

from garrison.sandbox.protocol import AgentConnection, AgentFailure, AgentGone

HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade",
                         "proxy-connection", "te", "trailer"})
EGRESS_PREFIXES = ("/v1/", "/mcp/")
MAX_HEADERS = 200


class RelayError(Exception):
    """The relayed request failed inside the sandbox (nothing listening, connection reset)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class RelayResponse:
    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]

    def header(self, name: str) -> str | None:
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.body])


def _clean_headers(raw: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(raw, list):
        for item in raw[:MAX_HEADERS]:
            if isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(x, str) for x in item):
                if "\n" not in item[0] + item[1] and "\r" not in item[0] + item[1]:
                    out.append((item[0], item[1]))
    return out


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class Relay:
    """Ingress into one sandbox over its agent connection."""

    def __init__(self, conn: AgentConnection) -> None:
        self.conn = conn

    async def request(self, port: int, method: str, path: str, headers: list[tuple[str, str]] | None = None,
                      body: bytes = b"", timeout_s: float = 300.0) -> RelayResponse:
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def on_event(kind: str, data: str) -> None:
            if data[:1] == "H":
                queue.put_nowait(("head", data[1:]))
            elif data[:1] == "B":
                queue.put_nowait(("body", data[1:]))

        sent = [(k, v) for k, v in headers or [] if k.lower() not in HOP_HEADERS]
        rid, fut = self.conn.send("http", on_event=on_event, port=port, method=method, path=path,
                                  headers=sent, body=base64.b64encode(body).decode(), timeout=timeout_s)
        fut.add_done_callback(lambda f: queue.put_nowait(("end", f)))
        fut.add_done_callback(_retrieve)
        with contextlib.suppress(ConnectionError, OSError, AttributeError):
            await self.conn.writer.drain()
        kind, value = await queue.get()
        if kind == "end":
            raise self._error(value)
        try:
            head = orjson.loads(value)
            status = int(head["status"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self._cancel(rid, fut)
            raise RelayError("BadResponse", "the sandbox answered with a malformed response head") from exc
        return RelayResponse(status, _clean_headers(head.get("headers")), self._body(rid, fut, queue))

    async def _body(self, rid: int, fut: asyncio.Future[Any],
                    queue: asyncio.Queue[tuple[str, Any]]) -> AsyncIterator[bytes]:
        try:
            while True:
                kind, value = await queue.get()
                if kind == "body":
                    yield base64.b64decode(value)
                else:
                    if value.exception() is not None:
                        raise self._error(value)
                    return
        finally:
            self._cancel(rid, fut)

    def _cancel(self, rid: int, fut: asyncio.Future[Any]) -> None:
        """The client went away mid-response: close the in-sandbox connection too."""
        if not fut.done():
            with contextlib.suppress(AgentGone):
                _, cancel = self.conn.send("http_cancel", target=rid)
                cancel.add_done_callback(_retrieve)

    @staticmethod
    def _error(fut: asyncio.Future[Any]) -> Exception:
        exc = fut.exception()
        if isinstance(exc, AgentFailure):
            return RelayError(exc.kind, exc.message)
        if isinstance(exc, AgentGone):
            return RelayError("SandboxGone", str(exc))
        return RelayError("RelayError", str(exc))


@dataclass
class EgressRequest:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    eid: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


EgressHandler = Callable[[EgressRequest], Awaitable[RelayResponse]]


class EgressPump:
    """Serves the in-sandbox egress listener: polls for requests, answers each through ``handler``."""

    def __init__(self, conn: AgentConnection, handler: EgressHandler) -> None:
        self.conn = conn
        self.handler = handler
        self.port = 0
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, port: int) -> int:
        self.port = int((await self.conn.call("egress_listen", port=port))["port"])
        self._task = asyncio.create_task(self._poll(), name="sandbox-egress")
        return self.port

    async def _poll(self) -> None:
        with contextlib.suppress(AgentGone, asyncio.CancelledError):
            while True:
                item = await self.conn.call("egress_next")
                task = asyncio.create_task(self._serve(item))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _serve(self, item: dict[str, Any]) -> None:
        eid = item.get("eid")
        try:
            req = EgressRequest(method=str(item.get("method", "GET"))[:16], path=str(item.get("path", "/"))[:8192],
                                headers=_clean_headers(item.get("headers")),
                                body=base64.b64decode(item.get("body") or ""), eid=int(eid or 0))
            try:
                resp = await self.handler(req)
            except Exception as exc:  # the handler failed: the sandbox gets a 502, never a hang
                resp = text_response(502, f"garrison could not forward this request: {exc}")
            self._send(eid, part="head", status=resp.status,
                       headers=[[k, v] for k, v in resp.headers if k.lower() not in HOP_HEADERS])
            async for chunk in resp.body:
                self._send(eid, part="body", data=base64.b64encode(chunk).decode())
                with contextlib.suppress(ConnectionError, OSError, AttributeError):
                    await self.conn.writer.drain()
        except AgentGone:
            return
        finally:
            with contextlib.suppress(AgentGone):
                self._send(eid, part="end")

    def _send(self, eid: Any, **args: Any) -> None:
        _, fut = self.conn.send("egress_reply", eid=eid, **args)
        fut.add_done_callback(_retrieve)

    async def stop(self) -> None:
        for task in [self._task, *self._tasks]:
            if task is not None:
                task.cancel()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


def text_response(status: int, detail: str) -> RelayResponse:
    body = orjson.dumps({"type": "https://garrison.dev/problems/egress", "status": status, "detail": detail})
    return RelayResponse(status, [("content-type", "application/problem+json")], _once(body))


def egress_path_allowed(path: str, prefixes: tuple[str, ...] = EGRESS_PREFIXES) -> bool:
    """Only garrison's model and tool gateways: ``/v1/*`` and ``/mcp/*`` (or ``prefixes``), after
    decoding and normalising the path, so ``/v1/../api`` or ``/v1/%2e%2e/api`` cannot reach anything else."""
    raw = path.split("?", 1)[0]
    decoded = unquote(raw)
    if "\\" in decoded or "\x00" in decoded or "%" in decoded:  # double encoding is refused outright
        return False
    normal = posixpath.normpath(decoded) + ("/" if decoded.endswith("/") else "")
    return normal == decoded and any(normal.startswith(p) for p in prefixes)


async def asgi_request(app: Any, method: str, path: str, headers: list[tuple[str, str]],
                       body: bytes) -> RelayResponse:
    """Calls an ASGI app in process and streams its answer (httpx's ASGITransport buffers it)."""
    target, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": method.upper(), "scheme": "http", "path": unquote(target), "raw_path": target.encode(),
             "query_string": query.encode(), "root_path": "", "client": ("127.0.0.1", 0),
             "server": ("garrison.internal", 80), "state": {},
             "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
             + [(b"host", b"garrison.internal"), (b"content-length", str(len(body)).encode())]}
    messages: asyncio.Queue[Any] = asyncio.Queue()
    done = asyncio.Event()
    sent_body = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await messages.put(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        except Exception as exc:
            await messages.put(exc)
        finally:
            await messages.put(None)

    task = asyncio.create_task(run())
    start = await messages.get()
    if not isinstance(start, dict) or start.get("type") != "http.response.start":
        done.set()
        raise RuntimeError(f"the app did not answer: {start!r}")
    out_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])]

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while True:
                message = await messages.get()
                if message is None or isinstance(message, Exception):
                    return
                if message.get("type") == "http.response.body":
                    if message.get("body"):
                        yield bytes(message["body"])
                    if not message.get("more_body"):
                        return
        finally:
            done.set()  # a client that left early: the app sees http.disconnect
            if not task.done():
                await asyncio.wait({task}, timeout=5)

    return RelayResponse(int(start["status"]), out_headers, chunks())


def garrison_forwarder(app: Any, token: Callable[[], str],
                       prefixes: tuple[str, ...] = EGRESS_PREFIXES) -> EgressHandler:
    """An egress handler that reaches garrison's own API only (``/v1/*``, ``/mcp/*``, or ``prefixes``),
    with the session's token in place of whatever Authorization the sandbox sent; else 403."""

    async def forward(req: EgressRequest) -> RelayResponse:
        if not egress_path_allowed(req.path, prefixes):
            return text_response(403, f"the sandbox may reach only garrison's {' and '.join(prefixes)} "
                                      f"paths, not {req.path[:200]!r}")
        headers = [(k, v) for k, v in req.headers if k.lower() not in ("authorization", "cookie", "x-api-key")]
        headers.append(("authorization", f"Bearer {token()}"))
        return await asgi_request(app, req.method, req.path, headers, req.body)

    return forward
