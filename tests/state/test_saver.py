"""GarrisonSaver behaviour beyond the conformance suite: storage, limits, bad rows, tenants, concurrency."""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import ormsgpack
import pytest
import sqlalchemy as sa
from langgraph.checkpoint.base.id import uuid6

from garrison.state import AsyncGarrisonSaver, CorruptCheckpoint, GarrisonSaver, InvalidConfig, ValueTooLarge
from garrison.state.checkpoint.engine import create_sync_engine, normalize_url

CHANNELS = [f"ch{i}" for i in range(10)]


class Steps:
    """Checkpoints as a LangGraph loop writes them: each step changes some channels."""

    def __init__(self, saver: Any, thread_id: str, ns: str = "") -> None:
        self.saver = saver
        self.config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
        self.values: dict[str, Any] = {}
        self.versions: dict[str, Any] = {}
        self.step = -1

    def build(self, changed: dict[str, Any], **meta: Any) -> tuple[dict, dict, dict, dict]:
        self.step += 1
        new_versions = {}
        for ch, v in changed.items():
            self.values[ch] = v
            self.versions[ch] = self.saver.get_next_version(self.versions.get(ch), None)
            new_versions[ch] = self.versions[ch]
        cp = {"v": 4, "id": str(uuid6(clock_seq=self.step)), "ts": datetime.now(UTC).isoformat(),
              "channel_values": dict(self.values), "channel_versions": dict(self.versions),
              "versions_seen": {"node": dict(self.versions)}, "updated_channels": list(changed)}
        return self.config, cp, {"source": "loop", "step": self.step, "parents": {}, **meta}, new_versions

    def put(self, changed: dict[str, Any], **meta: Any) -> dict:
        self.config = self.saver.put(*self.build(changed, **meta))
        return self.config


@pytest.fixture
def saver(db_url: str) -> Iterator[GarrisonSaver]:
    with GarrisonSaver.from_conn_string(db_url) as s:
        yield s


def count(saver: GarrisonSaver, table: str, thread_id: str) -> int:
    with saver.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE thread_id = :t"), {"t": thread_id}).scalar()


def test_unchanged_channels_are_stored_once(saver: GarrisonSaver) -> None:
    tid = str(uuid.uuid4())
    steps = Steps(saver, tid)
    steps.put({ch: f"{ch}-0" for ch in CHANNELS})
    for i in range(1, 30):
        steps.put({CHANNELS[i % 10]: f"{CHANNELS[i % 10]}-{i}"})
    assert count(saver, "state_checkpoints", tid) == 30
    assert count(saver, "state_blobs", tid) == 10 + 29  # one row per channel version, never rewritten
    latest = saver.get_tuple({"configurable": {"thread_id": tid}})
    assert latest is not None
    assert latest.checkpoint["channel_values"] == steps.values
    # Time travel: an early checkpoint reads the values of its own versions.
    history = list(saver.list({"configurable": {"thread_id": tid}}))
    first = history[-1]
    assert first.checkpoint["channel_values"] == {ch: f"{ch}-0" for ch in CHANNELS}
    assert [h.metadata["step"] for h in history] == list(range(29, -1, -1))


def test_pending_writes_come_back_in_task_path_order(saver: GarrisonSaver) -> None:
    tid = str(uuid.uuid4())
    cfg = Steps(saver, tid).put({"a": 1})
    saver.put_writes(cfg, [("x", "b1"), ("y", "b2")], task_id="task-b", task_path="~__pregel_pull, 2")
    saver.put_writes(cfg, [("x", "a1")], task_id="task-a", task_path="~__pregel_pull, 1")
    saver.put_writes(cfg, [("x", "c1")], task_id="task-0", task_path="")
    # A retried task does not replace what it already saved.
    saver.put_writes(cfg, [("x", "changed")], task_id="task-a", task_path="~__pregel_pull, 1")
    tup = saver.get_tuple(cfg)
    assert tup is not None
    assert tup.pending_writes == [("task-0", "x", "c1"), ("task-a", "x", "a1"), ("task-b", "x", "b1"),
                                  ("task-b", "y", "b2")]
    listed = next(iter(saver.list(cfg)))
    assert listed.pending_writes == tup.pending_writes


def test_unknown_thread_is_none_and_lists_nothing(saver: GarrisonSaver) -> None:
    assert saver.get_tuple({"configurable": {"thread_id": "nobody"}}) is None
    assert saver.get_tuple({"configurable": {"thread_id": "nobody", "checkpoint_id": "x"}}) is None
    assert list(saver.list({"configurable": {"thread_id": "nobody"}})) == []


