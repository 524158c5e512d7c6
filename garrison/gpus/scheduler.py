"""The scheduling cycle.

Three passes over the pending work, highest priority class first and, inside a class,
the queue furthest below its fair share first:

1. in quota: work that keeps every queue on its path within its deserved quota; it may
   reclaim GPUs from queues over their quota, or preempt lower-priority work of its own
   queue;
2. fair share: preemptible work up to the queue's fair share (spare capacity divided by
   queue priority and over-quota weight); it may reclaim from queues over their fair share;
3. backfill: whatever still fits goes to preemptible work, to be reclaimed first.

Non-preemptible work runs only within quota. Preemption only takes preemptible work that
has run its minimum runtime. A job pending longer than ``starvation_s`` is served before
younger work of its queue and holds back backfill until it fits, so no job starves.
Every job gets a reason for what happened to it; a change of reason is a Decision.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from garrison.gpus.model import EPS, Decision, GpuSpec, Held, QueueSpec, State, Workload
from garrison.gpus.placement import Cluster, GpuSlot, Plan
from garrison.gpus.queues import FIXED, QueueConfigError, QueueNode, QueueTree
from garrison.gpus.validation import Refused, validate

PHASES = ("quota", "fair", "backfill")
MAX_PREEMPTION_TRIES = 16
MAX_RESERVATIONS = 4
HISTORY = 20


@dataclass(slots=True)
class SchedulerConfig:
    fairshare_k: float = 1.0
    usage_half_life_s: float = 3600.0
    starvation_s: float = 1800.0
    keep_finished: int = 10_000


@dataclass(slots=True)
class CycleResult:
    started: list[Workload] = field(default_factory=list)
    preempted: list[Workload] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    next_wakeup: float | None = None  # when a minimum runtime protecting a victim ends


class Scheduler:
    def __init__(self, gpus: list[GpuSpec], queues: list[QueueSpec],
                 config: SchedulerConfig | None = None) -> None:
        self.config = config or SchedulerConfig()
        self.cluster = Cluster(gpus)
        self.tree = QueueTree(queues)
        self.warnings = self.tree.warnings + self.tree.capacity_warnings(self.cluster.capacity())
        self.workloads: dict[str, Workload] = {}
        self.pending: dict[str, Workload] = {}
        self.running: dict[str, Workload] = {}
        self.finished: dict[str, Workload] = {}
        self.history: dict[str, deque[Decision]] = {}
        self.clock = 0.0
        # What workloads held, for the resource meter: None (the simulator) collects nothing;
        # the service sets a list and takes it after each change (take_held).
        self.held: list[Held] | None = None

    # -- configuration ----------------------------------------------------------------
    def reconfigure(self, queues: list[QueueSpec]) -> list[str]:
        """Replace the queue tree, keeping usage history; refuse to orphan live work."""
        tree = QueueTree(queues)
        for w in self.workloads.values():
            if w.queue not in tree.by_name or not tree.by_name[w.queue].is_leaf:
                raise QueueConfigError(f"queue {w.queue!r} still has {w.state.value} workload {w.id}; "
                                       f"cancel it or keep the queue as a leaf")
        for name, node in tree.by_name.items():
            old = self.tree.by_name.get(name)
            if old is not None:
                node.usage = old.usage
        for w in self.running.values():
            leaf = tree.by_name[w.queue]
            leaf.allocated += w.allocated
            key = _held_key(w)
            leaf.by_priority[key] = leaf.by_priority.get(key, 0.0) + w.allocated
        self.tree = tree
        self.warnings = tree.warnings + tree.capacity_warnings(self.cluster.capacity())
        return self.warnings

    def set_health(self, gpu_id: str, healthy: bool, now: float) -> list[Decision]:
        """Mark a GPU (un)healthy; work on a GPU that failed goes back to pending."""
        slot = self.cluster.by_id.get(gpu_id)
        if slot is None:
            raise KeyError(gpu_id)
        self.advance(now)
        slot.spec.healthy = healthy
        self.cluster.health_changed()
        out = []
        if not healthy:
            for wid in list(slot.users):
                w = self.running[wid]
                self._stop(w, now)
                self._requeue(w, now)
                out.append(self._decide(w, now, "preempt", "gpu-unhealthy",
                                        f"GPU {gpu_id} became unhealthy; requeued"))
        self.warnings = self.tree.warnings + self.tree.capacity_warnings(self.cluster.capacity())
        return out

    def replace_inventory(self, gpus: list[GpuSpec], now: float) -> list[Decision]:
        """A new inventory: running work keeps its GPUs where they still exist, else requeues."""
        self.advance(now)
        running = [(w, list(w.placement), w.started_at or now) for w in self.running.values()]
        for w, _, _ in running:
            self._stop(w, now)
        self.cluster = Cluster(gpus)
        out = []
        for w, held, started in running:
            if not self.restore(w, held, started):
                self._requeue(w, now)
                out.append(self._decide(w, now, "preempt", "inventory-changed",
                                        "its GPUs left the inventory; requeued"))
        self.warnings = self.tree.warnings + self.tree.capacity_warnings(self.cluster.capacity())
        return out

    def restore(self, w: Workload, placement: list[tuple[str, int]], started_at: float) -> bool:
        """Put back a workload that was running before a restart on the same GPUs, if they
        are still there and free; False leaves it for the caller to requeue."""
        plan = []
        claim: dict[str, int] = {}
        for gpu_id, mib in placement:
            slot = self.cluster.by_id.get(gpu_id)
            if slot is None or not slot.spec.healthy or slot.free_mib - claim.get(gpu_id, 0) < mib:
                return False
            claim[gpu_id] = claim.get(gpu_id, 0) + mib
            plan.append((slot, mib))
        if not plan:
            return False
        self.workloads[w.id] = w
        work_done = w.work_done_s
        self._start(w, plan, started_at, "restored", "running (restored after a restart)")
        w.work_done_s = work_done
        return True

    # -- workload lifecycle -----------------------------------------------------------
    def validate(self, w: Workload) -> None:
        validate(w, self.cluster, self.tree)

    def submit(self, w: Workload, now: float) -> Decision:
        if w.id in self.workloads:
            raise Refused(f"workload {w.id} already exists")
        self.validate(w)
        w.state, w.submitted_at, w.queued_at = State.pending, now, now
        self.workloads[w.id] = w
        self.pending[w.id] = w
        return self._decide(w, now, "pending", "submitted", "submitted; waiting for the next scheduling cycle")

    def cancel(self, workload_id: str, now: float) -> Decision:
        self.advance(now)  # usage history counts what it held until now
        w = self.workloads[workload_id]
        if w.state is State.running:
            self._stop(w, now)
        self.pending.pop(w.id, None)
        return self._close(w, now, State.cancelled, "cancel", "cancelled by request")

    def finish(self, workload_id: str, now: float, *, failed: bool = False) -> Decision:
        self.advance(now)
        w = self.workloads[workload_id]
        if w.state is State.running:
            self._stop(w, now)
        self.pending.pop(w.id, None)
        return self._close(w, now, State.failed if failed else State.completed, "finish",
                           "exited with an error" if failed else "completed")

    def get(self, workload_id: str) -> Workload | None:
        return self.workloads.get(workload_id) or self.finished.get(workload_id)

    # -- time -------------------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Age usage history to ``now`` with what each queue held since the last call."""
        if now > self.clock:
            for node in self.tree.bottom_up:
                if node.children:
                    node.allocated = sum(c.allocated for c in node.children)
            self.tree.decay(now - self.clock, self.config.usage_half_life_s)
        self.clock = max(self.clock, now)

    # -- the cycle ----------------------------------------------------------------------
    def cycle(self, now: float) -> CycleResult:
        self.advance(now)
        result = CycleResult()
        ref = self.cluster.reference_mib()
        for leaf in self.tree.leaves:
            leaf.pending = 0.0
        demand: dict[str, float] = {}
        for w in self.pending.values():
            d = demand[w.id] = w.demand(ref)
            self.tree.by_name[w.queue].pending += d
        self.tree.compute(self.cluster.capacity(), self.config.fairshare_k)
        run = _Cycle(self, now, demand, result)
        for phase in PHASES:
            run.phase(phase)
        for w in list(self.pending.values()):
            code, text = run.reasons.get(w.id, (w.reason_code, w.reason))
            if code != w.reason_code:
                result.decisions.append(self._decide(w, now, "pending", code, text))
            else:
                w.reason = text  # same cause, fresher figures: not a new decision
        result.next_wakeup = run.next_wakeup
        return result

    # -- metering ---------------------------------------------------------------------
    def meter(self, now: float, every_s: float) -> None:
        """Cut what each running workload held since it was last metered, once that is at
        least ``every_s`` seconds (0: every running workload, as at shutdown)."""
        if self.held is None:
            return
        for w in self.running.values():
            if w.started_at is not None and now - max(w.started_at, w.metered_until or w.started_at) >= every_s:
                self._held(w, now)

    def take_held(self) -> list[Held]:
        if not self.held:
            return []
        held, self.held = self.held, []
        return held

    def _held(self, w: Workload, now: float) -> None:
        """What ``w`` held from its last metering (or its start) until ``now``; the mark
        moves to ``now`` so no stretch is counted twice."""
        if self.held is None or w.started_at is None:
            return
        start = max(w.started_at, w.metered_until or w.started_at)
        if now > start and w.allocated > 0:
            self.held.append(Held(w, start, now, w.allocated, list(w.placement)))
        w.metered_until = max(now, start)

    # -- explain ----------------------------------------------------------------------
    def explain(self, workload_id: str) -> dict[str, Any]:
        w = self.get(workload_id)
        if w is None:
            raise KeyError(workload_id)
        out: dict[str, Any] = {
            "id": w.id, "state": w.state.value, "reason": w.reason, "reason_code": w.reason_code,
            "queue": w.queue, "priority_class": w.priority_class.value, "preemptible": w.preemptible,
            "gpus": [g for g, _ in w.placement], "preemptions": w.preemptions,
            "history": [{"at": d.at, "action": d.action, "reason": d.reason}
                        for d in self.history.get(w.id, ())],
        }
        if w.state is State.pending:
            ahead = [o for o in self.pending.values() if o.queue == w.queue and _order(o, self.clock,
                     self.config.starvation_s) < _order(w, self.clock, self.config.starvation_s)]
            out["position_in_queue"] = len(ahead) + 1
        out["queue_status"] = self.queue_status(w.queue) if w.queue in self.tree.by_name else None
        return out

    def queue_status(self, name: str) -> dict[str, Any]:
        node = self.tree.by_name[name]
        return {"name": name, "parent": node.spec.parent, "allocated": round(node.allocated, 4),
                "deserved": round(node.deserved, 4), "quota": node.spec.quota,
                "effective_quota": round(node.quota_eff, 4), "fair_share": round(node.fair_share, 4),
                "limit": node.spec.limit, "over_quota_weight": node.spec.over_quota_weight,
                "priority": node.spec.priority, "demand": round(node.demand, 4),
                "usage_gpu_s": round(node.usage, 1)}

    # -- internals ----------------------------------------------------------------------
    def _start(self, w: Workload, plan: Plan, now: float, code: str, text: str) -> Decision:
        self.cluster.commit(w, plan)
        self.pending.pop(w.id, None)
        self.running[w.id] = w
        w.state, w.started_at = State.running, now
        if w.first_started_at is None:
            w.first_started_at = now
        leaf = self.tree.by_name[w.queue]
        for node in leaf.chain:
            node.allocated += w.allocated
        key = _held_key(w)
        leaf.by_priority[key] = leaf.by_priority.get(key, 0.0) + w.allocated
        return self._decide(w, now, "start", code, text)

    def _stop(self, w: Workload, now: float) -> None:
        self._held(w, now)  # every way a workload lets go of its GPUs passes here
        leaf = self.tree.by_name[w.queue]
        for node in leaf.chain:
            node.allocated -= w.allocated
        key = _held_key(w)
        leaf.by_priority[key] = leaf.by_priority.get(key, 0.0) - w.allocated
        if w.started_at is not None:
            w.work_done_s += max(0.0, now - w.started_at)
        self.cluster.release(w)
        self.running.pop(w.id, None)

    def _requeue(self, w: Workload, now: float) -> None:
        w.state, w.queued_at, w.started_at = State.pending, now, None
        w.preemptions += 1
        self.pending[w.id] = w

    def _close(self, w: Workload, now: float, state: State, action: str, text: str) -> Decision:
        w.state, w.finished_at = state, now
        d = self._decide(w, now, action, state.value, text)
        self.workloads.pop(w.id, None)
        self.finished[w.id] = w
        if len(self.finished) > self.config.keep_finished:
            old = next(iter(self.finished))
            self.finished.pop(old)
            self.history.pop(old, None)
        return d

    def _decide(self, w: Workload, now: float, action: str, code: str, text: str) -> Decision:
        w.reason, w.reason_code = text, code
        d = Decision(at=now, workload_id=w.id, action=action, reason=text, queue=w.queue,
                     tenant_id=w.tenant_id, gpus=[g for g, _ in w.placement])
        self.history.setdefault(w.id, deque(maxlen=HISTORY)).append(d)
        return d


