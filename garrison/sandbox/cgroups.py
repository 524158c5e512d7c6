"""A cgroup per sandbox (v1 or v2): memory, CPU quota and pids limits, usage, OOM events.

Each limit is written and then read back: a limit the kernel did not take is an
error, never a silent no-op (the commonest real sandbox bug).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
CPU_PERIOD_US = 100_000


class CgroupError(RuntimeError):
    pass


def cgroup_version() -> int | None:
    """2 for a unified hierarchy with the controllers we need, 1 for v1, None if unusable."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        wanted = {"memory", "pids", "cpu"}
        have = set((CGROUP_ROOT / "cgroup.controllers").read_text().split())
        return 2 if wanted <= have else None
    if all((CGROUP_ROOT / c).is_dir() for c in ("memory", "pids", "cpu")):
        return 1
    return None


def usable() -> tuple[bool, str]:
    version = cgroup_version()
    if version is None:
        return False, "no cgroup v1 or v2 hierarchy with memory, pids and cpu controllers"
    if os.geteuid() != 0:
        return False, "creating cgroups needs root (garrison runs sandboxes from a root service)"
    return True, f"cgroup v{version}"


@dataclass
class Limits:
    memory_bytes: int
    cpus: float
    pids: int


@dataclass
class Usage:
    memory_peak_bytes: int
    cpu_seconds: float
    oom_kills: int
    pids_max_hits: int


