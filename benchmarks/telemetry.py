"""Telemetry benchmark: garrison's OTLP ingest and span store beside Arize Phoenix.

Same run, same generated spans (agent runs in gen_ai semantic conventions), sent by the
same OpenTelemetry OTLP/HTTP protobuf exporter to each server on this machine:

1. sustained ingest, end to end: spans/s from the first export until every span is
   stored (garrison acknowledges only committed spans; Phoenix acknowledges first and
   inserts later, so its time runs until its database holds them all);
2. overload: 24 senders posting 2,048-span bodies without pause for --overload-s seconds; peak resident
   memory of the server process, and how many requests were refused (503);
3. garrison only, with --store-spans (default 1,000,000) spans stored, loaded through the
   span store's own write path for at most --load-s seconds: trace tree p95 (GET
   /api/traces/{id} work, in process), cost by model by day (30 days, the daily rollup)
   and the whole usage summary (rollup plus latency by model). Loading a million spans
   into Phoenix through OTLP takes longer than this benchmark may run, so Phoenix has no
   row there.

--db postgresql runs all of it on PostgreSQL (--pg-url, default the local server's
database "test" as the admin connection): each server, and the store, gets a fresh
database that is dropped afterwards; Phoenix gets one too (PHOENIX_SQL_DATABASE_URL).

Phoenix is installed into .bench-phoenix/ on first use (never into garrison's venv).
Usage: python benchmarks/telemetry.py [--db sqlite|postgresql] [--spans 40000] [--store-spans 1000000]
       [--load-s 600] [--overload-s 20] [--no-phoenix]
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
import uuid
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


class PgDatabases:
    """Fresh PostgreSQL databases for one run, dropped at the end (--db postgresql)."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.names: list[str] = []

    def create(self, label: str) -> str:
        """A new database; returns its libpq URL."""
        import psycopg

        name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return self.admin_url.rsplit("/", 1)[0] + "/" + name

    def drop_all(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self.names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _count_pg(url: str, table: str, where: str = "") -> int:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table} {where}").fetchone()[0])  # type: ignore[index]
    except psycopg.Error:
        return 0


def sqlalchemy_url(libpq_url: str) -> str:
    return "postgresql+psycopg://" + libpq_url.split("://", 1)[1]


def start_garrison(tmp: Path, metering: bool = True, pg: PgDatabases | None = None) -> Server:
    port = free_port()
    data = tmp / ("garrison" if metering else "garrison-nometer")
    env = {**os.environ, "GARRISON_DATA_DIR": str(data), "GARRISON_PORT": str(port),
           "GARRISON_TELEMETRY_METER_INGESTED_USAGE": "1" if metering else "0"}
    # garrison's own spans (tenant "system") are not part of the workload.
    where = "WHERE tenant_id != 'system'"
    if pg is not None:
        url = pg.create("garrison")
        env["GARRISON_DATABASE_URL"] = sqlalchemy_url(url)
        count = lambda: _count_pg(url, "telemetry_spans", where)  # noqa: E731
    else:
        count = lambda: _count_sqlite(data / "garrison.db", "telemetry_spans", where)  # noqa: E731
    code = ("import uvicorn; from garrison.server import create_app; "
            f"uvicorn.run(create_app(), host='127.0.0.1', port={port}, log_level='warning')")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    key = (data / "admin.key").read_text().strip()
    return Server("garrison", proc, f"http://127.0.0.1:{port}/v1/traces", {"authorization": f"Bearer {key}"},
                  count)


