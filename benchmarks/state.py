"""Checkpointer benchmark: GarrisonSaver beside langgraph's SqliteSaver and PostgresSaver.

Same workload, same run, each saver on a fresh database:

- put / get_tuple p50 and p95: a thread of 10 channels (~400 B each, ~4 KB of state)
  where one channel changes per step, as a LangGraph loop writes it;
- 16 threads writing concurrently (one LangGraph thread each): puts per second and
  how many calls failed (e.g. "database is locked");
- bytes on disk for a 100-step thread where one channel of ten changes per step.

Usage: python benchmarks/state.py [--pg postgresql://postgres@127.0.0.1:5432/test] [--puts 400]
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
from typing import Any

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
        self.config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        self.values: dict[str, Any] = {}
        self.versions: dict[str, Any] = {}
        self.step = -1

    def next(self, changed: list[str]) -> tuple[dict, dict, dict, dict]:
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


def measure_latency(savers: dict[str, BaseCheckpointSaver], puts: int) -> dict[str, dict[str, float]]:
    """Interleaved: each round does one call per saver, so machine noise hits all alike."""
    threads = {name: Thread(saver, str(uuid.uuid4())) for name, saver in savers.items()}
    for t in threads.values():
        t.put(CHANNELS)
        for i in range(20):  # warm up
            t.put([CHANNELS[i % 10]])
    put_s: dict[str, list[float]] = {n: [] for n in savers}
    get_s: dict[str, list[float]] = {n: [] for n in savers}
    for i in range(puts):
        for name, t in threads.items():
            put_s[name].append(t.put([CHANNELS[i % 10]]))
    for _ in range(puts):
        for name, t in threads.items():
            cfg = {"configurable": {"thread_id": t.config["configurable"]["thread_id"], "checkpoint_ns": ""}}
            t0 = time.perf_counter()
            tup = savers[name].get_tuple(cfg)
            get_s[name].append(time.perf_counter() - t0)
            assert tup is not None and len(tup.checkpoint["channel_values"]) == 10
    return {n: {"put_p50": pct(put_s[n], 0.5), "put_p95": pct(put_s[n], 0.95),
                "get_p50": pct(get_s[n], 0.5), "get_p95": pct(get_s[n], 0.95)} for n in savers}


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
            pool = await stack.enter_async_context(AsyncConnectionPool(
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
    print(f"\n## {'SQLite' if backend == 'sqlite' else 'PostgreSQL'}, asyncio savers: AsyncGarrisonSaver vs {peer}\n")
    print(f"| metric | garrison | {peer} | ratio |")
    print("|---|---|---|---|")
    for key, label in [("put_p50", "aput p50"), ("get_p50", "aget_tuple p50"), ("get_p95", "aget_tuple p95")]:
        print(f"| {label} | {g[key]:.3f} ms | {p[key]:.3f} ms | {g[key] / p[key]:.2f}x |")


def measure_concurrency(saver: BaseCheckpointSaver, threads: int, per_thread: int) -> dict[str, float]:
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


def pg_bytes(url: str, tables: list[str]) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        for t in tables:
            conn.execute(f"VACUUM FULL {t}")
        return sum(conn.execute("SELECT pg_total_relation_size(%s)", (t,)).fetchone()[0] for t in tables)


# -- saver factories ---------------------------------------------------------------


@contextlib.contextmanager
def sqlite_upstream(path: Path) -> Iterator[BaseCheckpointSaver]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    with SqliteSaver.from_conn_string(str(path)) as saver:
        saver.setup()
        yield saver


@contextlib.contextmanager
def pg_upstream(url: str) -> Iterator[BaseCheckpointSaver]:
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    with ConnectionPool(url, max_size=16, kwargs={"autocommit": True, "prepare_threshold": 0,
                                                   "row_factory": dict_row}) as pool:
        saver = PostgresSaver(pool)
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


def run_sqlite(args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, Any]]:
    factories: dict[str, Callable[[Path], Any]] = {
        "garrison": lambda p: GarrisonSaver.from_conn_string(str(p)),
        "SqliteSaver": sqlite_upstream,
    }
    full = {"garrison synchronous=FULL": lambda p: GarrisonSaver.from_conn_string(str(p), synchronous="FULL")}
    with contextlib.ExitStack() as stack:
        savers = {n: stack.enter_context(f(tmp / f"{n}-lat.db")) for n, f in {**factories, **full}.items()}
        out: dict[str, dict[str, Any]] = measure_latency(savers, args.puts)
    for name, factory in factories.items():
        with factory(tmp / f"{name}-conc.db") as saver:
            out[name].update(measure_concurrency(saver, 16, args.per_thread))
        p = tmp / f"{name}-bytes.db"
        with factory(p) as saver:
            hundred_steps(saver)
        out[name]["bytes_100"] = sqlite_bytes(p)
    return out


def run_pg(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    factories = {
        "garrison": (GarrisonSaver.from_conn_string, ["state_checkpoints", "state_blobs", "state_writes"]),
        "PostgresSaver": (pg_upstream, ["checkpoints", "checkpoint_blobs", "checkpoint_writes"]),
    }
    # Default garrison: synchronous_commit=off on its sessions (a commit survives the agent
    # process, like SQLite NORMAL); the FULL row waits for the WAL flush like PostgresSaver.
    full = {"garrison synchronous=FULL": lambda u: GarrisonSaver.from_conn_string(u, synchronous="FULL")}
    with contextlib.ExitStack() as stack:
        savers = {n: stack.enter_context(f(stack.enter_context(fresh_pg(args.pg))))
                  for n, f in {**{n: f for n, (f, _t) in factories.items()}, **full}.items()}
        out: dict[str, dict[str, Any]] = measure_latency(savers, args.puts)
    for name, (factory, tables) in factories.items():
        with fresh_pg(args.pg) as url, factory(url) as saver:
            out[name].update(measure_concurrency(saver, 16, args.per_thread))
        with fresh_pg(args.pg) as url:
            with factory(url) as saver:
                hundred_steps(saver)
            out[name]["bytes_100"] = pg_bytes(url, tables)
    return out


def report(title: str, peer: str, res: dict[str, dict[str, Any]]) -> None:
    g, p = res["garrison"], res[peer]
    print(f"\n## {title}: garrison vs {peer}\n")
    print(f"| metric | garrison | {peer} | ratio |")
    print("|---|---|---|---|")
    for key, label, unit in [("put_p50", "put p50", "ms"), ("put_p95", "put p95", "ms"),
                             ("get_p50", "get_tuple p50", "ms"), ("get_p95", "get_tuple p95", "ms"),
                             ("puts_per_s", "16 threads writing", "puts/s"),
                             ("errors", "16 threads: failed calls", ""),
                             ("bytes_100", "bytes, 100-step thread (1 of 10 channels changes)", "B")]:
        gv, pv = g[key], p[key]
        ratio = f"{gv / pv:.2f}x" if pv else "-"
        fmt = (lambda v: f"{v:.3f}") if unit == "ms" else (lambda v: f"{v:,.0f}")
        print(f"| {label} | {fmt(gv)} {unit} | {fmt(pv)} {unit} | {ratio} |")
    for name in [n for n in res if n not in (peer, "garrison")]:
        r = res[name]
        print(f"\n{name} (same rounds): put p50 {r['put_p50']:.3f} ms ({r['put_p50'] / p['put_p50']:.2f}x), "
              f"get_tuple p50 {r['get_p50']:.3f} ms")
    for name in (peer, "garrison"):
        if res[name]["first_error"]:
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
    ap.add_argument("--per-thread", type=int, default=40)
    ap.add_argument("--memory-records", type=int, default=100_000, help="0 skips the memory search part")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        report("SQLite", "SqliteSaver", run_sqlite(args, Path(d)))
        run_async(args, Path(d), "sqlite")
        if args.memory_records:
            run_memory(args, Path(d))
    if not args.no_pg:
        report("PostgreSQL", "PostgresSaver", run_pg(args))
        run_async(args, Path("."), "postgresql")


if __name__ == "__main__":
    main()
