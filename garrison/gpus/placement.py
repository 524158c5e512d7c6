"""Where a workload's members go: whole GPUs on one node, or fractions packed by memory.

A plan is computed against a scratch overlay (``taken``) and committed only when every
member found room, so a gang is placed whole or not at all and never holds GPUs while it
waits (no partial gang, no deadlock between gangs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from garrison.gpus.model import GpuSpec, Topology, Workload


@dataclass(slots=True, eq=False)
class GpuSlot:
    spec: GpuSpec
    free_mib: int
    users: dict[str, int] = field(default_factory=dict)  # workload id -> MiB
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.spec.id

    @property
    def is_whole_free(self) -> bool:
        return self.spec.healthy and not self.users


Plan = list[tuple[GpuSlot, int]]  # (GPU, MiB) per member slice


class Cluster:
    def __init__(self, gpus: list[GpuSpec]) -> None:
        self.slots = [GpuSlot(spec=g, free_mib=g.memory_mib) for g in gpus]
        self.by_id = {s.id: s for s in self.slots}
        self.nodes: dict[str, list[GpuSlot]] = {}
        for s in self.slots:
            self.nodes.setdefault(s.spec.node, []).append(s)
        self._reference_mib: int | None = None
        self._healthy: list[GpuSlot] | None = None

    def health_changed(self) -> None:
        self._reference_mib = None
        self._healthy = None

    # -- capacity ---------------------------------------------------------------------
    def healthy(self) -> list[GpuSlot]:
        if self._healthy is None:
            self._healthy = [s for s in self.slots if s.spec.healthy]
        return self._healthy

    def capacity(self) -> float:
        return float(sum(1 for s in self.slots if s.spec.healthy))

    def reference_mib(self) -> int:
        """The GPU size fractions by memory are accounted against before placement."""
        if self._reference_mib is None:
            self._reference_mib = max((s.spec.memory_mib for s in self.slots if s.spec.healthy), default=1)
        return self._reference_mib

    def free_whole(self) -> int:
        return sum(1 for s in self.slots if s.is_whole_free)

    # -- commit -----------------------------------------------------------------------
    def commit(self, workload: Workload, plan: Plan) -> None:
        workload.placement = []
        allocated = 0.0
        for slot, mib in plan:
            slot.free_mib -= mib
            slot.users[workload.id] = slot.users.get(workload.id, 0) + mib
            workload.placement.append((slot.id, mib))
            allocated += mib / slot.spec.memory_mib
        workload.allocated = allocated

    def release(self, workload: Workload) -> None:
        for gpu_id, mib in workload.placement:
            slot = self.by_id.get(gpu_id)
            if slot is None:
                continue
            slot.free_mib += mib
            left = slot.users.get(workload.id, 0) - mib
            if left > 0:
                slot.users[workload.id] = left
            else:
                slot.users.pop(workload.id, None)
        workload.placement = []
        workload.allocated = 0.0

    # -- planning ---------------------------------------------------------------------
    def plan(self, w: Workload, taken: dict[str, int] | None = None) -> tuple[Plan | None, str]:
        """A placement for every member of ``w`` or (None, why not). ``taken`` holds MiB
        already freed (negative) or claimed (positive) by a tentative preemption."""
        overlay = taken or {}
        if w.whole:
            return self._plan_whole(w, overlay)
        return self._plan_fraction(w, overlay)

    def _free(self, s: GpuSlot, overlay: dict[str, int]) -> int:
        return s.free_mib - overlay.get(s.id, 0)

    def _whole_free(self, s: GpuSlot, overlay: dict[str, int]) -> bool:
        return s.spec.healthy and self._free(s, overlay) >= s.spec.memory_mib

    def _plan_whole(self, w: Workload, overlay: dict[str, int]) -> tuple[Plan | None, str]:
        need = w.gpus * w.gang_size
        free_by_node = {n: [s for s in slots if self._whole_free(s, overlay)] for n, slots in self.nodes.items()}
        total_free = sum(len(v) for v in free_by_node.values())
        if total_free < need:
            return None, f"needs {need} whole GPU(s), {total_free} free"
        scopes: list[list[GpuSlot]] = []
        if w.topology is Topology.nvlink:
            groups: dict[str, list[GpuSlot]] = {}
            for slots in free_by_node.values():
                for s in slots:
                    groups.setdefault(s.spec.nvlink_group, []).append(s)
            scopes = sorted((g for g in groups.values() if len(g) >= need), key=len)
        elif w.topology is Topology.node:
            scopes = sorted((g for g in free_by_node.values() if len(g) >= need), key=len)
        for scope in scopes:  # smallest block that fits: keeps big blocks for big gangs
            return [(s, s.spec.memory_mib) for s in scope[:need]], ""
        if w.topology is not Topology.any and w.topology_required:
            return None, f"needs {need} free GPUs in one {w.topology.value} domain; none has that many"
        plan: Plan = []
        pools = {n: sorted(v, key=lambda s: s.spec.nvlink_group) for n, v in free_by_node.items()}
        for _ in range(w.gang_size):
            fitting = [n for n, v in pools.items() if len(v) >= w.gpus]
            if not fitting:
                largest = max((len(v) for v in pools.values()), default=0)
                return None, (f"each of {w.gang_size} member(s) needs {w.gpus} GPU(s) on one node; "
                              f"largest free block is {largest}")
            node = min(fitting, key=lambda n: len(pools[n]))
            chosen, pools[node] = pools[node][: w.gpus], pools[node][w.gpus:]
            plan.extend((s, s.spec.memory_mib) for s in chosen)
        return plan, ""

    def _plan_fraction(self, w: Workload, overlay: dict[str, int]) -> tuple[Plan | None, str]:
        claim: dict[str, int] = {}
        plan: Plan = []
        candidates = self.healthy()
        if w.topology is not Topology.any and w.gang_size > 1:
            scoped, why = self._plan_fraction_scoped(w, overlay, candidates)
            if scoped is not None or w.topology_required:
                return scoped, why  # a preference falls back to spreading below
        need_of: dict[int, int] = {}
        for _ in range(w.gang_size):
            best: GpuSlot | None = None
            best_key = (2, 0)
            for s in candidates:
                memory = s.spec.memory_mib
                need = need_of.get(memory)
                if need is None:
                    need = need_of[memory] = w.member_mib(memory)
                free = s.free_mib
                if overlay or claim:
                    free -= overlay.get(s.id, 0) + claim.get(s.id, 0)
                if free < need:
                    continue
                # Best fit: a GPU already shared, with the least memory left after us.
                key = (0 if free < memory else 1, free - need)
                if key < best_key:
                    best, best_key = s, key
            if best is None:
                need = w.member_mib(self.reference_mib())
                most = max((self._free(s, overlay) - claim.get(s.id, 0) for s in candidates), default=0)
                return None, f"needs {need} MiB on one GPU; the most free on any GPU is {most} MiB"
            mib = w.member_mib(best.spec.memory_mib)
            claim[best.id] = claim.get(best.id, 0) + mib
            plan.append((best, mib))
        return plan, ""

    def _plan_fraction_scoped(self, w: Workload, overlay: dict[str, int],
                              candidates: list[GpuSlot]) -> tuple[Plan | None, str]:
        scopes: dict[str, list[GpuSlot]] = {}
        for s in candidates:
            key = s.spec.nvlink_group if w.topology is Topology.nvlink else s.spec.node
            scopes.setdefault(key, []).append(s)
        for slots in scopes.values():
            sub = Cluster.__new__(Cluster)  # a view over the same slots, not a copy
            sub.slots, sub.by_id, sub.nodes = slots, {s.id: s for s in slots}, {}
            sub._healthy, sub._reference_mib = slots, None
            free_w = Workload(id=w.id, queue=w.queue, fraction=w.fraction, memory_mib=w.memory_mib,
                              gang_size=w.gang_size, priority_class=w.priority_class)
            plan, _ = sub._plan_fraction(free_w, overlay)
            if plan is not None:
                return plan, ""
        return None, f"no single {w.topology.value} domain has room for all {w.gang_size} members"
