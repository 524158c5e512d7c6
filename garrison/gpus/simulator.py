"""Replay a trace against the scheduler in virtual time, and against a FIFO whole-GPU
baseline, and report utilisation, waits per class, shares against entitlements,
preemptions and gang integrity."""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Any

from garrison.gpus.model import EPS, State, Workload
from garrison.gpus.placement import Cluster
from garrison.gpus.queues import QueueTree
from garrison.gpus.scheduler import Scheduler, SchedulerConfig
from garrison.gpus.trace import Trace

TICK_S = 60.0  # a cycle at least this often while work is pending (ages fair share)


@dataclass(slots=True)
class _Meter:
    """Integrates allocations over virtual time."""

    capacity: float
    horizon: float
    last: float = 0.0
    useful: float = 0.0        # GPU-seconds requested by running work, inside the horizon
    held: float = 0.0          # GPU-seconds held (whole GPUs for FIFO), inside the horizon
    all_backlogged_s: float = 0.0
    queue_alloc: dict[str, float] = field(default_factory=dict)
    total_alloc: float = 0.0

    def advance(self, now: float, useful: float, held: float, per_queue: dict[str, float],
                all_backlogged: bool) -> None:
        lo, hi = self.last, min(now, self.horizon)
        if hi > lo:
            self.useful += useful * (hi - lo)
            self.held += held * (hi - lo)
            if all_backlogged:
                self.all_backlogged_s += hi - lo
                for q, a in per_queue.items():
                    self.queue_alloc[q] = self.queue_alloc.get(q, 0.0) + a * (hi - lo)
                self.total_alloc += sum(per_queue.values()) * (hi - lo)
        self.last = max(self.last, now)


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


