"""Sandboxed LangGraph graphs: what ``isolation = "sandbox"`` costs a durable run over ``"process"``.

Same run, same machine, per sandbox backend (gVisor, bubblewrap): the test agent
``tests/runtime/agents/isolated`` (2 steps, ``look`` then ``slow``; asked with ``no_model`` and
``sleep_s`` 0, so no model call and no sleep) deployed twice, once as ``isolation = "sandbox"``
(graph ``isolated``) and once as ``isolation = "process"`` (graph ``inproc``), on one platform
(SQLite, embedded Temporal dev server, ASGI app in process):

- warm: durable ``POST /threads/{t}/runs/wait`` on one thread per graph, the two graphs
  alternating call by call (each sees the same load); the sandboxed thread's session sandbox
  is already running after the warm-up calls;
- cold: a new thread per call (for the sandboxed graph: a new session sandbox, started and
  importing LangGraph inside the call), again alternating with the in-process graph on a new
  thread.

Ratios are sandbox / in-process p50. The load average is printed before and after each backend:
the machine is shared, so read the ratios, not the absolute milliseconds.

Usage: python benchmarks/runtime_isolation.py [--n 30] [--cold 3] [--backend gvisor,bubblewrap]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from garrison.config import Settings  # noqa: E402
from garrison.platform import Platform  # noqa: E402
from garrison.runtime.bundles import pack  # noqa: E402
from garrison.sandbox.backends.bubblewrap import BubblewrapBackend  # noqa: E402
from garrison.sandbox.backends.gvisor import GVisorBackend  # noqa: E402
from garrison.server import create_app  # noqa: E402

AGENT = ROOT / "tests" / "runtime" / "agents" / "isolated"
GRAPHS = {"isolated": "sandbox", "inproc": "process"}  # graph id -> isolation
BODY = {"input": {"probe": "/nonexistent", "no_model": True, "sleep_s": 0}}
WARMUP = 2


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] * 1e3


def bundle(work: Path, graph: str, isolation: str) -> bytes:
    """The test agent as agent ``graph`` whose one graph is ``graph``, with the given isolation."""
    target = work / f"agent-{graph}"
    shutil.copytree(AGENT, target, dirs_exist_ok=True)
    toml = target / "agent.toml"
    text = toml.read_text().replace('isolation = "sandbox"', f'isolation = "{isolation}"')
    text = text.replace('name = "isolated"', f'name = "{graph}"')
    toml.write_text(text.replace('isolated = "graph.py:graph"', f'{graph} = "graph.py:graph"'))
    return pack(target)


def available(backend: str, work: Path) -> str | None:
    """None when ``backend`` can run here, else why not."""
    impl = GVisorBackend(work / "gvisor-check") if backend == "gvisor" else BubblewrapBackend(work / "bwrap-check")
    ok, why = impl.check()
    return None if ok else str(why)


async def bench_backend(backend: str, args: argparse.Namespace, work: Path) -> dict[str, list[float]]:
    os.environ["GARRISON_RUNTIME_SESSION_BACKEND"] = backend
    data = work / backend
    data.mkdir()
    platform = Platform(Settings(data_dir=data, database_url=f"sqlite+aiosqlite:///{data / 'g.db'}",
                                 temporal_address=None, audit_flush_ms=50, log_level="WARNING"))
    await platform.start()
    times: dict[str, list[float]] = {f"{g}-{kind}": [] for kind in ("warm", "cold") for g in GRAPHS}
    try:
        key = platform.settings.admin_key_path.read_text().strip()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(platform=platform)),
                                     base_url="http://bench", headers={"authorization": f"Bearer {key}"},
                                     timeout=300) as client:
            for graph, isolation in GRAPHS.items():
                r = await client.post(f"/api/runtime/agents/{graph}/versions", content=bundle(work, graph, isolation),
                                      headers={"content-type": "application/gzip"})
                assert r.status_code == 201, r.text

            async def new_thread() -> str:
                r = await client.post("/threads", json={})
                r.raise_for_status()
                return str(r.json()["thread_id"])

            async def run(graph: str, thread: str) -> float:
                t0 = time.perf_counter()
                r = await client.post(f"/threads/{thread}/runs/wait", json={"assistant_id": graph, **BODY})
                elapsed = time.perf_counter() - t0
                assert r.status_code == 200 and "seen" in r.json(), r.text
                return elapsed

            # Warm: one thread per graph, alternating; the first calls start the session sandbox.
            threads = {g: await new_thread() for g in GRAPHS}
            for i in range(args.n + WARMUP):
                for graph in GRAPHS:
                    elapsed = await run(graph, threads[graph])
                    if i >= WARMUP:
                        times[f"{graph}-warm"].append(elapsed)
            # Cold: a new thread per call (sandboxed: a new session sandbox), alternating.
            for _ in range(args.cold):
                for graph in GRAPHS:
                    times[f"{graph}-cold"].append(await run(graph, await new_thread()))
    finally:
        await platform.stop()
    return times


def report(backend: str, times: dict[str, list[float]], before: tuple[float, float, float]) -> None:
    after = os.getloadavg()
    print(f"\n{backend}: warm n={len(times['isolated-warm'])}, cold n={len(times['isolated-cold'])}; "
          f"{os.cpu_count()} cores; load average before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}, "
          f"after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    print("| 2-step durable runs/wait | sandbox p50 (ms) | sandbox p95 (ms) | in-process p50 (ms) "
          "| in-process p95 (ms) | ratio p50 | ratio p95 |")
    print("|---|---|---|---|---|---|---|")
    for kind, label in (("warm", "warm thread (session sandbox running)"), ("cold", "new thread (new sandbox)")):
        sb, ip = times[f"isolated-{kind}"], times[f"inproc-{kind}"]
        print(f"| {backend}, {label} | {pct(sb, .5):.1f} | {pct(sb, .95):.1f} | {pct(ip, .5):.1f} | "
              f"{pct(ip, .95):.1f} | {pct(sb, .5) / pct(ip, .5):.2f} | {pct(sb, .95) / pct(ip, .95):.2f} |")
    added = pct(times["isolated-warm"], .5) - pct(times["inproc-warm"], .5)
    print(f"warm sandbox adds {added:.1f} ms p50 per 2-step run over in-process", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=30, help=f"warm runs per graph (after {WARMUP} warm-up)")
    parser.add_argument("--cold", type=int, default=3, help="new-thread runs per graph")
    parser.add_argument("--backend", default="gvisor,bubblewrap", help="comma-separated: gvisor, bubblewrap")
    args = parser.parse_args()
    os.environ.pop("GARRISON_TEMPORAL_ADDRESS", None)
    os.environ.pop("GARRISON_RUNTIME_GRAPH_ISOLATION", None)
    with tempfile.TemporaryDirectory(prefix="bench-isolation-") as tmp:
        work = Path(tmp)
        # One install of the graph template's dependencies, hard-linked into each version.
        os.environ.setdefault("GARRISON_RUNTIME_DEPS_CACHE", str(work / "deps"))
        for backend in args.backend.split(","):
            why = available(backend, work)
            if why is not None:
                print(f"\n{backend}: skipped, backend unavailable: {why}", flush=True)
                continue
            before = os.getloadavg()
            report(backend, await bench_backend(backend, args, work), before)


if __name__ == "__main__":
    asyncio.run(main())
