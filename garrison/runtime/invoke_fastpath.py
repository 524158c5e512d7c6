"""A lean ASGI path for ``POST /runtimes/{agent}/invocations`` into a warm AgentCore session.

Why: the issue's budget for routing into a warm session is 5 ms at p50 over calling the
agent directly, and profiled, FastAPI's route matching, its dependency machinery and its
per-request telemetry span were the largest part of garrison's side. An invocation of a live
session needs none of them: this middleware (inside RequestContextMiddleware, so request ids,
trace context, the body cap and request metrics stay) answers it directly.

It takes only the happy path, and only once it is sure: a Bearer credential that
authenticates, a policy allow (the engine's cached decision, same resource and context as
``require("runtime:invoke")``), a live session in memory that this caller owns. Then it writes
the same allow audit entry (the audit service batches it off the request path) and relays.
Everything else (a missing or bad key, a deny, another caller's session, an unknown qualifier,
a cold session, an ARN it cannot read, an unusual query) goes to FastAPI unchanged, body
unread, so error answers and their audit entries stay the route's own.

One server span per invocation is opened here for both paths (FastAPI's own span is turned off
for this route in server.py): attributes set once, none per chunk.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from garrison.core.asgi import RouteLabel, bearer_credential, read_body, send_problem
from garrison.core.errors import NotFound, Problem, Unauthorized
from garrison.identity.deps import trace_context
from garrison.policy import Resource
from garrison.runtime.agentcore_api import BUFFERED_MAX, SESSION_HEADER, AgentFailed, agent_name

ROUTE = "/runtimes/{agent_runtime:path}/invocations"
SPAN_NAME = "POST " + ROUTE
_PREFIX, _SUFFIX = "/runtimes/", "/invocations"
_SESSION_KEY = SESSION_HEADER.lower().encode("latin-1")
_tracer = trace.get_tracer("garrison.runtime.invoke")


def is_invocation(scope: Scope) -> bool:
    path = scope.get("path", "")
    return (scope.get("type") == "http" and scope.get("method") == "POST" and path.startswith(_PREFIX)
            and path.endswith(_SUFFIX) and len(path) > len(_PREFIX) + len(_SUFFIX))


_ROUTE_LABEL = RouteLabel(ROUTE)  # the metrics label and the policy resource


class InvokeFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.served = 0  # invocations answered here (the rest went to FastAPI)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_invocation(scope):
            return await self.app(scope, receive, send)
        status = [0]

        async def sent(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        with _tracer.start_as_current_span(SPAN_NAME, kind=SpanKind.SERVER, record_exception=True,
                                           attributes={"http.request.method": "POST", "http.route": ROUTE,
                                                       "url.path": scope["path"]}) as span:
            try:
                if not await self._serve(scope, receive, sent):
                    await self.app(scope, receive, sent)
            finally:
                span.set_attribute("http.response.status_code", status[0])
                if status[0] >= 500 or not status[0]:
                    span.set_status(StatusCode.ERROR)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer a warm session's invocation; False (nothing read or sent) leaves it to FastAPI."""
        from garrison.runtime.sessions import manager

        if scope.get("root_path"):
            return False
        platform = scope["app"].state.platform
        svc = platform.services.get("runtime")
        if svc is None:
            return False
        qualifier = "DEFAULT"
        if scope.get("query_string"):
            pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            if len(pairs) != 1 or pairs[0][0] != "qualifier":
                return False
            qualifier = pairs[0][1]
        endpoint = "default" if qualifier.upper() == "DEFAULT" else qualifier
        try:
            name = agent_name(scope["path"][len(_PREFIX):-len(_SUFFIX)])
        except NotFound:
            return False
        session = b""
        for key, value in scope["headers"]:
            if key == _SESSION_KEY:
                session = value
        credential = bearer_credential(scope)
        sid = session.decode("latin-1")
        if credential is None or not 33 <= len(sid) <= 256 or not sid.isprintable():
            return False
        try:
            principal = await platform.identity.authenticate(credential)
        except (Unauthorized, Problem):
            return False  # FastAPI authenticates again, audits the deny and answers it
        state = scope.setdefault("state", {})
        state["principal"] = principal  # a fallback from here on does not authenticate twice
        scope["route"] = _ROUTE_LABEL  # the metrics label and policy resource name the route's template
        decision = platform.policy.authorize(principal, "runtime:invoke",
                                             Resource("route", ROUTE, principal.tenant_id), {"method": "POST"})
        if not decision.allowed:
            return False
        sessions = manager(svc)
        warm = sessions.sessions.get((principal.tenant_id, name, endpoint, sid))
        if warm is None or not warm.alive() or (warm.owner != principal.id and not principal.is_admin):
            return False
        # From here on this path owns the request: the allow is audited exactly as require(traced=True) does.
        platform.audit.record(principal, "runtime:invoke", scope["path"], "allow", decision.reason, trace_context())
        self.served += 1
        headers = {SESSION_HEADER: sid}
        try:
            body = await read_body(receive)
            if body is None:
                return True  # the client went away before its request was complete
            resp = await sessions.invoke(principal, scope["app"], warm.agent_id, name, endpoint, sid, body,
                                         [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]])
            if resp.status >= 500:
                # The agent's own failure is the client's 424 (RuntimeClientError), never garrison's 5xx.
                detail = (await resp.read()).decode("utf-8", "replace")[:2000]
                raise AgentFailed(f"the agent answered {resp.status}: {detail}", headers=headers)
        except Problem as exc:
            await send_problem(scope, receive, send, exc)
            return True
        media_type = resp.header("content-type") or "application/json"
        length = resp.header("content-length")
        answer: Response
        if length is not None and length.isdigit() and int(length) <= BUFFERED_MAX:
            answer = Response(await resp.read(), status_code=resp.status, headers=headers, media_type=media_type)
        else:
            answer = StreamingResponse(resp.body, status_code=resp.status, headers=headers, media_type=media_type)
        await answer(scope, receive, send)
        return True

