"""ToolsService: upstreams, virtual servers, the tool catalogue and the governed call path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import mcp_types as types
import orjson
from opentelemetry import propagate, trace
from opentelemetry.context import Context

from garrison.core.clock import utcnow
from garrison.core.errors import BadRequest, NotFound, Problem, ServiceUnavailable
from garrison.core.ids import new_id
from garrison.core.principal import Principal
from garrison.policy import Resource
from garrison.tools import metrics
from garrison.tools.catalogue import (
    SEARCH_TOOL,
    SEARCH_TOOL_DESCRIPTION,
    SEARCH_TOOL_SCHEMA,
    CatalogueTool,
    LocalTool,
)
from garrison.tools.config import ToolsSettings
from garrison.tools.credentials import OAuthTokens, SecretBox, check_auth
from garrison.tools.limits import CircuitBreaker, RateLimiter
from garrison.tools.naming import exposed_name
from garrison.tools.schemas import OpenAPIIn, UpstreamIn, VirtualServerIn
from garrison.tools.search import rank
from garrison.tools.stdio_sandbox import (
    BRIDGE_URL,
    RelayTransport,
    StdioPackage,
    StdioSandboxes,
    is_stdio_url,
    package_of_url,
    stdio_package,
)
from garrison.tools.store import ToolsStore, Upstream, VirtualServer
from garrison.tools.upstream import (
    LogSink,
    Notify,
    ResultTooLarge,
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    UpstreamRPCError,
)

if TYPE_CHECKING:
    from garrison.platform import Platform

log = logging.getLogger("garrison.tools")
tracer = trace.get_tracer("garrison.tools")
CATALOGUE_OWNER = "catalogue"


TOO_LARGE: dict[str, Any] = {}  # sentinel: the upstream's answer passed the size cap
# A durable run step's calls carry these (runtime/calls.py); the gateway passes them to call_tool.
STEP_HEADER = "x-garrison-step"
# The agent and version a call is for (the LLM gateway reads the same headers), for the call's span.
STEP_HEADERS = (b"x-garrison-run", b"x-garrison-step", b"x-garrison-agent", b"x-garrison-agent-version")
REPLAYED_META = "garrison/replayed"  # in a result's _meta: answered from the run's journal


def step_headers(scope: Any) -> dict[str, str] | None:
    """The run step an MCP request comes from (its ASGI scope's x-garrison-run/-step) and the agent it is
    for (x-garrison-agent/-version), or None when it names neither."""
    found = {k.decode(): v.decode("latin-1") for k, v in scope.get("headers", ()) if k in STEP_HEADERS}
    return found or None


def who(principal: Principal, headers: dict[str, str] | None) -> dict[str, str]:
    """Span attributes naming the agent, version, session and user a call is for, as the ledger and the
    LLM gateway's spans name them (telemetry/semconv.py indexes these spellings)."""
    out = {"user.id": principal.id}
    agent = (headers.get("x-garrison-agent") if headers else None) or principal.attributes.get("agent")
    if agent:
        out["gen_ai.agent.name"] = str(agent)
    version = headers.get("x-garrison-agent-version") if headers else None
    if version:
        out["garrison.agent_version"] = version
    if principal.session_id:
        out["gen_ai.conversation.id"] = principal.session_id
    return out


def error_result(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True}


def wire(result: types.CallToolResult) -> dict[str, Any]:
    return result.model_dump(by_alias=True, exclude_none=True, mode="json")


def to_result(value: Any) -> dict[str, Any]:
    """A local tool's return value (text, JSON-able value or CallToolResult) as a wire result."""
    if isinstance(value, types.CallToolResult):
        return wire(value)
    if isinstance(value, str):
        return {"content": [{"type": "text", "text": value}]}
    text = orjson.dumps(value, default=str).decode()
    structured = value if isinstance(value, dict) else {"result": value}
    return {"content": [{"type": "text", "text": text}], "structuredContent": structured}


class ToolsService:
    def __init__(self, platform: Platform | None, db: Any, data_dir: Any, settings: ToolsSettings | None = None) -> None:
        self.platform = platform
        self.settings = settings or ToolsSettings()
        self.store = ToolsStore(db)
        self.box = SecretBox(data_dir)
        self.oauth = OAuthTokens()
        self.pool = UpstreamPool(self.settings.connect_timeout_s)
        self.stdio = StdioSandboxes(platform)  # sandboxes of local stdio upstreams
        self.limiter = RateLimiter()
        self.breaker = CircuitBreaker(self.settings.breaker_failures, self.settings.breaker_reset_s)
        self.upstreams: dict[tuple[str, str], Upstream] = {}  # (tenant, name)
        self.virtual_servers: dict[tuple[str, str], VirtualServer] = {}
        self.local: dict[str, dict[str, LocalTool]] = {}
        self._tool_cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}  # upstream id -> tools
        self._catalogues: dict[tuple[str, str], tuple[float, int, dict[str, CatalogueTool]]] = {}
        self._generation = 0  # bumped by every change of upstreams, virtual servers or local tools
        self._sweeper: asyncio.Task[None] | None = None
        self.gateway: Any = None

    # ---- life -------------------------------------------------------------------------

    async def start(self) -> None:
        for up in await self.store.all_upstreams():
            self.upstreams[(up.tenant_id, up.name)] = up
        for vs in await self.store.all_virtual_servers():
            self.virtual_servers[(vs.tenant_id, vs.name)] = vs
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="tools-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(BaseException):
                await self._sweeper
        await self.pool.close_all()
        await self.stdio.stop_all()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, self.settings.stateless_idle_s / 2))
            with contextlib.suppress(Exception):
                await self.pool.sweep("p:", self.settings.stateless_idle_s)
                metrics.UPSTREAM_SESSIONS.set(len(self.pool))

    # ---- local tools (other layers) ----------------------------------------------------

    def register_local_tools(self, server_name: str, tools: list[LocalTool | dict[str, Any]]) -> None:
        """Publish in-process tools (e.g. the sandbox's execute_code) as the tool server ``server_name``;
        virtual servers include them with ``{"upstream": server_name, "tool": ...}``."""
        entries: dict[str, LocalTool] = {}
        for t in tools:
            if isinstance(t, dict):
                t = LocalTool(name=t["name"], description=t.get("description", ""),
                              input_schema=t.get("input_schema") or t.get("inputSchema") or {"type": "object"},
                              handler=t["handler"], idempotent=bool(t.get("idempotent", False)))
            entries[t.name] = t
        self.local[server_name] = entries
        self._generation += 1

    # ---- upstreams ---------------------------------------------------------------------

    def _audit(self, principal: Principal, action: str, resource: str, **context: Any) -> None:
        if self.platform is not None:
            self.platform.audit.record(principal, action, resource, "allow", "", context)

    async def _resolve_registry_url(self, name: str) -> str:
        registry = self.platform.services.get("registry") if self.platform else None
        if registry is None:
            raise BadRequest("from_registry needs the registry layer, which is not installed")
        entry = await registry.get(name, "latest")
        for remote in entry.server.get("remotes") or []:
            if remote.get("type") in ("streamable-http", "sse") and "{" not in remote.get("url", "{"):
                return str(remote["url"])
        if any((p.get("transport") or {}).get("type") == "stdio" for p in entry.server.get("packages") or []):
            if self.platform is None or self.platform.services.get("sandbox") is None:
                raise BadRequest(f"{name} is a local stdio server: it runs only inside a garrison sandbox, and "
                                 "the sandbox layer is not installed here")
            # Run inside a sandbox: the template is built now, so a package missing from the
            # wheelhouse is a 400 on create rather than a failing tool later.
            pkg = stdio_package(name, entry.server)
            await self.stdio.ensure_template(name, pkg)
            return pkg.url
        raise BadRequest(f"registry entry {name!r} has no remote URL without template variables")

    async def create_upstream(self, principal: Principal, body: UpstreamIn) -> Upstream:
        if body.name in self.local:
            raise BadRequest(f"{body.name!r} is the name of a built-in tool server; choose another name")
        url = body.url or (await self._resolve_registry_url(body.from_registry) if body.from_registry else None)
        if not url:
            raise BadRequest("give either url or from_registry")
        a = body.auth
        check_auth(a.kind, a.header, a.secret, a.token_url, a.client_id)
        now = utcnow()
        values = dict(
            id=new_id("ups"), tenant_id=principal.tenant_id, name=body.name, kind="mcp", url=url,
            registry_name=body.from_registry, auth_kind=a.kind, auth_header=a.header,
            auth_secret=self.box.seal(a.secret), oauth_token_url=a.token_url, oauth_client_id=a.client_id,
            oauth_scope=a.scope, timeout_s=body.timeout_s, idempotent_tools=body.idempotent_tools,
            openapi_doc=None, tool_list=None, created_at=now, updated_at=now,
        )
        up = await self.store.insert_upstream(values)
        self.upstreams[(up.tenant_id, up.name)] = up
        self._generation += 1
        self._audit(principal, "tools:admin", f"upstream:{up.name}", op="create", url=url)
        return up

    async def create_openapi_upstream(self, principal: Principal, body: OpenAPIIn) -> Upstream:
        from garrison.tools.openapi import tools_from_openapi

        tools = tools_from_openapi(body.document)
        a = body.auth
        check_auth(a.kind, a.header, a.secret, a.token_url, a.client_id)
        now = utcnow()
        values = dict(
            id=new_id("ups"), tenant_id=principal.tenant_id, name=body.name, kind="openapi", url=body.base_url,
            registry_name=None, auth_kind=a.kind, auth_header=a.header, auth_secret=self.box.seal(a.secret),
            oauth_token_url=a.token_url, oauth_client_id=a.client_id, oauth_scope=a.scope,
            timeout_s=body.timeout_s, idempotent_tools=[t["name"] for t in tools if t.get("_method") == "get"],
            openapi_doc=orjson.dumps(body.document).decode(), tool_list=tools, created_at=now, updated_at=now,
        )
        up = await self.store.insert_upstream(values)
        self.upstreams[(up.tenant_id, up.name)] = up
        self._generation += 1
        self._audit(principal, "tools:admin", f"upstream:{up.name}", op="create_openapi", tools=len(tools))
        return up

    def list_upstreams(self, principal: Principal) -> list[Upstream]:
        return sorted((u for (t, _), u in self.upstreams.items() if t == principal.tenant_id), key=lambda u: u.name)

    def get_upstream(self, principal: Principal, name: str) -> Upstream:
        up = self.upstreams.get((principal.tenant_id, name))
        if up is None:
            raise NotFound(f"no upstream named {name!r}")
        return up

    async def delete_upstream(self, principal: Principal, name: str) -> None:
        up = self.get_upstream(principal, name)
        await self.store.delete_upstream(principal.tenant_id, name)
        self.upstreams.pop((principal.tenant_id, name), None)
        self._generation += 1
        self._tool_cache.pop(up.id, None)
        self.oauth.forget(up.id)
        await self.pool.close_upstream(up.id)
        await self.stdio.stop(up.id)
        self._audit(principal, "tools:admin", f"upstream:{name}", op="delete")

    async def outbound_headers(self, up: Upstream) -> dict[str, str]:
        """Headers garrison sends upstream: its own credential for that upstream, nothing of the caller's."""
        secret = self.box.open(up.auth_secret)
        if up.auth_kind == "bearer" and secret:
            return {"Authorization": f"Bearer {secret}"}
        if up.auth_kind == "api_key_header" and secret and up.auth_header:
            return {up.auth_header: secret}
        if up.auth_kind == "oauth_client_credentials" and secret and up.oauth_token_url and up.oauth_client_id:
            token = await self.oauth.token(up.id, up.oauth_token_url, up.oauth_client_id, secret,
                                           up.oauth_scope, self.settings.connect_timeout_s)
            return {"Authorization": f"Bearer {token}"}
        return {}

    async def registry_headers(self, registry_name: str) -> dict[str, str]:
        """The credential of an upstream made from this registry entry (for the registry's health checks)."""
        up = next((u for u in self.upstreams.values() if u.registry_name == registry_name), None)
        return await self.outbound_headers(up) if up is not None else {}

    async def _stdio_package(self, up: Upstream) -> StdioPackage:
        """The package with the registry entry's fixed arguments and environment, when the
        entry still publishes the version the upstream was made from."""
        pinned = package_of_url(up.url)
        registry = self.platform.services.get("registry") if self.platform else None
        if registry is not None and up.registry_name:
            with contextlib.suppress(Exception):
                latest = stdio_package(up.registry_name, (await registry.get(up.registry_name, "latest")).server)
                if latest.requirement == pinned.requirement:
                    return latest
        return pinned

    async def connect(self, owner: str, up: Upstream, log_sink: LogSink | None = None) -> UpstreamConnection:
        if is_stdio_url(up.url):
            server = self.stdio.servers.get(up.id)
            pkg = server.package if server is not None else await self._stdio_package(up)
            server, started = await self.stdio.ensure(up.id, up.tenant_id, up.name, pkg)
            if started:  # connections into an ended sandbox are of no use
                await self.pool.close_upstream(up.id)
            conn = await self.pool.get(owner, up.id, BRIDGE_URL, lambda: self.outbound_headers(up), log_sink,
                                       transport=lambda: RelayTransport(server))
            metrics.UPSTREAM_SESSIONS.set(len(self.pool))
            return conn
        conn = await self.pool.get(owner, up.id, up.url, lambda: self.outbound_headers(up), log_sink)
        metrics.UPSTREAM_SESSIONS.set(len(self.pool))
        return conn

    def unhealthy(self, up: Upstream) -> bool:
        registry = self.platform.services.get("registry") if self.platform else None
        check = getattr(registry, "is_unhealthy", None)
        return bool(up.registry_name and check is not None and check(up.registry_name))

    async def upstream_tools(self, up: Upstream, *, refresh: bool = False) -> list[dict[str, Any]]:
        if up.kind == "openapi":
            return list(up.tool_list or [])
        hit = self._tool_cache.get(up.id)
        if hit and not refresh and time.monotonic() - hit[0] < self.settings.catalogue_ttl_s:
            return hit[1]
        try:
            conn = await self.connect(CATALOGUE_OWNER, up)
            tools = [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in await conn.list_tools()]
        except Exception as exc:  # an unreachable upstream contributes no tools, the others still list
            await self.pool.drop(CATALOGUE_OWNER, up.id)
            log.warning("tools/list of upstream %s failed: %s", up.name, exc)
            return hit[1] if hit else []
        if hit is None or hit[1] != tools:
            self._generation += 1  # the catalogues built on the old list are stale
        self._tool_cache[up.id] = (time.monotonic(), tools)
        return tools

    # ---- virtual servers ---------------------------------------------------------------

    async def put_virtual_server(self, principal: Principal, body: VirtualServerIn, *, replace: bool) -> VirtualServer:
        aliases = [r.alias for r in body.tools if r.alias]
        if len(aliases) != len(set(aliases)):
            raise BadRequest("tool aliases must be unique within a virtual server")
        for ref in body.tools:
            if ref.upstream not in self.local and (principal.tenant_id, ref.upstream) not in self.upstreams:
                raise BadRequest(f"tools[].upstream {ref.upstream!r} is neither an upstream nor a local tool server")
            if ref.alias and ref.tool == "*":
                raise BadRequest("an alias names one tool: give tools[].tool as well")
            if ref.alias and ("__" in ref.alias or ref.alias == SEARCH_TOOL):
                # '__' is reserved for <upstream>__<tool> names, so an alias never shadows another upstream's tool.
                raise BadRequest(f"alias {ref.alias!r} may not contain '__' or be {SEARCH_TOOL!r}: "
                                 "those names are reserved for namespaced tools and the search tool")
        now = utcnow()
        vs = await self.store.upsert_virtual_server(dict(
            id=new_id("vsv"), tenant_id=principal.tenant_id, name=body.name, description=body.description,
            tools=[r.model_dump() for r in body.tools], rate_limit_per_min=body.rate_limit_per_min,
            created_at=now, updated_at=now,
        ), replace=replace)
        self.virtual_servers[(vs.tenant_id, vs.name)] = vs
        self._generation += 1
        self._audit(principal, "tools:admin", f"virtual_server:{vs.name}", op="put")
        return vs

    def get_virtual_server(self, principal: Principal, name: str) -> VirtualServer:
        vs = self.virtual_servers.get((principal.tenant_id, name))
        if vs is None:
            raise NotFound(f"no virtual server named {name!r}")
        return vs

    def list_virtual_servers(self, principal: Principal) -> list[VirtualServer]:
        return sorted((v for (t, _), v in self.virtual_servers.items() if t == principal.tenant_id),
                      key=lambda v: v.name)

    async def delete_virtual_server(self, principal: Principal, name: str) -> None:
        self.get_virtual_server(principal, name)
        await self.store.delete_virtual_server(principal.tenant_id, name)
        self.virtual_servers.pop((principal.tenant_id, name), None)
        self._generation += 1
        self._audit(principal, "tools:admin", f"virtual_server:{name}", op="delete")

    async def catalogue(self, principal: Principal, vs: VirtualServer) -> dict[str, CatalogueTool]:
        """Exposed name -> tool, cached per virtual server until a change or the catalogue TTL."""
        key = (vs.tenant_id, vs.name)
        hit = self._catalogues.get(key)
        now = time.monotonic()
        if hit and hit[1] == self._generation and now - hit[0] < self.settings.catalogue_ttl_s:
            return hit[2]
        out = await self._build_catalogue(vs)
        self._catalogues[key] = (now, self._generation, out)
        return out

    async def _build_catalogue(self, vs: VirtualServer) -> dict[str, CatalogueTool]:
        """The first of two tools with the same exposed name wins."""
        out: dict[str, CatalogueTool] = {}
        for ref in vs.tools:
            server, wanted, alias = ref["upstream"], ref.get("tool") or "*", ref.get("alias")
            local = self.local.get(server)
            if local is not None:
                for t in local.values():
                    if wanted in ("*", t.name):
                        name = alias or exposed_name(server, t.name)
                        out.setdefault(name, CatalogueTool(name, server, t.name, t.description, t.input_schema,
                                                           local=t))
                continue
            up = self.upstreams.get((vs.tenant_id, server))
            if up is None or self.unhealthy(up):
                continue
            for spec in await self.upstream_tools(up):
                if wanted in ("*", spec["name"]):
                    name = alias or exposed_name(up.name, spec["name"])
                    out.setdefault(name, CatalogueTool(
                        name, up.name, spec["name"], spec.get("description"), spec.get("inputSchema") or {},
                        upstream_id=up.id, annotations=spec.get("annotations") or {}))
        return out

    async def list_tools(self, principal: Principal, vs: VirtualServer) -> list[dict[str, Any]]:
        tools = [t.as_mcp() for t in (await self.catalogue(principal, vs)).values()]
        tools.append({"name": SEARCH_TOOL, "description": SEARCH_TOOL_DESCRIPTION, "inputSchema": SEARCH_TOOL_SCHEMA})
        return tools

    async def search(self, principal: Principal, vs: VirtualServer, query: str, limit: int = 10) -> list[dict[str, Any]]:
        tools = list((await self.catalogue(principal, vs)).values())
        hits = rank(query, [(t.exposed, t.description or "") for t in tools], limit=max(1, min(50, limit)))
        return [{**tools[i].as_mcp(), "score": score} for i, score in hits]

    # ---- the call path -----------------------------------------------------------------

    # Set by the runtime layer (runtime/calls.py): a call from a durable run's step is recorded, and the
    # same call from a retry of that step is answered from the record, not sent (nor audited) again.
    call_journal: Any = None

    async def call_tool(
        self, principal: Principal, vs: VirtualServer, name: str, arguments: dict[str, Any], *,
        owner: str, session_id: str | None = None, notify: Notify | None = None, progress: bool = False,
        log_sink: LogSink | None = None, parent: Context | None = None, headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Policy, rate limit, breaker, timeout, retries, size cap; audited, traced and metered.

        Returns the tool result in its wire form (``content``, ``structuredContent``, ``isError``):
        an upstream's answer is passed on as it came, without a model round trip. ``parent`` is
        the caller's trace context (from ``params._meta.traceparent``) when the MCP SDK did not
        already make it current. ``headers``: the run step the call comes from (``step_headers``).
        """
        def governed(ended: list[str] | None = None) -> Awaitable[dict[str, Any]]:
            return self._call_tool(principal, vs, name, arguments, owner=owner, session_id=session_id,
                                   notify=notify, progress=progress, log_sink=log_sink, parent=parent, ended=ended,
                                   headers=headers)

        journal = self.call_journal
        if journal is None or not headers or STEP_HEADER not in headers:
            return await governed()

        async def answered() -> tuple[dict[str, Any], bool]:
            ended: list[str] = []
            result = await governed(ended)
            return result, ended[-1:] in (["ok"], ["tool_error"])  # the tool itself answered

        result, replayed = await journal.tool_call(principal, f"tools/call {vs.name}/{name}", arguments, headers,
                                                   answered)
        if replayed:
            self._replayed(principal, vs, name, headers, parent)
            result = {**result, "_meta": {**(result.get("_meta") or {}), REPLAYED_META: True}}
        return result  # type: ignore[no-any-return]

    def _replayed(self, principal: Principal, vs: VirtualServer, name: str, headers: dict[str, str],
                  parent: Context | None) -> None:
        """A retried run step's call answered from the journal: audited and traced as a replay, not a call."""
        with tracer.start_as_current_span(f"tools/call {name}", context=parent, kind=trace.SpanKind.SERVER,
                                          attributes={"mcp.method.name": "tools/call", "gen_ai.tool.name": name,
                                                      "garrison.tenant_id": principal.tenant_id,
                                                      "garrison.virtual_server": vs.name, "garrison.replayed": True,
                                                      **who(principal, headers)}):
            if self.platform is not None:
                self.platform.audit.record(principal, "tools:call", f"tool/{vs.name}/{name}", "allow", "replayed",
                                           {"run": headers.get("x-garrison-run"), "step": headers.get(STEP_HEADER)})

    async def _call_tool(
        self, principal: Principal, vs: VirtualServer, name: str, arguments: dict[str, Any], *,
        owner: str, session_id: str | None, notify: Notify | None, progress: bool,
        log_sink: LogSink | None, parent: Context | None, ended: list[str] | None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """``call_tool`` itself; appends how the call ended (its outcome) to ``ended``."""
        started = time.perf_counter()
        with tracer.start_as_current_span(f"tools/call {name}", context=parent, kind=trace.SpanKind.SERVER,
                                          attributes={"mcp.method.name": "tools/call",
                                                      "gen_ai.operation.name": "execute_tool",
                                                      "gen_ai.tool.name": name,
                                                      "garrison.tenant_id": principal.tenant_id,
                                                      "garrison.virtual_server": vs.name,
                                                      **who(principal, headers)}) as span:
            if session_id:
                span.set_attribute("mcp.session.id", session_id)
            upstream_label, outcome = "-", "error"
            try:
                if name == SEARCH_TOOL:
                    upstream_label = "garrison"
                    query = arguments.get("query")
                    if not isinstance(query, str) or not query.strip():
                        outcome = "bad_request"
                        return error_result("search_tools needs a non-empty 'query' string")
                    limit = arguments.get("limit", 10)
                    hits = await self.search(principal, vs, query, limit if isinstance(limit, int) else 10)
                    outcome = "ok"
                    return to_result({"tools": hits})
                tool = (await self.catalogue(principal, vs)).get(name)
                if tool is None:
                    outcome = "unknown_tool"
                    raise NotFound(f"virtual server {vs.name!r} has no tool {name!r}")
                upstream_label = tool.upstream
                span.set_attribute("garrison.upstream", tool.upstream)
                if self.platform is not None:
                    await self.platform.policy.check(principal, "tools:call", Resource(
                        "tool", f"{vs.name}/{name}", principal.tenant_id,
                        {"upstream": tool.upstream, "tool": tool.tool, "virtual_server": vs.name}))
                self.limiter.check((principal.id, vs.tenant_id, vs.name),
                                   vs.rate_limit_per_min or self.settings.rate_limit_per_min)
                result = await self._dispatch(principal, tool, arguments, owner, notify, progress, log_sink)
                if result is TOO_LARGE:
                    outcome = "too_large"
                    return error_result(f"the tool result is larger than the gateway's cap of "
                                        f"{self.settings.max_result_bytes} bytes; ask for less")
                outcome = "tool_error" if result.get("isError") else "ok"
                return result
            except Problem as exc:
                outcome = outcome if outcome != "error" else exc.slug
                span.set_attribute("error.type", exc.slug)
                raise
            finally:
                elapsed = time.perf_counter() - started
                if ended is not None:
                    ended.append(outcome)
                metrics.TOOL_CALLS.labels(upstream_label, outcome).inc()
                metrics.TOOL_CALL_SECONDS.labels(upstream_label).observe(elapsed)
                if outcome not in ("ok", "tool_error"):
                    span.set_status(trace.Status(trace.StatusCode.ERROR, outcome))
                    span.set_attribute("error.type", outcome)
                if self.platform is not None:
                    denied = outcome in ("forbidden", "too-many-requests")
                    self.platform.audit.record(
                        principal, "tools:call", f"tool/{vs.name}/{name}", "deny" if denied else "allow",
                        outcome, {"upstream": upstream_label, "ms": round(elapsed * 1000, 2)})

    def _capped(self, result: dict[str, Any]) -> dict[str, Any]:
        return TOO_LARGE if len(orjson.dumps(result)) > self.settings.max_result_bytes else result

    async def _dispatch(self, principal: Principal, tool: CatalogueTool, arguments: dict[str, Any], owner: str,
                        notify: Notify | None, progress: bool, log_sink: LogSink | None) -> dict[str, Any]:
        if tool.local is not None:
            try:
                return self._capped(to_result(await asyncio.wait_for(tool.local.handler(principal, arguments),
                                                                     self.settings.call_timeout_s)))
            except TimeoutError:
                return error_result(f"{tool.exposed} did not answer within {self.settings.call_timeout_s:g} s")
        up = next((u for u in self.upstreams.values() if u.id == tool.upstream_id), None)
        if up is None:
            raise NotFound(f"upstream {tool.upstream!r} was removed")
        if self.unhealthy(up):
            raise ServiceUnavailable(f"upstream {up.name} is unhealthy (registry health check)")
        self.breaker.before(up.id, up.name)
        timeout = up.timeout_s or self.settings.call_timeout_s
        idempotent = tool.tool in up.idempotent_tools
        retries = self.settings.retries if idempotent else 0
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the upstream's spans join this call's trace
        last, attempt, session_renewed = "", 0, False
        while True:
            try:
                if up.kind == "openapi":
                    from garrison.tools.openapi import call_operation

                    answer = await asyncio.wait_for(call_operation(
                        up, tool.tool, arguments, await self.outbound_headers(up), timeout), timeout)
                    self.breaker.success(up.id)
                    return self._capped(wire(answer))
                conn = await self.connect(owner, up, log_sink)
                result = await asyncio.wait_for(conn.call_tool_raw(
                    tool.tool, arguments, meta=carrier, notify=notify, progress=progress,
                    max_bytes=self.settings.max_result_bytes + 1024), timeout)
                self.breaker.success(up.id)
                return result
            except ResultTooLarge:
                self.breaker.success(up.id)
                return TOO_LARGE
            except UpstreamRPCError as exc:  # the upstream is alive and said no
                self.breaker.success(up.id)
                return error_result(f"upstream {up.name} answered {tool.tool} with an error: {exc}")
            except TimeoutError:
                # Not retried: the tool may still be running. A hung session is not reused.
                last = f"upstream {up.name} did not answer {tool.tool} within {timeout:g} s"
                await self.pool.drop(owner, up.id)
                self.breaker.failure(up.id)
                return error_result(last)
            except (UpstreamError, OSError) as exc:
                last = f"upstream {up.name} failed: {exc}"
                await self.pool.drop(owner, up.id)
                if isinstance(exc, UpstreamError) and exc.session_lost and not session_renewed:
                    # The upstream answered 404 for its session: it ran nothing, so the call is
                    # sent once on a new session whether or not the tool is idempotent.
                    session_renewed = True
                    continue
                self.breaker.failure(up.id)
                if not (isinstance(exc, UpstreamError) and exc.retryable) or attempt >= retries:
                    return error_result(last)
            except Problem:
                raise
            except Exception as exc:  # anything else the upstream managed to provoke
                last = f"upstream {up.name} answered {tool.tool} with an error: {type(exc).__name__}: {exc}"[:500]
                await self.pool.drop(owner, up.id)
                self.breaker.failure(up.id)
                return error_result(last)
            attempt += 1
            metrics.TOOL_RETRIES.labels(up.name).inc()
            await asyncio.sleep(0.05 * (2 ** (attempt - 1)))

    async def close_owner(self, owner: str) -> None:
        await self.pool.close_owner(owner)
        metrics.UPSTREAM_SESSIONS.set(len(self.pool))
