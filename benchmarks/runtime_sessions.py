"""Invocation routing into a warm AgentCore session: added latency over calling the agent directly.

Same run, same machine, per sandbox backend (gVisor, bubblewrap):

- direct: the agent process (an unmodified BedrockAgentCoreApp whose entrypoint returns a
  small JSON object, no model call) called directly, from inside its own sandbox, over the
  sandbox's loopback (``POST 127.0.0.1:8080/invocations``, http.client, kept-alive);
  the sandbox has no network, so this is the closest anyone can call it;
- relay: the same request from the host through the relay alone (agent stdio channel);
- routed: the full path a client takes: ``POST /runtimes/{agent}/invocations`` on garrison's
  HTTP port (uvicorn, API key, policy, audit, session lookup, relay, streamed answer);
- floor: garrison's own HTTP path without the sandbox (``GET /api/runtime/agents/{a}/sessions/{s}``:
  the same server, key check, policy and audit, an in-memory answer), to show where time goes.

Added latency = routed p50 - direct p50 (target <= 5 ms). Wall times swing with the load of a
shared machine, so the CPU time garrison's process spends per call is reported too (routed
minus floor: what routing into the session costs garrison). Also reports the load average.

Usage: python benchmarks/runtime_sessions.py [--n 300] [--backends gvisor,bubblewrap]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from garrison.config import Settings  # noqa: E402
from garrison.platform import Platform  # noqa: E402
from garrison.runtime.bundles import pack  # noqa: E402
from garrison.runtime.sessions import manager  # noqa: E402
from garrison.sandbox.relay import Relay  # noqa: E402
from garrison.server import create_app  # noqa: E402

AGENT = '''
from bedrock_agentcore.runtime import BedrockAgentCoreApp

app = BedrockAgentCoreApp()


@app.entrypoint
def invoke(payload, context):
    return {"echo": payload.get("n"), "session": context.session_id}


if __name__ == "__main__":
    app.run()
'''

DIRECT = '''
import http.client, json, time
conn = http.client.HTTPConnection("127.0.0.1", 8080)
body = json.dumps({"n": 1}).encode()
headers = {"content-type": "application/json", "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": SESSION}
out = []
for i in range(N + 20):
    t0 = time.perf_counter()
    conn.request("POST", "/invocations", body=body, headers=headers)
    r = conn.getresponse(); r.read()
    out.append(time.perf_counter() - t0)
print(json.dumps(out[20:]))
'''


def wheelhouse() -> Path:
    path = ROOT / ".garrison-test-cache" / "wheelhouse"
    if not list(path.glob("bedrock_agentcore-*.whl")):
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "bedrock-agentcore", "openai",
                        "-d", str(path)], check=True)
    return path


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def bench_backend(backend: str, n: int, work: Path) -> dict[str, float]:
    os.environ["GARRISON_RUNTIME_SESSION_BACKEND"] = backend
    data = work / backend
    data.mkdir()
    platform = Platform(Settings(data_dir=data, database_url=f"sqlite+aiosqlite:///{data / 'g.db'}"))
    await platform.start()
    app = create_app(platform=platform)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    serve = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no started event)
        await asyncio.sleep(0.02)
    key = platform.settings.admin_key_path.read_text().strip()
    bundle = work / f"agent-{backend}"
    bundle.mkdir()
    (bundle / "main.py").write_text(AGENT)
    (bundle / "requirements.txt").write_text("bedrock-agentcore\n")
    session = "bench-session-" + "x" * 30
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json",
               "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": session}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
            r = await client.post("/api/runtime/agents/bench/versions", content=pack(bundle),
                                  headers={"authorization": f"Bearer {key}", "content-type": "application/gzip"})
            r.raise_for_status()
            t0 = time.perf_counter()
            r = await client.post("/runtimes/bench/invocations", content=b'{"n": 0}', headers=headers)
            r.raise_for_status()
            cold = time.perf_counter() - t0
            sess = next(iter(manager(platform.services["runtime"]).sessions.values()))
            conn = sess.sandbox.runtime.conn
            code = f"SESSION = {session!r}\nN = {n}\n" + DIRECT
            out = await conn.call("run_code", code=code)
            direct = json.loads(out["stdout"])
            relay = Relay(conn)
            relay_headers = [("content-type", "application/json"),
                             ("X-Amzn-Bedrock-AgentCore-Runtime-Session-Id", session)]

            async def via_relay() -> None:
                await (await relay.request(8080, "POST", "/invocations", relay_headers, b'{"n": 1}')).read()

            async def via_floor() -> None:
                # The same HTTP, key, policy and audit path without the sandbox: describe the session.
                r = await client.get(f"/api/runtime/agents/bench/sessions/{session}", headers=headers)
                assert r.status_code == 200, r.text

            async def via_garrison() -> None:
                r = await client.post("/runtimes/bench/invocations", content=b'{"n": 1}', headers=headers)
                assert r.status_code == 200 and r.json()["echo"] == 1, r.text

            # Interleaved, so that each path sees the same load on a shared machine.
            paths = {"relay": via_relay, "floor": via_floor, "routed": via_garrison}
            wall: dict[str, list[float]] = {k: [] for k in paths}
            cpu_sum = dict.fromkeys(paths, 0.0)
            profile = None
            if os.environ.get("BENCH_PROFILE"):
                import cProfile

                profile = cProfile.Profile()
                profile.enable()
            for i in range(n + 20):
                for name, call in paths.items():
                    c0, t0 = time.process_time(), time.perf_counter()
                    await call()
                    if i >= 20:
                        wall[name].append(time.perf_counter() - t0)
                        cpu_sum[name] += time.process_time() - c0
            if profile is not None:
                import pstats

                profile.disable()
                pstats.Stats(profile).sort_stats(os.environ["BENCH_PROFILE"]).print_stats(
                    os.environ.get("BENCH_PROFILE_FILTER", ""), 45)
            relayed, floor, routed = wall["relay"], wall["floor"], wall["routed"]
            relay_cpu, floor_cpu, cpu = (cpu_sum[k] / n for k in ("relay", "floor", "routed"))
    finally:
        server.should_exit = True
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(serve, 10)
        await platform.stop()
    return {"cold_start_s": cold, "direct_p50_ms": pct(direct, 0.5), "direct_p95_ms": pct(direct, 0.95),
            "relay_p50_ms": pct(relayed, 0.5), "relay_p95_ms": pct(relayed, 0.95),
            "routed_p50_ms": pct(routed, 0.5), "routed_p95_ms": pct(routed, 0.95),
            "floor_p50_ms": pct(floor, 0.5), "floor_p95_ms": pct(floor, 0.95),
            "added_p50_ms": pct(routed, 0.5) - pct(direct, 0.5),
            "added_over_floor_p50_ms": pct(routed, 0.5) - pct(direct, 0.5) - pct(floor, 0.5),
            "garrison_cpu_ms_per_call": cpu * 1000, "floor_cpu_ms_per_call": floor_cpu * 1000,
            "relay_cpu_ms_per_call": relay_cpu * 1000,
            "routing_cpu_over_floor_ms": (cpu - floor_cpu) * 1000, "direct_mean_ms": statistics.mean(direct) * 1000}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--backends", default="gvisor,bubblewrap")
    args = parser.parse_args()
    os.environ["GARRISON_RUNTIME_WHEELHOUSE"] = str(wheelhouse())
    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp:
        work = Path(tmp)
        os.environ["GARRISON_RUNTIME_DEPS_CACHE"] = str(work / "deps")
        for backend in args.backends.split(","):
            load = os.getloadavg()
            result = await bench_backend(backend, args.n, work)
            print(f"\n{backend} (n={args.n}; load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
                  f"after {os.getloadavg()[0]:.2f})")
            for name, value in result.items():
                print(f"  {name:26s} {value:9.3f}")
            target = "met" if result["added_p50_ms"] <= 5 else "NOT met"
            print(f"  added p50 {result['added_p50_ms']:.2f} ms over the direct call: target <= 5 ms {target}")


if __name__ == "__main__":
    asyncio.run(main())
