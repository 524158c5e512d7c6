"""Retention policies and storage stats."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from garrison.state import GarrisonSaver
from garrison.state.retention import Policy, apply, stats
from tests.state.test_saver import Steps


@pytest.fixture
def saver(db_url: str) -> Iterator[GarrisonSaver]:
    with GarrisonSaver.from_conn_string(db_url) as s:
        yield s


def _age(saver: GarrisonSaver, thread_id: str, seconds: float) -> None:
    with saver.engine.begin() as conn:
        conn.execute(sa.text("UPDATE state_checkpoints SET created_at = created_at - :s WHERE thread_id = :t"),
                     {"s": seconds, "t": thread_id})


def test_stats_count_and_measure(saver: GarrisonSaver) -> None:
    empty = stats(saver)
    assert empty["checkpoints"] == 0 and empty["bytes"] == 0
    steps = Steps(saver, "a")
    for i in range(5):
        cfg = steps.put({"v": "x" * 1000, "i": i})
    saver.put_writes(cfg, [("v", "y" * 500)], "task")
    s = stats(saver)
    assert (s["threads"], s["checkpoints"], s["blobs"], s["writes"]) == (1, 5, 10, 1)
    assert s["blob_bytes"] >= 1000 and s["write_bytes"] >= 500
    assert stats(saver.for_tenant("other"))["checkpoints"] == 0


def test_policy_rules(saver: GarrisonSaver) -> None:
    for name in ("idle", "old", "busy"):
        steps = Steps(saver, name)
        for i in range(6):
            steps.put({"v": f"{name}-{i}"})
    _age(saver, "idle", 10 * 86400)  # every checkpoint of "idle" is 10 days old
    with saver.engine.begin() as conn:  # the 3 oldest of "old" are 2 days old
        ids = [r[0] for r in conn.execute(sa.text(
            "SELECT checkpoint_id FROM state_checkpoints WHERE thread_id = 'old' ORDER BY checkpoint_id LIMIT 3"))]
        for cid in ids:
            conn.execute(sa.text("UPDATE state_checkpoints SET created_at = :t WHERE checkpoint_id = :c"),
                         {"t": time.time() - 2 * 86400, "c": cid})
    seen: list[tuple[str, int, int]] = []
    report = apply(saver, Policy(idle_thread_s=7 * 86400, max_age_s=86400, keep_last=4),
                   progress=lambda phase, done, total: seen.append((phase, done, total)))
    assert report["threads_dropped"] == 1
    assert report["checkpoints_dropped"] == 3 + 2  # 3 too old in "old"; "busy" keeps 4 of 6
    assert report["bytes_after"] < report["bytes_before"]
    assert saver.get_tuple({"configurable": {"thread_id": "idle"}}) is None
    assert len(list(saver.list({"configurable": {"thread_id": "old"}}))) == 3
    busy = list(saver.list({"configurable": {"thread_id": "busy"}}))
    assert len(busy) == 4 and busy[0].checkpoint["channel_values"] == {"v": "busy-5"}
    assert {p for p, _d, _t in seen} >= {"idle threads", "keep last"}


def test_max_age_never_drops_a_threads_current_state(saver: GarrisonSaver) -> None:
    steps = Steps(saver, "quiet")
    for i in range(3):
        steps.put({"v": i})
    _age(saver, "quiet", 30 * 86400)
    apply(saver, Policy(max_age_s=60))
    left = list(saver.list({"configurable": {"thread_id": "quiet"}}))
    assert len(left) == 1 and left[0].checkpoint["channel_values"] == {"v": 2}


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        Policy(keep_last=0)
    with pytest.raises(ValueError):
        Policy(max_age_s=-1)
    assert Policy().is_empty()
