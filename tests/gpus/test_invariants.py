"""Random workloads, arrivals, completions and health changes: after every cycle the
scheduler's books must balance."""

from __future__ import annotations

import random

import pytest

from garrison.gpus.model import EPS, PriorityClass, QueueSpec, State, Topology, Workload
from garrison.gpus.scheduler import Scheduler, SchedulerConfig
from garrison.gpus.validation import Refused

from .helpers import gpus


def check(s: Scheduler, started: list[Workload]) -> None:
    used: dict[str, int] = {}
    for w in s.running.values():
        assert w.state is State.running
        members = w.gpus * w.gang_size if w.whole else w.gang_size
        assert len(w.placement) == members, f"{w.id} placed {len(w.placement)} of {members}"
        if w.whole:
            assert len({g for g, _ in w.placement}) == members  # whole GPUs are not shared
        for gpu_id, mib in w.placement:
            used[gpu_id] = used.get(gpu_id, 0) + mib
    for slot in s.cluster.slots:
        assert slot.free_mib >= 0
        assert slot.free_mib + used.get(slot.id, 0) == slot.spec.memory_mib
        assert sum(slot.users.values()) == used.get(slot.id, 0)
        if any(s.running[u].whole for u in slot.users):
            assert len(slot.users) == 1
    for w in s.pending.values():
        assert w.state is State.pending and not w.placement
    for leaf in s.tree.leaves:
        held = sum(w.allocated for w in s.running.values() if w.queue == leaf.name)
        assert leaf.allocated == pytest.approx(held, abs=1e-6)
        assert held <= leaf.limit() + EPS
        if any(w.queue == leaf.name and not w.preemptible for w in started):
            # Non-preemptible work is admitted only within quota (a GPU lost later may leave
            # earlier work above a shrunken quota: it is not evicted for that).
            fixed = sum(w.allocated for w in s.running.values() if w.queue == leaf.name and not w.preemptible)
            assert fixed <= s.tree.static_quotas(s.cluster.capacity())[leaf.name] + EPS


@pytest.mark.parametrize("seed", range(6))
def test_books_balance_under_random_load(seed: int) -> None:
    rng = random.Random(seed)
    queues = [QueueSpec("t1", quota=6), QueueSpec("t1-a", parent="t1", quota=4, limit=7),
              QueueSpec("t1-b", parent="t1", quota=2, over_quota_weight=3),
              QueueSpec("t2", quota=4, priority=110), QueueSpec("t2-a", parent="t2", quota=4)]
    s = Scheduler(gpus(3, 4, nvlink_groups=[[0, 1], [2, 3]]), queues, SchedulerConfig(starvation_s=300))
    leaves = ["t1-a", "t1-b", "t2-a"]
    now, n = 0.0, 0
    for _ in range(250):
        now += rng.uniform(1, 60)
        for _ in range(rng.randint(0, 3)):
            kind = rng.random()
            w = Workload(id=f"w{n}", queue=rng.choice(leaves),
                         priority_class=rng.choice(list(PriorityClass)), min_runtime_s=rng.choice([0, 30, 120]),
                         gang_size=rng.choice([1, 1, 2, 3]), topology=rng.choice(list(Topology)),
                         preemptible=rng.choice([None, True, False]))
            if kind < 0.4:
                w.gpus = rng.choice([1, 2, 4])
            elif kind < 0.7:
                w.fraction = rng.choice([0.1, 0.25, 0.5, 0.75])
            else:
                w.memory_mib = rng.choice([4096, 20480, 40960])
            n += 1
            try:
                s.submit(w, now)
            except Refused:
                pass
        for w in list(s.running.values()):
            if rng.random() < 0.15:
                s.finish(w.id, now)
        for w in list(s.pending.values()):
            if rng.random() < 0.02:
                s.cancel(w.id, now)
        if rng.random() < 0.05:
            slot = rng.choice(s.cluster.slots)
            s.set_health(slot.id, not slot.spec.healthy, now)
        started_before = {w.id: w.started_at for w in s.running.values()}
        result = s.cycle(now)
        check(s, result.started)
        for v in result.preempted:  # only preemptible work, and only after its minimum runtime
            assert v.preemptible and now - (started_before[v.id] or 0.0) >= v.min_runtime_s - EPS
