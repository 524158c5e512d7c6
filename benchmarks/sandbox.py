"""Sandbox benchmark: garrison side by side with raw `runsc run` and raw `bwrap` doing the
same work (start Python, produce the first result), in the same run.

    .venv/bin/python benchmarks/sandbox.py [--n 20] [--json out.json]

Needs root (cgroups), runsc and bwrap; a backend that is missing is reported and skipped.
The machine's load average is printed before and after: the figures are wall-clock
and only comparable at a similar load (the ratios are, since peers run in the same run).
Each gVisor sandbox costs ~0.12-0.15 CPU-s (sentry, gofer, Python), so creates/s is reported
at 2, 4 and 8 concurrent creators (2 are bound by latency), with the CPU-seconds each create
costs (all of it: the sandbox's cgroup, garrison, `runsc run`, `runsc delete`), side by
side with the raw peer's, and the ceiling that implies on two otherwise idle cores: for
sequential creates as rusage counts it (`runsc run`'s time in the sandbox's cgroup twice)
and counted once (this process in a cgroup of its own), and while creates are sustained
(where `runsc delete`s are batched).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from garrison.core.ids import new_id  # noqa: E402
from garrison.core.principal import Principal  # noqa: E402
from garrison.sandbox import cgroups  # noqa: E402
from garrison.sandbox.backends.base import SandboxSpec  # noqa: E402
from garrison.sandbox.backends.bubblewrap import BubblewrapBackend  # noqa: E402
from garrison.sandbox.backends.gvisor import CGROUP_PARENT as GVISOR_CGROUP_PARENT  # noqa: E402
from garrison.sandbox.backends.gvisor import GVisorBackend  # noqa: E402
from garrison.sandbox.config import PoolConfig, SandboxSettings  # noqa: E402
from garrison.sandbox.runtime import SandboxRuntime  # noqa: E402
from garrison.sandbox.schemas import CreateIn  # noqa: E402
from garrison.sandbox.service import SandboxService  # noqa: E402
from garrison.sandbox.templates import Template  # noqa: E402

MiB = 1024 * 1024
PY = "/usr/bin/python3"
DEADLINE_LAG: dict[str, list[float]] = {"bubblewrap": [], "gvisor": []}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def cpu_now() -> float:
    """CPU-seconds of this process and of its waited-for children (and theirs)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class OwnCgroup:
    """This process in a cgroup of its own, so that its CPU and its children's count once.
    rusage counts the whole of `runsc run --detach`, including the part after it joined
    the sandbox's cgroup, which that cgroup counts too; here `runsc run` counts in this
    cgroup until it joins the sandbox's and there after, `runsc delete` here."""

    def __init__(self) -> None:
        version = cgroups.cgroup_version()
        controller = "cpuacct" if version == 1 else ""
        base = cgroups.CGROUP_ROOT / controller if controller else cgroups.CGROUP_ROOT
        origin = "/"
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            if (controller in names.split(",")) if controller else names == "":
                origin = path
        self.origin = base / origin.lstrip("/")
        self.dir = base / f"garrison-bench-{os.getpid()}"
        self.version = version
        self.dir.mkdir(exist_ok=True)
        (self.dir / "cgroup.procs").write_text(str(os.getpid()))

    def seconds(self) -> float:
        if self.version == 1:
            return int((self.dir / "cpuacct.usage").read_text()) / 1e9
        stat = dict(line.split() for line in (self.dir / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"]) / 1e6

    def close(self) -> None:
        (self.origin / "cgroup.procs").write_text(str(os.getpid()))
        for _ in range(50):
            try:
                self.dir.rmdir()
                return
            except OSError:
                time.sleep(0.05)


def own_cgroup() -> OwnCgroup | None:
    try:
        return OwnCgroup() if os.geteuid() == 0 and cgroups.cgroup_version() else None
    except OSError:
        return None


def spec() -> SandboxSpec:
    return SandboxSpec(new_id("sbx"), Template("python"), 512 * MiB, 1.0, 256, 512 * MiB, 64 * MiB, MiB)


# ------------------------------------------------------------------ raw peers


def raw_bwrap_once() -> float:
    argv = ["bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--uid", "1000", "--gid", "1000", PY, "-I", "-c", "print(1 + 1)"]
    t = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, env={}, check=True,
                         user=65534 if os.geteuid() == 0 else None, group=65534 if os.geteuid() == 0 else None)
    dt = time.perf_counter() - t
    assert out.stdout.strip() == b"2", out
    return dt


def raw_runsc_bundle(root: Path) -> Path:
    bundle = root / "bundle"
    rootfs = bundle / "rootfs"
    for d in ("usr", "proc", "dev", "tmp"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("lib", "usr/lib"), ("lib64", "usr/lib64"), ("bin", "usr/bin")):
        (rootfs / link).symlink_to(target)
    config = {
        "ociVersion": "1.0.2",
        "process": {"terminal": False, "user": {"uid": 1000, "gid": 1000}, "args": [PY, "-I", "-c", "print(1 + 1)"],
                    "env": ["PATH=/usr/bin"], "cwd": "/", "noNewPrivileges": True},
        "root": {"path": str(rootfs), "readonly": True},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
                   {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]}],
        "linux": {"namespaces": [{"type": n} for n in ("pid", "network", "ipc", "uts", "mount")]},
    }
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def raw_runsc_once(root: Path, bundle: Path, i: int) -> float:
    cid = f"bench{os.getpid()}x{i}"
    # The same runsc flags garrison passes (besides its seccomp filter): the ratio is garrison's overhead.
    base = ["runsc", "--root", str(root / "state"), "--network=none", "--platform=ptrace",
            "--file-access-mounts=exclusive", "--cpu-num-from-quota"]
    t = time.perf_counter()
    out = subprocess.run([*base, "run", "--bundle", str(bundle), cid], capture_output=True, check=True)
    dt = time.perf_counter() - t
    assert out.stdout.strip() == b"2", out
    subprocess.run([*base, "delete", "--force", cid], capture_output=True, check=False)
    return dt


