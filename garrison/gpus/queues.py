"""Hierarchical queues (tenant, then team) and their fair shares, KAI's model.

Each level divides its capacity among its children: first the deserved quota (capped by
demand), then what is left, highest queue priority first, in proportion to the over-quota
weight, never past a queue's limit or demand. The weight is corrected by time-based fair
share, ``max(0, w + k (w - usage))`` on sibling-normalised values, with a usage history
that decays with a half-life, so a queue that got less than its weight lately gets more.
Quotas that add up past the capacity above them are accepted with a warning and scaled
down proportionally.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from garrison.gpus.model import EPS, UNLIMITED, QueueSpec

FIXED = 1 << 30  # by_priority key of non-preemptible work
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MAX_QUEUES = 2000
MAX_DEPTH = 4


class QueueConfigError(ValueError):
    """A queue configuration that cannot be used; the message says what to fix."""


@dataclass(slots=True, eq=False)
class QueueNode:
    spec: QueueSpec
    parent: QueueNode | None = None
    children: list[QueueNode] = field(default_factory=list)
    chain: list[QueueNode] = field(default_factory=list)  # self, parent, ..., root
    # Recomputed every cycle.
    allocated: float = 0.0
    pending: float = 0.0
    demand: float = 0.0
    quota_eff: float = 0.0
    deserved: float = 0.0
    fair_share: float = 0.0
    # Leaf: GPUs held per class value; non-preemptible work under FIXED, since no class displaces it.
    by_priority: dict[int, float] = field(default_factory=dict)
    # Decayed GPU-seconds: the history time-based fair share looks at.
    usage: float = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def held_at_or_above(self, priority: int) -> float:
        """What this queue holds for work that a job of ``priority`` cannot displace."""
        return sum(v for p, v in self.by_priority.items() if p >= priority)

    def limit(self) -> float:
        return math.inf if self.spec.limit < 0 else self.spec.limit


def validate_specs(specs: list[QueueSpec]) -> list[str]:
    """Raise QueueConfigError on an unusable configuration; return warnings otherwise."""
    if len(specs) > MAX_QUEUES:
        raise QueueConfigError(f"{len(specs)} queues configured; at most {MAX_QUEUES}")
    names: dict[str, QueueSpec] = {}
    warnings: list[str] = []
    for spec in specs:
        if not NAME_RE.match(spec.name or ""):
            raise QueueConfigError(
                f"queue name {spec.name!r} must be lowercase letters, digits and '-', 1 to 63 characters")
        if spec.name in names:
            raise QueueConfigError(f"queue {spec.name!r} is configured twice")
        for what, value in (("quota", spec.quota), ("over_quota_weight", spec.over_quota_weight)):
            if not math.isfinite(value) or value < 0:
                raise QueueConfigError(f"queue {spec.name!r}: {what} must be a number >= 0")
        if not math.isfinite(spec.limit) or (spec.limit < 0 and spec.limit != UNLIMITED):
            raise QueueConfigError(f"queue {spec.name!r}: limit must be >= 0, or -1 for no limit")
        if not -1000 <= spec.priority <= 1000:
            raise QueueConfigError(f"queue {spec.name!r}: priority must be between -1000 and 1000")
        if spec.limit != UNLIMITED and spec.limit < spec.quota:
            warnings.append(f"queue {spec.name!r}: limit {spec.limit:g} is below quota {spec.quota:g}; "
                            f"the quota is capped at the limit")
        names[spec.name] = spec
    for spec in specs:
        seen = {spec.name}
        parent, depth = spec.parent, 1
        while parent is not None:
            if parent not in names:
                raise QueueConfigError(f"queue {spec.name!r}: parent queue {parent!r} does not exist")
            if parent in seen:
                raise QueueConfigError(f"queue {spec.name!r}: parent chain loops through {parent!r}")
            seen.add(parent)
            depth += 1
            parent = names[parent].parent
        if depth > MAX_DEPTH:
            raise QueueConfigError(f"queue {spec.name!r} is nested {depth} deep; at most {MAX_DEPTH}")
    return warnings


class QueueTree:
    def __init__(self, specs: list[QueueSpec]) -> None:
        self.warnings = validate_specs(specs)
        self.by_name: dict[str, QueueNode] = {s.name: QueueNode(spec=s) for s in specs}
        self.roots: list[QueueNode] = []
        for node in self.by_name.values():
            if node.spec.parent is None:
                self.roots.append(node)
            else:
                node.parent = self.by_name[node.spec.parent]
                node.parent.children.append(node)
        for node in self.by_name.values():
            chain: list[QueueNode] = []
            cur: QueueNode | None = node
            while cur is not None:
                chain.append(cur)
                cur = cur.parent
            node.chain = chain
        self.leaves = [n for n in self.by_name.values() if n.is_leaf]
        self._static: dict[float, dict[str, float]] = {}
        # Post-order: children before parents, for bottom-up sums.
        self.bottom_up = sorted(self.by_name.values(), key=lambda n: -len(n.chain))

    def static_quotas(self, capacity: float) -> dict[str, float]:
        """Each queue's quota after proportional scaling; depends on configuration only."""
        cached = self._static.get(capacity)
        if cached is None:
            cached = {}
            levels: list[tuple[float, list[QueueNode]]] = [(capacity, self.roots)]
            while levels:
                cap, children = levels.pop()
                total = sum(min(c.spec.quota, c.limit()) for c in children)
                scale = min(1.0, cap / total) if total > EPS else 1.0
                for c in children:
                    cached[c.name] = min(c.spec.quota, c.limit()) * scale
                    levels.append((cached[c.name], c.children))
            self._static = {capacity: cached}
        return cached

    def capacity_warnings(self, capacity: float) -> list[str]:
        """Quotas over the capacity above them: accepted, handled proportionally."""
        out = []
        levels: list[tuple[str, float, list[QueueNode]]] = [("the cluster", capacity, self.roots)]
        levels += [(f"queue {n.name!r}", n.spec.quota, n.children) for n in self.by_name.values() if n.children]
        for what, cap, children in levels:
            total = sum(c.spec.quota for c in children)
            if total > cap + EPS:
                out.append(f"quotas under {what} add up to {total:g} GPUs, over its {cap:g}; "
                           f"each is scaled down proportionally")
        return out

    def decay(self, dt: float, half_life_s: float) -> None:
        """Age the usage history by dt seconds, adding what each queue held meanwhile."""
        if dt <= 0:
            return
        factor = 0.5 ** (dt / half_life_s) if half_life_s > 0 else 0.0
        for node in self.by_name.values():
            node.usage = node.usage * factor + node.allocated * dt

    def compute(self, capacity: float, fairshare_k: float = 1.0) -> None:
        """Demand bottom-up, then deserved quota and fair share top-down."""
        for node in self.bottom_up:
            if node.children:
                node.allocated = sum(c.allocated for c in node.children)
                want = sum(c.demand for c in node.children)
            else:
                want = node.allocated + node.pending
            node.demand = min(want, node.limit())
        self._divide(self.roots, capacity, capacity, fairshare_k)

    def _divide(self, children: list[QueueNode], quota_cap: float, share_cap: float, k: float) -> None:
        if not children:
            return
        total_quota = sum(min(c.spec.quota, c.limit()) for c in children)
        scale = min(1.0, quota_cap / total_quota) if total_quota > EPS else 1.0
        given: dict[int, float] = {}
        for c in children:
            c.quota_eff = min(c.spec.quota, c.limit()) * scale
            c.deserved = min(c.quota_eff, c.demand)
            given[id(c)] = c.deserved
        remaining = share_cap - sum(given.values())
        adjusted = self._weights(children, k)
        base = self._weights(children, 0.0)
        for prio in sorted({c.spec.priority for c in children}, reverse=True):
            if remaining <= EPS:
                break
            group = [c for c in children if c.spec.priority == prio]
            remaining = _water_fill(group, given, adjusted, remaining)
            # A queue whose history zeroed its weight still gets what nobody else wants.
            remaining = _water_fill(group, given, base, remaining)
        for c in children:
            c.fair_share = given[id(c)]
            self._divide(c.children, c.quota_eff, c.fair_share, k)

    @staticmethod
    def _weights(children: list[QueueNode], k: float) -> dict[int, float]:
        total_w = sum(c.spec.over_quota_weight for c in children)
        total_u = sum(c.usage for c in children)
        out = {}
        for c in children:
            w = c.spec.over_quota_weight / total_w if total_w > EPS else 0.0
            if total_u > EPS and w > 0:
                w = max(0.0, w + k * (w - c.usage / total_u))
            out[id(c)] = w
        return out

    def entitlements(self, capacity: float, backlogged: set[str]) -> dict[str, float]:
        """Each leaf's share of capacity when the given leaves want everything (no history)."""
        saved = {n.name: (n.allocated, n.pending, n.usage) for n in self.by_name.values()}
        try:
            for n in self.by_name.values():
                n.allocated, n.usage = 0.0, 0.0
                n.pending = capacity * 10 if n.name in backlogged else 0.0
            self.compute(capacity, 0.0)
            return {n.name: n.fair_share for n in self.leaves}
        finally:
            for n in self.by_name.values():
                n.allocated, n.pending, n.usage = saved[n.name]


def _water_fill(group: list[QueueNode], given: dict[int, float], weights: dict[int, float],
                remaining: float) -> float:
    """Split ``remaining`` by weight among the group, capping each at its demand."""
    active = [c for c in group if weights[id(c)] > 0 and c.demand - given[id(c)] > EPS]
    while remaining > EPS and active:
        total_w = sum(weights[id(c)] for c in active)
        capped = [c for c in active if c.demand - given[id(c)] <= remaining * weights[id(c)] / total_w + EPS]
        if not capped:
            for c in active:
                given[id(c)] += remaining * weights[id(c)] / total_w
            return 0.0
        for c in capped:
            remaining -= c.demand - given[id(c)]
            given[id(c)] = c.demand
        active = [c for c in active if c not in capped]
    return max(0.0, remaining)
