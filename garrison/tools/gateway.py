"""The MCP face of the gateway: /mcp/{virtual_server} on the `mcp` SDK's streamable HTTP.

One low-level ``Server`` and one session manager serve every virtual server. The HTTP
route authenticates first (scope ``tools:call``) and hands the Principal and virtual
server to the MCP handlers through the ASGI scope; a session is bound to the principal
(the SDK answers 404 to anyone else) and to the virtual server it was opened on.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from typing import TYPE_CHECKING, Any

import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.types import Message, Receive, Scope, Send

from garrison import __version__
from garrison.core.errors import NotFound, Problem
from garrison.core.principal import Principal
from garrison.tools.fastpath import FastPath
from garrison.tools.service import step_headers
from garrison.tools.store import VirtualServer

if TYPE_CHECKING:
    from garrison.tools.service import ToolsService

PRINCIPAL_KEY = "garrison.principal"
VS_KEY = "garrison.virtual_server"
INVALID_PARAMS = -32602


def _scope_of(ctx: ServerRequestContext[Any, Any]) -> dict[str, Any]:
    request = ctx.request
    scope = getattr(request, "scope", None)
    if not isinstance(scope, dict) or PRINCIPAL_KEY not in scope:
        raise MCPError(-32603, "request reached the gateway without an authenticated caller")
    return scope


def _session_id(ctx: ServerRequestContext[Any, Any]) -> str | None:
    connection = getattr(ctx.session, "_connection", None)
    return getattr(connection, "session_id", None)


class Gateway:
    def __init__(self, service: ToolsService) -> None:
        self.service = service
        with warnings.catch_warnings():
            # logging/setLevel is deprecated (SEP-2577) but clients of the earlier protocol
            # versions still call it; the SDK's warning about offering it says nothing to operators.
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            self.server: Server[Any] = Server(
                "garrison-gateway", version=__version__,
                instructions="Tools governed by garrison. Call search_tools to find the right tool in a large catalogue.",
                on_list_tools=self._list_tools,
                on_call_tool=self._call_tool,  # type: ignore[arg-type]  # the runner sends dict results as they are
                on_set_logging_level=self._set_logging_level,
            )
        self.manager = StreamableHTTPSessionManager(
            self.server,
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            session_idle_timeout=service.settings.session_idle_timeout_s,
            max_request_body_size=service.settings.max_body_bytes,
        )
        self._sessions: dict[str, tuple[str, str]] = {}  # session id -> (tenant, virtual server)
        self.cleanup_registered: set[str] = set()  # sessions whose end closes their upstream sessions
        self.fast = FastPath(self)
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mcp-gateway")
        await self._ready.wait()

    async def _run(self) -> None:
        async with self.manager.run():
            self._ready.set()
            await self._stop.wait()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._task, 10)

    # ---- HTTP entry ---------------------------------------------------------------------

    async def handle(self, scope: Scope, receive: Receive, send: Send, principal: Principal, vs: VirtualServer) -> None:
        session_id = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"mcp-session-id"), None)
        if session_id is not None and self._sessions.get(session_id, (vs.tenant_id, vs.name)) != (vs.tenant_id, vs.name):
            raise NotFound("this MCP session belongs to another virtual server; initialize a new one")
        if len(self._sessions) > 2 * (self.manager.max_sessions or 10_000):
            live = set(getattr(self.manager, "_server_instances", {}))
            self._sessions = {k: v for k, v in self._sessions.items() if k in live}
        scope = dict(scope)
        scope[PRINCIPAL_KEY] = principal
        scope[VS_KEY] = vs
        # The SDK binds a session to the credential that opened it and answers 404 to others.
        scope["user"] = AuthenticatedUser(AccessToken(token=principal.id, client_id=principal.id,
                                                      scopes=sorted(principal.scopes)))

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and session_id is None:
                for k, v in message.get("headers", []):
                    if k.lower() == b"mcp-session-id":
                        self._sessions[v.decode("latin-1")] = (vs.tenant_id, vs.name)
            await send(message)

        async def sdk(receive: Receive) -> None:
            await self.manager.handle_request(scope, receive, watch)

        if scope["method"] == "POST":
            await self.fast.handle(scope, receive, send, principal, vs, sdk)
        else:
            await sdk(receive)

    # ---- MCP handlers -------------------------------------------------------------------

    def _owner(self, ctx: ServerRequestContext[Any, Any], principal: Principal) -> tuple[str, str | None]:
        sid = _session_id(ctx)
        if sid is None:
            return f"p:{principal.id}", None
        connection = getattr(ctx.session, "_connection", None)
        stack = getattr(connection, "exit_stack", None)
        if stack is not None and not getattr(connection, "_garrison_cleanup", False):
            # When the downstream session ends, so do its upstream sessions.
            stack.push_async_callback(self._session_closed, sid)
            connection._garrison_cleanup = True  # type: ignore[union-attr]
            self.cleanup_registered.add(sid)
        return f"s:{sid}", sid

    async def _session_closed(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        self.cleanup_registered.discard(session_id)
        await self.service.close_owner(f"s:{session_id}")

    async def _set_logging_level(self, ctx: ServerRequestContext[Any, Any],
                                 params: types.SetLevelRequestParams) -> types.EmptyResult:
        """Accepted so clients may ask for upstream log messages (they are passed on as they come)."""
        return types.EmptyResult()

    async def _list_tools(self, ctx: ServerRequestContext[Any, Any],
                          params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        scope = _scope_of(ctx)
        self._owner(ctx, scope[PRINCIPAL_KEY])  # registers the end-of-session cleanup
        tools = await self.service.list_tools(scope[PRINCIPAL_KEY], scope[VS_KEY])
        return types.ListToolsResult(tools=[types.Tool.model_validate(t) for t in tools])

    async def _call_tool(self, ctx: ServerRequestContext[Any, Any],
                         params: types.CallToolRequestParams) -> dict[str, Any]:
        scope = _scope_of(ctx)
        principal: Principal = scope[PRINCIPAL_KEY]
        owner, sid = self._owner(ctx, principal)
        meta = params.meta or {}
        token = meta.get("progress_token") or meta.get("progressToken")  # type: ignore[union-attr]
        session = ctx.session

        async def notify(method: str, p: dict[str, Any]) -> None:
            # On this request's own stream, so clients without a GET stream see them too.
            with contextlib.suppress(Exception):  # a gone downstream must not fail the call
                if method == "notifications/progress" and isinstance(token, str | int):
                    await session.send_progress_notification(
                        token, p.get("progress", 0), p.get("total"), p.get("message"),
                        related_request_id=ctx.request_id)  # type: ignore[arg-type]
                elif method == "notifications/message" and sid:
                    await session.send_log_message(p.get("level", "info"), p.get("data"), p.get("logger"),
                                                   related_request_id=ctx.request_id)

        async def log_sink(p: types.LoggingMessageNotificationParams) -> None:
            await session.send_log_message(p.level, p.data, p.logger, related_request_id=ctx.request_id)

        try:
            result = await self.service.call_tool(
                principal, scope[VS_KEY], params.name, dict(params.arguments or {}), owner=owner, session_id=sid,
                notify=notify, progress=token is not None, log_sink=log_sink if sid else None,
                headers=step_headers(scope),
            )
            if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS and "resultType" not in result:
                result = {**result, "resultType": "complete"}  # required from 2026-07-28; absent at legacy upstreams
            return result
        except NotFound as exc:
            raise MCPError(INVALID_PARAMS, exc.detail) from exc
        except Problem as exc:  # denied, rate limited, unavailable: the agent reads why
            return {"content": [{"type": "text", "text": f"{exc.title}: {exc.detail}"}], "isError": True}
