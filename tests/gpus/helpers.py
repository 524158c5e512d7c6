"""Small builders shared by the GPU tests."""

from __future__ import annotations

from garrison.gpus.inventory import parse_declared
from garrison.gpus.model import GpuSpec, PriorityClass, QueueSpec, Workload

MIB = 81920


def gpus(nodes: int = 1, per_node: int = 4, memory_mib: int = MIB, **extra: object) -> list[GpuSpec]:
    return parse_declared([{"name": f"n{i}", "gpus": per_node, "memory_mib": memory_mib, **extra}
                           for i in range(nodes)])


def two_teams(quota_a: float = 2, quota_b: float = 2, **kw: object) -> list[QueueSpec]:
    return [QueueSpec("acme", quota=quota_a + quota_b),
            QueueSpec("team-a", parent="acme", quota=quota_a, **kw),  # type: ignore[arg-type]
            QueueSpec("team-b", parent="acme", quota=quota_b, **kw)]  # type: ignore[arg-type]


def job(wid: str, queue: str = "team-a", cls: str = "batch", **kw: object) -> Workload:
    return Workload(id=wid, queue=queue, priority_class=PriorityClass(cls), **kw)  # type: ignore[arg-type]
