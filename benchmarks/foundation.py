"""Foundation benchmark: what authentication, policy and audit cost a request.

Runs garrison's real app under uvicorn in a child process with two extra routes, one
open and one behind `require()` plus an audit entry, and times both from a client in
the same run; then the audit log (append, verify) and the policy engine on their own.

    .venv/bin/python benchmarks/foundation.py [--requests 3000] [--entries 100000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(data_dir: str, port: int) -> None:
    import uvicorn
    from fastapi import Depends

    from garrison.config import Settings
    from garrison.core.principal import Principal
    from garrison.identity.deps import require
    from garrison.server import create_app

    app = create_app(Settings(data_dir=Path(data_dir), port=port))

    @app.get("/bench/open")
    async def open_route() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/bench/secured")
    async def secured(principal: Principal = Depends(require("bench:read"))) -> dict[str, bool]:
        app.state.platform.audit.record(principal, "bench:read", "bench/1", "allow")
        return {"ok": True}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def bench_request_overhead(n: int) -> dict[str, float]:
    data = tempfile.mkdtemp(prefix="garrison-bench-")
    port = _free_port()
    proc = mp.get_context("spawn").Process(target=_serve, args=(data, port), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        key = (Path(data) / "admin.key").read_text().strip()
        open_t: list[float] = []
        sec_t: list[float] = []
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}) as c:
            for _ in range(200):  # warm up caches and connections
                c.get("/bench/open")
                c.get("/bench/secured")
            for _ in range(n):  # interleaved, so drift affects both alike
                t = time.perf_counter()
                c.get("/bench/open")
                open_t.append(time.perf_counter() - t)
                t = time.perf_counter()
                r = c.get("/bench/secured")
                sec_t.append(time.perf_counter() - t)
                assert r.status_code == 200
    finally:
        proc.terminate()
        proc.join(10)
    o50, s50 = statistics.median(open_t) * 1e3, statistics.median(sec_t) * 1e3
    return {"open_p50_ms": o50, "secured_p50_ms": s50, "added_p50_ms": s50 - o50,
            "open_p99_ms": _pct(open_t, 0.99) * 1e3, "secured_p99_ms": _pct(sec_t, 0.99) * 1e3}


async def bench_audit(entries: int) -> dict[str, float]:
    from garrison.audit.verify import verify
    from garrison.config import Settings
    from garrison.platform import Platform

    data = Path(tempfile.mkdtemp(prefix="garrison-bench-audit-"))
    settings = Settings(data_dir=data)
    plat = Platform(settings)
    await plat.start()
    await plat.audit.flush()
    # The flusher runs as it does in production; we time record + the flushes it needs.
    t = time.perf_counter()
    for i in range(entries):
        plat.audit.record(None, "bench:write", f"thing/{i}", "allow", "benchmark", {"i": i}, tenant_id="t")
        if i % 512 == 511:
            await asyncio.sleep(0)
    await plat.audit.flush()
    append_s = time.perf_counter() - t
    await plat.stop()
    t = time.perf_counter()
    res = verify(settings.resolved_database_url, data / "audit")
    verify_s = time.perf_counter() - t
    assert res.ok and res.entries >= entries, res.problems
    return {"audit_append_us": append_s / entries * 1e6, "audit_verify_s": verify_s, "verified_entries": res.entries}


def bench_policy(n: int = 20000) -> dict[str, float]:
    from garrison.core.principal import Principal
    from garrison.policy import PolicyEngine, Resource

    e = PolicyEngine(Path(tempfile.mkdtemp()) / "policies")
    e.load()
    e.write_file("10-forbid.cedar", 'forbid (principal, action == Garrison::Action::"x:delete", resource) '
                                    'when { principal.kind == "agent" };')
    p = Principal(id="prn_1", tenant_id="t1", kind="service", scopes=frozenset(["x:read"]))
    cold, warm = [], []
    for i in range(n):  # distinct resources: every decision is a Cedar evaluation
        t = time.perf_counter()
        e.authorize(p, "x:read", Resource("thing", str(i), "t1"))
        cold.append(time.perf_counter() - t)
    for _ in range(n):
        t = time.perf_counter()
        e.authorize(p, "x:read", Resource("thing", "1", "t1"))
        warm.append(time.perf_counter() - t)
    return {"policy_uncached_p50_us": statistics.median(cold) * 1e6,
            "policy_uncached_p99_us": _pct(cold, 0.99) * 1e6,
            "policy_cached_p99_us": _pct(warm, 0.99) * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out: dict[str, float] = {}
    print("request overhead (auth + policy + audit vs open route)...", file=sys.stderr)
    out.update(bench_request_overhead(args.requests))
    print(f"audit append and verify ({args.entries:,} entries)...", file=sys.stderr)
    out.update(asyncio.run(bench_audit(args.entries)))
    print("policy decisions...", file=sys.stderr)
    out.update(bench_policy())
    if args.json:
        print(json.dumps(out, indent=2))
        return
    targets = {"added_p50_ms": 0.3, "audit_append_us": 100, "audit_verify_s": 1.0, "policy_uncached_p99_us": 1000}
    for k, v in out.items():
        goal = f"   (target <= {targets[k]})" if k in targets else ""
        print(f"{k:26} {v:10.3f}{goal}")


if __name__ == "__main__":
    os.environ.setdefault("GARRISON_POLICY_MODE", "enforce")
    main()