# ------------------------------------------------------------------ garrison


async def cold_first_result(backend: Any, n: int, peer: Any, own: OwnCgroup | None = None,
                            exact: list[float] | None = None
                            ) -> tuple[list[float], list[float], float, list[float], list[float],
                                       list[float], list[float]]:
    """Cold create to the first run_code result, each sample paired with one of the raw peer
    (``peer(i)``, run just before it), so both see the same load on a shared machine; the
    previous sandbox's teardown is finished before the next pair starts, for both sides.
    Also: round trips, idle memory with a REPL, and the sandbox's own CPU time (its cgroup)
    to the first result, which does not depend on how loaded the machine is. And the
    CPU-seconds of a whole create (start, first result, kill, teardown) for both sides:
    garrison's is its process, its children (`runsc run`/`delete`, bwrap) and the
    sandbox's cgroup (gVisor's sentry and gofer are not garrison's children), counted
    after the first sample (which compiles the agent). With ``own`` (this process's own
    cgroup) also that figure with every CPU-second counted once, into ``exact``."""
    cold: list[float] = []
    cpu: list[float] = []
    raw: list[float] = []
    rtts: list[float] = []
    create_cpu: list[float] = []
    raw_cpu: list[float] = []
    idle_mem = 0.0
    for i in range(n):
        c0 = cpu_now()
        raw.append(await asyncio.to_thread(peer, i))
        raw_cpu.append(cpu_now() - c0)
        c0 = cpu_now()
        o0 = own.seconds() if own is not None else 0.0
        t = time.perf_counter()
        rt = await SandboxRuntime.start(backend, spec())
        value = await rt.conn.call("run_code", code="1 + 1")
        cold.append(time.perf_counter() - t)
        cpu.append(rt.usage().cpu_seconds)
        assert value["text"] == "2"
        if i > 0:
            await rt.kill()  # waits until the cgroup is empty: its CPU time is final
            in_cgroup = rt.usage().cpu_seconds if isinstance(backend, GVisorBackend) else 0.0
            await rt.destroy()
            create_cpu.append(cpu_now() - c0 + in_cgroup)
            if own is not None and exact is not None:
                exact.append(own.seconds() - o0 + in_cgroup)
            continue
        if i == 0:
            for _ in range(200):
                t = time.perf_counter()
                await rt.conn.call("run_code", code="1")
                rtts.append(time.perf_counter() - t)
            await asyncio.sleep(0.5)
            idle_mem = rt.usage().memory_peak_bytes / MiB
            mem_file = rt.handle.cgroup._file("memory", "memory.usage_in_bytes") if rt.handle.cgroup else None
            if mem_file is not None and mem_file.exists():
                idle_mem = int(mem_file.read_text()) / MiB
        await rt.kill()
        await rt.destroy()
    return cold, rtts, idle_mem, raw, cpu, create_cpu, raw_cpu


def gvisor_sandboxes_cpu() -> float:
    """CPU-seconds of every gVisor sandbox this process started (their cgroups' parent
    counts its children's time, also of children already removed)."""
    version = cgroups.cgroup_version()
    if version == 1:
        return int((cgroups.CGROUP_ROOT / "cpuacct" / GVISOR_CGROUP_PARENT / "cpuacct.usage").read_text()) / 1e9
    stat = dict(line.split() for line in (cgroups.CGROUP_ROOT / GVISOR_CGROUP_PARENT / "cpu.stat").read_text().splitlines())
    return int(stat["usage_usec"]) / 1e6


