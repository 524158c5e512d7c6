"""Checkpointer benchmark: GarrisonSaver beside langgraph's SqliteSaver and PostgresSaver.

Same workload, same run, each saver on a fresh database:

- put / get_tuple p50 and p95: a thread of 10 channels (~400 B each, ~4 KB of state)
  where one channel changes per step, as a LangGraph loop writes it;
- 16 threads writing concurrently (one LangGraph thread each): puts per second and
  how many calls failed (e.g. "database is locked");
- bytes on disk for a 100-step thread where one channel of ten changes per step.

Durability is part of every put figure, so put latency is measured four ways in the
same interleaved rounds: garrison and the upstream saver each at its own default
("as shipped": on SQLite garrison NORMAL against SqliteSaver's FULL; on PostgreSQL both
keep the server's synchronous_commit, on here), and both at equal
durability, FULL (a commit waits for the flush to disk: SQLite synchronous=FULL,
PostgreSQL synchronous_commit=on) and NORMAL (a commit survives the process being
killed, not the host losing power: SQLite synchronous=NORMAL, PostgreSQL
synchronous_commit=off). The disk's own flush latency (write 4 KB + fdatasync) is
measured in the same run: at FULL no put can be faster than one flush.
``--count-syncs`` also counts fsync/fdatasync calls per put on SQLite (under strace)
and commits per put on PostgreSQL (each one waits for a WAL flush at FULL).

Usage: python benchmarks/state.py [--pg postgresql://postgres@127.0.0.1:5432/test] [--puts 400]
       [--count-syncs] [--memory-records 0]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import psycopg
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.base.id import uuid6

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from garrison.state import GarrisonSaver  # noqa: E402

CHANNELS = [f"channel_{i}" for i in range(10)]
NODES = ["agent", "tools", "router"]


def value(step: int, channel: str) -> dict[str, Any]:
    # ~400 bytes: a small message-like structure, different per step.
    return {"role": "assistant", "step": step, "channel": channel,
            "content": (f"step {step} of {channel}: " + "lorem ipsum dolor sit amet " * 14)[:360]}


class Thread:
    """Builds the checkpoints a LangGraph loop would write for one thread."""

    def __init__(self, saver: BaseCheckpointSaver, thread_id: str) -> None:
        self.saver = saver
        self.config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        self.values: dict[str, Any] = {}
        self.versions: dict[str, Any] = {}
        self.step = -1

    def next(self, changed: list[str]) -> tuple[Any, Any, Any, Any]:
        self.step += 1
        new_versions = {}
        for ch in changed:
            self.values[ch] = value(self.step, ch)
            self.versions[ch] = self.saver.get_next_version(self.versions.get(ch), None)
            new_versions[ch] = self.versions[ch]
        checkpoint = {
            "v": 4, "id": str(uuid6(clock_seq=self.step)), "ts": datetime.now(UTC).isoformat(),
            "channel_values": dict(self.values), "channel_versions": dict(self.versions),
            "versions_seen": {n: dict(self.versions) for n in NODES}, "updated_channels": changed,
        }
        metadata = {"source": "loop", "step": self.step, "parents": {}, "run_id": "run-1"}
        return self.config, checkpoint, metadata, new_versions

    def put(self, changed: list[str]) -> float:
        config, cp, md, nv = self.next(changed)
        t0 = time.perf_counter()
        self.config = self.saver.put(config, cp, md, nv)
        return time.perf_counter() - t0


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def measure_latency(savers: dict[str, BaseCheckpointSaver], puts: int,
                    floor: Callable[[], None] | None = None) -> dict[str, dict[str, Any]]:
    """Interleaved: each round does one call per saver, so machine noise hits all alike.

    ``floor``: the cheapest durable commit, timed once per round too ("_floor")."""
    threads = {name: Thread(saver, str(uuid.uuid4())) for name, saver in savers.items()}
    for t in threads.values():
        t.put(CHANNELS)
        for i in range(20):  # warm up
            t.put([CHANNELS[i % 10]])
    put_s: dict[str, list[float]] = {n: [] for n in savers}
    get_s: dict[str, list[float]] = {n: [] for n in savers}
    floor_s: list[float] = []
    for i in range(puts):
        for name, t in threads.items():
            put_s[name].append(t.put([CHANNELS[i % 10]]))
        if floor is not None:
            t0 = time.perf_counter()
            floor()
            floor_s.append(time.perf_counter() - t0)
    for _ in range(puts):
        for name, t in threads.items():
            cfg: Any = {"configurable": {"thread_id": t.config["configurable"]["thread_id"], "checkpoint_ns": ""}}
            t0 = time.perf_counter()
            tup = savers[name].get_tuple(cfg)
            get_s[name].append(time.perf_counter() - t0)
            assert tup is not None and len(tup.checkpoint["channel_values"]) == 10
    out = {n: {"put_p50": pct(put_s[n], 0.5), "put_p95": pct(put_s[n], 0.95),
               "get_p50": pct(get_s[n], 0.5), "get_p95": pct(get_s[n], 0.95)} for n in savers}
    if floor_s:
        out["_floor"] = {"put_p50": pct(floor_s, 0.5)}
    return out


async def measure_async_latency(savers: dict[str, Any], puts: int) -> dict[str, dict[str, float]]:
    """measure_latency for asyncio savers (aput / aget_tuple), interleaved the same way."""
    threads = {name: Thread(saver, str(uuid.uuid4())) for name, saver in savers.items()}

    async def aput(t: Thread, changed: list[str]) -> float:
        config, cp, md, nv = t.next(changed)
        t0 = time.perf_counter()
        t.config = await t.saver.aput(config, cp, md, nv)
        return time.perf_counter() - t0

    for t in threads.values():
        await aput(t, CHANNELS)
        for i in range(20):
            await aput(t, [CHANNELS[i % 10]])
    put_s: dict[str, list[float]] = {n: [] for n in savers}
    get_s: dict[str, list[float]] = {n: [] for n in savers}
    for i in range(puts):
        for name, t in threads.items():
            put_s[name].append(await aput(t, [CHANNELS[i % 10]]))
    for _ in range(puts):
        for name, t in threads.items():
            cfg = {"configurable": {"thread_id": t.config["configurable"]["thread_id"], "checkpoint_ns": ""}}
            t0 = time.perf_counter()
            tup = await savers[name].aget_tuple(cfg)
            get_s[name].append(time.perf_counter() - t0)
            assert tup is not None and len(tup.checkpoint["channel_values"]) == 10
    return {n: {"put_p50": pct(put_s[n], 0.5), "put_p95": pct(put_s[n], 0.95),
                "get_p50": pct(get_s[n], 0.5), "get_p95": pct(get_s[n], 0.95)} for n in savers}


def run_async(args: argparse.Namespace, tmp: Path, backend: str) -> None:
    """AsyncGarrisonSaver beside AsyncSqliteSaver (aiosqlite) or AsyncPostgresSaver, same rounds."""
    import asyncio

    from garrison.state import AsyncGarrisonSaver

    async def main(stack: contextlib.AsyncExitStack, url: str) -> dict[str, dict[str, float]]:
        if backend == "sqlite":
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            g = await stack.enter_async_context(AsyncGarrisonSaver.from_conn_string(str(tmp / "g-async.db")))
            u: Any = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(tmp / "u-async.db")))
        else:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool

            g = await stack.enter_async_context(AsyncGarrisonSaver.from_conn_string(url))
            pool: Any = await stack.enter_async_context(AsyncConnectionPool(
                upstream_url, max_size=16, open=False,
                kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}))
            u = AsyncPostgresSaver(pool)
        await u.setup()
        return await measure_async_latency({"garrison": g, peer: u}, args.puts)

    async def run() -> dict[str, dict[str, float]]:
        async with contextlib.AsyncExitStack() as stack:
            return await main(stack, garrison_url)

    peer = "AsyncSqliteSaver" if backend == "sqlite" else "AsyncPostgresSaver"
    with contextlib.ExitStack() as dbs:
        garrison_url = dbs.enter_context(fresh_pg(args.pg)) if backend == "postgresql" else ""
        upstream_url = dbs.enter_context(fresh_pg(args.pg)) if backend == "postgresql" else ""
        res = asyncio.run(run())
    g, p = res["garrison"], res[peer]
    durability = ("UNEQUAL durability: garrison NORMAL, AsyncSqliteSaver FULL" if backend == "sqlite"
                  else "both keep the server's synchronous_commit")
    print(f"\n## {'SQLite' if backend == 'sqlite' else 'PostgreSQL'}, asyncio savers: AsyncGarrisonSaver vs {peer} "
          f"(as shipped, {durability}; load {load()})\n")
    print(f"| metric | garrison | {peer} | ratio |")
    print("|---|---|---|---|")
    for key, label in [("put_p50", "aput p50"), ("get_p50", "aget_tuple p50"), ("get_p95", "aget_tuple p95")]:
        print(f"| {label} | {g[key]:.3f} ms | {p[key]:.3f} ms | {g[key] / p[key]:.2f}x |")


def measure_concurrency(saver: BaseCheckpointSaver, threads: int, per_thread: int) -> dict[str, Any]:
    errors: list[str] = []
    done = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def work() -> None:
        t = Thread(saver, str(uuid.uuid4()))
        barrier.wait()
        for i in range(per_thread):
            try:
                t.put(CHANNELS if i == 0 else [CHANNELS[i % 10]])
                with lock:
                    done[0] += 1
            except Exception as exc:  # counted and reported, not hidden
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:120])

    workers = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    locked = sum("locked" in e for e in errors)
    return {"puts_per_s": done[0] / elapsed, "errors": len(errors), "locked": locked,
            "first_error": errors[0] if errors else ""}


def hundred_steps(saver: BaseCheckpointSaver) -> None:
    t = Thread(saver, str(uuid.uuid4()))
    t.put(CHANNELS)
    for i in range(99):
        t.put([CHANNELS[i % 10]])


def sqlite_bytes(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("VACUUM")
        page = con.execute("PRAGMA page_size").fetchone()[0]
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        free = con.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * page
    finally:
        con.close()


def one(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...]) -> Any:
    row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def pg_bytes(url: str, tables: list[str]) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        for t in tables:
            conn.execute(f"VACUUM FULL {t}")
        return sum(int(one(conn, "SELECT pg_total_relation_size(%s)", (t,))) for t in tables)


# -- saver factories ---------------------------------------------------------------


@contextlib.contextmanager
def sqlite_upstream(path: Path, synchronous: str | None = None) -> Iterator[BaseCheckpointSaver]:
    """SqliteSaver as shipped (this SQLite's default synchronous, FULL), or set to ``synchronous``."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    with SqliteSaver.from_conn_string(str(path)) as saver:
        saver.setup()
        if synchronous:
            saver.conn.execute(f"PRAGMA synchronous={synchronous}")
        yield saver


def sqlite_synchronous(saver: Any) -> str:
    """The synchronous level a saver's SQLite connection actually runs with."""
    if hasattr(saver, "conn"):
        level = saver.conn.execute("PRAGMA synchronous").fetchone()[0]
    else:
        with saver._direct.connection() as con:
            level = con.execute("PRAGMA synchronous").fetchone()[0]
    return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[level]


@contextlib.contextmanager
def pg_upstream(url: str, synchronous: str | None = None) -> Iterator[BaseCheckpointSaver]:
    """PostgresSaver as shipped (the server's synchronous_commit), or NORMAL: synchronous_commit=off."""
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    if synchronous == "NORMAL":
        kwargs["options"] = "-c synchronous_commit=off"
    with ConnectionPool(url, max_size=16, kwargs=kwargs) as pool:
        saver = PostgresSaver(cast(Any, pool))
        saver.setup()
        yield saver


@contextlib.contextmanager
def fresh_pg(admin_url: str) -> Iterator[str]:
    name = f"bench_state_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The put grid: {garrison, upstream} x {default, FULL, NORMAL}, measured in the same rounds.
# Keys: (saver, durability); "default" is each saver as shipped.


PASSES = {  # pass -> (garrison's saver, the peer's saver): each pass has rounds of its own
    "shipped": ("garrison", "{peer}"),
    "full": ("garrison FULL", "{peer}"),
    "normal": ("garrison NORMAL", "{peer} NORMAL"),
}


def latency_passes(puts: int, peer: str, make: Callable[[str], Any], level: Callable[[Any], str],
                   floor: Callable[[], Any]) -> dict[str, dict[str, Any]]:
    """put / get_tuple latency in three passes, each on fresh databases with its own rounds.

    FULL and NORMAL savers never share rounds in the equal-durability passes: a flush
    (fdatasync on SQLite, the WAL flush on PostgreSQL) also writes out what the other
    savers left unflushed, which would bill one saver for another's writes. The
    floor (the cheapest durable commit) runs in the FULL pass's rounds."""
    out: dict[str, dict[str, Any]] = {}
    for pass_name, pair in PASSES.items():
        names = [n.format(peer=peer) for n in pair]
        with contextlib.ExitStack() as stack:
            savers = {n: stack.enter_context(make(n)) for n in names}
            probe = stack.enter_context(floor()) if pass_name == "full" else None
            res = measure_latency(savers, puts, probe)
            for n, sv in savers.items():
                res[n]["synchronous"] = level(sv)
        out[pass_name] = res
        if "_floor" in res:
            out["_floor"] = res.pop("_floor")
    # The saver-level rows (concurrency, bytes) hang off these keys.
    out["garrison"] = dict(out["shipped"]["garrison"])
    out[peer] = dict(out["shipped"][peer])
    out["garrison FULL"] = dict(out["full"]["garrison FULL"])
    out["garrison NORMAL"] = dict(out["normal"]["garrison NORMAL"])
    out[f"{peer} NORMAL"] = dict(out["normal"][f"{peer} NORMAL"])
    return out


def run_sqlite(args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, Any]]:
    grid: dict[str, Callable[[Path], Any]] = {
        "garrison": lambda p: GarrisonSaver.from_conn_string(str(p)),
        "SqliteSaver": sqlite_upstream,
        "garrison FULL": lambda p: GarrisonSaver.from_conn_string(str(p), synchronous="FULL"),
        "SqliteSaver NORMAL": lambda p: sqlite_upstream(p, "NORMAL"),
        "garrison NORMAL": lambda p: GarrisonSaver.from_conn_string(str(p), synchronous="NORMAL"),
    }
    out = latency_passes(args.puts, "SqliteSaver", lambda n: grid[n](tmp / f"{n.replace(' ', '-')}-lat.db"),
                         sqlite_synchronous, lambda: FsyncFloor(tmp / "floor-probe"))
    out["_floor"]["text"] = (f"write 4 KB + fdatasync in this directory, p50 {out['_floor']['put_p50']:.3f} ms "
                             "(same rounds as the FULL pass)")
    for name in ("garrison", "SqliteSaver", "garrison FULL"):
        with grid[name](tmp / f"{name.replace(' ', '-')}-conc.db") as saver:
            out[name].update(measure_concurrency(saver, 16, args.per_thread))
    for name in ("garrison", "SqliteSaver"):
        p = tmp / f"{name}-bytes.db"
        with grid[name](p) as saver:
            hundred_steps(saver)
        out[name]["bytes_100"] = sqlite_bytes(p)
    if args.count_syncs:
        for name in grid:
            out[name]["syncs_per_put"] = count_sqlite_syncs(name, tmp)
    return out