def _waits(jobs: list[Workload]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for cls in ("interactive", "batch", "training"):
        waits = [w.first_started_at - w.submitted_at for w in jobs
                 if w.priority_class.value == cls and w.first_started_at is not None]
        out[cls] = {"jobs": len(waits), "p50_s": round(_percentile(waits, 50), 1),
                    "p95_s": round(_percentile(waits, 95), 1), "max_s": round(max(waits, default=0.0), 1)}
    return out


def _gang_ok(w: Workload) -> bool:
    return len(w.placement) == (w.gpus * w.gang_size if w.whole else w.gang_size)


def simulate(trace: Trace, config: SchedulerConfig | None = None) -> dict[str, Any]:
    """Both runs on the same trace; virtual time, so a day of trace takes seconds."""
    horizon = max((j.arrival_s for j in trace.jobs), default=0.0)
    return {"gpus": len(trace.gpus), "jobs": len(trace.jobs), "horizon_s": horizon,
            "garrison": _run_garrison(trace, horizon, config), "fifo": _run_fifo(trace, horizon)}


def _run_garrison(trace: Trace, horizon: float, config: SchedulerConfig | None) -> dict[str, Any]:
    sched = Scheduler(trace.gpus, trace.queues, config)
    capacity = sched.cluster.capacity()
    leaves = [n.name for n in sched.tree.leaves]
    entitled = sched.tree.entitlements(capacity, set(leaves))
    meter = _Meter(capacity=capacity, horizon=horizon)
    jobs = [j.workload() for j in trace.jobs]
    events: list[tuple[float, int, str, int, int]] = []  # (time, seq, kind, job index, start token)
    seq = 0
    for i, j in enumerate(trace.jobs):
        events.append((j.arrival_s, seq, "arrive", i, 0))
        seq += 1
    heapq.heapify(events)
    tokens = [0] * len(jobs)
    index = {w.id: i for i, w in enumerate(jobs)}
    partial = preemptions = cycles = 0
    cycle_s: list[float] = []
    next_tick: float | None = None
    refused: list[str] = []
    now = 0.0
    while events:
        now = events[0][0]
        per_queue: dict[str, float] = {q: 0.0 for q in leaves}
        for w in sched.running.values():
            per_queue[w.queue] += w.allocated
        backlogged = {w.queue for w in sched.pending.values()}
        total = sum(per_queue.values())
        meter.advance(now, total, total, per_queue, len(backlogged) == len(leaves))
        while events and events[0][0] <= now + EPS:
            _, _, kind, i, token = heapq.heappop(events)
            w = jobs[i]
            if kind == "arrive":
                try:
                    sched.submit(w, now)
                except ValueError as exc:
                    refused.append(f"{w.id}: {exc}")
            elif kind == "finish" and token == tokens[i] and w.state is State.running:
                sched.finish(w.id, now)
        t0 = time.perf_counter()
        result = sched.cycle(now)
        cycle_s.append(time.perf_counter() - t0)
        cycles += 1
        preemptions += len(result.preempted)
        for w in result.preempted:
            tokens[index[w.id]] += 1
        for w in result.started:
            i = index[w.id]
            tokens[i] += 1
            partial += 0 if _gang_ok(w) else 1
            left = max(EPS, (w.duration_s or 0.0) - w.work_done_s)
            heapq.heappush(events, (now + left, seq, "finish", i, tokens[i]))
            seq += 1
        if sched.pending:
            wake = now + TICK_S
            if result.next_wakeup is not None and result.next_wakeup > now:
                wake = min(wake, result.next_wakeup)
            if next_tick is None or next_tick <= now or wake < next_tick:
                next_tick = wake
                heapq.heappush(events, (wake, seq, "tick", 0, -1))
                seq += 1
    never = [w.id for w in jobs if w.first_started_at is None and w.id not in {r.split(":")[0] for r in refused}]
    shares = {}
    for q in leaves:
        share = meter.queue_alloc.get(q, 0.0) / meter.total_alloc if meter.total_alloc > EPS else 0.0
        ent = entitled[q] / capacity
        shares[q] = {"share": round(share, 4), "entitlement": round(ent, 4),
                     "deviation_points": round(abs(share - ent) * 100, 2)}
    cycle_s.sort()
    return {
        "utilisation": round(meter.useful / (capacity * horizon), 4) if horizon else 0.0,
        "makespan_s": round(now, 1),
        "waits": _waits(jobs),
        "max_wait_s": round(max((w.first_started_at - w.submitted_at for w in jobs
                                 if w.first_started_at is not None), default=0.0), 1),
        "queues": shares,
        "all_backlogged_s": round(meter.all_backlogged_s, 1),
        "preemptions": preemptions,
        "partial_gangs": partial,
        "never_started": never,
        "refused": refused,
        "cycles": cycles,
        "cycle_ms_p50": round(_percentile(cycle_s, 50) * 1000, 3),
        "cycle_ms_max": round(max(cycle_s, default=0.0) * 1000, 3),
        "warnings": sched.warnings,
    }


def _run_fifo(trace: Trace, horizon: float) -> dict[str, Any]:
    """Strict FIFO, whole GPUs only (a fraction takes a whole GPU), no preemption."""
    cluster = Cluster(trace.gpus)
    capacity = cluster.capacity()
    tree = QueueTree(trace.queues)
    meter = _Meter(capacity=capacity, horizon=horizon)
    jobs = [j.workload() for j in trace.jobs]
    whole = [Workload(id=w.id, queue=w.queue, gpus=max(1, w.gpus), gang_size=w.gang_size,
                      priority_class=w.priority_class) for w in jobs]
    useful = {w.id: w.demand(cluster.reference_mib()) for w in jobs}
    queue: list[int] = []
    running: dict[int, float] = {}
    events: list[tuple[float, int, str, int]] = [(j.arrival_s, i, "arrive", i) for i, j in enumerate(trace.jobs)]
    heapq.heapify(events)
    seq = len(events)
    partial = 0
    now = 0.0
    leaves = [n.name for n in tree.leaves]
    while events:
        now = events[0][0]
        per_queue = {q: 0.0 for q in leaves}
        for i in running:
            per_queue[jobs[i].queue] += useful[jobs[i].id]
        held = sum(float(len(whole[i].placement)) for i in running)
        backlogged = {jobs[i].queue for i in queue}
        meter.advance(now, sum(per_queue.values()), held, per_queue, len(backlogged) == len(leaves))
        while events and events[0][0] <= now + EPS:
            _, _, kind, i = heapq.heappop(events)
            if kind == "arrive":
                jobs[i].submitted_at = now
                if Cluster(trace.gpus).plan(whole[i])[0] is not None:
                    queue.append(i)  # what could never fit is dropped, as garrison refuses it
            else:
                cluster.release(whole[i])
                running.pop(i, None)
        while queue:
            i = queue[0]
            plan, _ = cluster.plan(whole[i])
            if plan is None:
                break  # head-of-line blocking: nobody passes the head
            cluster.commit(whole[i], plan)
            partial += 0 if _gang_ok(whole[i]) else 1
            queue.pop(0)
            jobs[i].first_started_at = now
            running[i] = now
            heapq.heappush(events, (now + (jobs[i].duration_s or 0.0), seq, "finish", i))
            seq += 1
    return {
        "utilisation": round(meter.useful / (capacity * horizon), 4) if horizon else 0.0,
        "held_utilisation": round(meter.held / (capacity * horizon), 4) if horizon else 0.0,
        "makespan_s": round(now, 1),
        "waits": _waits(jobs),
        "max_wait_s": round(max((w.first_started_at - w.submitted_at for w in jobs
                                 if w.first_started_at is not None), default=0.0), 1),
        "partial_gangs": partial,
    }