class Cgroup:
    """One sandbox's cgroup. ``parent`` is a path relative to each hierarchy root."""

    def __init__(self, name: str, parent: str = "garrison") -> None:
        self.version = cgroup_version()
        if self.version is None:
            raise CgroupError("cgroups are not usable here")
        self.rel = f"{parent}/{name}"
        self.parent = parent

    # -- paths
    def dirs(self) -> dict[str, Path]:
        if self.version == 2:
            return {"unified": CGROUP_ROOT / self.rel}
        return {c: CGROUP_ROOT / c / self.rel for c in V1_CONTROLLERS if (CGROUP_ROOT / c).is_dir()}

    def _file(self, controller: str, name: str) -> Path:
        return self.dirs()["unified" if self.version == 2 else controller] / name

    @staticmethod
    def _write(path: Path, value: str) -> None:
        try:
            path.write_text(value)
        except OSError as exc:
            raise CgroupError(f"could not write {value!r} to {path}: {exc}") from exc

    # -- lifecycle
    def create(self, limits: Limits) -> None:
        if self.version == 2:
            self._enable_v2_controllers()
        for path in self.dirs().values():
            path.mkdir(parents=True, exist_ok=True)
        self.apply(limits)

    def _enable_v2_controllers(self) -> None:
        levels = [CGROUP_ROOT]
        for part in self.parent.split("/"):
            levels.append(levels[-1] / part)
            levels[-1].mkdir(exist_ok=True)
        for level in levels:
            ctl = level / "cgroup.subtree_control"
            enabled = set(ctl.read_text().split())
            for c in ("memory", "pids", "cpu"):
                if c not in enabled:
                    self._write(ctl, f"+{c}")

    def apply(self, limits: Limits) -> None:
        quota = max(1000, int(limits.cpus * CPU_PERIOD_US))
        if self.version == 2:
            self._write(self._file("memory", "memory.max"), str(limits.memory_bytes))
            with contextlib.suppress(CgroupError, FileNotFoundError):
                self._write(self._file("memory", "memory.swap.max"), "0")
            self._write(self._file("cpu", "cpu.max"), f"{quota} {CPU_PERIOD_US}")
            self._write(self._file("pids", "pids.max"), str(limits.pids))
        else:
            self._write(self._file("memory", "memory.limit_in_bytes"), str(limits.memory_bytes))
            memsw = self._file("memory", "memory.memsw.limit_in_bytes")
            if memsw.exists():
                self._write(memsw, str(limits.memory_bytes))
            self._write(self._file("cpu", "cpu.cfs_period_us"), str(CPU_PERIOD_US))
            self._write(self._file("cpu", "cpu.cfs_quota_us"), str(quota))
            self._write(self._file("pids", "pids.max"), str(limits.pids))
        self.verify(limits)

    def read_limits(self) -> Limits:
        if self.version == 2:
            mem = int(self._file("memory", "memory.max").read_text())
            q, p = self._file("cpu", "cpu.max").read_text().split()
            cpus = int(q) / int(p)
        else:
            mem = int(self._file("memory", "memory.limit_in_bytes").read_text())
            cpus = int(self._file("cpu", "cpu.cfs_quota_us").read_text()) / int(
                self._file("cpu", "cpu.cfs_period_us").read_text()
            )
        pids = int(self._file("pids", "pids.max").read_text())
        return Limits(memory_bytes=mem, cpus=cpus, pids=pids)

    def verify(self, limits: Limits) -> None:
        got = self.read_limits()
        page = 4096
        # The kernel rounds memory limits down to a page.
        if abs(got.memory_bytes - limits.memory_bytes) > page or got.pids != limits.pids:
            raise CgroupError(f"cgroup limits not enforced: asked {limits}, kernel has {got}")
        if abs(got.cpus - limits.cpus) > 0.011:
            raise CgroupError(f"cgroup CPU quota not enforced: asked {limits.cpus}, kernel has {got.cpus}")

    def proc_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs().values()]

    def add_self(self) -> None:
        """Moves the calling process in; used between fork and exec (async-signal-safe enough:
        plain writes, no locks)."""
        pid = str(os.getpid()).encode()
        for f in self.proc_files():
            fd = os.open(str(f), os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def pids(self) -> list[int]:
        f = self._file("pids", "cgroup.procs")
        try:
            return [int(x) for x in f.read_text().split()]
        except (FileNotFoundError, ValueError):
            return []
        except OSError as exc:
            if exc.errno == errno.ENODEV:  # the cgroup was removed while we read it: no processes left
                return []
            raise

    def usage(self) -> Usage:
        def read_int(controller: str, name: str) -> int:
            try:
                return int(self._file(controller, name).read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return 0

        def kv(controller: str, name: str) -> dict[str, int]:
            try:
                pairs = [line.split() for line in self._file(controller, name).read_text().splitlines()]
                return {k: int(v) for k, v in pairs if v.lstrip("-").isdigit()}
            except OSError:
                return {}

        if self.version == 2:
            cpu = kv("cpu", "cpu.stat").get("usage_usec", 0) / 1e6
            events = kv("memory", "memory.events")
            return Usage(
                memory_peak_bytes=read_int("memory", "memory.peak"),
                cpu_seconds=cpu,
                oom_kills=events.get("oom_kill", 0),
                pids_max_hits=kv("pids", "pids.events").get("max", 0),
            )
        oom = kv("memory", "memory.oom_control")
        return Usage(
            memory_peak_bytes=read_int("memory", "memory.max_usage_in_bytes"),
            cpu_seconds=read_int("cpuacct", "cpuacct.usage") / 1e9,
            oom_kills=oom.get("oom_kill", 0),
            pids_max_hits=kv("pids", "pids.events").get("max", 0),
        )

    def memory_bytes(self) -> int:
        """Memory charged to the cgroup now (page cache of its tmpfs files included)."""
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        return int(self._file("memory", name).read_text().split()[0])

    def kill_all(self, deadline_s: float = 2.0) -> bool:
        """SIGKILLs every process in the cgroup until it is empty (a fork bomb keeps
        forking while we kill, so loop). True when empty."""
        if self.version == 2:
            kill = self._file("memory", "cgroup.kill")
            if kill.exists():
                with contextlib.suppress(OSError):
                    kill.write_text("1")
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
        return not self.pids()

    def remove(self) -> None:
        """Removes the cgroup dirs (after the processes are gone); retries briefly because
        the kernel frees a cgroup a moment after its last process exits."""
        for path in self.dirs().values():
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
