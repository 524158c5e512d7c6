"""Tool gateway benchmark: garrison's MCP gateway side by side with ContextForge, both
fronting the same upstream (garrison's fixture MCP server), in the same run; and the
registry listing 10,000 servers in pages of 100.

    .venv/bin/python benchmarks/tools_gateway.py [--calls 300] [--clients 8] [--seconds 10]
        [--servers 10000] [--no-contextforge] [--json]

ContextForge (`mcp-contextforge-gateway`) is installed into `.bench-contextforge/` on first
use. Every client is the `mcp` SDK's client under protocol 2025-11-25 (initialize + session).
Added latency = (latency through the gateway) - (direct latency to the upstream), per
percentile. Throughput per core = tool calls per CPU-second of the gateway process tree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CF_VENV = ROOT / ".bench-contextforge"
CF_SECRET = "bench-secret-key-0123456789abcdef0123456789"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def wait_http(url: str, timeout: float = 400) -> None:  # garrison's start takes minutes on a loaded machine
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime of a process and all its descendants (from /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        total += times.get(p, 0.0)
        stack += [c for c, pp in parents.items() if pp == p]
    return total


class Proc:
    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115
        self.p = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=self.log, stderr=subprocess.STDOUT,
                                  cwd=cwd, start_new_session=True)

    def stop(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)


# ---- targets ------------------------------------------------------------------------------


def start_upstream() -> tuple[Proc, str]:
    port = free_port()
    proc = Proc([PY, "-m", "garrison.tools.fixture_server", "--port", str(port)], cwd=ROOT)
    wait_http(f"http://127.0.0.1:{port}/mcp")
    return proc, f"http://127.0.0.1:{port}/mcp"


def start_garrison(upstream: str, data: Path) -> tuple[Proc, str, str]:
    port = free_port()
    env = {"GARRISON_DATA_DIR": str(data), "GARRISON_PORT": str(port), "GARRISON_HOST": "127.0.0.1",
           "GARRISON_REGISTRY_HEALTH_ENABLED": "false", "GARRISON_TOOLS_RATE_LIMIT_PER_MIN": "100000000"}
    data.mkdir(parents=True, exist_ok=True)
    proc = Proc([str(Path(PY).with_name("garrison")), "up"], env=env, cwd=data)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz")
    key = (data / "admin.key").read_text().strip()
    h = {"Authorization": f"Bearer {key}"}
    httpx.post(base + "/api/tools/upstreams", json={"name": "fixture", "url": upstream}, headers=h).raise_for_status()
    httpx.post(base + "/api/tools/virtual-servers", headers=h, json={
        "name": "bench", "tools": [{"upstream": "fixture", "tool": "echo"}, {"upstream": "fixture", "tool": "add"}],
    }).raise_for_status()
    return proc, f"{base}/mcp/bench", key


def install_contextforge() -> None:
    if (CF_VENV / "bin" / "mcpgateway").exists():
        return
    subprocess.run([sys.executable, "-m", "venv", str(CF_VENV)], check=True)
    subprocess.run([str(CF_VENV / "bin" / "pip"), "install", "-q", "mcp-contextforge-gateway"], check=True)


def start_contextforge(upstream: str, data: Path) -> tuple[Proc, str, str, str]:
    install_contextforge()
    port = free_port()
    env = {"HOST": "127.0.0.1", "PORT": str(port), "DATABASE_URL": f"sqlite:///{data}/mcp.db",
           "JWT_SECRET_KEY": CF_SECRET, "BASIC_AUTH_USER": "admin", "BASIC_AUTH_PASSWORD": "Bench-Passw0rd-123",
           "PLATFORM_ADMIN_EMAIL": "admin@example.com", "PLATFORM_ADMIN_PASSWORD": "Bench-Passw0rd-123",
           "MCPGATEWAY_UI_ENABLED": "false", "MCPGATEWAY_ADMIN_API_ENABLED": "true", "SSRF_ALLOW_LOCALHOST": "true",
           "SSRF_ALLOW_PRIVATE_NETWORKS": "true", "CACHE_TYPE": "memory", "LOG_LEVEL": "ERROR", "AUTH_REQUIRED": "true",
           # Lift its default per-user limits (100 tool calls/min) as garrison's are lifted.
           "TOOL_RATE_LIMIT": "100000000", "RATE_LIMIT_MEDIUM_RPM": "100000000", "RATE_LIMIT_MEDIUM_BURST": "100000000",
           "RATE_LIMIT_LOCKOUT_ENABLED": "false"}
    proc = Proc([str(CF_VENV / "bin" / "mcpgateway"), "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=data)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/health", timeout=240)
    token = subprocess.run([str(CF_VENV / "bin" / "python"), "-m", "mcpgateway.utils.create_jwt_token",
                            "--username", "admin@example.com", "--exp", "120", "--secret", CF_SECRET],
                           capture_output=True, text=True, check=True, env={**os.environ, **env}).stdout.strip().splitlines()[-1]
    h = {"Authorization": f"Bearer {token}"}
    httpx.post(base + "/gateways", headers=h, timeout=60,
               json={"name": "fixture", "url": upstream, "transport": "STREAMABLEHTTP"}).raise_for_status()
    tools = httpx.get(base + "/tools", headers=h).json()
    tools = tools if isinstance(tools, list) else tools.get("items", [])
    ids = [t["id"] for t in tools if t["name"] in ("fixture-echo", "fixture-add")]
    server = httpx.post(base + "/servers", headers=h, json={"server": {"name": "bench", "associated_tools": ids}})
    server.raise_for_status()
    return proc, f"{base}/servers/{server.json()['id']}/mcp", token, "fixture-echo"


# ---- measurements -------------------------------------------------------------------------


async def with_client(url: str, token: str | None, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            return await fn(client)


async def latencies(url: str, token: str | None, tool: str, calls: int, pid: int | None = None,
                    cpu_out: dict[str, float] | None = None) -> list[float]:
    async def run(client: Any) -> list[float]:
        for _ in range(20):
            await client.call_tool(tool, {"text": "warm"})
        cpu0 = tree_cpu_seconds(pid) if pid else 0.0
        out = []
        for i in range(calls):
            t = time.perf_counter()
            r = await client.call_tool(tool, {"text": f"hello {i}"})
            out.append((time.perf_counter() - t) * 1000)
            assert not r.is_error, r
        if pid and cpu_out is not None:  # CPU of the serving process tree per call: steadier than wall time
            cpu_out["cpu_ms_per_call"] = 1000 * (tree_cpu_seconds(pid) - cpu0) / calls
        return out

    return await with_client(url, token, run)


async def throughput(url: str, token: str | None, tool: str, clients: int, seconds: float, pid: int) -> dict[str, float]:
    count = errors = warmed = 0
    all_warm, go = asyncio.Event(), asyncio.Event()
    stop_at = [0.0]

    async def worker(client: Any) -> None:
        nonlocal count, errors, warmed
        await client.call_tool(tool, {"text": "warm"})
        warmed += 1
        if warmed == clients:
            all_warm.set()
        await go.wait()
        while time.perf_counter() < stop_at[0]:
            r = await client.call_tool(tool, {"text": "x"})
            if r.is_error:
                errors += 1
            count += 1

    tasks = [asyncio.create_task(with_client(url, token, worker)) for _ in range(clients)]
    await all_warm.wait()
    cpu0, t0 = tree_cpu_seconds(pid), time.perf_counter()
    stop_at[0] = t0 + seconds
    go.set()
    await asyncio.gather(*tasks)
    cpu = tree_cpu_seconds(pid) - cpu0
    wall = time.perf_counter() - t0
    return {"calls": count, "errors": errors, "calls_per_s": count / wall, "gateway_cpu_s": cpu,
            "calls_per_cpu_s": count / cpu if cpu else float("nan")}


def registry_listing(base: str, key: str, servers: int, pid: int, rounds: int = 5) -> dict[str, float]:
    h = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=h, timeout=120) as http:
        batch = []
        for i in range(servers):
            batch.append({"name": f"io.github.bench/server-{i:05d}", "description": f"Benchmark server {i}",
                          "version": "1.0.0",
                          "remotes": [{"type": "streamable-http", "url": f"https://example.com/{i}/mcp"}]})
            if len(batch) == 5000 or i == servers - 1:
                http.post("/api/registry/import", json=batch).raise_for_status()
                batch = []
        samples = []
        cpu0 = tree_cpu_seconds(pid)
        for _ in range(rounds):
            cursor = None
            while True:
                params: dict[str, Any] = {"limit": 100}
                if cursor:
                    params["cursor"] = cursor
                t = time.perf_counter()
                r = http.get("/v0.1/servers", params=params)
                samples.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
                cursor = r.json()["metadata"].get("nextCursor")
                if not cursor:
                    break
        cpu = tree_cpu_seconds(pid) - cpu0
    return {"pages": len(samples), "p50_ms": pct(samples, 0.5), "p95_ms": pct(samples, 0.95), "p99_ms": pct(samples, 0.99),
            "server_cpu_ms_per_page": 1000 * cpu / len(samples)}


def summarize(direct: list[float], via: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(via, 0.5), "p99_ms": pct(via, 0.99),
            "added_p50_ms": pct(via, 0.5) - pct(direct, 0.5), "added_p99_ms": pct(via, 0.99) - pct(direct, 0.99)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"calls": args.calls, "clients": args.clients, "seconds": args.seconds,
                               "loadavg_start": os.getloadavg()}
    procs: list[Proc] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-tools-"))
    try:
        up, upstream = start_upstream()
        procs.append(up)
        g, g_url, g_key = start_garrison(upstream, tmp / "garrison")
        procs.append(g)
        targets: dict[str, tuple[str, str | None, str, int | None]] = {
            "direct": (upstream, None, "echo", up.p.pid),
            "garrison": (g_url, g_key, "fixture__echo", g.p.pid),
        }
        if args.contextforge:
            (tmp / "cf").mkdir()
            cf, cf_url, cf_token, cf_tool = start_contextforge(upstream, tmp / "cf")
            procs.append(cf)
            targets["contextforge"] = (cf_url, cf_token, cf_tool, cf.p.pid)
        lat, cpu = {}, {}
        for name, (u, k, tool, pid) in targets.items():
            try:
                cpu[name] = {}
                lat[name] = await latencies(u, k, tool, args.calls, pid, cpu[name])
            except BaseException as exc:
                log = next((p.log.name for p in procs if p.p.pid == targets[name][3]), None)
                tail = open(log).read()[-3000:] if log else ""  # noqa: ASYNC230, SIM115 (failure path)
                raise RuntimeError(f"{name} failed: {exc!r}\n{tail}") from exc
        results["direct"] = {"p50_ms": pct(lat["direct"], 0.5), "p99_ms": pct(lat["direct"], 0.99),
                             "upstream_cpu_ms_per_call": cpu["direct"].get("cpu_ms_per_call")}
        for name in targets:
            if name != "direct":
                results[name] = summarize(lat["direct"], lat[name])
                results[name]["gateway_cpu_ms_per_call"] = cpu[name].get("cpu_ms_per_call")
        for name, (u, k, tool, pid) in targets.items():
            if name == "direct" or pid is None:
                continue
            results[name]["throughput"] = await throughput(u, k, tool, args.clients, args.seconds, pid)
        if args.servers:
            base = g_url.rsplit("/mcp/", 1)[0]
            results["registry_listing"] = registry_listing(base, g_key, args.servers, g.p.pid)
    finally:
        for p in reversed(procs):
            p.stop()
    results["loadavg_end"] = os.getloadavg()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--no-contextforge", dest="contextforge", action="store_false")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tools_gateway.json").write_text(json.dumps(results, indent=1))
    if args.json:
        print(json.dumps(results, indent=1))
        return
    g, cf = results["garrison"], results.get("contextforge")
    print("| metric | garrison | ContextForge | ratio |")
    print("|---|---|---|---|")
    for label, key in (("added latency p50 (ms)", "added_p50_ms"), ("added latency p99 (ms)", "added_p99_ms")):
        other = f"{cf[key]:.2f}" if cf else "-"
        ratio = f"{cf[key] / g[key]:.1f}x lower" if cf and g[key] > 0 else "-"
        print(f"| {label} | {g[key]:.2f} | {other} | {ratio} |")
    gc, cc = g["gateway_cpu_ms_per_call"], (cf or {}).get("gateway_cpu_ms_per_call")
    print(f"| gateway CPU per call, one client (ms) | {gc:.2f} | {cc:.2f} | {cc / gc:.1f}x lower |" if cc else
          f"| gateway CPU per call, one client (ms) | {gc:.2f} | - | - |")
    gt = g["throughput"]["calls_per_cpu_s"]
    ct = cf["throughput"]["calls_per_cpu_s"] if cf else None
    print(f"| tool calls per CPU-second | {gt:.0f} | {ct:.0f} | {gt / ct:.1f}x |" if ct else
          f"| tool calls per CPU-second | {gt:.0f} | - | - |")
    print(f"| tool calls/s, {results['clients']} clients | {g['throughput']['calls_per_s']:.0f} | "
          f"{cf['throughput']['calls_per_s']:.0f} | |" if cf else "")
    if "registry_listing" in results:
        r = results["registry_listing"]
        print(f"| registry list, {args.servers} servers, pages of 100: p95 (ms) | {r['p95_ms']:.2f} | n/a | |")
    print(f"direct upstream call: p50 {results['direct']['p50_ms']:.2f} ms, p99 {results['direct']['p99_ms']:.2f} ms")
    print(f"load average (1, 5, 15 min) at start {results['loadavg_start']}, at end {results['loadavg_end']}")


if __name__ == "__main__":
    main()
