"""The sandbox service: the one object other layers call (``platform.services["sandbox"]``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from opentelemetry import trace

from garrison.core.clock import utcnow
from garrison.core.errors import BadRequest, Conflict, NotFound, TooManyRequests
from garrison.core.ids import new_id
from garrison.core.principal import Principal
from garrison.policy.engine import Resource
from garrison.sandbox import metrics
from garrison.sandbox.backends.base import Backend, BackendError, SandboxSpec, pid_alive
from garrison.sandbox.backends.bubblewrap import BubblewrapBackend
from garrison.sandbox.backends.gvisor import GVisorBackend
from garrison.sandbox.backends.kube_backend import KubernetesBackend, isolation_of
from garrison.sandbox.config import MiB, SandboxSettings
from garrison.sandbox.errors import (
    BackendNotEnabled,
    BackendUnavailable,
    OOMKilled,
    PidsExhausted,
    SandboxGone,
)
from garrison.sandbox.execution import Execution
from garrison.sandbox.pool import Shape, WarmPool
from garrison.sandbox.runtime import Sandbox, SandboxRuntime
from garrison.sandbox.schemas import CreateIn
from garrison.sandbox.selftest import self_test
from garrison.sandbox.store import SandboxRecord, SandboxStore, owner_token
from garrison.sandbox.template_admin import TemplateAdmin
from garrison.sandbox.templates import TemplateError, TemplateStore

log = logging.getLogger("garrison.sandbox")
tracer = trace.get_tracer("garrison.sandbox")
ENDED_KEPT = 1000
GiB = 1024 * MiB
_STARTED: dict[tuple[str, str], str] = {}


class SandboxService(Execution, TemplateAdmin):
    def __init__(self, platform: Any, settings: SandboxSettings | None = None, data_dir: Path | None = None) -> None:
        self.platform = platform
        self.settings = settings or SandboxSettings()
        base = data_dir or Path(platform.settings.data_dir)
        self.state_dir = (base / "sandbox").resolve()
        self.templates = TemplateStore(self.state_dir / "templates")
        self.backends: dict[str, Backend] = {}
        self.unavailable: dict[str, str] = {}
        self.default_backend: str | None = None
        self.sandboxes: dict[str, Sandbox] = {}
        self.ended: OrderedDict[str, Sandbox] = OrderedDict()
        self.pools: dict[str, WarmPool] = {}
        self.usage_by_tenant: dict[str, dict[str, float]] = {}
        db = getattr(platform, "db", None)
        # Without a database (benchmarks drive the service alone) records live in memory only.
        self.store: SandboxStore | None = SandboxStore(db) if db is not None else None
        self.owner = owner_token(new_id("sbi"))
        self._bg: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._template_lock = asyncio.Lock()

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        s = self.settings
        await self.ensure_default_template()
        candidates: list[Backend] = [
            GVisorBackend(self.state_dir / "gvisor", platform=s.gvisor_platform),
            BubblewrapBackend(self.state_dir / "bwrap", uid_base=s.host_uid_base, uid_count=s.host_uid_count),
            KubernetesBackend(s),
        ]
        for backend in candidates:
            ok, why = backend.check()
            key = (backend.name, str(getattr(backend, "state_dir", "")))
            if ok and key not in _STARTED:
                with contextlib.suppress(Exception):
                    await backend.cleanup_leftovers()
            # The cluster's self-test takes a pod of the warm pool at every start: it has its own switch.
            if ok and s.self_test and (backend.name != "kubernetes" or s.kubernetes_self_test):
                # Once per process and backend: every platform start (each test) need not repeat it.
                if (backend.name, "selftest") not in _STARTED:
                    try:
                        await self_test(backend, self._spec(new_id("sbx"), "python", None), self._spawn)
                        _STARTED[(backend.name, "selftest")] = ""
                    except Exception as exc:
                        ok, why = False, f"self-test failed: {exc}"
            _STARTED[key] = ""
            if ok:
                self.backends[backend.name] = backend
            else:
                self.unavailable[backend.name] = why
                # An opt-in backend left off is the default, not a problem worth a warning.
                off = backend.name == "kubernetes" and not s.kubernetes_enabled
                (log.info if off else log.warning)("sandbox backend %s unavailable: %s", backend.name, why)
        await self._end_orphans()
        if s.backend == "auto":
            self.default_backend = next((n for n in ("gvisor", "bubblewrap") if n in self.backends), None)
        elif s.backend in self.backends:
            self.default_backend = s.backend
        elif s.require_backend:
            raise BackendError(f"sandbox backend {s.backend} required but unavailable: {self.unavailable.get(s.backend)}")
        for pc in s.pools:
            pool_backend = pc.backend or self.default_backend
            if pool_backend is None or pool_backend not in self.backends:
                log.warning("warm pool for %s skipped: backend %s unavailable", pc.template, pool_backend)
                continue
            spec = self._spec("pool", pc.template, None, memory_mib=pc.memory_mib, cpus=pc.cpus, pids=pc.pids)
            shape = self._shape(spec, pool_backend)
            pool = WarmPool(shape, pc.size, self._make_for_pool, self._discard, s.pool_max_age_s)
            pool.template_name = pc.template  # type: ignore[attr-defined]
            self.pools[shape.fingerprint()] = pool
            pool.start()
        self._reaper = asyncio.create_task(self._reap_loop(), name="sandbox-reaper")
        tools = self.platform.services.get("tools") if self.platform is not None else None
        if tools is not None and hasattr(tools, "register_local_tools"):
            from garrison.sandbox.mcp import register_tools

            register_tools(self, tools)

    async def _end_orphans(self) -> None:
        """Sandboxes a previous garrison process left running died with it (their runsc
        containers and cgroups were removed by the backends' clean-up above): say so."""
        if self.store is None:
            return
        gone = await self.store.end_orphans(self.owner, pid_alive, utcnow())
        if gone:
            log.warning("%d sandboxes of a previous garrison process marked killed (garrison_restart)", len(gone))
            metrics.KILLED.labels("garrison_restart").inc(len(gone))
        for sid, tenant in gone:
            self.platform.audit.record(None, "sandbox:kill", f"sandbox/{sid}", "allow", "garrison_restart",
                                       {"killed_reason": "garrison_restart"}, tenant_id=tenant)

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(BaseException):
                await self._reaper
        for pool in list(self.pools.values()):
            await pool.stop()
        for sbx in list(self.sandboxes.values()):
            await self.terminate(sbx, "shutdown")
        if self._bg:
            await asyncio.gather(*self._bg, return_exceptions=True)
        kube = self.backends.get("kubernetes")
        if isinstance(kube, KubernetesBackend):
            await kube.aclose()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return task

    def _persist(self, sbx: Sandbox, write: Callable[[SandboxStore], Awaitable[None]], what: str) -> None:
        """Record writes go behind the request (a commit costs 5-10 ms on a loaded host,
        twice the warm-claim budget), in order per sandbox. What a crash loses is at most
        the last write: a sandbox left 'running' in the store is marked garrison_restart
        at the next start."""
        store = self.store
        if store is None:
            return
        before = sbx.record_write

        async def run() -> None:
            if before is not None:
                with contextlib.suppress(BaseException):
                    await before
            try:
                await write(store)
            except Exception as exc:
                log.error("sandbox %s: %s not recorded: %s", sbx.id, what, exc)

        sbx.record_write = self._spawn(run())

    async def settle_records(self) -> None:
        """Waits until every queued record write is stored (tests, shutdown)."""
        pending = [s.record_write for s in [*self.sandboxes.values(), *self.ended.values()]
                   if s.record_write is not None and not s.record_write.done()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # ------------------------------------------------------------------ specs

    def _spec(self, sandbox_id: str, template: str, body: CreateIn | None, *, memory_mib: int | None = None,
              cpus: float | None = None, pids: int | None = None) -> SandboxSpec:
        s = self.settings
        lim = body.limits if body is not None else None
        memory_mib = (lim.memory_mib if lim and lim.memory_mib else None) or memory_mib or s.memory_mib
        cpus = (lim.cpus if lim and lim.cpus else None) or cpus or s.cpus
        pids = (lim.pids if lim and lim.pids else None) or pids or s.pids
        workspace = (lim.workspace_mib if lim and lim.workspace_mib else None) or s.workspace_mib
        if memory_mib > s.max_memory_mib or cpus > s.max_cpus or pids > s.max_pids:
            raise BadRequest(f"limits over the maximum: memory_mib <= {s.max_memory_mib}, cpus <= {s.max_cpus}, "
                             f"pids <= {s.max_pids}")
        try:
            tmpl = self.templates.get(template)
        except TemplateError as exc:
            raise BadRequest(str(exc)) from None
        return SandboxSpec(sandbox_id=sandbox_id, template=tmpl, memory_bytes=memory_mib * MiB, cpus=cpus,
                           pids=pids, workspace_bytes=workspace * MiB, tmp_bytes=s.tmp_mib * MiB,
                           output_cap=s.output_cap_bytes)

    @staticmethod
    def _shape(spec: SandboxSpec, backend: str) -> Shape:
        return Shape(spec.template.fingerprint(), backend, spec.memory_bytes, spec.cpus, spec.pids,
                     spec.workspace_bytes, spec.tmp_bytes, spec.output_cap)

    def _backend(self, wanted: str | None) -> Backend:
        name = wanted or self.default_backend
        if name is None:
            raise BackendUnavailable("no sandbox backend is usable here: " + "; ".join(
                f"{k}: {v}" for k, v in self.unavailable.items()))
        backend = self.backends.get(name)
        if backend is None:
            # A request that names a backend never falls back to another one.
            if name == "kubernetes" and not self.settings.kubernetes_enabled:
                raise BackendNotEnabled("sandbox backend 'kubernetes' is not enabled on this server: "
                                        "set GARRISON_SANDBOX_KUBERNETES_ENABLED=true with a kubeconfig "
                                        "or in-cluster account, or ask for another backend")
            raise BackendUnavailable(f"sandbox backend {name!r} is unavailable: {self.unavailable.get(name, 'unknown')}")
        return backend

    async def _make_for_pool(self, shape: Shape) -> SandboxRuntime:
        backend = self.backends[shape.backend]
        pool = self.pools.get(shape.fingerprint())
        template = getattr(pool, "template_name", "python")
        spec = self._spec(new_id("sbx"), template, None, memory_mib=shape.memory_bytes // MiB,
                          cpus=shape.cpus, pids=shape.pids)
        return await SandboxRuntime.start(backend, spec)

    async def _discard(self, runtime: SandboxRuntime, reason: str) -> None:
        await runtime.kill()
        self._spawn(runtime.destroy())

    # ------------------------------------------------------------------ create / get / list

    async def create(self, principal: Principal, body: CreateIn) -> Sandbox:
        s = self.settings
        backend = self._backend(body.backend)
        timeout = body.timeout_s or s.default_timeout_s
        if timeout > s.max_lifetime_s:
            raise BadRequest(f"timeout_s must be at most {s.max_lifetime_s} (the maximum lifetime)")
        spec = self._spec(new_id("sbx"), body.template, body)
        resource = Resource("sandbox", "*", principal.tenant_id, {
            "template": body.template, "backend": backend.name, "memory_mib": spec.memory_bytes // MiB,
            "pids": spec.pids, "network": body.network})
        await self.platform.policy.check(principal, "sandbox:create", resource)
        if len(self.sandboxes) >= s.max_sandboxes:
            raise TooManyRequests(f"{s.max_sandboxes} sandboxes are running, the most this host allows", retry_after_s=5)
        mine = sum(1 for x in self.sandboxes.values() if x.tenant_id == principal.tenant_id)
        if mine >= s.max_sandboxes_per_tenant:
            raise TooManyRequests(f"your tenant already runs {mine} sandboxes (limit {s.max_sandboxes_per_tenant}); "
                                  "kill some first", retry_after_s=5)
        shape = self._shape(spec, backend.name)
        runtime: SandboxRuntime | None = None
        pooled = False
        t0 = time.perf_counter()
        with tracer.start_as_current_span("sandbox.create", attributes={
                "garrison.tenant_id": principal.tenant_id, "sandbox.template": body.template}) as span:
            pool = self.pools.get(shape.fingerprint()) if body.pooled else None
            if pool is not None:
                runtime = pool.claim()
                if runtime is not None:
                    pooled = True
                    # Re-check the enforced limits: never hand out a sandbox under another policy.
                    if not self._limits_match(runtime, spec):
                        await self._discard(runtime, "pool_mismatch")
                        runtime, pooled = None, False
            if runtime is None:
                try:
                    runtime = await SandboxRuntime.start(backend, spec)
                except BackendError as exc:
                    raise BackendUnavailable(f"{backend.name} could not start a sandbox: {exc}") from None
                except Exception as exc:  # agent never became ready
                    raise BackendUnavailable(f"{backend.name} sandbox did not start: {exc}") from None
            if body.envs:
                await runtime.conn.call("init", envs=body.envs)
            span.set_attribute("sandbox.id", runtime.spec.sandbox_id)
            span.set_attribute("sandbox.backend", backend.name)
            span.set_attribute("sandbox.pooled", pooled)
        metrics.CREATE_SECONDS.labels(backend.name, str(pooled).lower()).observe(time.perf_counter() - t0)
        now = utcnow()
        sbx = Sandbox(id=runtime.spec.sandbox_id, tenant_id=principal.tenant_id, principal_id=principal.id,
                      template=body.template, runtime=runtime, created_at=now,
                      expires_at=now + timedelta(seconds=timeout),
                      idle_timeout_s=body.idle_timeout_s or s.idle_timeout_s, metadata=dict(body.metadata),
                      pooled=pooled)
        record = self._record_of(sbx, timeout)
        self._persist(sbx, lambda store: store.insert(record), "create")
        self.sandboxes[sbx.id] = sbx
        metrics.RUNNING.set(len(self.sandboxes))
        self._arm_deadline(sbx, timeout)
        self._spawn(self._watch(sbx))
        self.platform.audit.record(principal, "sandbox:create", f"sandbox/{sbx.id}", "allow", "", {
            "backend": backend.name, "isolation": backend.isolation, "template": body.template, "pooled": pooled,
            "memory_mib": spec.memory_bytes // MiB, "cpus": spec.cpus, "pids": spec.pids, "timeout_s": timeout})
        return sbx

    def _record_of(self, sbx: Sandbox, timeout_s: int) -> SandboxRecord:
        spec = sbx.runtime.spec
        limits = {"memory_mib": spec.memory_bytes // MiB, "cpus": spec.cpus, "pids": spec.pids,
                  "workspace_mib": spec.workspace_bytes // MiB, "output_cap_bytes": spec.output_cap,
                  "network": "none", "timeout_s": timeout_s}
        return SandboxRecord(id=sbx.id, tenant_id=sbx.tenant_id, principal_id=sbx.principal_id,
                             template=sbx.template, backend=sbx.backend, isolation=sbx.isolation, limits=limits,
                             metadata=sbx.metadata, pooled=sbx.pooled, state="running", killed_reason=None,
                             owner=self.owner, created_at=sbx.created_at, expires_at=sbx.expires_at)

    def _limits_match(self, runtime: SandboxRuntime, spec: SandboxSpec) -> bool:
        got = runtime.spec
        return (got.memory_bytes, got.cpus, got.pids, got.workspace_bytes, got.template.fingerprint()) == (
            spec.memory_bytes, spec.cpus, spec.pids, spec.workspace_bytes, spec.template.fingerprint())

    async def get(self, principal: Principal, sandbox_id: str,
                  action: str = "sandbox:read") -> Sandbox | SandboxRecord:
        """A running (or recently ended) sandbox of this process, else its stored record."""
        sbx: Sandbox | SandboxRecord | None = self.sandboxes.get(sandbox_id) or self.ended.get(sandbox_id)
        if sbx is None and self.store is not None and len(sandbox_id) <= 40:
            sbx = await self.store.get(sandbox_id)
        if sbx is None or sbx.tenant_id != principal.tenant_id:
            # Another tenant's sandbox looks exactly like one that does not exist.
            raise NotFound(f"no sandbox {sandbox_id}")
        await self.platform.policy.check(principal, action, Resource("sandbox", sbx.id, sbx.tenant_id, {
            "template": sbx.template, "backend": sbx.backend}))
        return sbx

    async def running(self, principal: Principal, sandbox_id: str, action: str) -> Sandbox:
        sbx = await self.get(principal, sandbox_id, action)
        if not isinstance(sbx, Sandbox):
            if sbx.state == "running":
                raise Conflict(f"sandbox {sbx.id} runs in another garrison process ({sbx.owner.rsplit(':', 1)[0]})")
            raise self.gone_error(sbx)
        if sbx.state != "running":
            raise self.gone_error(sbx)
        sbx.last_used = time.monotonic()
        return sbx

    async def list_sandboxes(self, principal: Principal, include_ended: bool = False) -> list[Sandbox | SandboxRecord]:
        """From the store (history survives restarts), live objects where this process runs them."""
        mine: dict[str, Sandbox | SandboxRecord] = {
            x.id: x for x in self.sandboxes.values() if x.tenant_id == principal.tenant_id}
        if include_ended:
            mine.update({x.id: x for x in self.ended.values() if x.tenant_id == principal.tenant_id})
        if self.store is not None:
            for rec in await self.store.list_for(principal.tenant_id, include_ended):
                live = self.sandboxes.get(rec.id) or self.ended.get(rec.id)
                mine[rec.id] = live if live is not None else rec
        return sorted(mine.values(), key=lambda x: x.id)

    async def set_timeout(self, principal: Principal, sandbox_id: str, timeout_s: int) -> Sandbox:
        sbx = await self.running(principal, sandbox_id, "sandbox:write")
        age = (utcnow() - sbx.created_at).total_seconds()
        if age + timeout_s > self.settings.max_lifetime_s:
            raise BadRequest(f"that would exceed the maximum lifetime of {self.settings.max_lifetime_s} s; "
                             f"at most {int(self.settings.max_lifetime_s - age)} s more")
        sbx.expires_at = utcnow() + timedelta(seconds=timeout_s)
        self._arm_deadline(sbx, timeout_s)
        expires = sbx.expires_at
        self._persist(sbx, lambda store: store.set_expiry(sbx.id, expires), "new expiry")
        self.platform.audit.record(principal, "sandbox:timeout", f"sandbox/{sbx.id}", "allow", "",
                                   {"timeout_s": timeout_s})
        return sbx

    async def kill(self, principal: Principal, sandbox_id: str) -> Sandbox | SandboxRecord:
        sbx = await self.get(principal, sandbox_id, "sandbox:delete")
        if not isinstance(sbx, Sandbox):
            if sbx.state == "running":
                raise Conflict(f"sandbox {sbx.id} runs in another garrison process ({sbx.owner.rsplit(':', 1)[0]})")
            return sbx
        if sbx.state == "running":
            await self.terminate(sbx, "killed_by_user", principal)
            # A kill is answered once it is recorded: a crash right after must not turn it
            # into garrison_restart (not a hot path, unlike the writes behind a warm claim).
            if sbx.record_write is not None:
                await asyncio.shield(sbx.record_write)
        return sbx

    # ------------------------------------------------------------------ lifecycle

    def _arm_deadline(self, sbx: Sandbox, seconds: float) -> None:
        if sbx.timer is not None:
            sbx.timer.cancel()
        loop = asyncio.get_running_loop()
        sbx.timer = loop.call_later(seconds, lambda: self._spawn(self.terminate(sbx, "timeout")))

    async def _watch(self, sbx: Sandbox) -> None:
        """Notices a sandbox that died on its own (OOM, its agent exited) and records why."""
        await sbx.runtime.conn.closed.wait()
        if sbx.state == "running":
            await self.terminate(sbx, self._death_reason(sbx))

    def _death_reason(self, sbx: Sandbox) -> str:
        usage = sbx.runtime.usage()
        if usage.oom_kills > 0:
            return "oom"
        if usage.pids_max_hits > 0:
            return "pids_exhausted"
        return "exited"

    async def terminate(self, sbx: Sandbox, reason: str, principal: Principal | None = None) -> None:
        if sbx.state != "running":
            return
        sbx.state = "killed"
        sbx.killed_reason = reason
        sbx.ended_at = utcnow()
        if sbx.timer is not None:
            sbx.timer.cancel()
        usage = sbx.runtime.usage()
        sbx.final_usage = usage
        self._sample_memory(sbx, final=True)  # before the kill: the cgroup still holds the memory
        await sbx.runtime.kill()
        self.sandboxes.pop(sbx.id, None)
        self.ended[sbx.id] = sbx
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)
        metrics.RUNNING.set(len(self.sandboxes))
        metrics.KILLED.labels(reason).inc()
        gib_s = self._meter(sbx, usage)
        self._spawn(sbx.runtime.destroy())  # runsc delete takes ~1.6 s: never on the request path
        self.platform.audit.record(principal, "sandbox:kill", f"sandbox/{sbx.id}", "allow", reason, {
            "killed_reason": reason, "cpu_seconds": round(usage.cpu_seconds, 3),
            "memory_peak_mib": round(usage.memory_peak_bytes / MiB, 1), "oom_kills": usage.oom_kills},
            tenant_id=sbx.tenant_id)
        ended, cpu, peak = sbx.ended_at, usage.cpu_seconds, usage.memory_peak_bytes / MiB
        self._persist(sbx, lambda store: store.finish(sbx.id, reason, ended, cpu, peak, gib_s), "end")

    def _sample_memory(self, sbx: Sandbox, final: bool = False) -> None:
        """Integrates the cgroup's memory use over time (memory GiB-seconds); sampled by
        the reaper every second and once more at the end."""
        now = time.monotonic()
        current = sbx.runtime.handle.memory_bytes()
        if current is not None:
            sbx.mem_gib_s += current / GiB * (now - sbx.mem_sampled_at)
            sbx.mem_samples += 1
        sbx.mem_sampled_at = now

    def _meter(self, sbx: Sandbox, usage: Any) -> float:
        """Per-tenant CPU-seconds and memory GiB-seconds, handed to the metering layer."""
        wall = ((sbx.ended_at or utcnow()) - sbx.created_at).total_seconds()
        # Integrated samples; a sandbox that never gave one (no memory accounting) is
        # charged its peak for its whole life, an upper bound.
        gib_s = sbx.mem_gib_s if sbx.mem_samples else usage.memory_peak_bytes / GiB * wall
        totals = self.usage_by_tenant.setdefault(sbx.tenant_id, {"cpu_seconds": 0.0, "memory_gib_seconds": 0.0,
                                                                 "sandboxes": 0.0, "wall_seconds": 0.0})
        totals["cpu_seconds"] += usage.cpu_seconds
        totals["memory_gib_seconds"] += gib_s
        totals["wall_seconds"] += wall
        totals["sandboxes"] += 1
        metrics.CPU_SECONDS.labels(sbx.tenant_id, sbx.backend).inc(usage.cpu_seconds)
        metrics.MEMORY_GIB_SECONDS.labels(sbx.tenant_id, sbx.backend).inc(gib_s)
        metering = self.platform.services.get("metering") if self.platform is not None else None
        record = getattr(metering, "record_resource", None)
        if callable(record):
            attrs = {"sandbox_id": sbx.id, "backend": sbx.backend, "template": sbx.template,
                     "killed_reason": sbx.killed_reason, "wall_seconds": round(wall, 3)}
            try:
                record(sbx.tenant_id, "sandbox", "cpu", max(0.0, usage.cpu_seconds), "cpu_second", attrs)
                record(sbx.tenant_id, "sandbox", "memory", max(0.0, gib_s), "gib_second", attrs)
            except Exception as exc:  # metering never fails a kill
                log.error("sandbox %s usage not metered: %s", sbx.id, exc)
        return gib_s

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for sbx in list(self.sandboxes.values()):
                self._sample_memory(sbx)
                if sbx.busy == 0 and now - sbx.last_used > sbx.idle_timeout_s:
                    self._spawn(self.terminate(sbx, "idle"))

    def gone_error(self, sbx: Sandbox | SandboxRecord) -> Exception:
        reason = sbx.killed_reason or "exited"
        msg = f"sandbox {sbx.id} is no longer running (killed_reason: {reason})"
        if reason == "oom":
            return OOMKilled(msg + "; give it more memory with limits.memory_mib", killed_reason=reason)
        if reason == "pids_exhausted":
            return PidsExhausted(msg + "; raise limits.pids", killed_reason=reason)
        from garrison.sandbox.errors import SandboxTimeout

        if reason == "timeout":
            return SandboxTimeout(msg + "; extend it with POST /timeout before it ends", killed_reason=reason)
        return SandboxGone(msg, killed_reason=reason)

    # ------------------------------------------------------------------ info

    def backends_info(self) -> list[dict[str, Any]]:
        out = []
        k8s_iso = isolation_of(self.settings.kubernetes_runtime_class)
        for name, iso in (("gvisor", "kernel"), ("bubblewrap", "process"), ("kubernetes", k8s_iso)):
            out.append({"name": name, "isolation": iso, "available": name in self.backends,
                        "reason": "ok" if name in self.backends else self.unavailable.get(name, ""),
                        "default": name == self.default_backend})
        return out

    def tenant_usage(self, principal: Principal) -> dict[str, float]:
        totals = dict(self.usage_by_tenant.get(principal.tenant_id, {}))
        for sbx in self.sandboxes.values():
            if sbx.tenant_id == principal.tenant_id:
                u = sbx.runtime.usage()
                totals["cpu_seconds"] = totals.get("cpu_seconds", 0.0) + u.cpu_seconds
        return totals