def run_pg(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    tables = {"garrison": ["state_checkpoints", "state_blobs", "state_writes"],
              "PostgresSaver": ["checkpoints", "checkpoint_blobs", "checkpoint_writes"]}
    # As shipped both keep the server's synchronous_commit (on here): each commit waits for the
    # WAL flush. NORMAL sets synchronous_commit=off on the saver's own sessions.
    grid: dict[str, Callable[[str], Any]] = {
        "garrison": GarrisonSaver.from_conn_string,
        "PostgresSaver": pg_upstream,
        "garrison FULL": lambda u: GarrisonSaver.from_conn_string(u, synchronous="FULL"),
        "PostgresSaver NORMAL": lambda u: pg_upstream(u, "NORMAL"),
        "garrison NORMAL": lambda u: GarrisonSaver.from_conn_string(u, synchronous="NORMAL"),
    }
    @contextlib.contextmanager
    def make(name: str) -> Iterator[Any]:
        with fresh_pg(args.pg) as url, grid[name](url) as saver:
            yield saver

    @contextlib.contextmanager
    def floor() -> Iterator[Callable[[], None]]:
        with fresh_pg(args.pg) as url, pg_commit_floor(url) as commit:
            yield commit

    out = latency_passes(args.puts, "PostgresSaver", make,
                         lambda sv: f"synchronous_commit={pg_synchronous_commit(sv)}", floor)
    out["_floor"]["text"] = (f"a one-row INSERT in autocommit at synchronous_commit=on on this server, "
                             f"p50 {out['_floor']['put_p50']:.3f} ms (same rounds as the FULL pass)")
    for name in ("garrison", "PostgresSaver", "garrison FULL"):
        with fresh_pg(args.pg) as url, grid[name](url) as saver:
            out[name].update(measure_concurrency(saver, 16, args.per_thread))
    for name in ("garrison", "PostgresSaver"):
        with fresh_pg(args.pg) as url:
            with grid[name](url) as saver:
                hundred_steps(saver)
            out[name]["bytes_100"] = pg_bytes(url, tables[name])
    if args.count_syncs:
        for name, factory in grid.items():
            out[name]["syncs_per_put"] = count_pg_commits(args.pg, factory)
    return out


def pg_synchronous_commit(saver: Any) -> str:
    """synchronous_commit as the saver's own sessions see it."""
    if isinstance(saver, GarrisonSaver):
        with saver._direct.connection() as con:
            return str(con.execute("SHOW synchronous_commit").fetchone()[0])
    with saver.conn.connection() as con:
        return str(con.execute("SHOW synchronous_commit").fetchone()["synchronous_commit"])


@contextlib.contextmanager
def pg_commit_floor(url: str) -> Iterator[Callable[[], None]]:
    """The cheapest durable commit: one small row, one round trip, waiting for the WAL flush."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE floor_probe (id bigint PRIMARY KEY, v text)")
        conn.execute("SET synchronous_commit = on")
        n = iter(range(1 << 62))

        def commit() -> None:
            conn.execute("INSERT INTO floor_probe VALUES (%s, %s)", (next(n), "x" * 64))

        yield commit


class FsyncFloor:
    """The cheapest durable commit on a disk: write 4 KB into a preallocated file, fdatasync."""

    def __init__(self, path: Path) -> None:
        self.path, self.i = path, 0

    def __enter__(self) -> FsyncFloor:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.pwrite(self.fd, bytes(64 * 4096), 0)
        os.fsync(self.fd)
        return self

    def __call__(self) -> None:
        self.i += 1
        os.pwrite(self.fd, os.urandom(4096), (self.i % 64) * 4096)
        os.fdatasync(self.fd)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


SYNC_PROBE_PUTS = 300


def sync_probe(name: str, path: str) -> None:
    """Child of --count-syncs (runs under strace): warm up, then SYNC_PROBE_PUTS puts between markers."""
    factory = {
        "garrison": lambda: GarrisonSaver.from_conn_string(path),
        "garrison FULL": lambda: GarrisonSaver.from_conn_string(path, synchronous="FULL"),
        "SqliteSaver": lambda: sqlite_upstream(Path(path)),
        "SqliteSaver NORMAL": lambda: sqlite_upstream(Path(path), "NORMAL"),
        "garrison NORMAL": lambda: GarrisonSaver.from_conn_string(path, synchronous="NORMAL"),
    }[name]
    with factory() as saver:
        t = Thread(saver, str(uuid.uuid4()))
        t.put(CHANNELS)
        for i in range(20):
            t.put([CHANNELS[i % 10]])
        os.write(2, b"SYNC-PROBE-START\n")
        for i in range(SYNC_PROBE_PUTS):
            t.put([CHANNELS[i % 10]])
        os.write(2, b"SYNC-PROBE-END\n")


def count_sqlite_syncs(name: str, tmp: Path) -> float | None:
    """fsync + fdatasync calls per put, counted by strace between the probe's markers."""
    import re
    import shutil
    import subprocess

    if not shutil.which("strace"):
        return None
    db = tmp / f"sync-{name.replace(' ', '-')}.db"
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,write", "-e", "signal=none",
         sys.executable, __file__, "--sync-probe", name, str(db)],
        capture_output=True, text=True)
    lines = proc.stderr.splitlines()
    marks = [i for i, line in enumerate(lines) if "SYNC-PROBE-" in line]
    if proc.returncode or len(marks) != 2:  # e.g. ptrace not permitted here: say n/a, not a crash
        print(f"(--count-syncs: strace gave no count for {name}: {(proc.stderr or '')[-200:]!r})")
        return None
    start, end = marks
    syncs = sum(1 for line in lines[start:end] if re.search(r"\bf(data)?sync\(", line))
    return syncs / SYNC_PROBE_PUTS


