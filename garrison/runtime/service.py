"""The runtime layer's service: agents and versions, assistants, threads, and durable runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from garrison.core.clock import utcnow
from garrison.core.errors import Conflict, NotFound, ServiceUnavailable
from garrison.core.ids import new_id
from garrison.core.principal import Principal
from garrison.policy import Resource
from garrison.runtime import bundles, graphs
from garrison.runtime.events import StoreEvents
from garrison.runtime.runs import RunManager
from garrison.runtime.settings import RuntimeSettings
from garrison.runtime.store import RuntimeStore
from garrison.runtime.threads import ThreadManager

if TYPE_CHECKING:
    from garrison.platform import Platform
    from garrison.runtime.engine import TemporalEngine
    from garrison.runtime.executor import RunExecutor

log = logging.getLogger("garrison.runtime")

# LangGraph's namespace for default assistant ids (uuid5 of the graph name); garrison adds the tenant.
ASSISTANT_NAMESPACE = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")


def default_assistant_id(tenant_id: str, graph_id: str) -> str:
    return str(uuid.uuid5(ASSISTANT_NAMESPACE, f"{tenant_id}/{graph_id}"))


class RuntimeService:
    def __init__(self, platform: Platform, settings: RuntimeSettings | None = None) -> None:
        self.platform = platform
        self.settings = settings or RuntimeSettings()
        self.store = RuntimeStore(platform.db)
        self.events: Any = StoreEvents(platform.db)
        if self.settings.events_backend == "nats":
            from garrison.runtime.events_nats import NatsEvents

            self.events = NatsEvents(self.settings.nats_url)
        self.bundle_root = platform.settings.data_dir / "runtime" / "agents"
        self.runs = RunManager(self)
        self.threads = ThreadManager(self)
        self._engine: TemporalEngine | None = None
        self.executor: RunExecutor | None = None  # made with the engine
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def engine(self) -> TemporalEngine:
        """Built on first use: a platform that never runs an agent does not even import temporalio."""
        if self._engine is None:
            from garrison.runtime.engine import TemporalEngine
            from garrison.runtime.executor import RunExecutor

            self.executor = RunExecutor(self.store, self.events, self.settings.heartbeat_timeout_s / 3,
                                        self.runs.step_config, self.runs.on_finished)
            self._engine = TemporalEngine(
                data_dir=self.platform.settings.data_dir, address=self.platform.settings.temporal_address,
                namespace=self.settings.temporal_namespace, start_timeout_s=self.settings.temporal_start_timeout_s,
                activities=self.executor.activities())
            from garrison.runtime.sandboxed_steps import isolation_for

            self.executor.isolation = isolation_for(self)
        return self._engine

    async def start(self) -> None:
        # Unfinished runs are recovered as soon as garrison is back, not on the next request.
        if self.settings.temporal_start == "eager" or await self.store.unfinished_runs():
            self.spawn(self._warm_up())

    async def _warm_up(self) -> None:
        with contextlib.suppress(ServiceUnavailable):
            await self.engine.client()
            released = await self.engine.release_orphaned_steps(await self.store.running_run_ids())
            if released:
                log.warning("retrying %d run step(s) that a previous garrison process left unfinished", released)

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._engine is not None:
            await self._engine.stop()
        await self.events.close()

    @property
    def state(self) -> Any:
        state = self.platform.services.get("state")
        if state is None:
            raise ServiceUnavailable("the state layer is not installed: runs need its checkpointer",
                                     slug="state-unavailable")
        return state

    def graph_store(self, tenant_id: str) -> Any | None:
        """The tenant's long-term store for graphs that use one (``get_store()``), when the state layer has it."""
        factory = getattr(self.state, "store", None)
        return factory(tenant_id) if factory is not None else None

    async def check(self, principal: Principal, action: str, kind: str, ident: str, tenant_id: str) -> None:
        await self.platform.policy.check(principal, action, Resource(kind, ident, tenant_id))

    # Agents and versions.
    async def deploy(self, principal: Principal, name: str, bundle: bytes, *, promote: bool = True) -> dict[str, Any]:
        bundles.check_name(name)
        await self.check(principal, "runtime:deploy", "agent", name, principal.tenant_id)
        staging = self.bundle_root / principal.tenant_id / name / f".staging-{uuid.uuid4().hex}"
        digest = await asyncio.to_thread(bundles.unpack, bundle, staging, self.settings.max_bundle_bytes)
        try:
            descriptor = await asyncio.to_thread(bundles.read_descriptor, staging)
            if descriptor["kind"] == "agentcore":  # runs in session sandboxes (runtime/sessions.py)
                from garrison.runtime import deps

                descriptor.update(await deps.prepare(self.platform, staging, digest))
            else:
                from garrison.runtime import deploy_sandbox
                from garrison.runtime.sandboxed_steps import GraphIsolationSettings

                isolation = GraphIsolationSettings()
                if deploy_sandbox.isolation_of(staging, isolation.isolation, isolation.allow_process) == "sandbox":
                    # Its graphs are imported only inside its sandboxes (runtime/sandboxed_steps.py).
                    descriptor.update(await deploy_sandbox.prepare(self.platform, staging, digest,
                                                                   principal, descriptor["graphs"]))
                    (staging / deploy_sandbox.ISOLATION_MARKER).write_text("sandbox")  # read by load()
                else:
                    await asyncio.to_thread(graphs.check_loads, staging, descriptor["graphs"])
            agent = await self.store.agent(principal.tenant_id, name)
            for graph_id in descriptor.get("graphs", {}):
                existing = await self.store.assistant(principal.tenant_id,
                                                      default_assistant_id(principal.tenant_id, graph_id))
                if existing and (agent is None or existing["agent_id"] != agent["id"]):
                    raise Conflict(f"graph {graph_id!r} already belongs to another agent of this tenant; "
                                   "rename the graph in the descriptor")
            agent_id = agent["id"] if agent else new_id("agt")
            number = await self.store.add_version(agent_id=agent_id, tenant_id=principal.tenant_id, name=name,
                                                  kind=descriptor["kind"], descriptor=descriptor, digest=digest,
                                                  path="", created_by=principal.id)
        except Exception:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        final = staging.parent / f"v{number}"
        await asyncio.to_thread(staging.rename, final)
        from sqlalchemy import update

        from garrison.runtime.tables import versions
        async with self.platform.db.engine.begin() as conn:
            await conn.execute(update(versions).where(versions.c.agent_id == agent_id, versions.c.version == number)
                               .values(path=str(final)))
        if promote or agent is None:
            await self.store.set_endpoint(agent_id, "default", number)
        for graph_id in descriptor.get("graphs", {}):
            await self._ensure_default_assistant(principal.tenant_id, agent_id, graph_id, number)
        self.platform.audit.record(principal, "runtime:deploy", f"agent/{name}", "allow", "",
                                   {"version": number, "digest": digest})
        return await self.describe_agent(principal, name)

    async def _ensure_default_assistant(self, tenant_id: str, agent_id: str, graph_id: str, number: int) -> None:
        assistant_id = default_assistant_id(tenant_id, graph_id)
        existing = await self.store.assistant(tenant_id, assistant_id)
        now = utcnow()
        await self.store.put_assistant({
            "assistant_id": assistant_id, "tenant_id": tenant_id, "agent_id": agent_id, "graph_id": graph_id,
            "name": graph_id, "description": None, "config": existing["config"] if existing else {},
            "context": existing["context"] if existing else {},
            "metadata": {"created_by": "system"}, "version": number, "created_at": now, "updated_at": now})

    async def agent_row(self, principal: Principal, name: str) -> dict[str, Any]:
        agent = await self.store.agent(principal.tenant_id, name)
        if agent is None:
            raise NotFound(f"agent {name!r} not found; deploy it with `garrison agents deploy DIR`")
        return agent

    async def describe_agent(self, principal: Principal, name: str) -> dict[str, Any]:
        agent = await self.agent_row(principal, name)
        versions = await self.store.versions(agent["id"])
        endpoints = await self.store.endpoints(agent["id"])
        return {"name": agent["name"], "id": agent["id"], "created_at": agent["created_at"],
                "versions": [{"version": v["version"], "kind": v["kind"], "digest": v["digest"],
                              "graphs": sorted(v["descriptor"].get("graphs", {})), "created_at": v["created_at"]}
                             for v in versions],
                "endpoints": {e["name"]: e["version"] for e in endpoints}}

    async def list_agents(self, principal: Principal) -> list[dict[str, Any]]:
        return [await self.describe_agent(principal, a["name"]) for a in await self.store.agents(principal.tenant_id)]

    async def set_endpoint(self, principal: Principal, name: str, endpoint: str, version: int) -> dict[str, Any]:
        bundles.check_name(endpoint, "endpoint name")
        await self.check(principal, "runtime:deploy", "agent", name, principal.tenant_id)
        agent = await self.agent_row(principal, name)
        if await self.store.version(agent["id"], version) is None:
            raise NotFound(f"agent {name!r} has no version {version}")
        await self.store.set_endpoint(agent["id"], endpoint, version)
        self.platform.audit.record(principal, "runtime:deploy", f"agent/{name}/endpoint/{endpoint}", "allow", "",
                                   {"version": version})
        return await self.describe_agent(principal, name)

    async def resolve_graph(self, tenant_id: str, assistant: dict[str, Any],
                            endpoint: str = "default") -> tuple[int, Path, str]:
        """(version, bundle path, graph ref) that a run of ``assistant`` executes."""
        number = await self.store.endpoint(assistant["agent_id"], endpoint)
        if number is None:
            raise NotFound(f"endpoint {endpoint!r} does not exist for this agent")
        version = await self.store.version(assistant["agent_id"], number)
        if version is None or assistant["graph_id"] not in version["descriptor"].get("graphs", {}):
            raise Conflict(f"version {number} of the agent has no graph {assistant['graph_id']!r}")
        return number, Path(version["path"]), version["descriptor"]["graphs"][assistant["graph_id"]]

    def load(self, agent_id: str, number: int, path: Path, ref: str) -> Any:
        from garrison.runtime import deploy_sandbox

        if (path / deploy_sandbox.ISOLATION_MARKER).is_file():  # never imported here: read in its sandboxes
            from garrison.runtime.sandboxed_steps import SandboxedVersion

            return SandboxedVersion(self, agent_id, number, ref)
        return graphs.load_graph(path, ref, f"{agent_id}_v{number}".replace("-", "_"))