async def creates_per_second(backend: Any, seconds: float = 5.0, concurrency: int = 4,
                             own: OwnCgroup | None = None) -> tuple[float, float | None]:
    """Sustained creates/s, and with ``own`` (gVisor) the CPU-seconds per create meanwhile,
    all of it counted once: this process and its children (`runsc run`, `runsc delete`)
    and the sandboxes' cgroups, teardown included."""
    done = 0
    c0 = own.seconds() + gvisor_sandboxes_cpu() if own is not None else 0.0
    end = time.perf_counter() + seconds
    pending: list[asyncio.Task[Any]] = []

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            rt = await SandboxRuntime.start(backend, spec())
            await rt.conn.call("run_code", code="1")
            done += 1
            await rt.kill()
            pending.append(asyncio.create_task(rt.destroy()))

    t = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    rate = done / (time.perf_counter() - t)
    await asyncio.gather(*pending, return_exceptions=True)
    if own is None:
        return rate, None
    return rate, (own.seconds() + gvisor_sandboxes_cpu() - c0) / max(done, 1)


class _Audit:
    def record(self, *a: Any, **k: Any) -> None:
        return None


class _Policy:
    async def check(self, *a: Any, **k: Any) -> None:
        return None


class _Platform:
    """The parts of the Platform the service calls (audit batched, policy allow) and a real
    database: each create writes its sandbox record, as in garrison."""

    services: dict[str, Any] = {}
    audit = _Audit()
    policy = _Policy()

    def __init__(self, db: Any = None) -> None:
        self.db = db


async def sqlite_db(data_dir: Path) -> Any:
    from garrison.db import Database
    from garrison.db.migrate import upgrade

    url = f"sqlite+aiosqlite:///{data_dir / 'garrison.db'}"
    await asyncio.to_thread(upgrade, url)
    return Database(url)


async def wait_ready(pool: Any) -> None:
    """Claims are measured when a warm sandbox is there (the pool refills between claims)."""
    for _ in range(3000):
        if pool.ready:
            return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"the warm pool never refilled: {pool.last_error}")