def count_pg_commits(admin_url: str, factory: Callable[[str], Any]) -> float:
    """Transactions committed per put, from the database's own counter (only the saver uses it).

    Two fresh databases, the same set-up and warm-up, one with SYNC_PROBE_PUTS more puts;
    the counters are read after the saver's sessions have closed (a backend flushes its
    statistics when it exits)."""
    def commits(puts: int) -> int:
        with fresh_pg(admin_url) as url:
            with factory(url) as saver:
                t = Thread(saver, str(uuid.uuid4()))
                t.put(CHANNELS)
                for i in range(20 + puts):
                    t.put([CHANNELS[i % 10]])
            db = url.rsplit("/", 1)[1]
            with psycopg.connect(admin_url, autocommit=True) as conn:
                last = -1
                for _ in range(50):  # until the exited backends' counts have landed
                    time.sleep(0.1)
                    conn.execute("SELECT pg_stat_clear_snapshot()")
                    n = one(conn, "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (db,))
                    busy = one(conn, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db,))
                    if n == last and not busy:
                        return int(n)
                    last = n
                return int(last)

    return (commits(SYNC_PROBE_PUTS) - commits(0)) / SYNC_PROBE_PUTS


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


def report(title: str, peer: str, res: dict[str, dict[str, Any]], load_before: str) -> None:
    g, p = res["garrison"], res[peer]
    gf, pn = res["garrison FULL"], res[f"{peer} NORMAL"]
    print(f"\n## {title}: garrison vs {peer} (load before / after: {load_before} / {load()})\n")
    print("### put p50 by durability (each row: the two savers in the same interleaved rounds)\n")
    counted = "syncs_per_put" in g
    what = "fsync calls per put" if title == "SQLite" else "commits per put (each waits for a WAL flush at FULL)"
    print(f"| durability | garrison | {peer} | ratio |" + (f" {what}: garrison / {peer} |" if counted else ""))
    print("|---|---|---|---|" + ("---|" if counted else ""))

    def syncs(a: str, b: str) -> str:
        if not counted:
            return ""
        va, vb = (("n/a (no strace)" if v is None else f"{v:.2f}") for v in (res[a]["syncs_per_put"], res[b]["syncs_per_put"]))
        return f" {va} / {vb} |"

    sh, fu, no = res["shipped"], res["full"], res["normal"]
    same = "equal" if g["synchronous"] == p["synchronous"] else "UNEQUAL"
    rows = [(f"as shipped, {same}: garrison {g['synchronous']} vs {peer} {p['synchronous']}",
             sh["garrison"], sh[peer], "garrison", peer),
            (f"equal, FULL: commit waits for the disk flush ({gf['synchronous']} / {fu[peer]['synchronous']})",
             fu["garrison FULL"], fu[peer], "garrison FULL", peer),
            (f"equal, NORMAL: survives a killed process, not power loss ({no['garrison NORMAL']['synchronous']} / "
             f"{pn['synchronous']})", no["garrison NORMAL"], no[f"{peer} NORMAL"], "garrison NORMAL", f"{peer} NORMAL")]
    for label, a, b, name_a, name_b in rows:
        print(f"| {label} | {a['put_p50']:.3f} ms | {b['put_p50']:.3f} ms | {a['put_p50'] / b['put_p50']:.2f}x |"
              + syncs(name_a, name_b))
    print(f"\nFloor of one durable commit: {res['_floor']['text']}. Each saver commits once per put, so "
          "no put at FULL can be faster than this.")
    print(f"\n### garrison (default durability) vs {peer} (as shipped)\n")
    print(f"| metric | garrison | {peer} | ratio |")
    print("|---|---|---|---|")
    for key, label, unit in [("put_p50", f"put p50 ({same.lower()} durability: see above)", "ms"),
                             ("put_p95", "put p95", "ms"),
                             ("get_p50", "get_tuple p50", "ms"), ("get_p95", "get_tuple p95", "ms"),
                             ("puts_per_s", "16 threads writing", "puts/s"),
                             ("errors", "16 threads: failed calls", ""),
                             ("bytes_100", "bytes, 100-step thread (1 of 10 channels changes)", "B")]:
        gv, pv = g[key], p[key]
        ratio = f"{gv / pv:.2f}x" if pv else "-"
        fmt = (lambda v: f"{v:.3f}") if unit == "ms" else (lambda v: f"{v:,.0f}")
        print(f"| {label} | {fmt(gv)} {unit} | {fmt(pv)} {unit} | {ratio} |")
    print(f"\nEqual durability FULL: 16 threads writing, garrison {gf['puts_per_s']:,.0f} puts/s vs "
          f"{peer} {p['puts_per_s']:,.0f} ({gf['puts_per_s'] / p['puts_per_s']:.2f}x), "
          f"failed calls {gf['errors']} / {p['errors']}; get_tuple p50 {gf['get_p50']:.3f} ms.")
    for name in (peer, "garrison", "garrison FULL"):
        if res[name].get("first_error"):
            print(f"\n{name} first concurrent error: {res[name]['first_error']}")


