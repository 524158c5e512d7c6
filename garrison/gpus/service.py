"""GpuService: the GPU layer's domain logic behind the API, and what other layers call.

The scheduler state lives in memory (decisions in well under 50 ms); every change of a
workload is written to the store under the same lock, so the store is never behind what
clients were told, and a restart puts running work back on its GPUs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from garrison.core.clock import aware
from garrison.core.errors import BadRequest, Forbidden, NotFound, TooManyRequests, ValidationFailed
from garrison.core.ids import new_id
from garrison.core.pagination import decode_cursor, encode_cursor
from garrison.core.principal import Principal
from garrison.gpus import kai, metrics, usage
from garrison.gpus.inventory import InventoryError, discover_nvml, parse_declared
from garrison.gpus.launcher import LocalLauncher
from garrison.gpus.model import Decision, GpuSpec, PriorityClass, QueueSpec, State, Topology, Workload
from garrison.gpus.queues import QueueConfigError
from garrison.gpus.scheduler import CycleResult, Scheduler, SchedulerConfig
from garrison.gpus.schemas import (
    ExplainOut,
    GpuOut,
    InventoryIn,
    InventoryOut,
    PlacementOut,
    QueueOut,
    QueuesIn,
    QueuesOut,
    WorkloadIn,
    WorkloadOut,
    WorkloadPage,
)
from garrison.gpus.store import GpuStore, epoch, ts
from garrison.gpus.validation import Refused
from garrison.policy import Resource

if TYPE_CHECKING:
    from garrison.platform import Platform

log = logging.getLogger("garrison.gpus")
PENDING_AUDIT_EVERY_S = 60.0
MAX_ACTIVE_PER_TENANT = 10_000  # pending + running: keeps one tenant from flooding the scheduler


class GpuService:
    def __init__(self, platform: Platform, *, interval_s: float = 1.0,
                 config: SchedulerConfig | None = None, meter_every_s: float = usage.DEFAULT_EVERY_S) -> None:
        self.platform = platform
        self.store = GpuStore(platform.db)
        self.interval_s = interval_s
        self.meter_every_s = meter_every_s  # GPU-seconds of running work go to the meter this often
        self.config = config or SchedulerConfig()
        self.sched = Scheduler([], [], self.config)
        self.source = "none"
        self.lock = asyncio.Lock()
        self.launch_specs: dict[str, dict[str, Any]] = {}  # workload id -> {"command", "serve"}
        self.launcher: LocalLauncher | None = None
        self._pending_audited: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.clock = time.time

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        gpus, self.source = await self._load_inventory()
        queues = [QueueSpec(**q) for q in (await self.store.get_config("queues") or [])]
        self.sched = Scheduler(gpus, queues, self.config)
        self.sched.held = []  # collect what workloads hold, for the resource meter
        now = self.clock()
        self.sched.clock = now
        requeued: list[Workload] = []
        for row in await self.store.active():
            w = self._from_row(row)
            if w.queue not in self.sched.tree.by_name:
                continue  # its queue was removed while it was down: leave the row as it was
            placement = [tuple(p) for p in json.loads(row["placement"])]
            # A launched process did not survive the restart: its workload runs again.
            relaunch = bool(self.launch_specs.get(w.id, {}).get("command"))
            if row["state"] == State.running.value and not relaunch and self.sched.restore(
                    w, placement, epoch(row["started_at"]) or now):  # type: ignore[arg-type]
                continue
            w.placement, w.allocated = [], 0.0
            w.state = State.pending
            self.sched.workloads[w.id] = w
            self.sched.pending[w.id] = w
            if row["state"] == State.running.value:
                w.reason, w.reason_code = "requeued: its GPUs or its process did not survive the restart", "restarted"
                requeued.append(w)
        await self.store.save_states(requeued)
        self._task = asyncio.create_task(self._loop(), name="gpus-scheduler")

    async def stop(self) -> None:
        if self.launcher is not None:
            await self.launcher.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        async with self.lock:  # meter running work up to now; a restart goes on from here
            self.sched.meter(self.clock(), 0.0)
            await self._save([])

    async def _load_inventory(self) -> tuple[list[GpuSpec], str]:
        doc = await self.store.get_config("inventory")
        if doc and doc.get("nodes"):
            return parse_declared(doc["nodes"]), "declared"
        found = await asyncio.to_thread(discover_nvml)
        if not found.gpus:
            log.info("no GPUs: %s", found.reason)
        return found.gpus, found.source

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
            self._wake.clear()
            try:
                await self.run_cycle()
            except Exception:  # keep scheduling; the next cycle retries
                log.exception("scheduling cycle failed")

    async def run_cycle(self) -> CycleResult:
        async with self.lock:
            now = self.clock()
            if not self.sched.pending:
                result = CycleResult()
            else:
                t0 = time.perf_counter()
                result = await asyncio.to_thread(self.sched.cycle, now)
                metrics.CYCLE.observe(time.perf_counter() - t0)
            self.sched.meter(now, self.meter_every_s)
            changed = {d.workload_id for d in result.decisions}
            await self._save([w for wid in changed if (w := self.sched.get(wid)) is not None])
            self._record(result.decisions)
            for w in result.started:
                if w.first_started_at == w.started_at:
                    metrics.QUEUE_WAIT.labels(w.priority_class.value).observe(
                        max(0.0, (w.started_at or 0.0) - w.submitted_at))
            self._gauges()
        if self.launcher is not None:
            await self.launcher.on_cycle(result.started, result.preempted)
        return result

    async def process_exited(self, workload_id: str, rc: int | None, why: str) -> None:
        """The launcher's process ended (or could not start): the GPUs go back."""
        async with self.lock:
            w = self.sched.workloads.get(workload_id)
            if w is None or w.state is not State.running:
                return
            d = self.sched.finish(workload_id, self.clock(), failed=rc != 0)
            w.reason = d.reason = why
            await self._save([w])
            self._record([d])
            self._gauges()
        self.wake()

    async def _save(self, changed: list[Workload]) -> None:
        """Write the changed workloads and those with GPU-seconds to meter, then hand those
        to the meter: in that order, a crash in between loses a stretch and never counts one
        twice. Called under the lock, after each change of the scheduler."""
        held = self.sched.take_held()
        rows = {w.id: w for w in changed}
        for h in held:
            rows.setdefault(h.workload.id, h.workload)
        await self.store.save_states(list(rows.values()))
        if held:
            usage.record(self.platform, held, self.sched.cluster)

    def _record(self, decisions: list[Decision]) -> None:
        audit = self.platform.audit
        for d in decisions:
            metrics.DECISIONS.labels(d.action).inc()
            if d.action == "pending":
                # A waiting job's reason can flip every cycle: audit it once a minute at most
                # (explain keeps every change).
                last = self._pending_audited.get(d.workload_id)
                if last is not None and d.at - last < PENDING_AUDIT_EVERY_S:
                    continue
                self._pending_audited[d.workload_id] = d.at
            else:
                self._pending_audited.pop(d.workload_id, None)
            audit.record(None, f"gpus:{d.action}", f"gpu_workload/{d.workload_id}", "allow", d.reason,
                         {"queue": d.queue, "gpus": d.gpus}, tenant_id=d.tenant_id or None)

    def _gauges(self) -> None:
        cap = self.sched.cluster.capacity()
        allocated = sum(w.allocated for w in self.sched.running.values())
        metrics.CAPACITY.set(cap)
        metrics.ALLOCATED.set(allocated)
        metrics.UTILISATION.set(allocated / cap if cap else 0.0)
        pending: dict[str, int] = {}
        for w in self.sched.pending.values():
            pending[w.queue] = pending.get(w.queue, 0) + 1
        for name, node in self.sched.tree.by_name.items():
            metrics.QUEUE_ALLOCATED.labels(name).set(node.allocated)
            metrics.QUEUE_FAIR_SHARE.labels(name).set(node.fair_share)
            metrics.QUEUE_PENDING.labels(name).set(pending.get(name, 0))

    # -- access -----------------------------------------------------------------------
    def _is_operator(self, principal: Principal) -> bool:
        return self.platform.policy.is_operator(principal, admin=False)

    def _require_operator(self, principal: Principal, what: str) -> None:
        self.platform.policy.require_operator(
            principal, "gpus:admin", "gpus/cluster",
            f"{what} is cluster-wide: only a gpus:admin key of the operator's tenant may change it", admin=False)

    def _visible_queue(self, principal: Principal, name: str) -> QueueSpec:
        node = self.sched.tree.by_name.get(name)
        if node is None or node.spec.tenant_id != principal.tenant_id:
            raise NotFound(f"queue {name!r} does not exist")
        return node.spec

    async def _own(self, principal: Principal, workload_id: str, action: str) -> dict[str, Any] | Workload:
        """The workload (in memory when active, else its row), or NotFound across tenants."""
        w = self.sched.get(workload_id)
        found: dict[str, Any] | Workload | None = w
        tenant = w.tenant_id if w is not None else None
        if w is None:
            row = await self.store.get(workload_id)
            found, tenant = row, (row or {}).get("tenant_id")
        if found is None or tenant != principal.tenant_id:
            raise NotFound(f"workload {workload_id!r} does not exist")
        await self.platform.policy.check(principal, action, Resource("gpu_workload", workload_id, tenant))
        return found

    # -- workloads --------------------------------------------------------------------
    async def submit(self, principal: Principal, body: WorkloadIn) -> WorkloadOut:
        spec = self._visible_queue(principal, body.queue)
        await self.platform.policy.check(principal, "gpus:write", Resource("gpu_queue", spec.name, spec.tenant_id))
        if body.command or body.serve:
            self._check_launch(principal, body)
        w = Workload(id=new_id("gpw"), queue=body.queue, name=body.name, tenant_id=principal.tenant_id,
                     priority_class=body.priority_class, gpus=body.gpus, fraction=body.fraction,
                     memory_mib=body.memory_mib, gang_size=body.gang_size, preemptible=body.preemptible,
                     min_runtime_s=body.min_runtime_s, topology=body.topology,
                     topology_required=body.topology_required, owner=_owner(principal))
        async with self.lock:
            active = sum(1 for o in self.sched.workloads.values() if o.tenant_id == principal.tenant_id)
            if active >= MAX_ACTIVE_PER_TENANT:
                raise TooManyRequests(f"tenant has {active} pending or running GPU workloads, the most allowed; "
                                      f"cancel some or wait for them to finish", retry_after_s=30)
            try:
                decision = self.sched.submit(w, self.clock())
            except Refused as exc:
                self.platform.audit.record(principal, "gpus:submit", f"gpu_queue/{body.queue}", "deny", str(exc))
                metrics.DECISIONS.labels("refuse").inc()
                raise ValidationFailed(f"request refused: {exc}", slug="gpu-request-refused") from exc
            launch = {"command": body.command, "serve": body.serve.model_dump() if body.serve else None}
            self.launch_specs[w.id] = launch
            await self.store.insert(w, principal.id, launch)
            self.platform.audit.record(principal, "gpus:submit", f"gpu_workload/{w.id}", "allow", decision.reason,
                                       {"queue": w.queue, "priority_class": w.priority_class.value,
                                        "demand_gpus": w.demand(self.sched.cluster.reference_mib())})
        self.wake()
        return self._out(w)

    def _check_launch(self, principal: Principal, body: WorkloadIn) -> None:
        """A command runs on this host as the server's user: the operator's to allow."""
        if body.serve and not body.command:
            raise BadRequest("serve needs a command that starts the server on that port")
        if self.launcher is None:
            raise Forbidden("the local launcher is off: set GARRISON_GPUS_LAUNCHER=1 on the server to run commands")
        if not (principal.has_scope("gpus:admin") and self._is_operator(principal)):
            raise Forbidden("running a command on the GPU host needs a gpus:admin key of the operator's tenant")

    async def get(self, principal: Principal, workload_id: str) -> WorkloadOut:
        found = await self._own(principal, workload_id, "gpus:read")
        return self._out(found) if isinstance(found, Workload) else self._row_out(found)

    async def list_workloads(self, principal: Principal, *, state: str | None = None, queue: str | None = None,
                   limit: int = 50, cursor: str | None = None) -> WorkloadPage:
        after = None
        if cursor:
            raw = decode_cursor(cursor)
            try:
                after = (datetime.fromisoformat(str(raw["t"])), str(raw["id"]))
            except (KeyError, ValueError) as exc:
                raise BadRequest("cursor is not valid: pass back the next_cursor value unchanged") from exc
        rows = await self.store.page(principal.tenant_id, state=state, queue=queue, limit=limit + 1, after=after)
        more = len(rows) > limit
        rows = rows[:limit]
        items = []
        for row in rows:
            w = self.sched.get(row["id"])
            items.append(self._out(w) if w is not None else self._row_out(row))
        next_cursor = None
        if more:
            last = rows[-1]
            next_cursor = encode_cursor({"t": aware(last["submitted_at"]).isoformat(), "id": last["id"]})  # type: ignore[union-attr]
        return WorkloadPage(items=items, next_cursor=next_cursor)

    async def cancel(self, principal: Principal, workload_id: str) -> WorkloadOut:
        return await self._close(principal, workload_id, failed=None)

    async def finish(self, principal: Principal, workload_id: str, *, failed: bool = False) -> WorkloadOut:
        """The holder reports the work done: its GPUs go back to the pool."""
        return await self._close(principal, workload_id, failed=failed)

    async def _close(self, principal: Principal, workload_id: str, *, failed: bool | None) -> WorkloadOut:
        await self._own(principal, workload_id, "gpus:write")
        async with self.lock:
            w = self.sched.workloads.get(workload_id)
            if w is None:
                row = await self.store.get(workload_id)
                raise ValidationFailed(f"workload {workload_id} is already {row['state'] if row else 'gone'}",
                                       slug="gpu-workload-closed")
            if failed is None:
                d = self.sched.cancel(workload_id, self.clock())
            else:
                if w.state is not State.running:
                    raise ValidationFailed(f"workload {workload_id} is {w.state.value}, not running: cancel it "
                                           f"instead", slug="gpu-workload-not-running")
                d = self.sched.finish(workload_id, self.clock(), failed=failed)
            await self._save([w])
            self._record([d])
            self._gauges()
        if self.launcher is not None:
            await self.launcher.stop(workload_id)
        self.wake()
        return self._out(w)

    async def explain(self, principal: Principal, workload_id: str) -> ExplainOut:
        found = await self._own(principal, workload_id, "gpus:read")
        if isinstance(found, Workload):
            async with self.lock:  # the cycle mutates in a thread: read between cycles
                data = self.sched.explain(found.id)
            return ExplainOut(**data)
        spec = json.loads(found["spec"])
        return ExplainOut(id=found["id"], state=found["state"], reason=found["reason"],
                          reason_code=found["reason_code"], queue=found["queue"],
                          priority_class=spec["priority_class"], preemptible=bool(spec["preemptible"]),
                          gpus=[p[0] for p in json.loads(found["placement"])], preemptions=found["preemptions"])

    # -- queues and inventory ---------------------------------------------------------
    async def queues(self, principal: Principal) -> QueuesOut:
        async with self.lock:
            return self._queues_view(principal)

    def _queues_view(self, principal: Principal) -> QueuesOut:
        everyone = self._is_operator(principal)
        out = []
        for name, node in self.sched.tree.by_name.items():
            q = node.spec
            if not everyone and q.tenant_id != principal.tenant_id:
                continue
            out.append(QueueOut(name=name, parent=q.parent, tenant_id=q.tenant_id, quota=q.quota,
                                over_quota_weight=q.over_quota_weight, limit=q.limit, priority=q.priority,
                                display_name=q.display_name, allocated=round(node.allocated, 4),
                                effective_quota=round(node.quota_eff, 4), fair_share=round(node.fair_share, 4),
                                demand=round(node.demand, 4)))
        return QueuesOut(queues=out, warnings=self.sched.warnings if everyone else [])

    async def set_queues(self, principal: Principal, body: QueuesIn) -> QueuesOut:
        self._require_operator(principal, "the queue configuration")
        by_name = {q.name: q for q in body.queues}
        specs: list[QueueSpec] = []
        tenants: dict[str, str] = {}
        for q in body.queues:
            if q.parent is None:
                if not q.tenant:
                    raise BadRequest(f"root queue {q.name!r} needs a tenant (id or name)")
                try:
                    tenants[q.name] = (await self.platform.identity.resolve_tenant(q.tenant))["id"]
                except NotFound as exc:
                    raise BadRequest(f"queue {q.name!r}: tenant {q.tenant!r} does not exist") from exc
            elif q.parent not in by_name:
                raise BadRequest(f"queue {q.name!r}: parent queue {q.parent!r} does not exist")
        for q in body.queues:
            root, seen = q, set()
            while root.parent is not None and root.name not in seen:
                seen.add(root.name)
                root = by_name[root.parent]
            tenant_id = tenants.get(root.name, "")
            if q.parent is not None and q.tenant:
                mine = await self.platform.identity.resolve_tenant(q.tenant)
                if mine["id"] != tenant_id:
                    raise BadRequest(f"queue {q.name!r} must belong to the tenant of its root queue")
            specs.append(QueueSpec(name=q.name, parent=q.parent, quota=q.quota, over_quota_weight=q.over_quota_weight,
                                   limit=q.limit, priority=q.priority, tenant_id=tenant_id,
                                   display_name=q.display_name))
        async with self.lock:
            try:
                warnings = self.sched.reconfigure(specs)
            except QueueConfigError as exc:
                raise BadRequest(str(exc)) from exc
            await self.store.put_config("queues", [_spec_doc(s) for s in specs])
        await self.platform.audit.record_now(principal, "gpus:admin", "gpu_queues", "allow",
                                             f"{len(specs)} queues configured", {"warnings": warnings})
        self.wake()
        return await self.queues(principal)

    async def inventory(self, principal: Principal) -> InventoryOut:
        async with self.lock:
            return self._inventory_view(principal)

    def _inventory_view(self, principal: Principal) -> InventoryOut:
        everyone = self._is_operator(principal)
        gpus = []
        for slot in self.sched.cluster.slots:
            g = slot.spec
            gpus.append(GpuOut(id=g.id, node=g.node, index=g.index, model=g.model, memory_mib=g.memory_mib,
                               free_mib=slot.free_mib, nvlink_group=g.nvlink_group, mig=g.mig, healthy=g.healthy,
                               workloads=sorted(slot.users) if everyone else None))
        allocated = sum(w.allocated for w in self.sched.running.values())
        return InventoryOut(source=self.source, capacity=self.sched.cluster.capacity(),
                            allocated=round(allocated, 4), gpus=gpus, warnings=self.sched.warnings if everyone else [])

    async def set_inventory(self, principal: Principal, body: InventoryIn) -> InventoryOut:
        self._require_operator(principal, "the GPU inventory")
        if body.discover == (body.nodes is not None):
            raise BadRequest("send either nodes (a declared inventory) or discover: true (NVML)")
        if body.discover:
            found = await asyncio.to_thread(discover_nvml)
            if not found.gpus:
                raise ValidationFailed(f"NVML found no GPU: {found.reason}", slug="gpu-discovery-failed")
            gpus, source = found.gpus, "nvml"
            doc: dict[str, Any] = {"source": "nvml"}
        else:
            nodes = [n.model_dump(exclude_none=True) for n in body.nodes or []]
            try:
                gpus = parse_declared(nodes)
            except InventoryError as exc:
                raise BadRequest(str(exc)) from exc
            source, doc = "declared", {"source": "declared", "nodes": nodes}
        async with self.lock:
            decisions = self.sched.replace_inventory(gpus, self.clock())
            self.source = source
            await self.store.put_config("inventory", doc)
            await self._save([self.sched.workloads[d.workload_id] for d in decisions])
            self._record(decisions)
            self._gauges()
        await self.platform.audit.record_now(principal, "gpus:admin", "gpu_inventory", "allow",
                                             f"{len(gpus)} GPUs from {source}")
        self.wake()
        return await self.inventory(principal)

    async def set_health(self, principal: Principal, gpu_id: str, healthy: bool) -> InventoryOut:
        self._require_operator(principal, "GPU health")
        async with self.lock:
            try:
                decisions = self.sched.set_health(gpu_id, healthy, self.clock())
            except KeyError as exc:
                raise NotFound(f"GPU {gpu_id!r} does not exist") from exc
            await self._save([self.sched.workloads[d.workload_id] for d in decisions])
            self._record(decisions)
            self._gauges()
        await self.platform.audit.record_now(principal, "gpus:admin", f"gpu/{gpu_id}", "allow",
                                             "healthy" if healthy else "unhealthy")
        self.wake()
        return await self.inventory(principal)

    async def export_k8s(self, principal: Principal, namespace: str = "default",
                         topology: str = "default", image: str = "busybox") -> list[dict[str, Any]]:
        """KAI Scheduler resources for the caller's queues and active workloads (the
        operator's: every queue and workload, as the cluster needs them all)."""
        everyone = self._is_operator(principal)
        async with self.lock:
            queues = [n.spec for n in self.sched.tree.by_name.values()
                      if everyone or n.spec.tenant_id == principal.tenant_id]
            work = [w for w in self.sched.workloads.values() if everyone or w.tenant_id == principal.tenant_id]
        return kai.export(queues, work, namespace=namespace, topology_name=topology, image=image)

    # -- rendering ----------------------------------------------------------------------
    def _out(self, w: Workload) -> WorkloadOut:
        return WorkloadOut(
            id=w.id, tenant_id=w.tenant_id, queue=w.queue, name=w.name, priority_class=w.priority_class,
            gpus=w.gpus, fraction=w.fraction, memory_mib=w.memory_mib, gang_size=w.gang_size,
            preemptible=bool(w.preemptible), min_runtime_s=w.min_runtime_s, topology=w.topology,
            topology_required=w.topology_required, state=w.state.value, reason=w.reason, reason_code=w.reason_code,
            placement=[PlacementOut(gpu=g, memory_mib=m) for g, m in w.placement], allocated_gpus=round(w.allocated, 4),
            preemptions=w.preemptions, submitted_at=ts(w.submitted_at), started_at=ts(w.started_at),  # type: ignore[arg-type]
            finished_at=ts(w.finished_at), command=self.launch_specs.get(w.id, {}).get("command"),
            serve=self.launch_specs.get(w.id, {}).get("serve"))

    def _row_out(self, row: dict[str, Any]) -> WorkloadOut:
        spec = json.loads(row["spec"])
        return WorkloadOut(
            id=row["id"], tenant_id=row["tenant_id"], queue=row["queue"], name=spec["name"],
            priority_class=spec["priority_class"], gpus=spec["gpus"], fraction=spec["fraction"],
            memory_mib=spec["memory_mib"], gang_size=spec["gang_size"], preemptible=bool(spec["preemptible"]),
            min_runtime_s=spec["min_runtime_s"], topology=spec["topology"],
            topology_required=spec["topology_required"], state=row["state"], reason=row["reason"],
            reason_code=row["reason_code"],
            placement=[PlacementOut(gpu=g, memory_mib=m) for g, m in json.loads(row["placement"])],
            allocated_gpus=row["allocated"], preemptions=row["preemptions"],
            submitted_at=aware(row["submitted_at"]), started_at=aware(row["started_at"]),  # type: ignore[arg-type]
            finished_at=aware(row["finished_at"]), command=spec.get("command"), serve=spec.get("serve"))

    def _from_row(self, row: dict[str, Any]) -> Workload:
        spec = json.loads(row["spec"])
        submitted = epoch(row["submitted_at"]) or 0.0
        w = Workload(id=row["id"], queue=row["queue"], name=spec["name"], tenant_id=row["tenant_id"],
                     priority_class=PriorityClass(spec["priority_class"]), gpus=spec["gpus"],
                     fraction=spec["fraction"], memory_mib=spec["memory_mib"], gang_size=spec["gang_size"],
                     preemptible=spec["preemptible"], min_runtime_s=spec["min_runtime_s"],
                     topology=Topology(spec["topology"]), topology_required=spec["topology_required"],
                     submitted_at=submitted, queued_at=submitted, reason=row["reason"],
                     reason_code=row["reason_code"], preemptions=row["preemptions"],
                     first_started_at=epoch(row["first_started_at"]), metered_until=epoch(row["metered_until"]),
                     owner=dict(spec.get("owner") or {}))
        self.launch_specs[w.id] = {"command": spec.get("command"), "serve": spec.get("serve")}
        return w


def _owner(principal: Principal) -> dict[str, str]:
    """Who submitted a workload, as its GPU-seconds are attributed (as the LLM gateway's
    ledger names them: user, key, agent, session)."""
    agent = principal.attributes.get("agent")
    found = {"user": principal.id, "key_id": principal.key_id, "session_id": principal.session_id,
             "agent": agent if isinstance(agent, str) else None}
    return {k: v[:200] for k, v in found.items() if v}


def _spec_doc(s: QueueSpec) -> dict[str, Any]:
    return {"name": s.name, "parent": s.parent, "quota": s.quota, "over_quota_weight": s.over_quota_weight,
            "limit": s.limit, "priority": s.priority, "tenant_id": s.tenant_id, "display_name": s.display_name}