STARVING_BOOST = 10_000


def _held_key(w: Workload) -> int:
    return w.priority if w.preemptible else FIXED


def _rank_priority(w: Workload, now: float, starvation_s: float) -> int:
    """A job pending past ``starvation_s`` is served before every class of its queue."""
    return w.priority + (STARVING_BOOST if now - w.queued_at >= starvation_s else 0)


def _order(w: Workload, now: float, starvation_s: float) -> tuple[int, float, str]:
    """Starving first, then higher class, then the longest waiting."""
    return (-_rank_priority(w, now, starvation_s), w.queued_at, w.id)


class _Cycle:
    """One run of the three passes; keeps per-cycle bookkeeping off the Scheduler."""

    def __init__(self, s: Scheduler, now: float, demand: dict[str, float], result: CycleResult) -> None:
        self.s, self.now, self.demand, self.result = s, now, demand, result
        self.reasons: dict[str, tuple[str, str]] = {}
        self.next_wakeup: float | None = None
        self.preemption_tries = 0
        self.blocked_leaf: dict[str, tuple[str, int]] = {}  # leaf -> starving job holding it, its class
        self.reserved: dict[str, str] = {}       # GPU id -> starving job it is kept free for
        self.reserved_overlay: dict[str, int] = {}
        self.reserved_class: dict[str, int] = {}
        starvation = s.config.starvation_s
        self.by_class: dict[int, dict[str, list[Workload]]] = {}
        for w in sorted(s.pending.values(), key=lambda w: _order(w, now, starvation)):
            self.by_class.setdefault(_rank_priority(w, now, starvation), {}).setdefault(w.queue, []).append(w)
        self.ref = s.cluster.reference_mib()
        self.smallest_mib = min((sl.spec.memory_mib for sl in s.cluster.slots if sl.spec.healthy), default=1)
        self.free_whole = s.cluster.free_whole()
        self.max_free_mib = max((sl.free_mib for sl in s.cluster.slots if sl.spec.healthy), default=0)

    def _starving(self, w: Workload) -> bool:
        return self.now - w.queued_at >= self.s.config.starvation_s

    def phase(self, phase: str) -> None:
        for prio in sorted(self.by_class, reverse=True):
            per_queue = self.by_class[prio]
            heap = [(self._rank(q), q) for q, jobs in per_queue.items() if jobs]
            heapq.heapify(heap)
            cursor = dict.fromkeys(per_queue, 0)
            while heap:
                _, q = heapq.heappop(heap)
                jobs = per_queue[q]
                i = cursor[q]
                while i < len(jobs) and jobs[i].state is not State.pending:
                    i += 1
                if i >= len(jobs):
                    continue
                cursor[q] = i + 1
                self.consider(jobs[i], phase)
                if cursor[q] < len(jobs):
                    heapq.heappush(heap, (self._rank(q), q))
            for q in per_queue:
                per_queue[q] = [w for w in per_queue[q] if w.state is State.pending]

    def _rank(self, queue: str) -> tuple[int, float]:
        node = self.s.tree.by_name[queue]
        return (-node.spec.priority, node.allocated / node.fair_share if node.fair_share > EPS else math.inf)

    def consider(self, w: Workload, phase: str) -> None:
        leaf = self.s.tree.by_name[w.queue]
        d = self.demand[w.id]
        holder = self.blocked_leaf.get(w.queue)
        if holder is not None and holder[0] != w.id and w.priority <= holder[1]:
            self.reasons[w.id] = ("behind-starving", f"queue {w.queue!r} is holding its share for {holder[0]}, "
                                  f"pending longer than {self.s.config.starvation_s:g}s")
            return
        over_limit = next((n for n in leaf.chain if n.allocated + d > n.limit() + EPS), None)
        if over_limit is not None:
            self.reasons[w.id] = ("queue-limit", f"queue {over_limit.name!r} holds {over_limit.allocated:g} of its "
                                  f"limit {over_limit.spec.limit:g} GPUs; this needs {d:g} more")
            self._maybe_block(w)
            return
        if phase == "quota":
            # The leaf's quota is already scaled within its parents'; a sibling over its
            # quota is reclaimed from, it does not shrink this queue's quota.
            # Own lower-priority work does not count: this job may preempt it.
            held = leaf.held_at_or_above(w.priority)
            over = leaf if held + d > leaf.quota_eff + EPS else None
            if over is not None:
                if not w.preemptible:
                    self.reasons[w.id] = ("over-quota", f"non-preemptible work runs only within quota: queue "
                                          f"{over.name!r} holds {held:g} of its {over.quota_eff:g} "
                                          f"GPU quota; this needs {d:g}")
                    self._maybe_block(w)
                return
        elif phase == "fair":
            if not w.preemptible:
                return
            over = leaf if leaf.allocated + d > leaf.fair_share + EPS else None
            if over is not None:
                self.reasons[w.id] = ("over-fair-share", f"queue {over.name!r} would exceed its fair share: "
                                      f"it holds {over.allocated:g} of {over.fair_share:g} GPUs and this "
                                      f"needs {d:g}; waiting for spare capacity")
                return
        else:
            if not w.preemptible:
                return
        plan, why = self._plan(w)
        evicted = False
        if plan is None and phase != "backfill" and self.preemption_tries < MAX_PREEMPTION_TRIES:
            self.preemption_tries += 1
            plan, victims, why = self._preempt(w, phase)
            if plan is not None:
                for v in victims:
                    self._evict(v, w, phase)
                evicted = bool(victims)
        if plan is None:
            self.reasons[w.id] = ("no-capacity", f"waiting for GPUs: {why}")
            if self._starving(w):
                self._reserve(w)
            return
        text = {"quota": f"admitted within the quota of queue {w.queue!r}",
                "fair": f"admitted within the fair share of queue {w.queue!r} (over quota, by weight)",
                "backfill": "admitted on spare capacity (over fair share; reclaimed first)"}[phase]
        touched = {sl.id: sl for sl, _ in plan}.values()
        was_whole = sum(1 for sl in touched if sl.is_whole_free)
        held_max = any(sl.free_mib >= self.max_free_mib for sl in touched)
        self.result.decisions.append(self.s._start(w, plan, self.now, phase, text))
        self.result.started.append(w)
        self.reasons.pop(w.id, None)
        if evicted or held_max:
            self._refresh_free()
        else:  # a start only takes memory: only the GPUs it landed on changed
            self.free_whole -= was_whole

    def _maybe_block(self, w: Workload) -> None:
        if self._starving(w) and w.queue not in self.blocked_leaf:
            self.blocked_leaf[w.queue] = (w.id, w.priority)

    def _refresh_free(self) -> None:
        slots = self.s.cluster.slots
        self.free_whole = sum(1 for sl in slots if sl.is_whole_free)
        self.max_free_mib = max((sl.free_mib for sl in slots if sl.spec.healthy), default=0)

    def _plan(self, w: Workload) -> tuple[Plan | None, str]:
        # Cheap refusals first: most pending work fails here on a busy cluster.
        if w.whole and self.free_whole < w.gpus * w.gang_size:
            return None, f"needs {w.gpus * w.gang_size} whole GPU(s), {self.free_whole} free"
        if not w.whole:
            # The least this member can need is on the smallest GPU.
            need = w.memory_mib or math.ceil(w.fraction * self.smallest_mib - 1e-6)
            if need > self.max_free_mib:
                return None, f"needs {need} MiB on one GPU; the most free on any GPU is {self.max_free_mib} MiB"
        if self.reserved_overlay:
            # Kept GPUs hold back work of the starving job's class or lower, not more urgent work.
            overlay = {g: m for g, m in self.reserved_overlay.items()
                       if self.reserved[g] != w.id and self.reserved_class[g] >= w.priority}
            plan, why = self.s.cluster.plan(w, overlay)
            if plan is None and overlay and self.s.cluster.plan(w)[0] is not None:
                holders = sorted(set(self.reserved.values()))
                why = f"the free GPUs are kept for {', '.join(holders)}, pending longer than " \
                      f"{self.s.config.starvation_s:g}s"
            return plan, why
        return self.s.cluster.plan(w)

    def _reserve(self, w: Workload) -> None:
        """Keep the GPUs closest to free for a starving job: no one else lands on them until it
        fits, so small work cannot keep a big job out forever."""
        if w.id in self.reserved.values() or len(set(self.reserved.values())) >= MAX_RESERVATIONS:
            return
        cluster = self.s.cluster

        def used(sl: GpuSlot) -> int:
            return sl.spec.memory_mib - sl.free_mib

        chosen: list[GpuSlot] = []
        if w.whole:
            pools = {n: sorted((sl for sl in slots if sl.spec.healthy and sl.id not in self.reserved), key=used)
                     for n, slots in cluster.nodes.items()}
            for _ in range(w.gang_size):
                fitting = [n for n, v in pools.items() if len(v) >= w.gpus]
                if not fitting:
                    return
                node = min(fitting, key=lambda n: sum(used(sl) for sl in pools[n][: w.gpus]))
                chosen += pools[node][: w.gpus]
                pools[node] = pools[node][w.gpus:]
        else:
            free = sorted((sl for sl in cluster.slots if sl.spec.healthy and sl.id not in self.reserved),
                          key=used)
            chosen = free[: w.gang_size]
        for sl in chosen:
            self.reserved[sl.id] = w.id
            self.reserved_class[sl.id] = w.priority
            self.reserved_overlay[sl.id] = sl.spec.memory_mib

    # -- preemption -------------------------------------------------------------------
    def _preempt(self, w: Workload, phase: str) -> tuple[Plan | None, list[Workload], str]:
        """Find the fewest eligible victims whose GPUs make ``w`` fit; (None, [], why) if none."""
        tree = self.s.tree
        leaf = tree.by_name[w.queue]
        d = self.demand[w.id]
        mine = (leaf.allocated + d) / leaf.fair_share if leaf.fair_share > EPS else math.inf
        tentative = {n.name: n.allocated for n in tree.by_name.values()}
        candidates: list[tuple[tuple[Any, ...], Workload]] = []
        protected_until: float | None = None
        fresh = {w.id for w in self.result.started}
        for v in self.s.running.values():
            if not v.preemptible or v.id in fresh:  # never undo this cycle's own decisions
                continue
            vleaf = tree.by_name[v.queue]
            same = v.queue == w.queue
            if same:
                if v.priority >= w.priority:
                    continue
            elif not self._reclaimable(vleaf, phase, mine):
                continue
            ready = (v.started_at or 0.0) + v.min_runtime_s
            if ready > self.now:
                protected_until = ready if protected_until is None else min(protected_until, ready)
                continue
            over = vleaf.allocated - (vleaf.quota_eff if phase == "quota" else vleaf.fair_share)
            candidates.append(((v.priority, not same, -over, -(v.started_at or 0.0)), v))
        if protected_until is not None:
            self.next_wakeup = protected_until if self.next_wakeup is None else min(self.next_wakeup,
                                                                                     protected_until)
        if not candidates:
            why = "no preemptible work to reclaim"
            if protected_until is not None:
                why = f"work that could be preempted is protected by its minimum runtime until t={protected_until:g}"
            return None, [], why
        candidates.sort(key=lambda c: c[0])
        overlay: dict[str, int] = {}
        victims: list[Workload] = []
        for _, v in candidates:
            if v.queue != w.queue:
                vleaf = tree.by_name[v.queue]
                after = tentative[v.queue] - v.allocated
                floor = vleaf.quota_eff if phase == "quota" else vleaf.fair_share
                if tentative[v.queue] <= floor + EPS:
                    continue  # that queue is no longer over its share: leave it alone
                ratio_after = after / vleaf.fair_share if vleaf.fair_share > EPS else math.inf
                if phase == "fair" and ratio_after < mine - EPS:
                    continue  # would swap places: no ping-pong between queues
            victims.append(v)
            tentative[v.queue] -= v.allocated
            for gpu_id, mib in v.placement:
                overlay[gpu_id] = overlay.get(gpu_id, 0) - mib
            plan, _ = self.s.cluster.plan(w, overlay)
            if plan is not None:
                kept = self._prune(w, victims, overlay)
                plan, _ = self.s.cluster.plan(w, overlay)
                return plan, kept, ""
        return None, [], "even preempting every eligible workload would not make room"

    def _reclaimable(self, vleaf: QueueNode, phase: str, mine: float) -> bool:
        if phase == "quota":
            return vleaf.allocated > vleaf.quota_eff + EPS
        if vleaf.allocated <= vleaf.fair_share + EPS:
            return False
        theirs = vleaf.allocated / vleaf.fair_share if vleaf.fair_share > EPS else math.inf
        return theirs > mine + EPS

    def _prune(self, w: Workload, victims: list[Workload], overlay: dict[str, int]) -> list[Workload]:
        """Drop victims whose GPUs turned out not to be needed (latest-chosen kept)."""
        kept = list(victims)
        for v in victims[:-1]:
            trial = dict(overlay)
            for gpu_id, mib in v.placement:
                trial[gpu_id] = trial.get(gpu_id, 0) + mib
            plan, _ = self.s.cluster.plan(w, trial)
            if plan is not None:
                kept.remove(v)
                overlay.clear()
                overlay.update(trial)
        return kept

    def _evict(self, v: Workload, by: Workload, phase: str) -> None:
        why = ("to reclaim quota" if phase == "quota" and v.queue != by.queue else
               "to reclaim fair share" if v.queue != by.queue else "for higher-priority work of its queue")
        self.s._stop(v, self.now)
        self.s._requeue(v, self.now)
        self.result.preempted.append(v)
        self.result.decisions.append(self.s._decide(v, self.now, "preempt", "preempted",
                                                    f"preempted by {by.id} ({by.priority_class.value}, queue "
                                                    f"{by.queue!r}) {why}"))
        self.demand[v.id] = v.demand(self.s.cluster.reference_mib())
        self.s.tree.by_name[v.queue].pending += self.demand[v.id]