@pytest.mark.parametrize("config", [
    {"configurable": {}},
    {"configurable": {"thread_id": ""}},
    {"configurable": {"thread_id": "x" * 513}},
    {"configurable": {"thread_id": "a\x00b"}},
])
def test_bad_configs_are_refused_with_a_reason(saver: GarrisonSaver, config: dict) -> None:
    with pytest.raises(InvalidConfig):
        saver.get_tuple(config)


def test_put_writes_without_checkpoint_id_is_refused(saver: GarrisonSaver) -> None:
    with pytest.raises(InvalidConfig, match="checkpoint_id"):
        saver.put_writes({"configurable": {"thread_id": "t"}}, [("a", 1)], "task")


def test_oversized_value_is_refused_whole(db_url: str) -> None:
    with GarrisonSaver.from_conn_string(db_url, max_value_bytes=10_000) as saver:
        tid = str(uuid.uuid4())
        steps = Steps(saver, tid)
        cfg = steps.put({"small": "ok"})
        with pytest.raises(ValueTooLarge, match="channel 'big'.*over the limit of 10000"):
            steps.put({"big": "x" * 20_000})
        with pytest.raises(ValueTooLarge):
            saver.put_writes(cfg, [("big", os.urandom(20_000))], "task")
        # Nothing half-written: the thread still ends at the last good checkpoint.
        assert count(saver, "state_checkpoints", tid) == 1
        latest = saver.get_tuple({"configurable": {"thread_id": tid}})
        assert latest is not None and latest.checkpoint["channel_values"] == {"small": "ok"}
        assert latest.pending_writes == []


def test_corrupt_and_foreign_rows_raise_a_clear_error(saver: GarrisonSaver, db_url: str) -> None:
    tid = str(uuid.uuid4())
    Steps(saver, tid).put({"a": "value"})
    with saver.engine.begin() as conn:
        conn.execute(sa.text("UPDATE state_blobs SET blob = :b WHERE thread_id = :t"),
                     {"b": b"\xc1\xff garbage", "t": tid})
    # A reader in another process (no blob cache shared with the writer) meets the bad row.
    with GarrisonSaver.from_conn_string(db_url) as reader:
        with pytest.raises(CorruptCheckpoint, match="channel 'a'"):
            reader.get_tuple({"configurable": {"thread_id": tid}})
        with pytest.raises(CorruptCheckpoint, match="channel 'a'"):
            list(reader.list({"configurable": {"thread_id": tid}}))
    tid = str(uuid.uuid4())
    Steps(saver, tid).put({"a": "value"})
    with saver.engine.begin() as conn:
        conn.execute(sa.text("UPDATE state_checkpoints SET type = 'pickle', checkpoint = :b WHERE thread_id = :t"),
                     {"b": b"not a checkpoint", "t": tid})
    with pytest.raises(CorruptCheckpoint, match=tid):
        saver.get_tuple({"configurable": {"thread_id": tid}})
    with pytest.raises(CorruptCheckpoint, match=tid):
        list(saver.list({"configurable": {"thread_id": tid}}))


def test_encryption_at_rest_and_wrong_key(db_url: str) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    tid = str(uuid.uuid4())
    with GarrisonSaver.from_conn_string(db_url, encryption_key=key) as saver:
        cfg = Steps(saver, tid).put({"secret": "the launch code is 0000"})
        saver.put_writes(cfg, [("secret", "another secret value")], "task")
        with saver.engine.connect() as conn:
            stored = [bytes(r[0]) for r in conn.execute(sa.text(
                "SELECT blob FROM state_blobs WHERE thread_id = :t UNION ALL "
                "SELECT blob FROM state_writes WHERE thread_id = :t"), {"t": tid})]
        assert stored and all(b"launch code" not in b and b"another secret" not in b for b in stored)
        got = saver.get_tuple(cfg)
        assert got is not None and got.checkpoint["channel_values"]["secret"] == "the launch code is 0000"
    other = base64.b64encode(os.urandom(32)).decode()
    with GarrisonSaver.from_conn_string(db_url, encryption_key=other) as saver:
        with pytest.raises(CorruptCheckpoint, match="wrong key"):
            saver.get_tuple({"configurable": {"thread_id": tid}})


