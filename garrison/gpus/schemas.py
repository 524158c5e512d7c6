"""The wire contract of /api/gpus (pydantic models)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from garrison.core.inputs import DbText
from garrison.gpus.model import PriorityClass, Topology

NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServeIn(_In):
    """An inference replica: registered with the LLM gateway once its port answers."""

    model: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:/-]+$")
    port: int = Field(ge=1024, le=65535)
    kind: Literal["openai", "vllm", "ollama", "llamacpp"] = "vllm"


class WorkloadIn(_In):
    queue: DbText = Field(min_length=1, max_length=63, description="Leaf queue of the caller's tenant.")
    name: DbText = Field("", max_length=200)
    priority_class: PriorityClass = PriorityClass.batch
    gpus: int = Field(0, ge=0, le=1024, description="Whole GPUs per member (on one node).")
    fraction: float = Field(0.0, ge=0, le=1024, allow_inf_nan=False, description="Share of one GPU per member.")
    memory_mib: int = Field(0, ge=0, le=10_000_000, description="GPU memory per member, instead of fraction.")
    gang_size: int = Field(1, ge=1, le=4096, description="Members placed all together or not at all.")
    preemptible: bool | None = Field(None, description="Default: interactive no, batch and training yes.")
    min_runtime_s: float = Field(0.0, ge=0, le=7 * 24 * 3600, allow_inf_nan=False)
    topology: Topology = Topology.any
    topology_required: bool = False
    command: list[DbText] | None = Field(None, min_length=1, max_length=256,
                                      description="Run by the local launcher (operator, launcher enabled).")
    serve: ServeIn | None = None


class PlacementOut(BaseModel):
    gpu: str
    memory_mib: int


class WorkloadOut(BaseModel):
    id: str
    tenant_id: str
    queue: str
    name: str
    priority_class: PriorityClass
    gpus: int
    fraction: float
    memory_mib: int
    gang_size: int
    preemptible: bool
    min_runtime_s: float
    topology: Topology
    topology_required: bool
    state: str
    reason: str
    reason_code: str
    placement: list[PlacementOut]
    allocated_gpus: float
    preemptions: int
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    command: list[str] | None = None
    serve: dict[str, Any] | None = None


class WorkloadPage(BaseModel):
    items: list[WorkloadOut]
    next_cursor: str | None = None


class FinishIn(_In):
    failed: bool = False


class QueueIn(_In):
    name: str = Field(pattern=NAME, max_length=63)
    parent: DbText | None = Field(None, max_length=63)
    tenant: DbText | None = Field(None, max_length=128, description="Tenant id or name; root queues only.")
    quota: float = Field(0.0, ge=0, le=1_000_000, allow_inf_nan=False)
    over_quota_weight: float = Field(1.0, ge=0, le=1_000_000, allow_inf_nan=False)
    limit: float = Field(-1.0, ge=-1, le=1_000_000, allow_inf_nan=False, description="-1: no limit.")
    priority: int = Field(100, ge=-1000, le=1000)
    display_name: DbText = Field("", max_length=200)


class QueuesIn(_In):
    queues: list[QueueIn] = Field(max_length=2000)


class QueueOut(BaseModel):
    name: str
    parent: str | None
    tenant_id: str
    quota: float
    over_quota_weight: float
    limit: float
    priority: int
    display_name: str
    allocated: float
    effective_quota: float
    fair_share: float
    demand: float


class QueuesOut(BaseModel):
    queues: list[QueueOut]
    warnings: list[str] = []


class NodeIn(_In):
    name: DbText = Field(min_length=1, max_length=128)
    gpus: int = Field(ge=1, le=64)
    memory_mib: int = Field(ge=1, le=10_000_000)
    model: DbText = Field("unknown", max_length=128)
    nvlink_groups: list[list[int]] | None = Field(None, max_length=64)
    unhealthy: list[int] = Field(default_factory=list, max_length=64)
    mig: bool = False


class InventoryIn(_In):
    nodes: list[NodeIn] | None = Field(None, max_length=1024)
    discover: bool = Field(False, description="Find this host's GPUs through NVML instead.")


class GpuOut(BaseModel):
    id: str
    node: str
    index: int
    model: str
    memory_mib: int
    free_mib: int
    nvlink_group: str
    mig: bool
    healthy: bool
    workloads: list[str] | None = None


class InventoryOut(BaseModel):
    source: str
    capacity: float
    allocated: float
    gpus: list[GpuOut]
    warnings: list[str] = []


class HealthIn(_In):
    healthy: bool


class ExplainOut(BaseModel):
    id: str
    state: str
    reason: str
    reason_code: str
    queue: str
    priority_class: str
    preemptible: bool
    gpus: list[str]
    preemptions: int
    position_in_queue: int | None = None
    queue_status: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []
