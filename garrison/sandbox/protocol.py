"""Host side of the agent protocol: JSON lines over the sandbox's stdin and stdout.

Everything read from the sandbox is untrusted: lines are size-capped by the reader,
malformed lines are dropped, and a reply only completes the request it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

# A reply line carries at most one 512 KiB file chunk (base64) or 1 MiB per output
# stream plus JSON escaping; anything longer is a misbehaving sandbox.
MAX_LINE = 32 * 1024 * 1024

EventHandler = Callable[[str, str], Awaitable[None] | None]


class AgentGone(Exception):
    """The agent's stdout closed: the sandbox died or was killed."""


class AgentFailure(Exception):
    """The agent answered a request with an error."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class AgentConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | Any) -> None:
        self.reader = reader
        self.writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[dict[str, Any]], EventHandler | None]] = {}
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        try:
            while True:
                try:
                    line = await self.reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    break  # a line past the limit: stop trusting this stream
                if not line:
                    break
                try:
                    msg = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(msg, dict):
                    continue
                await self._dispatch(msg)
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            if not self.ready.done():
                self.ready.set_exception(AgentGone("the sandbox exited before its agent was ready"))
                self.ready.exception()  # retrieved here: a pool sandbox may die unwatched
            for fut, _ in self._pending.values():
                if not fut.done():
                    fut.set_exception(AgentGone("the sandbox exited"))
            self._pending.clear()

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "ready" and msg.get("id") is None:
            if not self.ready.done():
                self.ready.set_result(msg.get("value") or {})
            return
        rid = msg.get("id")
        entry = self._pending.get(rid) if isinstance(rid, int) else None
        if entry is None:
            return
        fut, on_event = entry
        if kind in ("stdout", "stderr"):
            if on_event is not None and isinstance(msg.get("data"), str):
                res = on_event(kind, msg["data"])
                if asyncio.iscoroutine(res):
                    await res
        elif kind == "result":
            self._pending.pop(rid, None)  # type: ignore[arg-type]
            value = msg.get("value")
            if not fut.done():
                fut.set_result(value if isinstance(value, dict) else {})
        elif kind == "error":
            self._pending.pop(rid, None)  # type: ignore[arg-type]
            if not fut.done():
                fut.set_exception(AgentFailure(str(msg.get("kind")), str(msg.get("message"))[:2000]))

    def send(self, op: str, *, on_event: EventHandler | None = None, **args: Any) -> tuple[int, asyncio.Future[dict[str, Any]]]:
        if self.closed.is_set():
            raise AgentGone("the sandbox has exited")
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (fut, on_event)
        payload = {"id": rid, "op": op, **args}
        if on_event is not None:
            payload["stream"] = True
        try:
            self.writer.write(orjson.dumps(payload) + b"\n")
        except (ConnectionError, RuntimeError, OSError) as exc:
            self._pending.pop(rid, None)
            raise AgentGone(f"could not write to the sandbox: {exc}") from exc
        return rid, fut

    async def call(self, op: str, *, on_event: EventHandler | None = None, **args: Any) -> dict[str, Any]:
        _, fut = self.send(op, on_event=on_event, **args)
        with contextlib.suppress(ConnectionError, OSError, AttributeError):
            await self.writer.drain()
        return await fut

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        self._task.cancel()
