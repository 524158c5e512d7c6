"""GPU-seconds for the resource meter: what each workload held, per tenant.

The scheduler cuts a workload's holding into stretches (``Held``): one when it lets go of
its GPUs (finished, failed, cancelled, preempted, its GPU turned unhealthy or left the
inventory, its process exited) and, while it keeps them, one every ``GARRISON_GPUS_METER_S``
seconds. Each stretch becomes one ``gpu`` record (``gpu_second``: GPUs held, fractions
summed, times seconds) with source ``gpus``. The service writes the workload's new mark
(``metered_until``) before it hands the records over, so a crash between the two loses a
stretch rather than counting one twice, and a restart goes on from the mark.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from garrison.gpus.model import Held, State

if TYPE_CHECKING:
    from garrison.gpus.placement import Cluster
    from garrison.platform import Platform

log = logging.getLogger("garrison.gpus")
SOURCE = "gpus"
DEFAULT_EVERY_S = 60.0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def attributes(h: Held, cluster: Cluster) -> dict[str, Any]:
    """The workload, its queue, where it ran and who submitted it."""
    w = h.workload
    gpus = list(dict.fromkeys(g for g, _ in h.placement))
    specs = [cluster.by_id[g].spec for g in gpus if g in cluster.by_id]
    attrs: dict[str, Any] = {
        "workload_id": w.id, "queue": w.queue, "priority_class": w.priority_class.value,
        "gpus": gpus, "nodes": sorted({s.node for s in specs} or {g.split("/", 1)[0] for g in gpus}),
        "gpu_models": sorted({s.model for s in specs if s.model and s.model != "unknown"}),
        "allocated_gpus": round(h.allocated, 6), "seconds": round(h.end - h.start, 3),
        "start": _iso(h.start), "end": _iso(h.end), "ended": w.state is not State.running,
    }
    if w.name:
        attrs["workload_name"] = w.name
    if attrs["ended"]:
        attrs["end_reason"] = w.reason_code
    attrs.update({k: v for k, v in w.owner.items() if v})
    return attrs


def record(platform: Platform, held: list[Held], cluster: Cluster) -> int:
    """Hand each stretch to the resource meter; nothing when metering is not loaded.
    Returns how many records were handed over."""
    metering = platform.services.get("metering")
    send = getattr(metering, "record_resource", None)
    if not callable(send):
        return 0
    sent = 0
    for h in held:
        quantity = h.gpu_seconds
        if quantity <= 0:
            continue
        try:
            send(h.workload.tenant_id, SOURCE, "gpu", quantity, "gpu_second", attributes(h, cluster),
                 ts=datetime.fromtimestamp(h.end, UTC))
            sent += 1
        except Exception as exc:  # metering never fails a scheduling decision
            log.error("GPU workload %s usage not metered: %s", h.workload.id, exc)
    return sent
