"""bubblewrap backend: Linux namespaces around the agent, isolation level ``process``.

Traps handled here (found by testing on this kind of machine):
- bwrap run as root with ``--uid`` is host root inside, so bwrap is started as an
  unprivileged host user: a distinct uid per sandbox, from a reserved range.
- the sandbox can read bwrap's own environment through /proc/1/environ, so bwrap
  starts with an EMPTY environment and the sandbox's variables are set with --setenv.
- a writable tmpfs root would let code write anywhere: the root is remounted read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import threading
from pathlib import Path

from garrison.sandbox import cgroups
from garrison.sandbox.agent_code import agent_files, source_files
from garrison.sandbox.backends.base import (
    SANDBOX_GID,
    SANDBOX_UID,
    Backend,
    BackendError,
    SandboxHandle,
    SandboxSpec,
    pid_alive,
)
from garrison.sandbox.protocol import MAX_LINE
from garrison.sandbox.seccomp import seccomp_filter_fd

# Per garrison process, so a second garrison on the same host never touches ours.
CGROUP_PARENT = f"garrison/bwrap-{os.getpid()}"

ETC_FILES = {
    "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:{SANDBOX_UID}:{SANDBOX_GID}:sandbox:/workspace:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "group": f"root:x:0:\nsandbox:x:{SANDBOX_GID}:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1 localhost sandbox\n::1 localhost\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
}


TEMPLATE_CACHE = Path("/var/cache/garrison/sandbox-templates")


def _world_reachable(path: Path) -> bool:
    return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents])


def reachable_copy(site_packages: Path, fingerprint: str) -> Path:
    """The template's packages at a path the unprivileged sandbox uid can reach: as is when
    every parent is world-traversable, else a read-only copy in a root-owned cache."""
    if os.geteuid() != 0 or _world_reachable(site_packages):
        return site_packages
    stamp = str(int(site_packages.stat().st_mtime_ns))
    target = TEMPLATE_CACHE / f"{fingerprint}-{stamp}"
    if not target.is_dir():
        tmp = TEMPLATE_CACHE / f".{fingerprint}-{stamp}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(site_packages, tmp, symlinks=True)
        for p in [tmp, *tmp.rglob("*")]:
            if not p.is_symlink():
                p.chmod(0o755 if p.is_dir() else 0o644)
        for p in [TEMPLATE_CACHE, TEMPLATE_CACHE.parent]:
            p.chmod(0o755)
        try:
            tmp.rename(target)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class HostUidPool:
    """Distinct unprivileged host uids, one per live sandbox, so two sandboxes never
    share a host identity (rlimits such as RLIMIT_NPROC count per uid)."""

    def __init__(self, base: int, count: int) -> None:
        self.free = list(range(base, base + count))
        self.lock = threading.Lock()

    def take(self) -> int:
        with self.lock:
            if not self.free:
                raise BackendError("no free sandbox host uid left; raise sandbox uid_count")
            return self.free.pop(0)

    def give(self, uid: int) -> None:
        with self.lock:
            self.free.append(uid)


class BubblewrapHandle(SandboxHandle):
    def __init__(self, proc: asyncio.subprocess.Process, cgroup: cgroups.Cgroup | None,
                 uid_pool: HostUidPool | None, host_uid: int | None) -> None:
        assert proc.stdout is not None and proc.stdin is not None
        super().__init__(proc.stdout, proc.stdin, cgroup)
        self.proc = proc
        self.uid_pool = uid_pool
        self.host_uid = host_uid

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.kill_all)
        # Reap bwrap now, so no zombie of it outlives the kill.
        with contextlib.suppress(TimeoutError, ProcessLookupError, ChildProcessError):
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), 1.0)

    async def destroy(self) -> None:
        await self.kill()
        self.close_pipes()
        with contextlib.suppress(ProcessLookupError, ChildProcessError, TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5.0)
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.remove)
        if self.uid_pool is not None and self.host_uid is not None:
            self.uid_pool.give(self.host_uid)
            self.host_uid = None

    def host_pids(self) -> list[int]:
        pids = super().host_pids()
        if self.proc.returncode is None and self.proc.pid not in pids:
            pids.append(self.proc.pid)
        return pids


class BubblewrapBackend(Backend):
    name = "bubblewrap"
    isolation = "process"

    def __init__(self, state_dir: Path, uid_base: int = 200_000, uid_count: int = 10_000,
                 require_cgroups: bool = True) -> None:
        self.bwrap = shutil.which("bwrap") or "/usr/bin/bwrap"
        self.state_dir = state_dir
        self.uid_pool = HostUidPool(uid_base, uid_count) if os.geteuid() == 0 else None
        self.require_cgroups = require_cgroups
        self._agent_bytes: dict[str, list[tuple[str, bytes]]] = {}

    def check(self) -> tuple[bool, str]:
        if not os.path.exists(self.bwrap):
            return False, "bwrap is not installed (apt-get install bubblewrap)"
        ok, why = cgroups.usable()
        if not ok and self.require_cgroups:
            return False, f"cannot enforce memory/CPU/pids limits: {why}"
        return True, "bubblewrap " + ("with cgroups" if ok else "without cgroups")

    def _agent(self, python: str) -> list[tuple[str, bytes]]:
        """Where the agent's modules go in the sandbox and their bytes, the entry point
        first: precompiled bytecode for this interpreter when it could be made (no compile
        at each start), else the sources."""
        if python not in self._agent_bytes:
            self._agent_bytes[python] = [(dest, host.read_bytes())
                                         for dest, host in agent_files(python, self.state_dir / "agent")]
        return self._agent_bytes[python]

    def _data_fds(self, agent: list[tuple[str, bytes]] | None = None) -> dict[str, int]:
        """/etc files and the agent as in-memory files handed to bwrap (--ro-bind-data), so
        nothing on the host has to be readable by the unprivileged sandbox user. The
        agent's entry point is the first of them (dicts keep insertion order)."""
        files = {dest: code for dest, code in agent or [(d, h.read_bytes()) for d, h in source_files()]}
        files.update({f"/etc/{name}": text.encode() for name, text in ETC_FILES.items()})
        fds = {}
        for dest, data in files.items():
            fd = os.memfd_create("garrison-sbx", 0)
            os.write(fd, data)
            os.lseek(fd, 0, os.SEEK_SET)
            fds[dest] = fd
        return fds

    def argv(self, spec: SandboxSpec, seccomp_fd: int | None, data_fds: dict[str, int]) -> list[str]:
        t = spec.template
        args = [
            self.bwrap,
            "--unshare-all", "--unshare-user", "--disable-userns",
            "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID), "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
            "--proc", "/proc", "--dev", "/dev",
            "--perms", "0755", "--size", str(spec.workspace_bytes), "--tmpfs", "/workspace",
            "--perms", "1777", "--size", str(spec.tmp_bytes), "--tmpfs", "/tmp",
        ]
        for dest, fd in data_fds.items():
            args += ["--perms", "0444", "--ro-bind-data", str(fd), dest]
        if t.site_packages is not None:
            args += ["--ro-bind", str(reachable_copy(t.site_packages, t.fingerprint())), "/opt/garrison/site-packages"]
        args += ["--size", str(min(spec.tmp_bytes, 64 * 1024 * 1024)), "--tmpfs", "/dev/shm",
                 "--remount-ro", "/dev", "--remount-ro", "/"]
        for key, value in spec.sandbox_env().items():
            args += ["--setenv", key, value]
        if seccomp_fd is not None:
            args += ["--seccomp", str(seccomp_fd)]
        agent = next(iter(data_fds))  # the entry point (see _data_fds)
        args += ["--chdir", "/workspace", "--", t.python, "-I", "-S", "-u", agent]
        return args

    async def start(self, spec: SandboxSpec) -> SandboxHandle:
        ok, why = self.check()
        if not ok:
            raise BackendError(why)
        cg: cgroups.Cgroup | None = None
        if cgroups.usable()[0]:
            cg = cgroups.Cgroup(spec.sandbox_id, parent=CGROUP_PARENT)
            limits = cgroups.Limits(spec.memory_bytes, spec.cpus, spec.pids)
            try:
                await asyncio.to_thread(cg.create, limits)
            except (cgroups.CgroupError, OSError) as exc:
                await asyncio.to_thread(cg.remove)
                raise BackendError(f"could not enforce the sandbox limits: {exc}") from exc
        if spec.template.site_packages is not None:  # a first use may copy: not on the loop
            await asyncio.to_thread(reachable_copy, spec.template.site_packages, spec.template.fingerprint())
        if spec.template.python not in self._agent_bytes:  # first use compiles: not on the loop
            await asyncio.to_thread(self._agent, spec.template.python)
        host_uid = self.uid_pool.take() if self.uid_pool is not None else None
        seccomp_fd = seccomp_filter_fd()
        data_fds = self._data_fds(self._agent(spec.template.python))
        pass_fds = tuple(data_fds.values()) + ((seccomp_fd,) if seccomp_fd is not None else ())
        nproc = spec.pids
        fsize = max(spec.workspace_bytes, spec.tmp_bytes)

        def in_child() -> None:
            # Between fork and exec: join the cgroup first, then lower limits, then
            # drop to the unprivileged host uid. Only plain syscalls here.
            if cg is not None:
                cg.add_self()
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            if host_uid is not None:
                resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
                os.setgroups([])
                os.setresgid(host_uid, host_uid, host_uid)
                os.setresuid(host_uid, host_uid, host_uid)

        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv(spec, seccomp_fd, data_fds),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env={},  # never the host's environment
                cwd="/",
                preexec_fn=in_child,
                pass_fds=pass_fds,
                limit=MAX_LINE,
            )
        except OSError as exc:
            if host_uid is not None and self.uid_pool is not None:
                self.uid_pool.give(host_uid)
            if cg is not None:
                await asyncio.to_thread(cg.remove)
            raise BackendError(f"could not start bwrap: {exc}") from exc
        finally:
            for fd in pass_fds:
                os.close(fd)
        return BubblewrapHandle(proc, cg, self.uid_pool, host_uid)

    async def cleanup_leftovers(self) -> None:
        """Kills sandboxes whose garrison process died (its cgroup parent names its pid)."""
        if not cgroups.usable()[0]:
            return
        version = cgroups.cgroup_version()
        base = cgroups.CGROUP_ROOT / ("garrison" if version == 2 else "pids/garrison")
        if not base.is_dir():
            return
        for parent in base.iterdir():
            if not parent.name.startswith("bwrap-"):
                continue
            pid = int(parent.name.split("-", 1)[1] or 0)
            if pid == os.getpid() or pid_alive(pid):
                continue
            for child in parent.iterdir():
                if child.is_dir():
                    cg = cgroups.Cgroup(child.name, parent=f"garrison/{parent.name}")
                    await asyncio.to_thread(cg.kill_all)
                    await asyncio.to_thread(cg.remove)
            for ctrl_parent in cgroups.Cgroup("x", parent=f"garrison/{parent.name}").dirs().values():
                with contextlib.suppress(OSError):
                    ctrl_parent.parent.rmdir()
