"""Real servers on real sockets for gateway tests: the fixture MCP server, a hanging TCP
listener, a garbage-speaking HTTP server, and garrison itself served in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from garrison.tools import fixture_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def threaded(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on its own thread and loop; yield its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def fixture_mcp(stateless: bool = False) -> Iterator[str]:
    with threaded(fixture_server.app(stateless=stateless)) as url:
        yield url + "/mcp"


async def _garbage_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"this is not JSON-RPC {"})


@contextmanager
def garbage_http() -> Iterator[str]:
    with threaded(_garbage_app) as url:
        yield url + "/mcp"


@contextmanager
def hanging_tcp() -> Iterator[str]:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    finally:
        stop.set()
        thread.join(timeout=5)
        for c in held:
            c.close()
        sock.close()


@asynccontextmanager
async def serve_in_loop(app: Any) -> AsyncIterator[str]:
    """Serve garrison's app in the current loop (the platform lives here) on a real socket."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


def _tool_of(body: bytes) -> str | None:
    match = re.search(rb'"method"\s*:\s*"tools/call".*?"name"\s*:\s*"([^"]+)"', body, re.S) or \
        re.search(rb'"name"\s*:\s*"([^"]+)".*?"method"\s*:\s*"tools/call"', body, re.S)
    return match.group(1).decode() if match else None


@contextmanager
def failing_upstream(fail_first: dict[str, int], status: int = 503, body: bytes = b"upstream trouble",
                     content_type: bytes = b"text/plain") -> Iterator[tuple[str, dict[str, int]]]:
    """The fixture MCP server behind a layer that answers HTTP ``status`` with ``body`` to the
    first ``fail_first[tool]`` tools/call requests of each tool; yields (url, attempts per tool)."""
    inner = fixture_server.app()
    attempts: dict[str, int] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await inner(scope, receive, send)
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        request = b"".join(chunks)
        tool = _tool_of(request)
        if tool is not None:
            attempts[tool] = attempts.get(tool, 0) + 1
            if attempts[tool] <= fail_first.get(tool, 0):
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", content_type)]})
                await send({"type": "http.response.body", "body": body})
                return
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": request, "more_body": False}
            return await receive()

        await inner(scope, replay, send)

    with threaded(app) as url:
        yield url + "/mcp", attempts


@contextmanager
def dropping_proxy(upstream_url: str, drop_first: dict[str, int]) -> Iterator[tuple[str, dict[str, int]]]:
    """A TCP proxy to an MCP server that closes the connection, unanswered, on the first
    ``drop_first[tool]`` tools/call requests of each tool; yields (url, drops per tool)."""
    target = urlsplit(upstream_url)
    dropped: dict[str, int] = {}
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, inspect: bool,
                   other: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                tool = _tool_of(data) if inspect else None
                if tool is not None and dropped.get(tool, 0) < drop_first.get(tool, 0):
                    dropped[tool] = dropped.get(tool, 0) + 1
                    other.close()
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(target.hostname, target.port)
        await asyncio.gather(pipe(client_r, up_w, True, client_w), pipe(up_r, client_w, False, up_w))

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        holder["port"] = server.sockets[0].getsockname()[1]
        holder["server"] = server
        ready.set()
        async with server:
            await server.serve_forever()

    thread = threading.Thread(target=lambda: _run_quietly(loop, main()), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{holder['port']}{target.path}", dropped
    finally:
        loop.call_soon_threadsafe(holder["server"].close)
        thread.join(timeout=5)


def _run_quietly(loop: asyncio.AbstractEventLoop, main: Any) -> None:
    with contextlib.suppress(asyncio.CancelledError, RuntimeError):
        loop.run_until_complete(main)
    pending = asyncio.all_tasks(loop)  # connections still being piped when the proxy stopped
    for task in pending:
        task.cancel()
    with contextlib.suppress(BaseException):
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()
