"""Telemetry benchmark: garrison's OTLP ingest and span store beside Arize Phoenix.

Same run, same generated spans (agent runs in gen_ai semantic conventions), sent by the
same OpenTelemetry OTLP/HTTP protobuf exporter to each server on this machine:

1. sustained ingest, end to end: spans/s from the first export until every span is
   stored (garrison acknowledges only committed spans; Phoenix acknowledges first and
   inserts later, so its time runs until its database holds them all);
2. overload: 24 senders posting 2,048-span bodies without pause for --overload-s seconds; peak resident
   memory of the server process, and how many requests were refused (503);
3. garrison only, with --store-spans (default 1,000,000) spans stored in SQLite: trace
   tree p95 (GET /api/traces/{id} work, in process) and cost by model by day (30 days).
   Loading a million spans into Phoenix through OTLP takes longer than this benchmark
   may run, so Phoenix has no row there.

Phoenix is installed into .bench-phoenix/ on first use (never into garrison's venv).
Usage: python benchmarks/telemetry.py [--spans 40000] [--store-spans 1000000] [--overload-s 20] [--no-phoenix]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PHOENIX_VENV = ROOT / ".bench-phoenix"
MODELS = [("gpt-4o-mini", "openai"), ("gpt-4o", "openai"), ("claude-sonnet-4-5", "anthropic")]
BATCH = 512


# ---------------------------------------------------------------- span generation


class _Collect(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def generate(n_spans: int, seed: int = 7) -> list[ReadableSpan]:
    """Agent runs of 8 spans: agent -> (chat -> tool) x3 -> chat, gen_ai semconv 1.37+."""
    rnd = random.Random(seed)
    collect = _Collect()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-agent"}))
    provider.add_span_processor(collect)
    tracer = provider.get_tracer("bench")
    for run in range(max(1, n_spans // 8)):
        model, prov = MODELS[run % len(MODELS)]
        with tracer.start_as_current_span("invoke_agent planner", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner",
            "gen_ai.conversation.id": f"conv-{run // 4}", "user.id": f"user-{run % 50}",
        }):
            for step in range(3):
                with tracer.start_as_current_span(f"chat {model}", attributes={
                    "gen_ai.operation.name": "chat", "gen_ai.request.model": model, "gen_ai.provider.name": prov,
                    "gen_ai.usage.input_tokens": rnd.randint(200, 4000),
                    "gen_ai.usage.output_tokens": rnd.randint(20, 400),
                    "gen_ai.response.finish_reasons": ["tool_calls"],
                }):
                    pass
                with tracer.start_as_current_span("execute_tool search", attributes={
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
                    "gen_ai.tool.call.id": f"call_{run}_{step}",
                }):
                    pass
            with tracer.start_as_current_span(f"chat {model}", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": model, "gen_ai.provider.name": prov,
                "gen_ai.usage.input_tokens": rnd.randint(200, 4000), "gen_ai.usage.output_tokens": 50,
            }):
                pass
    return collect.spans


def batches(spans: list[ReadableSpan]) -> list[list[ReadableSpan]]:
    return [spans[i:i + BATCH] for i in range(0, len(spans), BATCH)]


# ---------------------------------------------------------------- servers


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


class Server:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], endpoint: str, headers: dict[str, str],
                 count: Any) -> None:
        self.name, self.proc, self.endpoint, self.headers, self.count = name, proc, endpoint, headers, count

    def rss(self) -> int:
        try:
            p = psutil.Process(self.proc.pid)
            return p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
        except psutil.NoSuchProcess:
            return 0

    def cpu_s(self) -> float:
        """CPU seconds used by the server (and its children): a figure other load on the machine does not bend."""
        try:
            p = psutil.Process(self.proc.pid)
            procs = [p] + p.children(recursive=True)
            return sum(c.cpu_times().user + c.cpu_times().system for c in procs)
        except psutil.NoSuchProcess:
            return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _count_sqlite(path: Path, table: str, where: str = "") -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table} {where}").fetchone()[0])
    except sqlite3.Error:
        return 0


def start_garrison(tmp: Path, metering: bool = True) -> Server:
    port = free_port()
    data = tmp / ("garrison" if metering else "garrison-nometer")
    env = {**os.environ, "GARRISON_DATA_DIR": str(data), "GARRISON_PORT": str(port),
           "GARRISON_TELEMETRY_METER_INGESTED_USAGE": "1" if metering else "0"}
    code = ("import uvicorn; from garrison.server import create_app; "
            f"uvicorn.run(create_app(), host='127.0.0.1', port={port}, log_level='warning')")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    key = (data / "admin.key").read_text().strip()
    return Server("garrison", proc, f"http://127.0.0.1:{port}/v1/traces", {"authorization": f"Bearer {key}"},
                  # garrison's own spans (tenant "system") are not part of the workload.
                  lambda: _count_sqlite(data / "garrison.db", "telemetry_spans", "WHERE tenant_id != 'system'"))


def ensure_phoenix() -> Path:
    exe = PHOENIX_VENV / "bin" / "phoenix"
    if not exe.exists():
        print("installing arize-phoenix into .bench-phoenix/ ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PHOENIX_VENV)], check=True)
        subprocess.run([str(PHOENIX_VENV / "bin" / "pip"), "install", "-q", "arize-phoenix"], check=True)
    return exe


def start_phoenix(tmp: Path) -> Server:
    exe = ensure_phoenix()
    port, grpc = free_port(), free_port()
    work = tmp / "phoenix"
    work.mkdir()
    env = {**os.environ, "PHOENIX_WORKING_DIR": str(work), "PHOENIX_PORT": str(port),
           "PHOENIX_GRPC_PORT": str(grpc), "PHOENIX_HOST": "127.0.0.1"}
    proc = subprocess.Popen([str(exe), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/")
    return Server("phoenix", proc, f"http://127.0.0.1:{port}/v1/traces", {},
                  lambda: _count_sqlite(work / "phoenix.db", "spans"))


# ---------------------------------------------------------------- measurements


def ingest(server: Server, spans: list[ReadableSpan], senders: int = 4) -> dict[str, float]:
    work = batches(spans)
    lock = threading.Lock()
    failures = [0]

    def sender() -> None:
        exporter = OTLPSpanExporter(endpoint=server.endpoint, headers=server.headers, timeout=60)
        while True:
            with lock:
                if not work:
                    break
                batch = work.pop()
            if exporter.export(batch) != SpanExportResult.SUCCESS:
                with lock:
                    failures[0] += 1
        exporter.shutdown()

    start_count = server.count()
    cpu0 = server.cpu_s()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=sender) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acked = time.perf_counter() - t0
    target = start_count + len(spans)
    deadline = time.monotonic() + 600
    while server.count() < target and time.monotonic() < deadline:
        time.sleep(0.05)
    stored = server.count() - start_count
    elapsed = time.perf_counter() - t0
    cpu = server.cpu_s() - cpu0
    return {"spans_per_s": stored / elapsed, "stored": stored, "acked_s": acked, "elapsed_s": elapsed,
            "failed_batches": failures[0], "server_cpu_s": cpu, "spans_per_cpu_s": stored / max(cpu, 1e-9)}


def overload(server: Server, spans: list[ReadableSpan], seconds: float, senders: int = 24) -> dict[str, float]:
    # 24 senders x 2,048-span bodies: more in flight than garrison's 20,000-span queue holds.
    bodies = [encode_spans(spans[i:i + 2048]).SerializePartialToString() for i in range(0, len(spans), 2048)]
    headers = {**server.headers, "content-type": "application/x-protobuf"}
    stop = time.monotonic() + seconds
    codes: dict[int, int] = {}
    lock = threading.Lock()
    peak = [server.rss()]
    base = peak[0]

    def sample() -> None:
        while time.monotonic() < stop + 2:
            peak[0] = max(peak[0], server.rss())
            time.sleep(0.05)

    def sender(i: int) -> None:
        with httpx.Client(timeout=60) as client:
            j = i
            while time.monotonic() < stop:
                try:
                    code = client.post(server.endpoint, content=bodies[j % len(bodies)], headers=headers).status_code
                except httpx.HTTPError:
                    code = 0
                with lock:
                    codes[code] = codes.get(code, 0) + 1
                j += senders

    threads = [threading.Thread(target=sample)] + [threading.Thread(target=sender, args=(i,)) for i in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"baseline_mib": base / 2**20, "peak_mib": peak[0] / 2**20, "ok": codes.get(200, 0),
            "refused_503": codes.get(503, 0), "other": sum(v for k, v in codes.items() if k not in (200, 503))}


async def store_queries(n_spans: int, tmp: Path) -> dict[str, float]:
    """Fill a garrison SQLite store with n_spans over 30 days, then time the two queries."""
    from garrison.core.principal import Principal
    from garrison.db import Database
    from garrison.db.migrate import upgrade
    from garrison.telemetry.config import TelemetrySettings
    from garrison.telemetry.otlp import RawSpan
    from garrison.telemetry.provider import to_raw
    from garrison.telemetry.service import TelemetryService

    url = f"sqlite+aiosqlite:///{tmp / 'million.db'}"
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    svc = TelemetryService(db, TelemetrySettings())
    await svc.store.start()
    groups: dict[str, list[RawSpan]] = {}
    for span in generate(8 * 50):
        raw = to_raw(span)
        assert raw is not None
        groups.setdefault(raw.trace_id, []).append(raw)
    template = list(groups.values())
    now = time.time_ns()
    day = 86_400 * 10**9
    t0 = time.perf_counter()
    trace_ids: list[str] = []
    written = 0
    while written < n_spans:
        raws: list[RawSpan] = []
        while len(raws) < 5000:
            group = template[len(trace_ids) % len(template)]
            tid = os.urandom(16).hex()
            trace_ids.append(tid)
            shift = now - random.randrange(30 * day) - 10**9
            base = min(t.start_ns for t in group)
            for t in group:
                # Same span ids as the template: span ids need only be unique within a trace.
                raws.append(RawSpan(tid, t.span_id, t.parent_span_id, t.name, t.otel_kind,
                                    shift + t.start_ns - base, shift + t.end_ns - base, t.status_code, "",
                                    t.attributes, t.resource, t.scope, []))
        rows, contents = svc._rows(raws, "ten_bench")
        await svc.store.write(rows, contents)
        written += len(rows)
    load_s = time.perf_counter() - t0
    who = Principal(id="p", tenant_id="ten_bench", kind="service", scopes=frozenset())
    tree_ms = []
    for tid in random.sample(trace_ids, 300):
        t = time.perf_counter()
        await svc.get_trace(who, tid)
        tree_ms.append((time.perf_counter() - t) * 1000)
    tree_ms.sort()
    cost_ms = []
    today = now // day
    for _ in range(30):
        t = time.perf_counter()
        await svc.store.cost_by_model_by_day("ten_bench", today - 30, today)
        cost_ms.append((time.perf_counter() - t) * 1000)
    cost_ms.sort()
    count = await svc.store.count()
    await db.dispose()
    return {"spans": count, "load_spans_per_s": count / load_s, "tree_p50_ms": tree_ms[len(tree_ms) // 2],
            "tree_p95_ms": tree_ms[int(len(tree_ms) * 0.95)], "cost_by_model_by_day_p50_ms": cost_ms[15],
            "cost_by_model_by_day_max_ms": cost_ms[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=40_000)
    ap.add_argument("--store-spans", type=int, default=1_000_000)
    ap.add_argument("--overload-s", type=float, default=20.0)
    ap.add_argument("--no-phoenix", action="store_true")
    ap.add_argument("--no-metering-too", action="store_true",
                    help="also run garrison with the metering hand-off of ingested usage turned off")
    args = ap.parse_args()
    spans = generate(args.spans)
    flood = generate(40_000, seed=11)
    print(f"generated {len(spans)} spans ({len(spans) // 8} agent runs)", flush=True)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-telemetry-") as tmpdir:
        tmp = Path(tmpdir)
        starters: list[tuple[str, Any]] = [("garrison", start_garrison)]
        if args.no_metering_too:
            starters.append(("garrison-no-metering", lambda t: start_garrison(t, metering=False)))
        if not args.no_phoenix:
            starters.append(("phoenix", start_phoenix))
        for name, start in starters:
            server = start(tmp)
            try:
                results[name] = {"ingest": ingest(server, spans)}
                print(name, "ingest", results[name]["ingest"], flush=True)
                results[name]["overload"] = overload(server, flood, args.overload_s)
                print(name, "overload", results[name]["overload"], flush=True)
            finally:
                server.stop()
        if args.store_spans:
            q = asyncio.run(store_queries(args.store_spans, tmp))
            print("garrison store", q, flush=True)
            results["garrison"]["store"] = q

    g = results["garrison"]
    p = results.get("phoenix")
    if "garrison-no-metering" in results:
        gn = results["garrison-no-metering"]["ingest"]["spans_per_s"]
        pn = p["ingest"]["spans_per_s"] if p else None
        print(f"garrison without metering hand-off: {gn:,.0f} spans/s" + (f" ({gn / pn:.1f}x phoenix)" if pn else ""))
    print("\n| metric | garrison | phoenix | ratio |")
    print("|---|---|---|---|")
    gi = g["ingest"]["spans_per_s"]
    pi = p["ingest"]["spans_per_s"] if p else None
    print(f"| ingest spans/s (OTLP protobuf, 4 senders, SQLite) | {gi:,.0f} | "
          f"{f'{pi:,.0f}' if pi else '-'} | {f'{gi / pi:.1f}x' if pi else '-'} |")
    gc = g["ingest"]["spans_per_cpu_s"]
    pc = p["ingest"]["spans_per_cpu_s"] if p else None
    print(f"| ingest spans per server CPU-second | {gc:,.0f} | "
          f"{f'{pc:,.0f}' if pc else '-'} | {f'{gc / pc:.1f}x' if pc else '-'} |")
    go, po = g["overload"], (p or {}).get("overload")
    p_mem = "{:.0f} (idle {:.0f})".format(po["peak_mib"], po["baseline_mib"]) if po else "-"
    p_codes = "{} / {}".format(po["ok"], po["refused_503"]) if po else "-"
    print(f"| peak RSS under overload (MiB) | {go['peak_mib']:.0f} (idle {go['baseline_mib']:.0f}) | {p_mem} | - |")
    print(f"| overload: requests 200 / 503 | {go['ok']} / {go['refused_503']} | {p_codes} | - |")
    if "store" in g:
        s = g["store"]
        print(f"| trace tree p95 at {s['spans']:,} spans (ms) | {s['tree_p95_ms']:.2f} | - | - |")
        print(f"| cost by model by day, 30 days, at {s['spans']:,} spans (ms) | "
              f"{s['cost_by_model_by_day_max_ms']:.2f} (max) | - | - |")


if __name__ == "__main__":
    main()