def ensure_phoenix() -> Path:
    exe = PHOENIX_VENV / "bin" / "phoenix"
    if not exe.exists():
        print("installing arize-phoenix into .bench-phoenix/ ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PHOENIX_VENV)], check=True)
        subprocess.run([str(PHOENIX_VENV / "bin" / "pip"), "install", "-q", "arize-phoenix"], check=True)
    return exe


def start_phoenix(tmp: Path, pg: PgDatabases | None = None) -> Server:
    exe = ensure_phoenix()
    port, grpc = free_port(), free_port()
    work = tmp / "phoenix"
    work.mkdir()
    env = {**os.environ, "PHOENIX_WORKING_DIR": str(work), "PHOENIX_PORT": str(port),
           "PHOENIX_GRPC_PORT": str(grpc), "PHOENIX_HOST": "127.0.0.1"}
    if pg is not None:
        url = pg.create("phoenix")
        env["PHOENIX_SQL_DATABASE_URL"] = url
        count = lambda: _count_pg(url, "spans")  # noqa: E731
    else:
        count = lambda: _count_sqlite(work / "phoenix.db", "spans")  # noqa: E731
    proc = subprocess.Popen([str(exe), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/")
    return Server("phoenix", proc, f"http://127.0.0.1:{port}/v1/traces", {}, count)


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


async def store_queries(n_spans: int, tmp: Path, load_s: float, pg: PgDatabases | None = None) -> dict[str, Any]:
    """Fill a garrison store with up to n_spans over 30 days (for at most load_s), then time the queries."""
    from garrison.core.principal import Principal
    from garrison.db import Database
    from garrison.db.migrate import upgrade
    from garrison.telemetry.config import TelemetrySettings
    from garrison.telemetry.otlp import RawSpan
    from garrison.telemetry.provider import to_raw
    from garrison.telemetry.service import TelemetryService

    url = sqlalchemy_url(pg.create("store")) if pg is not None else f"sqlite+aiosqlite:///{tmp / 'million.db'}"
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    svc = TelemetryService(db, TelemetrySettings())
    await svc.store.start()
    groups: dict[str, list[RawSpan]] = {}
    for span in generate(8 * 50):
        raw = to_raw(span)
        assert raw is not None
        groups.setdefault(raw.trace_id, []).append(raw)
    # Each template trace is normalized once; loading copies its rows under a new trace id and
    # time, so the load measures the store's write path rather than the normalizer.
    templates: list[list[dict[str, Any]]] = []
    for group in groups.values():
        rows, _ = svc._rows(group, "ten_bench")
        base = min(r["start_ns"] for r in rows)
        for r in rows:
            r["start_ns"] -= base
            r["end_ns"] -= base
        templates.append(rows)
    now = time.time_ns()
    day = 86_400 * 10**9
    t0 = time.perf_counter()
    deadline = time.monotonic() + load_s
    trace_ids: list[str] = []
    written = 0
    while written < n_spans and time.monotonic() < deadline:
        batch: list[dict[str, Any]] = []
        while len(batch) < 5000:
            tid = os.urandom(16).hex()
            template = templates[len(trace_ids) % len(templates)]
            trace_ids.append(tid)
            shift = now - random.randrange(30 * day) - 10**9
            for r in template:
                start = shift + r["start_ns"]
                batch.append({**r, "trace_id": tid, "start_ns": start, "end_ns": shift + r["end_ns"],
                              "day": start // day})
        await svc.store.write(batch, [])
        written += len(batch)
        if len(trace_ids) % 25_000 < 625:
            print(f"  loaded {written:,} spans in {time.perf_counter() - t0:.0f} s", flush=True)
    load_s_used = time.perf_counter() - t0
    if pg is not None:
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql("ANALYZE telemetry_spans")
    who = Principal(id="p", tenant_id="ten_bench", kind="service", scopes=frozenset())
    tree_ms = []
    for tid in random.sample(trace_ids, 300):
        t = time.perf_counter()
        await svc.get_trace(who, tid)
        tree_ms.append((time.perf_counter() - t) * 1000)
    tree_ms.sort()
    cost_ms, summary_ms = [], []
    today = now // day
    from datetime import UTC, datetime, timedelta

    until = datetime.now(UTC)
    for _ in range(30):
        t = time.perf_counter()
        await svc.store.cost_by_model_by_day("ten_bench", today - 30, today)
        cost_ms.append((time.perf_counter() - t) * 1000)
    for _ in range(10):
        t = time.perf_counter()
        await svc.usage_summary(who, until - timedelta(days=1), until)
        summary_ms.append((time.perf_counter() - t) * 1000)
    cost_ms.sort()
    summary_ms.sort()
    count = await svc.store.count()
    stored_bytes = await svc.store.stored_bytes()
    await db.dispose()
    return {"db": "postgresql" if pg is not None else "sqlite", "spans": count,
            "load_s": load_s_used, "load_spans_per_s": count / load_s_used, "stored_mib": stored_bytes / 2**20,
            "tree_p50_ms": tree_ms[len(tree_ms) // 2], "tree_p95_ms": tree_ms[int(len(tree_ms) * 0.95)],
            "cost_by_model_by_day_p50_ms": cost_ms[15], "cost_by_model_by_day_max_ms": cost_ms[-1],
            "usage_summary_1_day_p50_ms": summary_ms[5], "usage_summary_1_day_max_ms": summary_ms[-1]}


def load_average() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test",
                    help="admin connection; fresh databases are created beside it")
    ap.add_argument("--spans", type=int, default=40_000)
    ap.add_argument("--store-spans", type=int, default=1_000_000)
    ap.add_argument("--load-s", type=float, default=600.0, help="stop loading the store after this long")
    ap.add_argument("--no-overload", action="store_true")
    ap.add_argument("--overload-s", type=float, default=20.0)
    ap.add_argument("--no-phoenix", action="store_true")
    ap.add_argument("--no-metering-too", action="store_true",
                    help="also run garrison with the metering hand-off of ingested usage turned off")
    args = ap.parse_args()
    spans = generate(args.spans)
    flood = generate(40_000, seed=11)
    print(f"generated {len(spans)} spans ({len(spans) // 8} agent runs)", flush=True)
    results: dict[str, dict[str, Any]] = {}
    pg = PgDatabases(args.pg_url) if args.db == "postgresql" else None
    print(f"database: {args.db}; load average at start: {load_average()}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-telemetry-") as tmpdir:
            tmp = Path(tmpdir)
            starters: list[tuple[str, Any]] = [("garrison", lambda t: start_garrison(t, pg=pg))]
            if args.no_metering_too:
                starters.append(("garrison-no-metering", lambda t: start_garrison(t, metering=False, pg=pg)))
            if not args.no_phoenix:
                starters.append(("phoenix", lambda t: start_phoenix(t, pg=pg)))
            for name, start in starters:
                server = start(tmp)
                try:
                    results[name] = {"ingest": ingest(server, spans)}
                    results[name]["ingest"]["load_avg"] = load_average()
                    print(name, "ingest", results[name]["ingest"], flush=True)
                    if not args.no_overload:
                        results[name]["overload"] = overload(server, flood, args.overload_s)
                        print(name, "overload", results[name]["overload"], flush=True)
                finally:
                    server.stop()
            if args.store_spans:
                q = asyncio.run(store_queries(args.store_spans, tmp, args.load_s, pg))
                q["load_avg"] = load_average()
                print("garrison store", q, flush=True)
                results["garrison"]["store"] = q
    finally:
        if pg is not None:
            pg.drop_all()

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
    print(f"| ingest spans/s (OTLP protobuf, 4 senders, {args.db}) | {gi:,.0f} | "
          f"{f'{pi:,.0f}' if pi else '-'} | {f'{gi / pi:.1f}x' if pi else '-'} |")
    gc = g["ingest"]["spans_per_cpu_s"]
    pc = p["ingest"]["spans_per_cpu_s"] if p else None
    print(f"| ingest spans per server CPU-second | {gc:,.0f} | "
          f"{f'{pc:,.0f}' if pc else '-'} | {f'{gc / pc:.1f}x' if pc else '-'} |")
    go, po = g.get("overload"), (p or {}).get("overload")
    if go:
        p_mem = "{:.0f} (idle {:.0f})".format(po["peak_mib"], po["baseline_mib"]) if po else "-"
        p_codes = "{} / {}".format(po["ok"], po["refused_503"]) if po else "-"
        print(f"| peak RSS under overload (MiB) | {go['peak_mib']:.0f} (idle {go['baseline_mib']:.0f}) | {p_mem} | - |")
        print(f"| overload: requests 200 / 503 | {go['ok']} / {go['refused_503']} | {p_codes} | - |")
    if "store" in g:
        s = g["store"]
        print(f"| trace tree p95 at {s['spans']:,} spans, {s['db']} (ms) | {s['tree_p95_ms']:.2f} | - | - |")
        print(f"| cost by model by day, 30 days, at {s['spans']:,} spans, {s['db']} (ms) | "
              f"{s['cost_by_model_by_day_max_ms']:.2f} (max) | - | - |")
        print(f"| usage summary (cost by day + latency by model), 1 day, {s['db']} (ms) | "
              f"{s['usage_summary_1_day_max_ms']:.2f} (max) | - | - |")
        print(f"| store load through the write path, {s['db']} | {s['load_spans_per_s']:,.0f} spans/s, "
              f"{s['spans']:,} spans in {s['load_s']:.0f} s, {s['stored_mib']:.0f} MiB | - | - |")
    print(f"load average at end: {load_average()} (ingest: {g['ingest']['load_avg']}"
          + (f"; store: {g['store']['load_avg']}" if "store" in g else "") + ")")


if __name__ == "__main__":
    main()
