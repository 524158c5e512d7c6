"""LLM gateway benchmark: garrison side by side with LiteLLM proxy, same fake upstream, same run.

Starts the deterministic fake upstream (garrison.llm.fake_upstream) in its own process,
garrison (`garrison up`, every layer present: auth, policy, audit, limits, budget,
metering, tracing) and LiteLLM proxy (installed by this script in ~/.cache/garrison-bench-litellm,
or $GARRISON_BENCH_LITELLM_VENV),
then measures for each gateway:

- CPU per request in the gateway's process tree (non-streaming and streaming),
- added latency at one concurrent request (gateway p50/p99 minus direct p50/p99),
- resident memory growth over many requests (garrison: --rss-requests, default 100,000), with
  RSS after each quarter of that run, so a leak (still climbing) tells itself from a warm-up (flat),
- fairness: two tenants in one band with 10:1 demand on a saturated model; the share of
  served requests the light tenant gets.

    .venv/bin/python benchmarks/llm_gateway.py [--requests 2000] [--rss-requests 100000]
        [--skip-litellm] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
# Outside the repository, so the shared working tree stays clean.
LITELLM_VENV = Path(os.environ.get("GARRISON_BENCH_LITELLM_VENV",
                                   Path.home() / ".cache" / "garrison-bench-litellm"))
BODY = {"model": "bench", "messages": [{"role": "user", "content": "say something short please"}],
        "max_tokens": 8}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def wait_http(url: str, timeout: float = 120.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


def cpu_seconds(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def rss_mb(proc: psutil.Process) -> float:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


# ---- processes -------------------------------------------------------------------------


def start_fake(port: int, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([PY, "-m", "garrison.llm.fake_upstream", "--port", str(port), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc


def start_garrison(port: int, data: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "GARRISON_DATA_DIR": str(data), "GARRISON_PORT": str(port),
           "GARRISON_CONFIG": str(data / "none.toml")}
    log = open(data / "garrison.log", "wb")  # noqa: SIM115 (lives as long as the process)
    proc = subprocess.Popen([str(Path(PY).parent / "garrison"), "up"], env=env, stdout=log, stderr=log)
    for _ in range(600):
        if (data / "admin.key").exists():
            break
        time.sleep(0.2)
    key = (data / "admin.key").read_text().strip()
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc, key


def setup_garrison(url: str, admin: str, fast: str, slow: str) -> dict[str, str]:
    h = {"authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=url, headers=h, timeout=30) as c:
        for name, base, conc in (("bench", fast, 1024), ("slow", slow, 4)):
            r = c.post("/api/llm/models", json={"model": name, "base_url": base, "kind": "vllm",
                                                 "max_concurrency": conc})
            r.raise_for_status()
        c.post("/api/metering/prices", json={"model": "bench", "input_per_mtok": "0.1",
                                             "output_per_mtok": "0.2"}).raise_for_status()
        keys = {}
        for tenant in ("heavy", "light"):
            c.post("/api/tenants", json={"name": tenant}).raise_for_status()
            r = c.post("/api/keys", json={
                "scopes": ["llm:invoke"], "name": "bench", "principal": f"{tenant}-svc", "kind": "service",
                "tenant": tenant, "attributes": {"rpm": 10_000_000, "tpm": 1_000_000_000},
            })
            r.raise_for_status()
            keys[tenant] = r.json()["key"]
            tid = r.json()["tenant_id"]
            c.post("/api/metering/budgets", json={"scope": "tenant", "window": "month", "limit_usd": "1000000",
                                                  "tenant_id": tid}).raise_for_status()
    return keys


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        print(f"installing LiteLLM proxy into {LITELLM_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return exe


def start_litellm(port: int, fast: str, slow: str, data: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = ensure_litellm()
    cfg = data / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        f"  - model_name: bench\n    litellm_params:\n      model: openai/bench\n      api_base: {fast}\n"
        "      api_key: fake\n"
        f"  - model_name: slow\n    litellm_params:\n      model: openai/slow\n      api_base: {slow}\n"
        "      api_key: fake\n      max_parallel_requests: 4\n"
        "litellm_settings:\n  drop_params: true\n  telemetry: false\n"
        "general_settings:\n  master_key: sk-bench\n"
    )
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"}
    log = open(data / "litellm.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(exe), "--config", str(cfg), "--port", str(port), "--num_workers", "1"],
                            env=env, stdout=log, stderr=log, cwd=data)
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=300)
    return proc, "sk-bench"


# ---- load --------------------------------------------------------------------------------


async def run_load(url: str, key: str, n: int, concurrency: int, *, stream: bool) -> int:
    body = {**BODY, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    ok = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=60) as c:
        left = n

        async def worker() -> None:
            nonlocal left, ok
            while left > 0:
                left -= 1
                try:
                    if stream:
                        async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                            async for _ in r.aiter_raw():
                                pass
                            ok += r.status_code == 200
                    else:
                        r = await c.post("/v1/chat/completions", json=body)
                        ok += r.status_code == 200
                except httpx.TransportError:
                    continue  # counted as not ok (a server closing an idle keep-alive connection)

        await asyncio.gather(*[worker() for _ in range(concurrency)])
    return ok


def cpu_per_request(proc: psutil.Process, url: str, key: str, n: int, *, stream: bool) -> tuple[float, int]:
    asyncio.run(run_load(url, key, min(200, n), 8, stream=stream))  # warm up
    before = cpu_seconds(proc)
    ok = asyncio.run(run_load(url, key, n, 8, stream=stream))
    return (cpu_seconds(proc) - before) / n * 1000, ok


def latencies(url: str, key: str, n: int) -> list[float]:
    out = []
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30) as c:
        for _ in range(50):
            c.post("/v1/chat/completions", json=BODY)
        for _ in range(n):
            t = time.perf_counter()
            try:
                r = c.post("/v1/chat/completions", json=BODY)
            except httpx.TransportError:
                continue
            out.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
    return out


async def fairness(url: str, heavy: str, light: str, seconds: float) -> tuple[int, int]:
    """10:1 demand (80 vs 8 closed loops) on a model with 4 upstream slots."""
    counts = {"heavy": 0, "light": 0}
    stop = time.monotonic() + seconds
    body = {**BODY, "model": "slow"}
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as c:

        async def loop(who: str, key: str) -> None:
            while time.monotonic() < stop:
                try:
                    r = await c.post("/v1/chat/completions", json=body,
                                     headers={"authorization": f"Bearer {key}"})
                except httpx.TransportError:
                    continue
                if r.status_code == 200 and time.monotonic() < stop:
                    counts[who] += 1

        await asyncio.gather(*[loop("heavy", heavy) for _ in range(80)], *[loop("light", light) for _ in range(8)])
    return counts["heavy"], counts["light"]


def measure(name: str, proc: psutil.Process, url: str, keys: dict[str, str], direct: list[float],
            args: argparse.Namespace, n: int, rss_requests: int) -> dict[str, Any]:
    key = keys["heavy"]
    res: dict[str, Any] = {"gateway": name, "requests": n}
    if args.fairness_only:
        h, li = asyncio.run(fairness(url, keys["heavy"], keys["light"], args.fair_seconds))
        res.update(fair_heavy=h, fair_light=li, light_share_pct=li / (h + li) * 100 if h + li else 0.0)
        return res
    res["cpu_ms_per_request"], ok1 = cpu_per_request(proc, url, key, n, stream=False)
    res["cpu_ms_per_stream"], ok2 = cpu_per_request(proc, url, key, n, stream=True)
    res["ok"], res["failed"] = ok1 + ok2, 2 * n - ok1 - ok2
    lat = latencies(url, key, args.latency_requests)
    res["added_p50_ms"] = pct(lat, 0.5) - pct(direct, 0.5)
    res["added_p99_ms"] = pct(lat, 0.99) - pct(direct, 0.99)
    res["requests_per_core_s"] = 1000 / res["cpu_ms_per_request"] if res["cpu_ms_per_request"] else None
    if rss_requests and args.rss_warmup:
        # The phases above ran at 1 and 8 concurrent; growth is measured from the working size at
        # the 16 concurrent requests of the run itself, so a step up in load is not counted as growth.
        asyncio.run(run_load(url, key, args.rss_warmup, 16, stream=False))
    res["rss_mb_start"] = rss_mb(proc)
    # RSS after each quarter: a leak keeps climbing; a warm-up (allocator arenas and caches
    # reaching their working size) flattens. Both figures are reported; the target is the first.
    curve = [(0, res["rss_mb_start"])]
    for q in range(1, 5 if rss_requests else 1):
        asyncio.run(run_load(url, key, rss_requests * q // 4 - rss_requests * (q - 1) // 4, 16, stream=False))
        curve.append((rss_requests * q // 4, rss_mb(proc)))
    res["rss_mb_end"] = rss_mb(proc)
    res["rss_requests"] = rss_requests
    res["rss_curve_mb"] = [(n, round(mb, 1)) for n, mb in curve]
    res["rss_growth_pct"] = (res["rss_mb_end"] / res["rss_mb_start"] - 1) * 100
    if len(curve) == 5:
        res["rss_growth_last_three_quarters_pct"] = (res["rss_mb_end"] / curve[1][1] - 1) * 100
    h, li = asyncio.run(fairness(url, keys["heavy"], keys["light"], args.fair_seconds))
    res["fair_heavy"], res["fair_light"] = h, li
    res["light_share_pct"] = li / (h + li) * 100 if h + li else 0.0
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--latency-requests", type=int, default=1000)
    ap.add_argument("--rss-requests", type=int, default=100_000)
    ap.add_argument("--rss-warmup", type=int, default=2000,
                    help="requests at the RSS run's concurrency (16) before its start is measured")
    ap.add_argument("--litellm-requests", type=int, default=500, help="LiteLLM is slow: fewer requests")
    ap.add_argument("--litellm-rss-requests", type=int, default=1000)
    ap.add_argument("--fair-seconds", type=float, default=20.0)
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--fairness-only", action="store_true", help="only the 10:1 fairness phase")
    ap.add_argument("--slow-ttft-ms", type=float, default=400.0,
                    help="service time of the saturated model: long against the client's turnaround, "
                         "so both tenants stay backlogged")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    data = Path(tempfile.mkdtemp(prefix="garrison-llm-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        fast_port, slow_port = free_port(), free_port()
        procs.append(start_fake(fast_port))
        procs.append(start_fake(slow_port, "--ttft-ms", str(args.slow_ttft_ms)))
        fast, slow = f"http://127.0.0.1:{fast_port}/v1", f"http://127.0.0.1:{slow_port}/v1"
        direct = [] if args.fairness_only else latencies(f"http://127.0.0.1:{fast_port}", "none",
                                                         args.latency_requests)

        results = []
        g_port = free_port()
        g_proc, admin = start_garrison(g_port, data)
        procs.append(g_proc)
        g_url = f"http://127.0.0.1:{g_port}"
        keys = setup_garrison(g_url, admin, fast, slow)
        results.append(measure("garrison", psutil.Process(g_proc.pid), g_url, keys, direct, args,
                               args.requests, args.rss_requests))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        g_proc.terminate()
        g_proc.wait(30)

        if not args.skip_litellm:
            l_port = free_port()
            l_proc, master = start_litellm(l_port, fast, slow, data)
            procs.append(l_proc)
            results.append(measure("litellm", psutil.Process(l_proc.pid), f"http://127.0.0.1:{l_port}",
                                   {"heavy": master, "light": master}, direct, args,
                                   args.litellm_requests, args.litellm_rss_requests))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        report(results, args.json)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(data, ignore_errors=True)


def report(results: list[dict[str, Any]], as_json: bool) -> None:
    if as_json or "cpu_ms_per_request" not in results[0]:
        print(json.dumps(results, indent=2))
        return
    rows: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
        ("CPU per request, non-streaming", "ms", lambda r: f"{r['cpu_ms_per_request']:.2f}"),
        ("CPU per request, streaming", "ms", lambda r: f"{r['cpu_ms_per_stream']:.2f}"),
        ("added latency p50 (1 concurrent)", "ms", lambda r: f"{r['added_p50_ms']:.2f}"),
        ("added latency p99 (1 concurrent)", "ms", lambda r: f"{r['added_p99_ms']:.2f}"),
        ("requests per CPU-second", "req/s", lambda r: f"{r['requests_per_core_s']:.0f}"),
        ("RSS start -> end", "MB", lambda r: f"{r['rss_mb_start']:.0f} -> {r['rss_mb_end']:.0f} "
                                          f"({r['rss_growth_pct']:+.1f}% over {r['rss_requests']})"),
        ("RSS after each quarter of the run", "MB", lambda r: " ".join(f"{mb:.0f}" for _, mb in r["rss_curve_mb"])),
        ("RSS growth, last three quarters", "%", lambda r: f"{r['rss_growth_last_three_quarters_pct']:+.1f}"
                                                         if "rss_growth_last_three_quarters_pct" in r else "-"),
        ("light tenant share at 10:1 demand", "%", lambda r: f"{r['light_share_pct']:.1f} "
                                                          f"({r['fair_light']}/{r['fair_light'] + r['fair_heavy']})"),
    ]
    names = [f"{r['gateway']} ({r['failed']} failed)" for r in results]
    print(f"{'metric':40} {'unit':6} " + " ".join(f"{n:>34}" for n in names))
    for label, unit, fmt in rows:
        print(f"{label:40} {unit:6} " + " ".join(f"{fmt(r):>34}" for r in results))


if __name__ == "__main__":
    main()
