"""Refuse, at submission, what could never run, and say why."""

from __future__ import annotations

import math

from garrison.gpus.model import EPS, Topology, Workload
from garrison.gpus.placement import Cluster
from garrison.gpus.queues import QueueTree

MAX_GANG = 4096
MAX_GPUS_PER_MEMBER = 64
MAX_MIN_RUNTIME_S = 7 * 24 * 3600


class Refused(ValueError):
    """An impossible request; ``str()`` is the reason given to the submitter."""


def validate(w: Workload, cluster: Cluster, tree: QueueTree) -> None:
    _shape(w)
    leaf = tree.by_name.get(w.queue)
    if leaf is None:
        raise Refused(f"queue {w.queue!r} does not exist")
    if not leaf.is_leaf:
        raise Refused(f"queue {w.queue!r} has child queues; submit to one of "
                      f"{sorted(c.name for c in leaf.children)}")
    healthy = cluster.healthy()
    if not healthy:
        raise Refused("the cluster has no healthy GPU")
    biggest_mib = max(s.spec.memory_mib for s in healthy)
    if w.memory_mib and w.memory_mib > biggest_mib:
        raise Refused(f"memory_mib {w.memory_mib} is more than the largest GPU ({biggest_mib} MiB)")
    if w.whole:
        per_node = max(sum(1 for s in slots if s.spec.healthy) for slots in cluster.nodes.values())
        if w.gpus > per_node:
            raise Refused(f"a member asks for {w.gpus} GPUs but the largest node has {per_node} healthy GPUs; "
                          f"split it into a gang of smaller members")
        if w.gpus * w.gang_size > len(healthy):
            raise Refused(f"the gang needs {w.gpus * w.gang_size} GPUs; the cluster has {len(healthy)} healthy")
        fits = sum(sum(1 for s in slots if s.spec.healthy) // w.gpus for slots in cluster.nodes.values())
        if fits < w.gang_size:
            raise Refused(f"the gang needs {w.gang_size} members of {w.gpus} GPUs on one node each; "
                          f"the nodes can hold only {fits} such members")
    elif w.gang_size > len(healthy) * 1024:
        raise Refused(f"the gang of {w.gang_size} fractional members cannot fit {len(healthy)} GPUs")
    if w.topology_required and w.topology is not Topology.any:
        _check_topology(w, cluster)
    demand = w.demand(cluster.reference_mib())
    for node in leaf.chain:
        if demand > node.limit() + EPS:
            raise Refused(f"the workload needs {demand:g} GPUs but queue {node.name!r} is limited to "
                          f"{node.spec.limit:g}")
    if not w.preemptible:
        quota = _quota_ceiling(leaf, cluster.capacity(), tree)
        if demand > quota + EPS:
            raise Refused(f"non-preemptible work runs only within quota: it needs {demand:g} GPUs and queue "
                          f"{w.queue!r} has a quota of {quota:g}; make it preemptible or raise the quota")


def _shape(w: Workload) -> None:
    kinds = sum(1 for v in (w.gpus, w.fraction, w.memory_mib) if v)
    if kinds != 1:
        raise Refused("ask for exactly one of gpus (whole GPUs), fraction (0 < f < 1) or memory_mib")
    if w.gpus and not 0 < w.gpus <= MAX_GPUS_PER_MEMBER:
        raise Refused(f"gpus must be between 1 and {MAX_GPUS_PER_MEMBER}")
    if w.fraction:
        if not math.isfinite(w.fraction) or w.fraction <= 0:
            raise Refused("fraction must be greater than 0")
        if w.fraction >= 1:
            raise Refused(f"fraction {w.fraction:g} is not below 1: ask for whole GPUs with gpus instead")
    if w.memory_mib and w.memory_mib < 0:
        raise Refused("memory_mib must be positive")
    if not 1 <= w.gang_size <= MAX_GANG:
        raise Refused(f"gang_size must be between 1 and {MAX_GANG}")
    if not math.isfinite(w.min_runtime_s) or not 0 <= w.min_runtime_s <= MAX_MIN_RUNTIME_S:
        raise Refused(f"min_runtime_s must be between 0 and {MAX_MIN_RUNTIME_S}")


def _check_topology(w: Workload, cluster: Cluster) -> None:
    domains: dict[str, list[int]] = {}
    for s in cluster.healthy():
        key = s.spec.nvlink_group if w.topology is Topology.nvlink else s.spec.node
        domains.setdefault(key, []).append(s.spec.memory_mib)
    if w.whole:
        need = w.gpus * w.gang_size
        if max(len(v) for v in domains.values()) < need:
            raise Refused(f"the gang needs {need} GPUs in one {w.topology.value} domain; the largest has "
                          f"{max(len(v) for v in domains.values())}")
    else:
        capacity = max(sum(m // w.member_mib(m) for m in v) for v in domains.values())
        if capacity < w.gang_size:
            raise Refused(f"no single {w.topology.value} domain can hold {w.gang_size} members of this size")


def _quota_ceiling(leaf, capacity: float, tree: QueueTree) -> float:  # type: ignore[no-untyped-def]
    """The queue's deserved quota after proportional scaling (what in-quota work may use)."""
    return min(tree.static_quotas(capacity)[n.name] for n in leaf.chain)
