import pytest

from garrison.gpus.model import QueueSpec, State, Topology
from garrison.gpus.scheduler import Scheduler, SchedulerConfig
from garrison.gpus.validation import Refused

from .helpers import MIB, gpus, job, two_teams


def started(result) -> set[str]:  # type: ignore[no-untyped-def]
    return {w.id for w in result.started}


def test_in_quota_work_first_then_spare_capacity_then_pending_with_a_reason() -> None:
    s = Scheduler(gpus(2, 4), two_teams(4, 4))
    for i in range(5):
        s.submit(job(f"a{i}", gpus=2), 0)
    r = s.cycle(0)
    assert len(r.started) == 4  # 8 GPUs: quota 4 for team-a, 4 spare while team-b is idle
    codes = {d.workload_id: d.reason for d in r.decisions if d.action == "start"}
    assert sum("within the quota" in t for t in codes.values()) == 2
    pending = s.explain("a4")
    assert pending["state"] == "pending"
    assert "waiting for GPUs" in pending["reason"]
    assert pending["queue_status"]["fair_share"] == pytest.approx(8)


def test_fractions_are_packed_by_memory_onto_shared_gpus() -> None:
    s = Scheduler(gpus(1, 2), two_teams(1, 1))
    for i in range(4):
        s.submit(job(f"f{i}", cls="interactive", fraction=0.25, queue="team-a" if i < 2 else "team-b"), 0)
    s.submit(job("m", memory_mib=MIB // 2), 0)
    s.cycle(0)
    used = {g for w in s.running.values() for g, _ in w.placement}
    assert len(s.running) == 5
    assert used == {"n0/0", "n0/1"}
    per_gpu = {slot.id: slot.free_mib for slot in s.cluster.slots}
    assert sorted(per_gpu.values()) == [0, MIB // 2]  # four quarters on one GPU, the half on the other


def test_a_gang_is_placed_whole_or_not_at_all() -> None:
    s = Scheduler(gpus(2, 4), two_teams(4, 4))
    s.submit(job("small", queue="team-b", cls="training", gpus=1, preemptible=False), 0)
    s.cycle(0)
    s.submit(job("gang", cls="training", gpus=2, gang_size=4), 1)
    r = s.cycle(1)
    gang = s.get("gang")
    assert gang is not None and gang.state is State.pending and not gang.placement
    assert "gang" not in started(r)
    assert s.cluster.free_whole() == 7  # nothing held while it waits
    s.finish("small", 2)
    r = s.cycle(2)
    assert "gang" in started(r)
    assert len(gang.placement) == 8
    assert {g.split("/")[0] for g, _ in gang.placement} == {"n0", "n1"}


def test_topology_preference_keeps_a_gang_on_one_nvlink_group() -> None:
    inv = gpus(1, 8, nvlink_groups=[[0, 1, 2, 3], [4, 5, 6, 7]])
    s = Scheduler(inv, two_teams(4, 4))
    s.submit(job("one", gpus=1), 0)
    s.cycle(0)
    s.submit(job("pair", gpus=1, gang_size=4, topology=Topology.nvlink), 1)
    s.cycle(1)
    groups = {s.cluster.by_id[g].spec.nvlink_group for g, _ in s.get("pair").placement}  # type: ignore[union-attr]
    assert len(groups) == 1


def test_interactive_reclaims_quota_from_over_quota_batch_after_min_runtime() -> None:
    s = Scheduler(gpus(1, 4), two_teams(2, 2))
    for i in range(4):
        s.submit(job(f"b{i}", cls="training", gpus=1, min_runtime_s=100), 0)
    s.cycle(0)
    assert len(s.running) == 4  # team-b idle: team-a borrows its quota
    s.submit(job("chat", queue="team-b", cls="interactive", fraction=0.5), 10)
    r = s.cycle(10)
    assert not r.preempted  # protected by the minimum runtime
    assert "minimum runtime" in s.get("chat").reason  # type: ignore[union-attr]
    assert r.next_wakeup == pytest.approx(100)
    r = s.cycle(100)
    assert len(r.preempted) == 1 and "chat" in started(r)
    victim = r.preempted[0]
    assert victim.state is State.pending and "preempted by chat" in victim.reason
    assert not victim.placement and victim.preemptions == 1
    assert s.tree.by_name["team-a"].allocated == pytest.approx(3)


def test_higher_class_preempts_lower_class_of_its_own_queue() -> None:
    s = Scheduler(gpus(1, 2), [QueueSpec("solo", quota=2)])
    s.submit(job("train", queue="solo", cls="training", gpus=2), 0)
    s.cycle(0)
    s.submit(job("serve", queue="solo", cls="interactive", gpus=1), 1)
    r = s.cycle(1)
    assert [w.id for w in r.preempted] == ["train"] and started(r) == {"serve"}
    assert "higher-priority work of its queue" in s.get("train").reason  # type: ignore[union-attr]


def test_non_preemptible_work_is_never_preempted_and_stays_within_quota() -> None:
    s = Scheduler(gpus(1, 4), two_teams(2, 2))
    s.submit(job("keep", cls="batch", gpus=2, preemptible=False), 0)
    s.submit(job("more", cls="batch", gpus=1, preemptible=False), 0)
    s.cycle(0)
    assert s.get("keep").state is State.running  # type: ignore[union-attr]
    more = s.get("more")
    assert more.state is State.pending and more.reason_code == "over-quota"  # type: ignore[union-attr]
    s.submit(job("urgent", queue="team-b", cls="interactive", gpus=2), 1)
    r = s.cycle(1)
    assert not r.preempted and started(r) == {"urgent"}


def test_no_ping_pong_between_queues_at_their_fair_share() -> None:
    s = Scheduler(gpus(1, 4), two_teams(2, 2))
    for q in ("team-a", "team-b"):
        for i in range(4):
            s.submit(job(f"{q}-{i}", queue=q, cls="training", gpus=1), 0)
    s.cycle(0)
    preempted = 0
    for t in range(1, 20):
        preempted += len(s.cycle(float(t * 60)).preempted)
    assert preempted == 0
    held = {q: sum(w.allocated for w in s.running.values() if w.queue == q) for q in ("team-a", "team-b")}
    assert held == {"team-a": 2, "team-b": 2}


def test_a_starving_gang_is_not_kept_out_by_a_stream_of_small_jobs() -> None:
    s = Scheduler(gpus(1, 4), [QueueSpec("solo", quota=4)], SchedulerConfig(starvation_s=600))
    s.submit(job("big", queue="solo", cls="batch", gpus=1, gang_size=4), 0)
    n = 0
    started_at = None
    for t in range(0, 6000, 30):
        # Every 30 s a new quarter-GPU job for 120 s: alone they would always hold a GPU.
        s.submit(job(f"s{n}", queue="solo", cls="batch", fraction=0.25), float(t))
        n += 1
        for w in list(s.running.values()):
            if w.id != "big" and t - (w.started_at or 0) >= 120:
                s.finish(w.id, float(t))
        s.cycle(float(t))
        if s.get("big").state is State.running:  # type: ignore[union-attr]
            started_at = t
            break
    assert started_at is not None and started_at <= 600 + 240


def test_cancel_releases_gpus_and_finish_is_recorded() -> None:
    s = Scheduler(gpus(1, 2), two_teams(1, 1))
    s.submit(job("x", gpus=2), 0)
    s.cycle(0)
    assert s.cluster.free_whole() == 0
    d = s.cancel("x", 5)
    assert d.action == "cancel" and s.cluster.free_whole() == 2
    assert s.explain("x")["state"] == "cancelled"


def test_unhealthy_gpu_requeues_its_work() -> None:
    s = Scheduler(gpus(1, 2), two_teams(1, 1))
    s.submit(job("x", gpus=1), 0)
    s.cycle(0)
    gpu = s.get("x").placement[0][0]  # type: ignore[union-attr]
    decisions = s.set_health(gpu, False, 1)
    assert decisions[0].action == "preempt" and "unhealthy" in decisions[0].reason
    s.cycle(2)
    assert s.get("x").placement[0][0] != gpu  # type: ignore[union-attr]


@pytest.mark.parametrize("kw, message", [
    ({"gpus": 9}, "largest node has 4"),
    ({"gpus": 4, "gang_size": 3}, "cluster has 8"),
    ({"fraction": 1.5}, "not below 1"),
    ({"fraction": -0.1}, "greater than 0"),
    ({"memory_mib": MIB * 2}, "largest GPU"),
    ({"gpus": 1, "fraction": 0.5}, "exactly one"),
    ({}, "exactly one"),
    ({"gpus": 1, "gang_size": 0}, "gang_size"),
    ({"gpus": 1, "min_runtime_s": float("inf")}, "min_runtime_s"),
    ({"gpus": 1, "queue": "ghost"}, "does not exist"),
    ({"gpus": 1, "queue": "acme"}, "has child queues"),
    ({"gpus": 3, "preemptible": False}, "within quota"),
    ({"gpus": 4, "gang_size": 2, "topology": Topology.node, "topology_required": True}, "one node domain"),
])
def test_impossible_requests_are_refused_with_the_reason(kw: dict, message: str) -> None:
    s = Scheduler(gpus(2, 4), two_teams(2, 2, limit=6))
    w = job("bad", **kw)
    with pytest.raises(Refused, match=message):
        s.submit(w, 0)
    assert s.get("bad") is None


def test_queue_limit_is_a_hard_cap() -> None:
    s = Scheduler(gpus(1, 4), two_teams(1, 1, limit=2))
    for i in range(3):
        s.submit(job(f"x{i}", gpus=1), 0)
    s.cycle(0)
    assert len(s.running) == 2
    assert s.get("x2").reason_code == "queue-limit"  # type: ignore[union-attr]
    with pytest.raises(Refused, match="limited to 2"):
        s.submit(job("huge", gpus=3), 0)


def test_quotas_over_capacity_are_accepted_with_a_warning() -> None:
    s = Scheduler(gpus(1, 4), two_teams(6, 6))
    assert any("scaled down proportionally" in w for w in s.warnings)
    s.submit(job("a", gpus=2, preemptible=False), 0)
    s.submit(job("b", queue="team-b", gpus=2, preemptible=False), 0)
    s.cycle(0)
    assert len(s.running) == 2


def test_reconfigure_refuses_to_orphan_live_work_and_keeps_usage() -> None:
    s = Scheduler(gpus(1, 2), two_teams(1, 1))
    s.submit(job("x", gpus=1), 0)
    s.cycle(0)
    s.advance(100)
    with pytest.raises(ValueError, match="still has running"):
        s.reconfigure([QueueSpec("team-b", quota=2)])
    s.reconfigure(two_teams(1.5, 0.5))
    assert s.tree.by_name["team-a"].usage > 0
    assert s.tree.by_name["team-a"].allocated == 1


def test_inventory_change_keeps_work_on_surviving_gpus_and_requeues_the_rest() -> None:
    s = Scheduler(gpus(2, 2), two_teams(2, 2))
    s.submit(job("a", gpus=2), 0)
    s.submit(job("b", queue="team-b", gpus=2), 0)
    s.cycle(0)
    on_n1 = next(w for w in s.running.values() if w.placement[0][0].startswith("n1"))
    on_n0 = next(w for w in s.running.values() if w.placement[0][0].startswith("n0"))
    decisions = s.replace_inventory(gpus(1, 2), 10)
    assert [d.workload_id for d in decisions] == [on_n1.id]
    assert on_n0.state is State.running and on_n1.state is State.pending
    assert s.tree.by_name[on_n0.queue].allocated == 2 and s.tree.by_name[on_n1.queue].allocated == 0


def test_usage_history_counts_work_that_finished_between_cycles() -> None:
    s = Scheduler(gpus(1, 2), two_teams(1, 1), SchedulerConfig(usage_half_life_s=3600))
    s.submit(job("x", gpus=2), 0)
    s.cycle(0)
    s.finish("x", 600)  # held 2 GPUs for 10 minutes, then nothing
    s.advance(4200)
    assert s.tree.by_name["team-a"].usage == pytest.approx(2 * 600 * 0.5, rel=1e-6)
    assert s.tree.by_name["team-b"].usage == 0


def test_a_fractional_gang_prefers_one_node_and_may_require_it() -> None:
    s = Scheduler(gpus(2, 2), two_teams(2, 2))
    s.submit(job("filler", gpus=1), 0)  # n0 keeps one free GPU, n1 two
    s.cycle(0)
    s.submit(job("pair", fraction=0.75, gang_size=2, topology=Topology.node), 1)
    s.cycle(1)
    nodes = {g.split("/")[0] for g, _ in s.get("pair").placement}  # type: ignore[union-attr]
    assert len(nodes) == 1
    trio = job("trio", queue="team-b", fraction=0.75, gang_size=3, topology=Topology.node, topology_required=True)
    with pytest.raises(Refused, match="no single node domain"):
        s.submit(trio, 2)
    fresh = Scheduler(gpus(2, 2), two_teams(2, 2))
    spread = job("spread", fraction=0.75, gang_size=3, topology=Topology.node)
    fresh.submit(spread, 0)  # only a preference: no node holds three, so it spreads
    fresh.cycle(0)
    assert spread.state is State.running
    assert {g.split("/")[0] for g, _ in spread.placement} == {"n0", "n1"}
