"""What a run's own calls to garrison carry, so usage is attributed to the run's agent, session and user.

A graph runs inside garrison's worker, many runs at once in one process, so nothing
process-wide (an environment variable) can say whose a model call is. Each step gets,
in ``config["configurable"]["garrison"]``, a short-lived token minted for the run's owner
with the run's thread as its session, and the headers the LLM gateway reads the agent
from. A graph that builds its model client from them has each call in the metering
ledger under agent, session (thread) and user; a step repeated after a crash is detected
from its checkpoint and not run again, so its calls are not made (nor counted) twice.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace

from garrison.core.principal import Principal
from garrison.telemetry.provider import emit_span

log = logging.getLogger("garrison.runtime.attribution")

if TYPE_CHECKING:
    from garrison.runtime.service import RuntimeService

# What a run may do through garrison on its owner's behalf, at most (never more than the owner could).
RUN_SCOPES = ("llm:invoke", "tools:call")
# What a sandboxed graph's get_store() needs of garrison's /store API (read; put and delete). Only the
# session token of a sandboxed run carries them, and its egress reaches /store, /v1 and /mcp only; an
# in-process graph gets the store object itself, so its token keeps RUN_SCOPES.
STORE_SCOPES = ("runtime:read", "runtime:invoke")
TOKEN_TTL_S = 900


def run_scopes(principal: Principal) -> list[str]:
    """The scopes a run of ``principal`` is given (kept in the run's spec at creation): those of
    RUN_SCOPES and STORE_SCOPES that ``principal`` has, never more."""
    return [scope for scope in (*RUN_SCOPES, *STORE_SCOPES) if principal.has_scope(scope)]


def run_trace() -> dict[str, Any]:
    """Spec entries that put a new run into the current trace (the invocation that creates it).

    The run's span id is chosen now and kept in the run's row, so every step, in whatever
    worker or process runs it, names the run's span as its parent without any in-memory
    context; the span itself is recorded when the run ends (``end_run_span``). A run created
    outside any trace starts its own.
    """
    ctx = trace.get_current_span().get_span_context()
    trace_id = f"{ctx.trace_id:032x}" if ctx.is_valid else os.urandom(16).hex()
    return {"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01",
            "trace_run": {"parent": f"{ctx.span_id:016x}" if ctx.is_valid else None, "start_ns": time.time_ns()}}


def traceparent_of(span: Any) -> str:
    """The W3C traceparent naming ``span`` as the parent (cheaper than ``propagate.inject``)."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def end_run_span(run: dict[str, Any], status: str, error: str | None, agent: str) -> None:
    """Record the span of ``run`` (from its creation to now), with the ids its steps already name."""
    spec = run["spec"]
    info, parent = spec.get("trace_run"), (spec.get("traceparent") or "").split("-")
    if not isinstance(info, dict) or len(parent) != 4:
        return  # created before runs had their own span: its steps name the caller's span
    try:
        emit_span("runtime.run", trace_id=parent[1], span_id=parent[2], parent_span_id=info.get("parent"),
                  start_ns=int(info["start_ns"]), end_ns=time.time_ns(), scope="garrison.runtime",
                  error=(error or status) if status in ("error", "timeout") else None, attributes={
                      "gen_ai.operation.name": "invoke_workflow", "gen_ai.agent.name": agent,
                      "gen_ai.agent.id": spec["agent_id"], "garrison.agent_version": str(spec["version"]),
                      "gen_ai.conversation.id": run["thread_id"], "user.id": run.get("owner") or "",
                      "garrison.tenant_id": run["tenant_id"], "garrison.run_id": run["run_id"],
                      "garrison.run_status": status})
    except (KeyError, TypeError, ValueError) as exc:  # a malformed row must not fail the run's end
        log.warning("run %s: its span was not recorded: %s", run.get("run_id"), exc)


class RunCredentials:
    def __init__(self, service: RuntimeService) -> None:
        self.service = service
        self._tokens: dict[str, tuple[str, float]] = {}
        self._agent_names: dict[str, str] = {}

    async def agent_name(self, agent_id: str) -> str:
        name = self._agent_names.get(agent_id)
        if name is None:
            row = await self.service.store.agent_by_id(agent_id)
            name = self._agent_names[agent_id] = row["name"] if row else agent_id
        return name

    def _token(self, run: dict[str, Any], scopes: list[str], agent: str) -> str:
        hit = self._tokens.get(run["run_id"])
        if hit is not None and time.time() < hit[1] - TOKEN_TTL_S / 5:
            return hit[0]
        identity = self.service.platform.identity
        ttl = min(TOKEN_TTL_S, identity.token_max_ttl_s)
        minter = Principal(id=run["owner"], tenant_id=run["tenant_id"], kind="agent", scopes=frozenset(scopes),
                           name=f"agent {agent}")
        token = identity.mint_token(minter, scopes=scopes, ttl_s=ttl, session_id=run["thread_id"][:256],
                                    name=f"agent {agent}")["token"]
        if len(self._tokens) > 10_000:
            self._tokens.clear()
        self._tokens[run["run_id"]] = (token, time.time() + ttl)
        return token

    def forget(self, run_id: str) -> None:
        self._tokens.pop(run_id, None)

    async def for_run(self, run: dict[str, Any]) -> dict[str, Any]:
        """``config["configurable"]["garrison"]`` for a step of ``run``."""
        spec = run["spec"]
        agent = await self.agent_name(spec["agent_id"])
        settings = self.service.platform.settings
        out: dict[str, Any] = {
            "run_id": run["run_id"], "thread_id": run["thread_id"], "agent": agent, "agent_version": spec["version"],
            "llm_base_url": f"http://{settings.host}:{settings.port}/v1",
            "headers": {"x-garrison-agent": agent, "x-garrison-agent-version": str(spec["version"]),
                            "x-garrison-run": run["run_id"]},
        }
        # Called inside the step's span: the step's model and tool calls join the run's trace.
        propagate.inject(out["headers"])
        scopes = [scope for scope in spec.get("scopes") or () if scope in RUN_SCOPES]
        if scopes and run.get("owner"):
            out["token"] = self._token(run, scopes, agent)
        return out