def test_tenants_do_not_see_each_other(saver: GarrisonSaver) -> None:
    acme, umbrella = saver.for_tenant("acme"), saver.for_tenant("umbrella")
    cfg = Steps(acme, "shared-thread-id").put({"a": "acme's"})
    assert umbrella.get_tuple({"configurable": {"thread_id": "shared-thread-id"}}) is None
    assert list(umbrella.list(None)) == []
    umbrella.delete_thread("shared-thread-id")
    umbrella.prune(["shared-thread-id"], strategy="delete")
    got = acme.get_tuple(cfg)
    assert got is not None and got.checkpoint["channel_values"] == {"a": "acme's"}


def test_concurrent_writers_on_one_thread_and_many(saver: GarrisonSaver) -> None:
    errors: list[BaseException] = []
    shared = str(uuid.uuid4())

    def work(n: int) -> None:
        try:
            own = Steps(saver, f"{shared}-{n}")
            same = Steps(saver, shared, ns=f"writer{n}")
            for i in range(15):
                own.put({"v": i})
                cfg = same.put({"v": i})
                saver.put_writes(cfg, [("w", i)], f"task-{n}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert count(saver, "state_checkpoints", shared) == 8 * 15
    for n in range(8):
        latest = saver.get_tuple({"configurable": {"thread_id": shared, "checkpoint_ns": f"writer{n}"}})
        assert latest is not None and latest.checkpoint["channel_values"] == {"v": 14}
        assert latest.pending_writes == [(f"task-{n}", "w", 14)]


def test_prune_keeps_the_newest_and_frees_their_blobs(saver: GarrisonSaver) -> None:
    tid = str(uuid.uuid4())
    steps = Steps(saver, tid)
    steps.put({ch: 0 for ch in CHANNELS[:3]})
    for i in range(1, 10):
        steps.put({CHANNELS[i % 3]: i})
    saver.prune([tid], strategy="keep_latest", keep_last=2)
    kept = list(saver.list({"configurable": {"thread_id": tid}}))
    assert [k.metadata["step"] for k in kept] == [9, 8]
    assert kept[-1].parent_config is None
    assert kept[0].checkpoint["channel_values"] == steps.values
    assert count(saver, "state_blobs", tid) == 4  # 3 current versions + the one step 8 still reads
    with pytest.raises(InvalidConfig, match="strategy"):
        saver.prune([tid], strategy="everything")


def test_copy_thread_refuses_a_target_in_use(saver: GarrisonSaver) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    Steps(saver, a).put({"x": 1})
    Steps(saver, b).put({"x": 2})
    with pytest.raises(InvalidConfig, match="already has checkpoints"):
        saver.copy_thread(a, b)


def test_connection_strings() -> None:
    assert normalize_url("postgresql://u@h/db", use_async=True) == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db", use_async=True) == "sqlite+aiosqlite:///x.db"
    assert normalize_url(":memory:", use_async=False) == "sqlite://"
    with pytest.raises(ValueError, match="unsupported"):
        normalize_url("mysql://h/db", use_async=False)
    with GarrisonSaver.from_conn_string(":memory:") as saver:
        cfg = Steps(saver, "t").put({"a": 1})
        assert saver.get_tuple(cfg) is not None


async def test_async_saver_blocking_methods_from_a_worker_thread(db_url: str) -> None:
    async with AsyncGarrisonSaver.from_conn_string(db_url) as saver:
        steps = Steps(saver, str(uuid.uuid4()))
        cfg = await saver.aput(*steps.build({"a": "x"}))
        got = await asyncio.to_thread(saver.get_tuple, cfg)
        assert got is not None and got.checkpoint["channel_values"] == {"a": "x"}
        with pytest.raises(asyncio.InvalidStateError, match="a\\* methods"):
            saver.get_tuple(cfg)


def test_sqlite_writers_in_two_engines_do_not_lock(tmp_path: Any) -> None:
    url = normalize_url(str(tmp_path / "two.db"), use_async=False)
    one, two = create_sync_engine(url), create_sync_engine(url)
    try:
        s1, s2 = GarrisonSaver(one), GarrisonSaver(two)
        s1.setup()
        errors: list[BaseException] = []

        def work(s: GarrisonSaver, name: str) -> None:
            try:
                steps = Steps(s, name)
                for i in range(40):
                    steps.put({"v": i})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(s, f"t{i}")) for i, s in enumerate([s1, s2] * 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(list(s1.list(None))) == 240
        s1.close()
        s2.close()
    finally:
        one.dispose()
        two.dispose()


@pytest.mark.parametrize("stored_type,stored", [
    ("zstd:msgpack", b"\x28\xb5\x2f\xfd garbage, not a zstd frame"),
    ("msgpack", ormsgpack.packb({"not": "a checkpoint"})),
    ("msgpack", b"\xdc\x00\x09"),  # an array header that swallows the channel values after it
])
def test_corrupt_checkpoint_row_read_by_its_writer(saver: GarrisonSaver, stored_type: str, stored: bytes) -> None:
    # The writer holds the channel values in memory and decodes checkpoint and values in one
    # call: a bad checkpoint row must still fail loudly, naming the checkpoint, never be misread.
    tid = str(uuid.uuid4())
    steps = Steps(saver, tid)
    steps.put({"a": "x" * 300, "b": "value"})
    cfg = steps.put({"a": "y" * 300})
    assert saver.get_tuple(cfg) is not None  # warm: the values now come from memory
    with saver.engine.begin() as conn:
        conn.execute(sa.text("UPDATE state_checkpoints SET type = :ty, checkpoint = :b "
                             "WHERE thread_id = :t AND checkpoint_id = :c"),
                     {"ty": stored_type, "b": stored, "t": tid, "c": cfg["configurable"]["checkpoint_id"]})
    with pytest.raises(CorruptCheckpoint, match=cfg["configurable"]["checkpoint_id"]):
        saver.get_tuple({"configurable": {"thread_id": tid}})


@pytest.mark.parametrize("synchronous,expected", [("NORMAL", "off"), ("FULL", "on"), (None, "on")])
def test_postgres_commit_durability_follows_synchronous(pg_url: str, synchronous: str | None, expected: str) -> None:
    # NORMAL: a commit survives the agent process dying, not the database host losing power
    # (as SQLite's NORMAL); FULL waits for the WAL flush on every put; unset keeps the
    # server's setting (on here), so synchronous standbys are not skipped.
    with GarrisonSaver.from_conn_string(pg_url, synchronous=synchronous) as saver:
        cfg = Steps(saver, str(uuid.uuid4())).put({"a": 1})
        assert saver.get_tuple(cfg) is not None
        with saver._direct.connection() as con:  # the connection the hot path writes on
            assert con.execute("SHOW synchronous_commit").fetchone()[0] == expected
    with pytest.raises(ValueError, match="synchronous must be one of"):
        with GarrisonSaver.from_conn_string(pg_url, synchronous="SOMETIMES"):
            pass


async def test_async_saver_concurrent_writers_and_readers(db_url: str) -> None:
    # The asyncio saver on a SQLite file writes in worker threads and reads on the loop:
    # many tasks at once must neither fail ("database is locked") nor read a half-written step.
    shared = str(uuid.uuid4())
    async with AsyncGarrisonSaver.from_conn_string(db_url) as saver:
        async def work(n: int) -> None:
            steps = Steps(saver, shared, ns=f"writer{n}")
            for i in range(10):
                cfg, cp, md, nv = steps.build({"v": i, "big": "x" * 500 if i % 3 == 0 else i})
                steps.config = await saver.aput(cfg, cp, md, nv)
                await saver.aput_writes(steps.config, [("w", i)], f"task-{n}")
                got = await saver.aget_tuple({"configurable": {"thread_id": shared, "checkpoint_ns": f"writer{n}"}})
                assert got is not None and got.checkpoint["channel_values"]["v"] == i
                assert got.pending_writes == [(f"task-{n}", "w", i)]

        await asyncio.gather(*(work(n) for n in range(12)))
        listed = [t async for t in saver.alist({"configurable": {"thread_id": shared}})]
        assert len(listed) == 12 * 10


async def test_async_postgres_call_cancelled_mid_statement_leaves_the_saver_usable(pg_url: str) -> None:
    import psycopg

    tid = str(uuid.uuid4())
    async with AsyncGarrisonSaver.from_conn_string(pg_url) as saver:
        steps = Steps(saver, tid)
        first = steps.build({"a": 1})
        steps.config = await saver.aput(*first)
        # Another session holds the table: the next put waits inside its statement, then is cancelled.
        with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as blocker:
            blocker.execute("LOCK TABLE state_checkpoints IN ACCESS EXCLUSIVE MODE")
            task = asyncio.ensure_future(saver.aput(*steps.build({"a": 2})))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            blocker.rollback()
        later = await saver.aput(*steps.build({"a": 3}))  # a fresh connection, not the cancelled one
        got = await saver.aget_tuple({"configurable": {"thread_id": tid}})
        assert got is not None and got.config == later and got.checkpoint["channel_values"] == {"a": 3}
