"""GPU inventory: declared in configuration, or discovered through NVML (nvidia-ml-py).

A host without NVML (no driver, no GPU, CI) gets an empty discovery and a reason, never
an exception; declared inventory is how tests and GPU-less hosts describe their GPUs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from garrison.gpus.model import GpuSpec

log = logging.getLogger("garrison.gpus.inventory")

MAX_NODES = 1024
MAX_GPUS_PER_NODE = 64


class InventoryError(ValueError):
    """A declared inventory that cannot be used; the message says what to fix."""


@dataclass(slots=True)
class Discovery:
    gpus: list[GpuSpec] = field(default_factory=list)
    source: str = "none"
    reason: str = ""


def parse_declared(nodes: list[dict[str, Any]]) -> list[GpuSpec]:
    """Nodes as written in configuration::

        [{"name": "node-a", "gpus": 8, "memory_mib": 81920, "model": "H100",
          "nvlink_groups": [[0, 1, 2, 3], [4, 5, 6, 7]], "unhealthy": [5]}]

    Without ``nvlink_groups`` every GPU of a node shares one NVLink group.
    """
    if not isinstance(nodes, list) or not nodes:
        raise InventoryError("inventory must be a non-empty list of nodes")
    if len(nodes) > MAX_NODES:
        raise InventoryError(f"inventory declares {len(nodes)} nodes; at most {MAX_NODES}")
    out: list[GpuSpec] = []
    seen: set[str] = set()
    for i, node in enumerate(nodes):
        if not isinstance(node, dict):
            raise InventoryError(f"node #{i} must be an object with name, gpus and memory_mib")
        name = node.get("name")
        if not isinstance(name, str) or not name or len(name) > 128 or "/" in name:
            raise InventoryError(f"node #{i}: name must be a non-empty string without '/' (<= 128 chars)")
        if name in seen:
            raise InventoryError(f"node {name!r} is declared twice")
        seen.add(name)
        count = node.get("gpus")
        if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= MAX_GPUS_PER_NODE:
            raise InventoryError(f"node {name!r}: gpus must be an integer from 1 to {MAX_GPUS_PER_NODE}")
        memory = node.get("memory_mib")
        if not isinstance(memory, int) or isinstance(memory, bool) or not 0 < memory <= 10_000_000:
            raise InventoryError(f"node {name!r}: memory_mib must be a positive integer (MiB per GPU)")
        groups = node.get("nvlink_groups") or [list(range(count))]
        group_of: dict[int, str] = {}
        for g, members in enumerate(groups):
            if not isinstance(members, list):
                raise InventoryError(f"node {name!r}: nvlink_groups must be lists of GPU indexes")
            for idx in members:
                if not isinstance(idx, int) or not 0 <= idx < count or idx in group_of:
                    raise InventoryError(
                        f"node {name!r}: NVLink group member {idx!r} is not a distinct GPU index 0..{count - 1}")
                group_of[idx] = f"{name}:nvl{g}"
        unhealthy = set(node.get("unhealthy") or [])
        for idx in range(count):
            out.append(GpuSpec(node=name, index=idx, memory_mib=memory, model=str(node.get("model", "unknown")),
                               nvlink_group=group_of.get(idx, f"{name}:gpu{idx}"),
                               mig=bool(node.get("mig", False)), healthy=idx not in unhealthy))
    return out


def discover_nvml(node: str = "local") -> Discovery:
    """GPUs of this host through NVML: model, memory, MIG mode, NVLink groups, health."""
    try:
        import pynvml
    except ImportError:
        return Discovery(reason="nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return Discovery(reason=f"NVML is not available: {exc}")
    try:
        count = pynvml.nvmlDeviceGetCount()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        bus_ids = [_pci_bus_id(pynvml, h) for h in handles]
        groups = _nvlink_groups(pynvml, handles, bus_ids)
        gpus = []
        for i, handle in enumerate(handles):
            gpus.append(GpuSpec(node=node, index=i, memory_mib=_memory_mib(pynvml, handle),
                                model=_text(pynvml.nvmlDeviceGetName(handle)),
                                nvlink_group=f"{node}:nvl{groups[i]}", mig=_mig(pynvml, handle),
                                healthy=_healthy(pynvml, handle), uuid=_text(pynvml.nvmlDeviceGetUUID(handle))))
        return Discovery(gpus=gpus, source="nvml", reason=f"{count} GPU(s) found through NVML")
    except pynvml.NVMLError as exc:
        return Discovery(reason=f"NVML query failed: {exc}")
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _memory_mib(pynvml: Any, handle: Any) -> int:
    return int(pynvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024))


def _pci_bus_id(pynvml: Any, handle: Any) -> str:
    return _text(pynvml.nvmlDeviceGetPciInfo(handle).busId).lower()


def _mig(pynvml: Any, handle: Any) -> bool:
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
        return bool(current)
    except pynvml.NVMLError:  # GPUs without MIG support
        return False


def _healthy(pynvml: Any, handle: Any) -> bool:
    """A GPU that answers and has no pending retired pages is schedulable."""
    try:
        pynvml.nvmlDeviceGetMemoryInfo(handle)
    except pynvml.NVMLError:
        return False
    try:
        return not pynvml.nvmlDeviceGetRetiredPagesPendingStatus(handle)
    except pynvml.NVMLError:  # not supported on every GPU
        return True


def _nvlink_groups(pynvml: Any, handles: list[Any], bus_ids: list[str]) -> list[int]:
    """Connected components of the NVLink graph (GPUs without NVLink stand alone)."""
    parent = list(range(len(handles)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    index_of = {bus: i for i, bus in enumerate(bus_ids)}
    for i, handle in enumerate(handles):
        for link in range(getattr(pynvml, "NVML_NVLINK_MAX_LINKS", 18)):
            try:
                if not pynvml.nvmlDeviceGetNvLinkState(handle, link):
                    continue
                remote = _text(pynvml.nvmlDeviceGetNvLinkRemotePciInfo(handle, link).busId).lower()
            except pynvml.NVMLError:
                break
            j = index_of.get(remote)
            if j is not None:
                parent[find(i)] = find(j)
    return [find(i) for i in range(len(handles))]
