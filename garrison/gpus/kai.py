"""Kubernetes export for NVIDIA KAI Scheduler: Queue and PodGroup resources and the pods
that join them (queue label, fraction annotations, schedulerName).

The output is plain dicts shaped by the CRDs in ``shared/specs/kai-scheduler/``
(``scheduling.run.ai/v2`` Queue, ``scheduling.run.ai/v2alpha2`` PodGroup); tests validate
them against the CRDs' openAPIV3Schema.
"""

from __future__ import annotations

import re
from typing import Any

from garrison.gpus.model import UNLIMITED, PriorityClass, QueueSpec, Topology, Workload

SCHEDULER_NAME = "kai-scheduler"
QUEUE_LABEL = "kai.scheduler/queue"
MANAGED_BY = {"app.kubernetes.io/managed-by": "garrison"}
# KAI's default priority classes (REFERENCE.md): >= 100 is non-preemptible by default.
KAI_PRIORITY = {"inference": 125, "build": 100, "build-preemptible": 75, "train": 50}
TOPOLOGY_LEVEL = {Topology.node: "kubernetes.io/hostname", Topology.nvlink: "nvidia.com/gpu.clique"}
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def k8s_name(value: str, prefix: str = "") -> str:
    """An RFC 1123 name: lowercase letters, digits and '-', at most 63 characters."""
    name = _NOT_DNS.sub("-", (prefix + value).lower()).strip("-")
    return (name[:63].rstrip("-")) or "x"


def priority_class_name(w: Workload) -> str:
    if w.priority_class is PriorityClass.interactive:
        return "inference"
    if w.priority_class is PriorityClass.batch:
        return "build-preemptible" if w.preemptible else "build"
    return "train"


def _resource(quota: float, weight: float, limit: float) -> dict[str, float]:
    return {"quota": quota, "overQuotaWeight": weight, "limit": limit}


def queue_resource(q: QueueSpec) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "displayName": q.display_name or q.name,
        "priority": q.priority,
        "resources": {
            "gpu": _resource(q.quota, q.over_quota_weight, q.limit if q.limit >= 0 else UNLIMITED),
            # Only GPUs are scheduled here: CPU and memory are left unlimited.
            "cpu": _resource(UNLIMITED, 1, UNLIMITED),
            "memory": _resource(UNLIMITED, 1, UNLIMITED),
        },
    }
    if q.parent:
        spec["parentQueue"] = q.parent
    return {"apiVersion": "scheduling.run.ai/v2", "kind": "Queue",
            "metadata": {"name": q.name, "labels": dict(MANAGED_BY)}, "spec": spec}


def pod_group(w: Workload, namespace: str, topology_name: str = "default") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "minMember": w.gang_size,
        "queue": w.queue,
        "priorityClassName": priority_class_name(w),
        "preemptibility": "preemptible" if w.preemptible else "non-preemptible",
    }
    if w.topology is not Topology.any:
        level = "requiredTopologyLevel" if w.topology_required else "preferredTopologyLevel"
        spec["topologyConstraint"] = {"topology": topology_name, level: TOPOLOGY_LEVEL[w.topology]}
    return {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
            "metadata": {"name": k8s_name(w.id, "pg-"), "namespace": namespace,
                         "labels": {**MANAGED_BY, QUEUE_LABEL: w.queue, "garrison.dev/workload": k8s_name(w.id)}},
            "spec": spec}


def pods(w: Workload, namespace: str, image: str = "busybox", command: list[str] | None = None) -> list[dict[str, Any]]:
    """One pod per gang member, joined to the PodGroup by annotation."""
    annotations = {"pod-group-name": k8s_name(w.id, "pg-")}
    resources: dict[str, Any] = {}
    if w.gpus:
        resources = {"limits": {"nvidia.com/gpu": str(w.gpus)}}
    elif w.memory_mib:
        annotations["gpu-memory"] = str(w.memory_mib)
    else:
        annotations["gpu-fraction"] = f"{w.fraction:g}"
    container: dict[str, Any] = {"name": "workload", "image": image}
    if command:
        container["command"] = list(command)
    if resources:
        container["resources"] = resources
    out = []
    for member in range(w.gang_size):
        out.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": k8s_name(f"{w.id}-{member}"), "namespace": namespace,
                         "labels": {**MANAGED_BY, QUEUE_LABEL: w.queue, "garrison.dev/workload": k8s_name(w.id)},
                         "annotations": dict(annotations)},
            "spec": {"schedulerName": SCHEDULER_NAME, "priorityClassName": priority_class_name(w),
                     "restartPolicy": "Never", "containers": [container]},
        })
    return out


def export(queues: list[QueueSpec], workloads: list[Workload], namespace: str = "default",
           topology_name: str = "default", image: str = "busybox") -> list[dict[str, Any]]:
    """Every queue, then a PodGroup and its pods for every workload."""
    docs: list[dict[str, Any]] = [queue_resource(q) for q in queues]
    for w in workloads:
        docs.append(pod_group(w, namespace, topology_name))
        docs.extend(pods(w, namespace, image))
    return docs
