"""SQLite group commit: concurrent puts share a transaction, each returns only once committed,
and a bad write in a group fails alone."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest

from garrison.state import GarrisonSaver
from tests.state.test_saver import Steps, count


def _trace_begins(saver: GarrisonSaver) -> list[str]:
    """Statements the writer connection runs (sqlite3's own trace hook on the real connection)."""
    gc = saver._direct.sqlite_writes
    assert gc._writer is not None
    seen: list[str] = []
    gc._writer[1].set_trace_callback(seen.append)
    return seen


def _queued(saver: GarrisonSaver, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(saver._direct.sqlite_writes._pending) < n:
        assert time.monotonic() < deadline, "writers did not queue"
        time.sleep(0.001)


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_concurrent_puts_commit_as_one_group(tmp_path: Path, synchronous: str) -> None:
    with GarrisonSaver.from_conn_string(str(tmp_path / "g.db"), synchronous=synchronous) as saver:
        Steps(saver, "warm").put({"a": 1})  # opens the writer connection
        statements = _trace_begins(saver)
        gc = saver._direct.sqlite_writes
        threads_ids = [str(uuid.uuid4()) for _ in range(8)]
        returned: list[str] = []
        errors: list[BaseException] = []

        def work(thread_id: str) -> None:
            try:
                steps = Steps(saver, thread_id)
                steps.put({"a": thread_id, "b": 2})
                returned.append(thread_id)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(t,)) for t in threads_ids]
        with gc._lock:  # a commit in progress: the eight puts queue behind it
            for w in workers:
                w.start()
            _queued(saver, 8)
            assert returned == []  # nobody returns before its rows are committed
        for w in workers:
            w.join()
        assert errors == []
        assert sorted(returned) == sorted(threads_ids)
        assert statements.count("BEGIN IMMEDIATE") == 1 and statements.count("COMMIT") == 1
        for t in threads_ids:
            tup = saver.get_tuple({"configurable": {"thread_id": t, "checkpoint_ns": ""}})
            assert tup is not None and tup.checkpoint["channel_values"] == {"a": t, "b": 2}
        # Committed on disk, as another connection sees it.
        con = sqlite3.connect(tmp_path / "g.db")
        try:
            assert con.execute("SELECT count(*) FROM state_checkpoints").fetchone()[0] == 9
        finally:
            con.close()


def test_a_bad_write_in_a_group_fails_alone(tmp_path: Path) -> None:
    with GarrisonSaver.from_conn_string(str(tmp_path / "g.db")) as saver:
        Steps(saver, "warm").put({"a": 1})
        gc = saver._direct.sqlite_writes
        good = [str(uuid.uuid4()) for _ in range(4)]
        outcome: dict[str, BaseException | None] = {}

        def put(thread_id: str) -> None:
            try:
                Steps(saver, thread_id).put({"a": 1})
                outcome[thread_id] = None
            except BaseException as exc:  # surfaced below
                outcome[thread_id] = exc

        def bad() -> None:
            try:  # a statement SQLite refuses (NOT NULL), in the same group as the good puts
                gc.write([("INSERT INTO state_blobs (tenant_id, thread_id, checkpoint_ns, channel, version, type) "
                           "VALUES ('t', 'x', '', 'c', '1', NULL)", (), False)])
                outcome["bad"] = None
            except BaseException as exc:  # surfaced below
                outcome["bad"] = exc

        workers = [threading.Thread(target=put, args=(t,)) for t in good[:2]]
        workers.append(threading.Thread(target=bad))
        workers += [threading.Thread(target=put, args=(t,)) for t in good[2:]]
        with gc._lock:
            for w in workers:
                w.start()
                time.sleep(0.01)  # queue in this order: the bad one in the middle
            _queued(saver, 5)
        for w in workers:
            w.join()
        assert isinstance(outcome["bad"], sqlite3.IntegrityError)
        assert all(outcome[t] is None for t in good)
        for t in good:
            assert count(saver, "state_checkpoints", t) == 1
        # The writer connection works after the failed group.
        Steps(saver, "after").put({"a": 2})
        assert count(saver, "state_checkpoints", "after") == 1


def test_writers_queued_during_a_commit_form_the_next_group(tmp_path: Path) -> None:
    """The leader wakes its whole group when it commits and hands the lead to a writer that
    queued meanwhile, who commits everything queued by then in one transaction."""
    with GarrisonSaver.from_conn_string(str(tmp_path / "g.db"), synchronous="FULL") as saver:
        Steps(saver, "warm").put({"a": 1})
        gc = saver._direct.sqlite_writes
        assert gc._writer is not None
        second_wave_queued = threading.Event()
        statements: list[str] = []

        def trace(sql: str) -> None:
            statements.append(sql)
            if sql == "COMMIT" and statements.count("COMMIT") == 1:
                assert second_wave_queued.wait(10)  # the first group's commit waits for the second wave

        gc._writer[1].set_trace_callback(trace)
        returned: list[str] = []
        errors: list[BaseException] = []

        def work(thread_id: str) -> None:
            try:
                Steps(saver, thread_id).put({"a": thread_id})
                returned.append(thread_id)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        first = [str(uuid.uuid4()) for _ in range(4)]
        second = [str(uuid.uuid4()) for _ in range(4)]
        wave1 = [threading.Thread(target=work, args=(t,)) for t in first]
        with gc._lock:
            for w in wave1:
                w.start()
            _queued(saver, 4)
        wave2 = [threading.Thread(target=work, args=(t,)) for t in second]
        deadline = time.monotonic() + 10
        while statements.count("BEGIN IMMEDIATE") < 1:  # the first group is committing
            assert time.monotonic() < deadline
            time.sleep(0.001)
        for w in wave2:
            w.start()
        _queued(saver, 4)
        assert returned == []
        second_wave_queued.set()
        for w in wave1 + wave2:
            w.join(10)
            assert not w.is_alive(), "a writer was never woken"
        assert errors == []
        assert sorted(returned) == sorted(first + second)
        assert statements.count("BEGIN IMMEDIATE") == 2 and statements.count("COMMIT") == 2
        for t in first + second:
            tup = saver.get_tuple({"configurable": {"thread_id": t, "checkpoint_ns": ""}})
            assert tup is not None and tup.checkpoint["channel_values"] == {"a": t}