async def warm_claims(backend_name: str, n: int, data_dir: Path) -> list[float]:
    db = await sqlite_db(data_dir)
    svc = SandboxService(_Platform(db), SandboxSettings(pools=[PoolConfig(backend=backend_name, size=4)],
                                                        self_test=False), data_dir=data_dir)
    await svc.start()
    principal = Principal("bench", "tenant", "service", frozenset({"admin:*"}))
    pool = next(iter(svc.pools.values()))
    times: list[float] = []
    try:
        for _ in range(n):
            await wait_ready(pool)
            t = time.perf_counter()
            sbx = await svc.create(principal, CreateIn(backend=backend_name))  # type: ignore[arg-type]
            await svc.run_code(principal, sbx.id, "1 + 1")
            times.append(time.perf_counter() - t)
            assert sbx.pooled
            await svc.kill(principal, sbx.id)
        for _ in range(5):
            sbx = await svc.create(principal, CreateIn(backend=backend_name, timeout_s=1))  # type: ignore[arg-type]
            await sbx.runtime.conn.closed.wait()  # the deadline kill closes the agent's pipe
            for _ in range(100):  # terminate() records ended_at right after the kill
                if sbx.ended_at is not None:
                    break
                await asyncio.sleep(0.01)
            assert sbx.ended_at is not None
            DEADLINE_LAG[backend_name].append((sbx.ended_at - sbx.expires_at).total_seconds())
    finally:
        await svc.stop()
        await db.dispose()
    return times


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="garrison-bench-"))
    try:
        if shutil.which("bwrap"):
            b = BubblewrapBackend(tmp / "bwrap")
            cold, rtts, mem, raw, cpu, _, _ = await cold_first_result(b, args.n, lambda i: raw_bwrap_once())
            warm = await warm_claims("bubblewrap", args.n * 5, tmp / "pool-bwrap")
            rate, _ = await creates_per_second(b)
            rows += [
                {"metric": "bwrap cold start to first result p50", "garrison": ms(statistics.median(cold)),
                 "peer": ms(statistics.median(raw)), "ratio": statistics.median(cold) / statistics.median(raw),
                 "peer_name": "raw bwrap + python -c"},
                {"metric": "bwrap sandbox CPU time to first result p50", "garrison": ms(statistics.median(cpu)),
                 "peer": "-", "ratio": None},
                {"metric": "bwrap warm-pool claim to first result p50 / p99", "garrison":
                    f"{ms(statistics.median(warm))} / {ms(pct(warm, 99))}", "peer": "-", "ratio": None},
                {"metric": "bwrap call round trip p50", "garrison": ms(statistics.median(rtts)), "peer": "-", "ratio": None},
                {"metric": "bwrap idle sandbox with Python REPL", "garrison": f"{mem:.1f} MiB", "peer": "-", "ratio": None},
                {"metric": "bwrap creates/s (4 concurrent, 2 cores)", "garrison": f"{rate:.1f}", "peer": "-", "ratio": None},
                {"metric": "bwrap deadline to kill, max of 5", "garrison": ms(max(DEADLINE_LAG["bubblewrap"])),
                 "peer": "-", "ratio": None},
            ]
        if shutil.which("runsc"):
            bundle = raw_runsc_bundle(tmp / "raw-runsc")
            n = max(5, args.n // 2)
            g = GVisorBackend(tmp / "gvisor")
            own, exact = own_cgroup(), list[float]()
            try:
                cold, rtts, mem, raw, cpu, create_cpu, raw_cpu = await cold_first_result(
                    g, n, lambda i: raw_runsc_once(tmp / "raw-runsc", bundle, i), own, exact)
                warm = await warm_claims("gvisor", n * 3, tmp / "pool-gvisor")
                rate, cpu2 = await creates_per_second(g, concurrency=2, own=own)
                rate4, cpu4 = await creates_per_second(g, concurrency=4, own=own)
                rate8, cpu8 = await creates_per_second(g, concurrency=8, own=own)
            finally:
                if own is not None:
                    own.close()
            per_create, per_raw = statistics.median(create_cpu), statistics.median(raw_cpu)
            rows += [
                {"metric": "gVisor cold create to first result p50", "garrison": ms(statistics.median(cold)),
                 "peer": ms(statistics.median(raw)), "ratio": statistics.median(cold) / statistics.median(raw),
                 "peer_name": "raw runsc run + python -c"},
                {"metric": "gVisor sandbox CPU time to first result p50", "garrison": ms(statistics.median(cpu)),
                 "peer": "-", "ratio": None},
                {"metric": "gVisor warm-pool claim to first result p50 / p99", "garrison":
                    f"{ms(statistics.median(warm))} / {ms(pct(warm, 99))}", "peer": "-", "ratio": None},
                {"metric": "gVisor call round trip p50", "garrison": ms(statistics.median(rtts)), "peer": "-", "ratio": None},
                {"metric": "gVisor idle sandbox with Python REPL", "garrison": f"{mem:.1f} MiB", "peer": "-", "ratio": None},
                {"metric": "gVisor creates/s (2 concurrent, 2 cores)", "garrison": f"{rate:.1f}", "peer": "-", "ratio": None},
                {"metric": "gVisor creates/s (4 concurrent, 2 cores)", "garrison": f"{rate4:.1f}", "peer": "-", "ratio": None},
                {"metric": "gVisor creates/s (8 concurrent, 2 cores)", "garrison": f"{rate8:.1f}", "peer": "-", "ratio": None},
                {"metric": "gVisor CPU-s per create, all processes, p50", "garrison": f"{per_create:.3f}",
                 "peer": f"{per_raw:.3f}", "ratio": per_create / per_raw, "peer_name": "raw runsc run + delete"},
                {"metric": "gVisor creates/s ceiling on 2 idle cores (2 / CPU-s)", "garrison": f"{2 / per_create:.1f}",
                 "peer": f"{2 / per_raw:.1f}", "ratio": None},
            ]
            if cpu2 is not None and cpu4 is not None and cpu8 is not None:
                rows.append({"metric": "gVisor CPU-s per create while sustained, 2 / 4 / 8 concurrent",
                             "garrison": f"{cpu2:.3f} / {cpu4:.3f} / {cpu8:.3f}", "peer": "-", "ratio": None})
            if exact:
                per_exact = statistics.median(exact)
                rows += [
                    {"metric": "gVisor CPU-s per create, each counted once, p50", "garrison": f"{per_exact:.3f}",
                     "peer": f"{per_raw:.3f}", "ratio": per_exact / per_raw, "peer_name": "raw runsc run + delete"},
                    {"metric": "gVisor creates/s ceiling, counted once (2 / CPU-s)", "garrison": f"{2 / per_exact:.1f}",
                     "peer": f"{2 / per_raw:.1f}", "ratio": None},
                ]
            rows += [
                {"metric": "gVisor deadline to kill, max of 5", "garrison": ms(max(DEADLINE_LAG["gvisor"])),
                 "peer": "-", "ratio": None},
            ]
    finally:
        await asyncio.sleep(2)  # let background `runsc delete`s finish
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()
    print("load average before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f}".format(*load_before, *load_after))
    print(f"{'metric':55} {'garrison':>22} {'peer':>12} {'ratio':>6}")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        print(f"{r['metric']:55} {r['garrison']:>22} {r['peer']:>12} {ratio:>6}")
    if args.json:
        args.json.write_text(json.dumps({"load_before": load_before, "load_after": load_after, "rows": rows}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
