"""Workload traces for the simulator: a JSON file format and a seeded generator."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from garrison.gpus.inventory import parse_declared
from garrison.gpus.model import GpuSpec, PriorityClass, QueueSpec, Topology, Workload

MAX_TRACE_JOBS = 200_000
GPU_MIB = 81920


class TraceError(ValueError):
    """A trace file that cannot be replayed; the message says what to fix."""


@dataclass(slots=True)
class TraceJob:
    id: str
    arrival_s: float
    queue: str
    duration_s: float
    priority_class: str = "batch"
    gpus: int = 0
    fraction: float = 0.0
    memory_mib: int = 0
    gang_size: int = 1
    preemptible: bool | None = None
    min_runtime_s: float = 0.0
    topology: str = "any"

    def workload(self) -> Workload:
        return Workload(id=self.id, queue=self.queue, priority_class=PriorityClass(self.priority_class),
                        gpus=self.gpus, fraction=self.fraction, memory_mib=self.memory_mib,
                        gang_size=self.gang_size, preemptible=self.preemptible,
                        min_runtime_s=self.min_runtime_s, topology=Topology(self.topology),
                        duration_s=self.duration_s)


@dataclass(slots=True)
class Trace:
    gpus: list[GpuSpec]
    queues: list[QueueSpec]
    jobs: list[TraceJob] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        nodes: dict[str, dict[str, Any]] = {}
        for g in self.gpus:
            nodes.setdefault(g.node, {"name": g.node, "gpus": 0, "memory_mib": g.memory_mib, "model": g.model})
            nodes[g.node]["gpus"] += 1
        return {"nodes": list(nodes.values()), "queues": [asdict(q) for q in self.queues],
                "jobs": [asdict(j) for j in self.jobs]}


def nodes_for(gpus: int, per_node: int = 8, memory_mib: int = GPU_MIB) -> list[GpuSpec]:
    """``gpus`` GPUs in nodes of ``per_node`` (the last node takes the remainder)."""
    if not 0 < gpus <= 4096:
        raise TraceError("--gpus must be between 1 and 4096")
    decl, left, i = [], gpus, 0
    while left > 0:
        n = min(per_node, left)
        decl.append({"name": f"node-{i}", "gpus": n, "memory_mib": memory_mib, "model": "H100-80GB",
                     "nvlink_groups": [list(range(n))]})
        left, i = left - n, i + 1
    return parse_declared(decl)


def load(path: Path, gpus: int | None = None) -> Trace:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TraceError(f"cannot read trace {path}: {exc}") from exc
    return parse(raw, gpus)


def parse(raw: Any, gpus: int | None = None) -> Trace:
    if not isinstance(raw, dict):
        raise TraceError("a trace is a JSON object with queues, jobs and optionally nodes")
    try:
        inventory = nodes_for(gpus) if gpus else parse_declared(raw.get("nodes") or [])
        queues = [QueueSpec(**q) for q in raw.get("queues") or []]
        jobs = [TraceJob(**j) for j in raw.get("jobs") or []]
    except TypeError as exc:
        raise TraceError(f"trace entry has an unknown or missing field: {exc}") from exc
    except ValueError as exc:
        raise TraceError(str(exc)) from exc
    if not queues:
        raise TraceError("the trace declares no queues")
    if len(jobs) > MAX_TRACE_JOBS:
        raise TraceError(f"the trace has {len(jobs)} jobs; at most {MAX_TRACE_JOBS}")
    for j in jobs:
        if not (j.duration_s > 0 and j.arrival_s >= 0):
            raise TraceError(f"job {j.id}: duration_s must be > 0 and arrival_s >= 0")
        if j.priority_class not in PriorityClass.__members__ or j.topology not in Topology.__members__:
            raise TraceError(f"job {j.id}: unknown priority_class or topology")
    jobs.sort(key=lambda j: (j.arrival_s, j.id))
    return Trace(gpus=inventory, queues=queues, jobs=jobs)


def generate(seed: int, gpus: int = 8, hours: float = 8.0, load: float = 1.6) -> Trace:
    """A mixed trace: fractional interactive and batch inference, whole-GPU training gangs.

    Two tenants and three teams with quotas 50/25/25 % of the cluster; each team offers
    ``load`` times its quota in GPU time so every queue stays backlogged.
    """
    rng = random.Random(seed)
    queues = [
        QueueSpec("acme", quota=0.75 * gpus, over_quota_weight=3),
        QueueSpec("acme-research", parent="acme", quota=0.5 * gpus, over_quota_weight=2),
        QueueSpec("acme-product", parent="acme", quota=0.25 * gpus, over_quota_weight=1),
        QueueSpec("globex", quota=0.25 * gpus, over_quota_weight=1),
        QueueSpec("globex-ml", parent="globex", quota=0.25 * gpus, over_quota_weight=1),
    ]
    horizon = hours * 3600
    jobs: list[TraceJob] = []
    for q in (q for q in queues if q.parent):
        t = 0.0
        offered = q.quota * load  # GPUs of useful work this queue keeps asking for
        # Mix by useful GPU-time: 20 % interactive, 30 % batch inference, 50 % training;
        # the third figure is a job's expected GPU-seconds.
        kinds = [("interactive", 0.20, 0.15 * 400), ("batch", 0.30, 0.169 * 1500),
                 ("training", 0.50, 4 / 3 * 2700)]
        counts = [share / work for _, share, work in kinds]  # job-count weights
        mean_work = sum(c * work for c, (_, _, work) in zip(counts, kinds, strict=True)) / sum(counts)
        rate = offered / mean_work  # jobs per second
        weights = counts
        n = 0
        while True:
            t += rng.expovariate(rate)
            if t >= horizon:
                break
            kind = rng.choices([k for k, _, _ in kinds], weights=weights)[0]
            jid = f"{q.name}-{n}"
            n += 1
            if kind == "interactive":
                jobs.append(TraceJob(id=jid, arrival_s=round(t, 3), queue=q.name, priority_class="interactive",
                                     memory_mib=rng.choice([8192, 12288, 16384]),
                                     duration_s=round(rng.uniform(100, 700), 1)))
            elif kind == "batch":
                jobs.append(TraceJob(id=jid, arrival_s=round(t, 3), queue=q.name, priority_class="batch",
                                     fraction=rng.choice([0.1, 0.125, 0.2, 0.25]),
                                     duration_s=round(rng.uniform(600, 2400), 1), min_runtime_s=120))
            else:
                gang = rng.choice([1, 1, 2])
                jobs.append(TraceJob(id=jid, arrival_s=round(t, 3), queue=q.name, priority_class="training",
                                     gpus=1, gang_size=gang, duration_s=round(rng.uniform(1800, 3600), 1),
                                     min_runtime_s=300, topology="node"))
    jobs.sort(key=lambda j: (j.arrival_s, j.id))
    return Trace(gpus=nodes_for(gpus), queues=queues, jobs=jobs)
