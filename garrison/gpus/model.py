"""The domain vocabulary: GPUs, queues, workloads and decisions (plain data, no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

UNLIMITED = -1.0
EPS = 1e-9


class PriorityClass(StrEnum):
    """Interactive inference above batch inference above training (KAI's values)."""

    interactive = "interactive"
    batch = "batch"
    training = "training"


PRIORITY_VALUE = {PriorityClass.interactive: 125, PriorityClass.batch: 75, PriorityClass.training: 50}
DEFAULT_PREEMPTIBLE = {PriorityClass.interactive: False, PriorityClass.batch: True,
                       PriorityClass.training: True}


class Topology(StrEnum):
    any = "any"
    node = "node"          # every member on one node
    nvlink = "nvlink"      # every member inside one NVLink group


class State(StrEnum):
    pending = "pending"
    running = "running"
    completed = "completed"
    cancelled = "cancelled"
    failed = "failed"


@dataclass(slots=True)
class GpuSpec:
    """One GPU as the inventory sees it (declared in configuration or found by NVML)."""

    node: str
    index: int
    memory_mib: int
    model: str = "unknown"
    nvlink_group: str = ""
    mig: bool = False
    healthy: bool = True
    uuid: str = ""

    @property
    def id(self) -> str:
        return f"{self.node}/{self.index}"


@dataclass(slots=True)
class QueueSpec:
    """KAI's queue model for the one resource scheduled here (GPUs, fractions allowed).

    ``quota`` is the deserved share, ``limit`` the hard cap (-1: none), ``over_quota_weight``
    divides spare capacity among siblings of the same ``priority``.
    """

    name: str
    parent: str | None = None
    quota: float = 0.0
    over_quota_weight: float = 1.0
    limit: float = UNLIMITED
    priority: int = 100
    tenant_id: str = ""
    display_name: str = ""


@dataclass(slots=True)
class Workload:
    """A request for GPUs: ``gang_size`` members, each with whole ``gpus`` on one node or a
    share of one GPU (``fraction`` of it, or ``memory_mib`` of its memory)."""

    id: str
    queue: str
    priority_class: PriorityClass = PriorityClass.batch
    gpus: int = 0
    fraction: float = 0.0
    memory_mib: int = 0
    gang_size: int = 1
    preemptible: bool | None = None
    min_runtime_s: float = 0.0
    topology: Topology = Topology.any
    topology_required: bool = False
    name: str = ""
    tenant_id: str = ""
    submitted_at: float = 0.0
    duration_s: float | None = None  # known only in traces
    # Scheduling state.
    state: State = State.pending
    placement: list[tuple[str, int]] = field(default_factory=list)  # (gpu id, MiB) per member slice
    allocated: float = 0.0  # GPUs held (fractions summed)
    started_at: float | None = None
    first_started_at: float | None = None
    finished_at: float | None = None
    queued_at: float = 0.0  # when it last became pending (submission or preemption)
    reason: str = "submitted; waiting for the next scheduling cycle"
    reason_code: str = "submitted"
    preemptions: int = 0
    work_done_s: float = 0.0  # simulator: progress kept across preemption
    # Metering: when the GPU-seconds of its current holding were last handed to the
    # resource meter (a start later than this begins a new holding), and who submitted it.
    metered_until: float | None = None
    owner: dict[str, str] = field(default_factory=dict)  # user, key_id, agent, session_id

    def __post_init__(self) -> None:
        if self.preemptible is None:
            self.preemptible = DEFAULT_PREEMPTIBLE[self.priority_class]

    @property
    def priority(self) -> int:
        return PRIORITY_VALUE[self.priority_class]

    @property
    def whole(self) -> bool:
        return self.gpus > 0

    def member_share(self, gpu_memory_mib: int) -> float:
        """GPUs one member holds on a GPU of that size."""
        if self.gpus:
            return float(self.gpus)
        if self.fraction:
            return self.fraction
        return min(1.0, self.memory_mib / gpu_memory_mib)

    def member_mib(self, gpu_memory_mib: int) -> int:
        """MiB one fractional member takes on a GPU of that size (packing is by memory)."""
        if self.memory_mib:
            return self.memory_mib
        return max(1, math.ceil(self.fraction * gpu_memory_mib - 1e-6))

    def demand(self, reference_mib: int) -> float:
        return self.gang_size * self.member_share(reference_mib)


@dataclass(slots=True)
class Held:
    """A stretch of time a workload held GPUs, from ``start`` to ``end`` (epoch seconds):
    ``allocated`` GPUs (fractions summed) on ``placement``. What the resource meter gets."""

    workload: Workload
    start: float
    end: float
    allocated: float
    placement: list[tuple[str, int]]

    @property
    def gpu_seconds(self) -> float:
        return self.allocated * max(0.0, self.end - self.start)


@dataclass(slots=True)
class Decision:
    """One scheduling decision with its reason: what `explain` shows and audit records."""

    at: float
    workload_id: str
    action: str  # start | preempt | pending | refuse | finish | cancel
    reason: str
    queue: str = ""
    tenant_id: str = ""
    gpus: list[str] = field(default_factory=list)
