import pytest

from garrison.gpus.model import QueueSpec
from garrison.gpus.queues import QueueConfigError, QueueTree


def tree(*specs: QueueSpec) -> QueueTree:
    return QueueTree(list(specs))


def test_deserved_quota_first_then_spare_by_weight() -> None:
    t = tree(QueueSpec("a", quota=2, over_quota_weight=3), QueueSpec("b", quota=2, over_quota_weight=1))
    t.by_name["a"].pending = 100
    t.by_name["b"].pending = 100
    t.compute(capacity=8)
    assert t.by_name["a"].deserved == 2 and t.by_name["b"].deserved == 2
    # 4 spare GPUs split 3:1.
    assert t.by_name["a"].fair_share == pytest.approx(5)
    assert t.by_name["b"].fair_share == pytest.approx(3)


def test_spare_capacity_never_past_demand_or_limit() -> None:
    t = tree(QueueSpec("a", quota=1, limit=2), QueueSpec("b", quota=1), QueueSpec("c", quota=1))
    t.by_name["a"].pending = 100
    t.by_name["b"].pending = 0.5
    t.by_name["c"].pending = 100
    t.compute(capacity=8)
    assert t.by_name["a"].fair_share == pytest.approx(2)
    assert t.by_name["b"].fair_share == pytest.approx(0.5)
    assert t.by_name["c"].fair_share == pytest.approx(5.5)


def test_higher_priority_queue_takes_spare_capacity_first() -> None:
    t = tree(QueueSpec("hi", quota=1, priority=200), QueueSpec("lo", quota=1, over_quota_weight=10))
    t.by_name["hi"].pending = 5
    t.by_name["lo"].pending = 100
    t.compute(capacity=8)
    assert t.by_name["hi"].fair_share == pytest.approx(5)
    assert t.by_name["lo"].fair_share == pytest.approx(3)


def test_quotas_over_capacity_are_scaled_with_a_warning() -> None:
    t = tree(QueueSpec("a", quota=6), QueueSpec("b", quota=10))
    warnings = t.capacity_warnings(8)
    assert warnings and "scaled down proportionally" in warnings[0]
    t.by_name["a"].pending = t.by_name["b"].pending = 100
    t.compute(capacity=8)
    assert t.by_name["a"].quota_eff == pytest.approx(3)
    assert t.by_name["b"].quota_eff == pytest.approx(5)


def test_children_divide_their_parents_share() -> None:
    t = tree(QueueSpec("tenant", quota=4), QueueSpec("other", quota=4),
             QueueSpec("t1", parent="tenant", quota=1), QueueSpec("t2", parent="tenant", quota=3))
    t.by_name["t1"].pending = t.by_name["t2"].pending = 100
    t.compute(capacity=8)
    assert t.by_name["tenant"].fair_share == pytest.approx(8)  # "other" wants nothing
    assert t.by_name["t1"].fair_share + t.by_name["t2"].fair_share == pytest.approx(8)
    assert t.by_name["t1"].deserved == 1 and t.by_name["t2"].deserved == 3


def test_time_based_fair_share_favours_the_queue_that_got_less() -> None:
    t = tree(QueueSpec("a", quota=0), QueueSpec("b", quota=0))
    t.by_name["a"].pending = t.by_name["b"].pending = 100
    t.compute(capacity=8, fairshare_k=1.0)
    assert t.by_name["a"].fair_share == pytest.approx(4)
    t.by_name["a"].allocated = 8
    t.decay(600, half_life_s=3600)  # a held everything for ten minutes
    t.by_name["a"].allocated = 0
    t.compute(capacity=8, fairshare_k=1.0)
    assert t.by_name["b"].fair_share > t.by_name["a"].fair_share
    # The history fades: after many half-lives with equal use, shares are equal again.
    t.by_name["a"].allocated = t.by_name["b"].allocated = 4
    t.decay(36000, half_life_s=3600)
    t.by_name["a"].allocated = t.by_name["b"].allocated = 0
    t.compute(capacity=8, fairshare_k=1.0)
    assert t.by_name["a"].fair_share == pytest.approx(t.by_name["b"].fair_share, rel=0.01)


@pytest.mark.parametrize("specs, message", [
    ([QueueSpec("Bad_Name")], "lowercase"),
    ([QueueSpec("a"), QueueSpec("a")], "twice"),
    ([QueueSpec("a", parent="ghost")], "does not exist"),
    ([QueueSpec("a", parent="b"), QueueSpec("b", parent="a")], "loops"),
    ([QueueSpec("a", quota=-2)], "quota"),
    ([QueueSpec("a", limit=-5)], "limit"),
    ([QueueSpec("a", over_quota_weight=float("nan"))], "over_quota_weight"),
    ([QueueSpec("a", priority=10**9)], "priority"),
])
def test_unusable_configurations_are_refused_with_a_reason(specs: list[QueueSpec], message: str) -> None:
    with pytest.raises(QueueConfigError, match=message):
        QueueTree(specs)


def test_entitlements_of_backlogged_queues() -> None:
    t = tree(QueueSpec("a", quota=4), QueueSpec("b", quota=2), QueueSpec("c", quota=2))
    assert t.entitlements(8, {"a", "b", "c"}) == pytest.approx({"a": 4, "b": 2, "c": 2})
    # c idle: its quota is spare capacity, split by (equal) weight.
    assert t.entitlements(8, {"a", "b"}) == pytest.approx({"a": 5, "b": 3, "c": 0})
