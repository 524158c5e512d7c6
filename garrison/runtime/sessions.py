"""Session sandboxes: each (agent, endpoint, session id) runs in its own sandbox.

The AgentCore contract, agent side: the version's process (an unmodified ``BedrockAgentCoreApp``
main.py, or any server on port 8080) starts inside the sandbox as a background process;
invocations reach it as ``POST /invocations`` and ``GET /ping`` through the relay (the sandbox
has no network), with the session id header. Its only way out is garrison: ``OPENAI_BASE_URL``
and ``GARRISON_MCP_URL`` point at the in-sandbox egress listener, which forwards ``/v1/*`` and
``/mcp/*`` (and, for a LangGraph graph's session, ``/store/*``) to garrison's own API with a
short-lived token scoped to ``llm:invoke`` and ``tools:call`` (a graph's: its run's scopes) for the
session's tenant (re-minted before it expires). ``/store/*`` gets a token of its own, with the run's
store scopes only, that never enters the sandbox.

A session is sticky for its life: it ends after ``idle_timeout_s`` without an invocation
(unless its /ping says ``HealthyBusy``) or at ``max_lifetime_s``. A sandbox killed under a
session is noticed and reported (``last_sandbox``); the next invocation starts a fresh one.
Sessions belong to the principal that opened them; anyone else gets 404.

Session state survives its sandbox: ``GARRISON_SESSION_STATE`` names a file in the sandbox's
workspace where the agent may keep what it must not lose. After each invocation garrison reads it
(off the response path) and, when it changed, checkpoints it in the state layer's checkpointer
under the session's thread; a fresh sandbox of the session gets the last checkpointed state
written back to that file before the agent process starts (``state.restored_bytes``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson
from opentelemetry import trace
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from garrison.config import LayerSettings
from garrison.core.clock import utcnow
from garrison.core.errors import Conflict, NotFound, Problem, ServiceUnavailable
from garrison.core.principal import Principal
from garrison.runtime.attribution import STORE_SCOPES, traceparent_of
from garrison.runtime.deploy_sandbox import RUNNER_FILE
from garrison.runtime.deps import AGENT_DIR, IN_SANDBOX
from garrison.sandbox.relay import (
    EgressPump,
    EgressRequest,
    Relay,
    RelayError,
    RelayResponse,
    egress_path_allowed,
    garrison_forwarder,
    text_response,
)

if TYPE_CHECKING:
    from garrison.runtime.service import RuntimeService

log = logging.getLogger("garrison.runtime.sessions")
SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
SESSION_NAMESPACE = uuid.UUID("0b9e4d4c-5d53-4a52-9d0c-7f3b8f6c2a11")
SESSION_SCOPES = ("llm:invoke", "tools:call")
# A sandboxed LangGraph graph also reaches garrison's long-term store (LangGraph Platform /store API),
# with its run's store scopes (runtime:read, runtime:invoke) where the run's owner has them.
STORE_PREFIXES = ("/store/",)
# Workspace file an AgentCore agent keeps its session state in (restored into a fresh sandbox).
STATE_FILE = "/workspace/.garrison/session-state"
STATE_CHANNEL = "agentcore_session_state"
ATTRIBUTION_HEADERS = ("x-garrison-agent", "x-garrison-agent-version")
PASSED_HEADERS = ("content-type", "accept", "x-amzn-bedrock-agentcore-runtime-custom-", "tracestate", "baggage",
                  "x-amzn-trace-id")
sandbox_tracer = trace.get_tracer("garrison.sandbox")


class SessionSettings(LayerSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_RUNTIME_SESSION_", extra="ignore")

    idle_timeout_s: float = Field(default=900.0, gt=0)
    max_lifetime_s: float = Field(default=8 * 3600.0, gt=0)
    # Importing boto3 and botocore under gVisor's ptrace platform takes seconds: be patient.
    start_timeout_s: float = Field(default=120.0, gt=0)
    invoke_timeout_s: float = Field(default=900.0, gt=0)
    reap_interval_s: float = Field(default=5.0, gt=0)
    agent_port: int = Field(default=8080, ge=1, le=65535)
    egress_port: int = Field(default=9901, ge=1, le=65535)
    backend: Literal["gvisor", "bubblewrap"] | None = None
    memory_mib: int = Field(default=1024, ge=64)
    pids: int = Field(default=512, ge=32)
    token_ttl_s: int = Field(default=3600, ge=60)
    python: str = "/usr/bin/python3"
    state_max_bytes: int = Field(default=1024 * 1024, ge=0)  # 0: session state is not kept


class AgentFailed(Problem):
    status, slug, title = 424, "agent-failed", "The agent failed"


class SessionSandboxGone(ServiceUnavailable):
    slug = "session-sandbox-gone"


@dataclass
class Session:
    tenant_id: str
    agent: str
    endpoint: str
    session_id: str
    owner: str
    agent_id: str = ""
    version: int | None = None
    sandbox: Any = None
    relay: Relay | None = None
    pump: EgressPump | None = None
    pid: int | None = None
    opened: float = field(default_factory=time.monotonic)
    opened_at: Any = field(default_factory=utcnow)
    last_active: float = field(default_factory=time.monotonic)
    active: int = 0
    sandboxes_started: int = 0
    ended_reason: str | None = None
    last_sandbox: dict[str, Any] | None = None
    token: str = ""  # the one the sandbox sees (OPENAI_API_KEY): never a store scope
    token_expires: float = 0.0
    store_token: str = ""  # the one the egress sends to /store: the store scopes only
    store_token_expires: float = 0.0
    scopes: tuple[str, ...] = SESSION_SCOPES
    egress_port: int = 0
    thread_id: str = ""  # the session's thread: its owner, and the checkpoints of its state
    kind: str = "agentcore"
    state_saved: bytes | None = None
    state_restored_bytes: int | None = None
    state_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The trace of the invocation (or sandboxed step) in progress: the agent's calls out to garrison
    # that carry no traceparent of their own join it (an unmodified agent propagates nothing).
    traceparent: str | None = None

    def alive(self) -> bool:
        sbx = self.sandbox
        return sbx is not None and sbx.state == "running" and sbx.runtime.alive()

    def describe(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "agent": self.agent, "endpoint": self.endpoint,
                "version": self.version, "state": "ended" if self.ended_reason else "active",
                "ended_reason": self.ended_reason, "opened_at": self.opened_at,
                "sandbox_id": self.sandbox.id if self.alive() else None,
                "backend": self.sandbox.backend if self.sandbox is not None else None,
                "sandboxes_started": self.sandboxes_started, "last_sandbox": self.last_sandbox,
                "saved_state": {"saved_bytes": len(self.state_saved) if self.state_saved is not None else None,
                          "restored_bytes": self.state_restored_bytes},
                "idle_s": round(time.monotonic() - self.last_active, 3), "invocations_in_flight": self.active}


class SessionManager:
    def __init__(self, service: RuntimeService, settings: SessionSettings | None = None) -> None:
        self.service = service
        self.platform = service.platform
        self.settings = settings or SessionSettings()
        self.sessions: dict[tuple[str, str, str, str], Session] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.app: Any = None  # garrison's ASGI app, where the sandboxes' egress goes

    def ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap_loop(), name="runtime-session-reaper")
            self.service._background.add(self._reaper)  # cancelled with the runtime service

    # ------------------------------------------------------------------ ownership

    async def open(self, principal: Principal, agent_id: str, agent: str, endpoint: str, session_id: str) -> Session:
        key = (principal.tenant_id, agent, endpoint, session_id)
        sess = self.sessions.get(key)
        if sess is None:
            # Ownership outlives the process: it is the session's thread row (the same one
            # LangGraph-kind sessions use), so a restarted garrison still refuses a stranger.
            thread_id = str(uuid.uuid5(SESSION_NAMESPACE, f"{principal.tenant_id}/{agent}/{session_id}"))
            thread = await self.service.store.thread(principal.tenant_id, thread_id)
            if thread is None:
                await self.service.threads.insert(principal, thread_id, {"agentcore_session": session_id,
                                                                         "agent": agent})
                owner = principal.id
            else:
                owner = thread["owner"]
            sess = self.sessions.setdefault(key, Session(principal.tenant_id, agent, endpoint, session_id, owner,
                                                         agent_id, thread_id=thread_id))
        if sess.owner != principal.id and not principal.is_admin:
            raise NotFound(f"session {session_id!r} not found")
        return sess

    def find(self, principal: Principal, agent: str, session_id: str) -> list[Session]:
        found = [s for (t, a, _, sid), s in self.sessions.items()
                 if t == principal.tenant_id and a == agent and sid == session_id
                 and (s.owner == principal.id or principal.is_admin)]
        if not found:
            raise NotFound(f"session {session_id!r} of agent {agent!r} not found")
        return found

    # ------------------------------------------------------------------ invoke

    async def invoke(self, principal: Principal, app: Any, agent_id: str, agent: str, endpoint: str,
                     session_id: str, body: bytes, headers: list[tuple[str, str]]) -> RelayResponse:
        self.ensure_reaper()
        self.app = self.app or app
        sess = await self.open(principal, agent_id, agent, endpoint, session_id)
        if not sess.alive():
            async with sess.lock:
                if not sess.alive():
                    await self._start(sess, app, agent_id)
        assert sess.relay is not None
        sent = [(k, v) for k, v in headers if k.lower().startswith(PASSED_HEADERS)]
        sent.append((SESSION_HEADER, session_id))
        # The invocation's span is the route's server span (runtime/invoke_fastpath.py): one span per
        # invocation on this hot path. The agent gets it as its parent, in place of the caller's.
        span = trace.get_current_span()
        if span.get_span_context().is_valid:
            sess.traceparent = traceparent_of(span)
            sent.append(("traceparent", sess.traceparent))
        if span.is_recording():
            span.set_attributes({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent,
                                 "gen_ai.agent.id": agent_id, "garrison.agent_version": str(sess.version),
                                 "gen_ai.conversation.id": session_id, "user.id": principal.id,
                                 "garrison.tenant_id": principal.tenant_id, "sandbox.id": sess.sandbox.id})
        sess.active += 1
        sess.last_active = time.monotonic()
        sbx = sess.sandbox
        sbx.last_used = time.monotonic()
        try:
            resp = await sess.relay.request(self.settings.agent_port, "POST", "/invocations", sent, body,
                                            self.settings.invoke_timeout_s)
        except RelayError as exc:
            sess.active -= 1
            raise self._failure(sess, sbx, exc) from None
        return RelayResponse(resp.status, resp.headers, self._tracked(sess, sbx, resp.body))

    async def _tracked(self, sess: Session, sbx: Any, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in body:
                yield chunk
        except RelayError as exc:
            raise self._failure(sess, sbx, exc) from None
        else:
            if sess.kind == "agentcore" and sess.thread_id and self.settings.state_max_bytes:
                self.service.spawn(self._save_state(sess, sbx))  # off the response path
        finally:
            sess.active -= 1
            sess.last_active = sbx.last_used = time.monotonic()

    # ------------------------------------------------------------------ session state

    def _state_config(self, sess: Session) -> dict[str, Any]:
        return {"configurable": {"thread_id": sess.thread_id, "checkpoint_ns": ""}}

    async def _read_state(self, sbx: Any) -> bytes | None:
        out, offset = b"", 0
        while True:
            try:
                got = await sbx.runtime.conn.call("read", path=STATE_FILE, offset=offset,
                                                  max_bytes=self.settings.state_max_bytes)
            except Exception as exc:  # no state file (the agent keeps none), too large, or the sandbox went
                log.debug("session state not read from %s: %s", sbx.id, exc)
                return None
            chunk = base64.b64decode(got["data"])
            out += chunk
            offset += len(chunk)
            if got["eof"] or not chunk:
                return out

    async def _save_state(self, sess: Session, sbx: Any) -> None:
        """The agent's state file, checkpointed under the session's thread when it changed."""
        from langgraph.checkpoint.base import empty_checkpoint

        async with sess.state_lock:
            data = await self._read_state(sbx)
            if data is None or data == sess.state_saved:
                return
            saver = self.service.state.saver(sess.tenant_id)
            config = self._state_config(sess)
            latest = await saver.aget_tuple(config)
            version = int((latest.metadata or {}).get("step", 0)) + 1 if latest is not None else 1
            if latest is not None:
                config["configurable"]["checkpoint_id"] = latest.checkpoint["id"]
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {STATE_CHANNEL: data}
            checkpoint["channel_versions"] = {STATE_CHANNEL: version}
            await saver.aput(config, checkpoint, {"source": "agentcore", "step": version, "sandbox_id": sbx.id,
                                                  "agent_version": sess.version}, {STATE_CHANNEL: version})
            sess.state_saved = data

    async def _restore_state(self, sess: Session, sbx: Any) -> None:
        """The session's last checkpointed state, into the fresh sandbox's state file."""
        if not sess.thread_id or not self.settings.state_max_bytes:
            return
        latest = await self.service.state.saver(sess.tenant_id).aget_tuple(self._state_config(sess))
        data = latest.checkpoint["channel_values"].get(STATE_CHANNEL) if latest is not None else None
        if isinstance(data, bytes):
            await sbx.runtime.conn.call("write", path=STATE_FILE, data=base64.b64encode(data).decode())
            sess.state_saved, sess.state_restored_bytes = data, len(data)

    def _failure(self, sess: Session, sbx: Any, exc: RelayError) -> Exception:
        if exc.kind == "SandboxGone" or not sess.alive():
            reason = self._note_ended(sess, sbx)
            return SessionSandboxGone(f"the session's sandbox {sbx.id} ended ({reason}); the next invocation "
                                      "starts a fresh one", headers={"Retry-After": "0"}, killed_reason=reason)
        return AgentFailed(f"the agent process did not answer: {exc}")

    def _note_ended(self, sess: Session, sbx: Any) -> str:
        reason = sbx.killed_reason or ("exited" if not sbx.runtime.alive() else "unknown")
        if sess.last_sandbox is None or sess.last_sandbox.get("id") != sbx.id:
            sess.last_sandbox = {"id": sbx.id, "killed_reason": reason, "ended_at": sbx.ended_at or utcnow()}
        return reason

    # ------------------------------------------------------------------ sandboxed LangGraph threads

    async def graph_session(self, run: dict[str, Any], agent: str) -> Session:
        """The running session sandbox of ``run``'s thread and version (runtime/sandboxed_steps.py).

        One per (tenant, agent, version, thread): the run was authorized when it was created,
        and the thread's owner owns the session; its token carries the run's scopes.
        """
        self.ensure_reaper()
        spec = run["spec"]
        key = (run["tenant_id"], agent, f"v{spec['version']}", run["thread_id"])
        scopes = tuple(spec["scopes"]) if spec.get("scopes") is not None else None
        sess = self.sessions.get(key)
        if sess is None:
            sess = self.sessions.setdefault(key, Session(
                run["tenant_id"], agent, key[2], run["thread_id"], run.get("owner") or "", spec["agent_id"],
                version=int(spec["version"]), scopes=scopes if scopes is not None else SESSION_SCOPES))
        elif scopes is not None and scopes != sess.scopes:
            # A run of the thread whose owner's scopes changed (or that opened after a state read, which
            # names none): the session's token carries this run's scopes from now on, never more.
            sess.scopes, sess.token_expires, sess.store_token_expires = scopes, 0.0, 0.0
        if not sess.alive():
            async with sess.lock:
                if not sess.alive():
                    if self.app is None:
                        from garrison.server import create_app

                        self.app = create_app(platform=self.platform)  # routes only: the platform runs already
                    await self._start(sess, self.app, spec["agent_id"])
        sess.last_active = time.monotonic()
        return sess

    # ------------------------------------------------------------------ start

    def _runtime_principal(self, sess: Session) -> Principal:
        return Principal(id=f"runtime/{sess.agent}", tenant_id=sess.tenant_id, kind="service",
                         scopes=frozenset({"sandbox:create", "sandbox:delete"}), name=f"agent {sess.agent} sessions")

    def current_token(self, sess: Session, store: bool = False) -> str:
        """The session's token (``store``: the one for /store), re-minted when under a fifth of its life
        is left; "" where the session has none of its scopes.

        The sandbox's own token (its environment, the graph's config) never carries a store scope, so a
        graph that leaks it leaks no more than model and tool calls; the egress alone holds the other."""
        scopes = [scope for scope in sess.scopes if (scope in STORE_SCOPES) == store]
        if store and not scopes:
            return ""
        expires = sess.store_token_expires if store else sess.token_expires
        if time.time() > expires - self.settings.token_ttl_s / 5:
            identity = self.platform.identity
            ttl = min(self.settings.token_ttl_s, identity.token_max_ttl_s)
            minter = Principal(id=sess.owner, tenant_id=sess.tenant_id, kind="agent",
                               scopes=frozenset(scopes), name=f"agent {sess.agent}")
            minted = identity.mint_token(minter, scopes=scopes, ttl_s=ttl,
                                         session_id=sess.session_id[:256], name=f"agent {sess.agent}")
            if store:
                sess.store_token, sess.store_token_expires = minted["token"], time.time() + ttl
            else:
                sess.token, sess.token_expires = minted["token"], time.time() + ttl
        return sess.store_token if store else sess.token

    async def _start(self, sess: Session, app: Any, agent_id: str) -> None:
        from garrison.sandbox.schemas import CreateIn, LimitsIn

        if sess.sandbox is not None:
            self._note_ended(sess, sess.sandbox)
            await self._drop_sandbox(sess, "replaced")
        if sess.version is None:
            number = await self.service.store.endpoint(agent_id, sess.endpoint)
            if number is None:
                raise NotFound(f"agent {sess.agent!r} has no endpoint {sess.endpoint!r} (qualifier)")
            sess.version = number
        version = await self.service.store.version(agent_id, sess.version)
        if version is None or "template" not in version["descriptor"]:
            raise NotFound(f"version {sess.version} of agent {sess.agent!r} runs in no sandbox")
        descriptor = version["descriptor"]
        sandbox = self.platform.services.get("sandbox")
        if sandbox is None:
            raise ServiceUnavailable("the sandbox layer is not installed", slug="sandbox-unavailable")
        s = self.settings
        lifetime = int(min(s.max_lifetime_s - (time.monotonic() - sess.opened), sandbox.settings.max_lifetime_s))
        if lifetime <= 0:
            sess.ended_reason = "max_lifetime"
            raise Conflict(f"session {sess.session_id!r} reached its maximum lifetime of "
                                     f"{s.max_lifetime_s:.0f} s; use a new session id", slug="session-expired")
        sbx = await sandbox.create(self._runtime_principal(sess), CreateIn(
            template=descriptor["template"], backend=s.backend, timeout_s=lifetime, idle_timeout_s=lifetime,
            pooled=False, limits=LimitsIn(memory_mib=s.memory_mib, pids=s.pids),
            metadata={"runtime_agent": sess.agent, "runtime_endpoint": sess.endpoint,
                      "runtime_version": str(sess.version), "runtime_session": sess.session_id[:1024]}))
        sess.sandbox, sess.relay = sbx, Relay(sbx.runtime.conn)
        sess.sandboxes_started += 1
        sess.ended_reason = None
        try:
            sess.kind = descriptor.get("kind") or "agentcore"
            sess.pump = EgressPump(sbx.runtime.conn, self._forwarder(sess, app))
            egress = sess.egress_port = await sess.pump.start(s.egress_port)
            env = {"OPENAI_BASE_URL": f"http://127.0.0.1:{egress}/v1", "OPENAI_API_KEY": self.current_token(sess),
                   "GARRISON_MCP_URL": f"http://127.0.0.1:{egress}/mcp/", "PORT": str(s.agent_port),
                   "GARRISON_AGENT": sess.agent, "GARRISON_SESSION_ID": sess.session_id}
            if sess.kind == "langgraph":  # runtime/sandbox_runner.py serves the graph's steps
                script = f"{IN_SANDBOX}/{RUNNER_FILE}"
                env["GARRISON_AGENT_ROOT"] = f"{IN_SANDBOX}/{AGENT_DIR}"
                env["GARRISON_STORE_URL"] = f"http://127.0.0.1:{egress}/store"  # the graph's get_store()
            else:
                script = f"{IN_SANDBOX}/{AGENT_DIR}/{descriptor.get('entrypoint') or 'main.py'}"
                env["GARRISON_SESSION_STATE"] = STATE_FILE
                await self._restore_state(sess, sbx)
            from garrison.sandbox.execution import span_attributes

            with sandbox_tracer.start_as_current_span("sandbox.exec", attributes={
                    **span_attributes(sbx), "process.executable.path": script}) as span:
                spawned = await sbx.runtime.conn.call("spawn", cmd=[s.python, script], env=env)
                sess.pid = int(spawned["pid"])
                span.set_attribute("process.pid", sess.pid)
                await self._wait_ready(sess)
        except BaseException:
            await self._drop_sandbox(sess, "agent_failed_to_start")
            raise
        sess.last_active = time.monotonic()

    def _forwarder(self, sess: Session, app: Any) -> Any:
        """garrison_forwarder, with garrison (not the sandbox) naming the agent and version each call is for."""
        forward = garrison_forwarder(app, lambda: self.current_token(sess))
        # A graph's get_store() (runtime/sandbox_runner.py): /store/* with the store token, which only garrison holds.
        store = garrison_forwarder(app, lambda: self.current_token(sess, store=True), STORE_PREFIXES)
        named = [("x-garrison-agent", sess.agent), ("x-garrison-agent-version", str(sess.version))]

        async def attributed(req: EgressRequest) -> RelayResponse:
            req.headers = [(k, v) for k, v in req.headers if k.lower() not in ATTRIBUTION_HEADERS] + named
            if sess.active and sess.traceparent and not any(k.lower() == "traceparent" for k, _ in req.headers):
                req.headers.append(("traceparent", sess.traceparent))
            if sess.kind == "langgraph" and egress_path_allowed(req.path, STORE_PREFIXES):
                if not self.current_token(sess, store=True):
                    return text_response(403, "this run may not use garrison's store: whoever created it has "
                                              "neither runtime:read nor runtime:invoke")
                return await store(req)
            return await forward(req)

        return attributed

    async def _wait_ready(self, sess: Session) -> None:
        assert sess.relay is not None and sess.sandbox is not None
        deadline = time.monotonic() + self.settings.start_timeout_s
        delay = 0.02
        while time.monotonic() < deadline:
            with contextlib.suppress(RelayError):
                resp = await sess.relay.request(self.settings.agent_port, "GET", "/ping", timeout_s=5)
                await resp.read()
                if resp.status < 500:
                    return
            status = await sess.sandbox.runtime.conn.call("proc_status", pid=sess.pid)
            if not status["running"]:
                raise AgentFailed(f"the agent process exited with code {status['exit_code']} before it served "
                                  f"/ping; its output ends with: {status['log_tail'][-1500:]}")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)
        raise AgentFailed(f"the agent did not answer GET /ping on port {self.settings.agent_port} within "
                          f"{self.settings.start_timeout_s:.0f} s")

    async def _drop_sandbox(self, sess: Session, reason: str) -> None:
        if sess.pump is not None:
            await sess.pump.stop()
        sbx, sess.sandbox, sess.relay, sess.pump = sess.sandbox, None, None, None
        if sbx is not None:
            sandbox = self.platform.services.get("sandbox")
            if sbx.state == "running" and sandbox is not None:
                await sandbox.terminate(sbx, reason)
            self._note_ended(sess, sbx)  # a sandbox that died first keeps the reason it died of

    def _idle(self, sess: Session) -> bool:
        return not sess.active and time.monotonic() - sess.last_active >= self.settings.idle_timeout_s

    async def end(self, sess: Session, reason: str) -> None:
        async with sess.lock:
            if reason == "idle" and not self._idle(sess):  # an invocation came in meanwhile
                return
            if sess.sandbox is not None and sess.sandbox.state == "running":
                await self._drop_sandbox(sess, reason)
            elif sess.sandbox is not None:
                self._note_ended(sess, sess.sandbox)
                sess.sandbox, sess.relay, sess.pump = None, None, None
            sess.ended_reason = reason

    # ------------------------------------------------------------------ expiry

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reap_interval_s)
            for sess in list(self.sessions.values()):
                with contextlib.suppress(Exception):
                    await self._reap(sess)

    async def _reap(self, sess: Session) -> None:
        s, now = self.settings, time.monotonic()
        if sess.sandbox is None and not sess.lock.locked() and now - sess.last_active > max(s.idle_timeout_s, 3600):
            # Long over: forget it here (who owns it stays in the store, so it can be reopened).
            self.sessions.pop((sess.tenant_id, sess.agent, sess.endpoint, sess.session_id), None)
            return
        if sess.sandbox is None or sess.lock.locked():  # starting: not idle
            return
        if not sess.alive():
            self._note_ended(sess, sess.sandbox)
            return
        if now - sess.opened >= s.max_lifetime_s:
            await self.end(sess, "max_lifetime")
            return
        if not self._idle(sess):
            return
        if await self._busy(sess):  # a HealthyBusy agent is working in the background: keep it
            sess.last_active = sess.sandbox.last_used = now
            return
        await self.end(sess, "idle")

    async def _busy(self, sess: Session) -> bool:
        if sess.relay is None:
            return False
        try:
            resp = await sess.relay.request(self.settings.agent_port, "GET", "/ping", timeout_s=5)
            body = await resp.read()
            return bool(orjson.loads(body).get("status") == "HealthyBusy")
        except (RelayError, orjson.JSONDecodeError, AttributeError):
            return False


def manager(service: RuntimeService) -> SessionManager:
    """The runtime service's session manager, made on first use."""
    found: SessionManager | None = getattr(service, "_session_manager", None)
    if found is None:
        found = SessionManager(service)
        service._session_manager = found  # type: ignore[attr-defined]
    return found
