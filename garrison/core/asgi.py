"""Pieces for the pure-ASGI fast paths (the gateway's model calls, AgentCore invocations into a
warm session): what FastAPI would otherwise do for them, kept identical to its answers."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from garrison.core.errors import PROBLEM_CONTENT_TYPE, Problem


class RouteLabel:
    """What ``scope["route"]`` carries for the request metrics label (the route's template)."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


def bearer_credential(scope: Scope) -> str | None:
    """The request's Bearer credential; None for none, another scheme, or an empty one."""
    auth = b""
    for key, value in scope["headers"]:
        if key == b"authorization":
            auth = value
            break
    scheme, _, credential = auth.decode("latin-1").partition(" ")
    credential = credential.strip()
    return credential if scheme.lower() == "bearer" and credential else None


async def read_body(receive: Receive) -> bytes | None:
    """The request body (RequestContextMiddleware's receive raises 413 past the cap); None when
    the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_problem(scope: Scope, receive: Receive, send: Send, exc: Problem) -> None:
    """The same problem+json answer garrison's exception handler gives."""
    body: dict[str, Any] = exc.to_dict(scope["path"])
    rid = scope.get("state", {}).get("request_id")
    if rid:
        body.setdefault("request_id", rid)
    await Response(orjson.dumps(body), status_code=exc.status, headers=exc.headers,
                   media_type=PROBLEM_CONTENT_TYPE)(scope, receive, send)
