"""A lean ASGI path for the gateway's model calls: ``POST /v1/chat/completions``,
``/v1/completions`` and ``/v1/embeddings``.

Why: profiled at one concurrent request, FastAPI's route matching (a scan of every
layer's routes), its dependency solving, request/response wrappers and exception layers
were about a fifth of the gateway's CPU per call, and the issue's targets (p99 added
latency 5 ms, CPU per call a tenth of LiteLLM's) leave no room for them. A model call
needs none of them: this middleware (inside RequestContextMiddleware, so request ids,
trace context, the body cap and request metrics stay) answers it directly.

It does what ``require("llm:invoke", audit_allow=False)`` and ``api._call`` do, and takes
a request only once it is sure: a Bearer credential that authenticates and a policy allow
(the engine's cached decision, same resource and context as the route's). An allow is
audited exactly when ``require`` would (a decision the engine did not enforce). Everything
else (no or a malformed credential, Basic auth, a bad key, a deny, a query string, a
mounted root path) goes to FastAPI unchanged, body unread, so its error answers and deny
audit entries stay the route's own. Errors the gateway raises are answered as garrison's
problem handler answers them (with OpenAI's ``error`` object); anything else propagates to
the app's server-error handler, as from the route.
"""

from __future__ import annotations

from starlette.datastructures import Headers, State
from starlette.types import ASGIApp, Receive, Scope, Send

from garrison.core.asgi import RouteLabel, bearer_credential, read_body, send_problem
from garrison.core.errors import Problem, Unauthorized
from garrison.llm.errors import with_openai_error
from garrison.policy import Resource

# path -> the gateway operation; the same three routes api.py declares.
OPERATIONS = {"/v1/chat/completions": "chat", "/v1/completions": "text_completion", "/v1/embeddings": "embeddings"}
SCOPE = "llm:invoke"


_ROUTES = {path: RouteLabel(path) for path in OPERATIONS}


class GatewayFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.served = 0  # model calls answered here (the rest went to FastAPI)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in OPERATIONS:
            return await self.app(scope, receive, send)
        if not await self._serve(scope, receive, send):
            await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer a model call; False (nothing read or sent) leaves it to FastAPI."""
        if scope.get("root_path") or scope.get("query_string"):
            return False
        platform = scope["app"].state.platform
        service = platform.services.get("llm")
        if service is None:
            return False
        credential = bearer_credential(scope)
        if credential is None:
            return False
        try:
            principal = await platform.identity.authenticate(credential)
        except (Unauthorized, Problem):
            return False  # FastAPI authenticates again, audits the deny and answers it
        path = scope["path"]
        state = scope.setdefault("state", {})
        state["principal"] = principal  # a fallback from here on does not authenticate twice
        route = scope["route"] = _ROUTES[path]
        decision = platform.policy.authorize(principal, SCOPE, Resource("route", route.path, principal.tenant_id),
                                             {"method": "POST"})
        if not decision.allowed:
            return False
        if not decision.enforced:  # what require(audit_allow=False) audits
            platform.audit.record(principal, SCOPE, path, "allow", decision.reason)
        self.served += 1
        try:
            raw = await read_body(receive)
            if raw is None:
                return True  # the client went away before its request was complete
            response = await service.call(principal, OPERATIONS[path], raw, Headers(scope=scope), State(state))
        except Problem as exc:
            await send_problem(scope, receive, send, with_openai_error(exc))
            return True
        await response(scope, receive, send)
        return True