def run_memory(args: argparse.Namespace, tmp: Path) -> None:
    """Semantic search over N records in the embedded store (SQLite + sqlite-vec, MiniLM queries)."""
    import numpy as np
    from langchain_core.embeddings import Embeddings
    from langgraph.store.base import PutOp

    from garrison.state.memory.embedder import MiniLMEmbedder
    from garrison.state.memory.store import GarrisonStore

    minilm = MiniLMEmbedder()
    topics = ["hiking", "sushi", "budget review", "flight seats", "python code", "jazz", "tax forms",
              "gardening", "chess openings", "marathon training"]
    base_texts = [f"user note {i}: something about {topics[i % 10]} and detail {i}" for i in range(500)]
    base = minilm.embed(base_texts)
    rng = np.random.default_rng(7)

    class Ingest(Embeddings):
        """Ingestion embedder: real MiniLM vectors of 500 notes plus noise (embedding 100k texts
        with the model would take minutes); queries go through the real model."""

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            idx = [int(t.split(":", 1)[0].split()[-1]) % 500 for t in texts]
            v = base[idx] + rng.normal(0, 0.05, (len(texts), 384)).astype(np.float32)
            return (v / np.linalg.norm(v, axis=1, keepdims=True)).tolist()

        def embed_query(self, text: str) -> list[float]:
            return minilm.embed_query(text)

    n = args.memory_records
    with GarrisonStore.from_conn_string(str(tmp / "memory.db"),
                                        index={"dims": 384, "embed": Ingest(), "fields": ["text"]}) as store:
        t0 = time.perf_counter()
        for start in range(0, n, 2000):
            store.batch([PutOp(("users", f"u{i % 50}", "notes"), f"n{i}",
                               {"text": f"note {i}: about {topics[i % 10]}"}) for i in range(start, min(n, start + 2000))])
        ingest_s = time.perf_counter() - t0
        queries = [f"what does the user say about {t}?" for t in topics] * 10
        lat = []
        for q in queries:
            t0 = time.perf_counter()
            hits = store.search(("users",), query=q, limit=10)
            lat.append(time.perf_counter() - t0)
            assert len(hits) == 10
    print(f"\n## Memory search: {n:,} records, embedded (SQLite + sqlite-vec), query embedded by MiniLM\n")
    print("| metric | garrison |")
    print("|---|---|")
    print(f"| search p50 (top 10, includes embedding the query) | {pct(lat, 0.5):.1f} ms |")
    print(f"| search p95 | {pct(lat, 0.95):.1f} ms |")
    print(f"| ingest | {n / ingest_s:,.0f} records/s |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg", default=os.environ.get("GARRISON_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--puts", type=int, default=400)
    ap.add_argument("--per-thread", type=int, default=400,
                    help="puts per thread in the 16-thread run (short runs are mostly thread start-up)")
    ap.add_argument("--memory-records", type=int, default=100_000, help="0 skips the memory search part")
    ap.add_argument("--count-syncs", action="store_true",
                    help="also count fsyncs per put on SQLite (needs strace) and commits per put on PostgreSQL")
    ap.add_argument("--sync-probe", nargs=2, metavar=("SAVER", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sync_probe:
        sync_probe(*args.sync_probe)
        return
    print(f"state benchmark: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load {load()}, {os.cpu_count()} CPUs, "
          f"--puts {args.puts}")
    with tempfile.TemporaryDirectory() as d:
        before = load()
        report("SQLite", "SqliteSaver", run_sqlite(args, Path(d)), before)
        run_async(args, Path(d), "sqlite")
        if args.memory_records:
            run_memory(args, Path(d))
    if not args.no_pg:
        before = load()
        report("PostgreSQL", "PostgresSaver", run_pg(args), before)
        run_async(args, Path("."), "postgresql")


if __name__ == "__main__":
    main()
