"""gVisor backend: an OCI bundle run by ``runsc run --detach``, isolation level ``kernel``.

The bundle has a read-only root, tmpfs /workspace and /tmp, uid 1000, no
capabilities, no_new_privileges, no network, and cgroup limits that leave room for
gVisor's own threads and memory. ``runsc do`` is never used: it runs as root with the
host filesystem and environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from garrison.sandbox import cgroups
from garrison.sandbox.agent_code import SANDBOX_DIR, agent_files
from garrison.sandbox.backends.base import (
    SANDBOX_GID,
    SANDBOX_UID,
    Backend,
    BackendError,
    SandboxHandle,
    SandboxSpec,
    connect_pipes,
    pid_alive,
)
from garrison.sandbox.backends.bubblewrap import ETC_FILES
from garrison.sandbox.protocol import MAX_LINE
from garrison.sandbox.seccomp import DENIED

# gVisor's sentry and gofer are host threads in the sandbox's cgroup, and the sentry's
# own memory is charged there too: the host limits add this room to what is declared.
GVISOR_THREAD_ALLOWANCE = 64
GVISOR_MEMORY_ALLOWANCE = 128 * 1024 * 1024
CGROUP_PARENT = f"garrison/gvisor-{os.getpid()}"
RUNSC_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
DELETE_BATCH_MAX = 32


def bundle_config(spec: SandboxSpec, rootfs: Path, cgroups_path: str | None, agent: str) -> dict[str, Any]:
    """The OCI runtime config for one sandbox. ``agent``: the agent's entry point in the
    sandbox. /etc and the agent are files of the shared read-only root, not bind mounts:
    each bind mount costs every sandbox start ~2.5 ms of CPU (gofer and sentry) here."""
    t = spec.template
    env = [f"{k}={v}" for k, v in spec.sandbox_env().items()]
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777", f"size={spec.tmp_bytes}"]},
        {"destination": "/workspace", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=0755", f"size={spec.workspace_bytes}",
                     f"uid={SANDBOX_UID}", f"gid={SANDBOX_GID}"]},
        {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro", "nosuid", "nodev"]},
    ]
    if t.site_packages is not None:
        mounts.append({"destination": "/opt/garrison/site-packages", "type": "bind",
                       "source": str(t.site_packages), "options": ["rbind", "ro"]})
    no_caps: list[str] = []
    linux: dict[str, Any] = {
        "namespaces": [{"type": n} for n in ("pid", "network", "ipc", "uts", "mount")],
        "resources": {
            "memory": {"limit": spec.memory_bytes + GVISOR_MEMORY_ALLOWANCE, "swap": spec.memory_bytes + GVISOR_MEMORY_ALLOWANCE},
            "cpu": {"quota": int(spec.cpus * cgroups.CPU_PERIOD_US), "period": cgroups.CPU_PERIOD_US},
            "pids": {"limit": spec.pids + GVISOR_THREAD_ALLOWANCE},
        },
        "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
        "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
    }
    if cgroups_path:
        linux["cgroupsPath"] = cgroups_path
    # The same deny list as bubblewrap's, applied by gVisor inside the sandbox (--oci-seccomp).
    linux["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": list(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": SANDBOX_UID, "gid": SANDBOX_GID, "additionalGids": []},
            "args": [t.python, "-I", "-S", "-u", agent],
            "env": env,
            "cwd": "/",
            "capabilities": {k: no_caps for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
            "noNewPrivileges": True,
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
                {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
                {"type": "RLIMIT_NPROC", "hard": spec.pids, "soft": spec.pids},
            ],
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "sandbox",
        "mounts": mounts,
        "linux": linux,
    }


class GVisorHandle(SandboxHandle):
    def __init__(self, backend: GVisorBackend, sandbox_id: str, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, cgroup: cgroups.Cgroup | None, bundle: Path) -> None:
        super().__init__(reader, writer, cgroup)
        self.backend = backend
        self.sandbox_id = sandbox_id
        self.bundle = bundle

    async def kill(self) -> None:
        # Killing the sentry through the cgroup is immediate; `runsc kill` is ~50 ms.
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.kill_all)
        else:
            await self.backend.runsc("kill", "--all", self.sandbox_id, "KILL", check=False)

    async def destroy(self) -> None:
        await self.kill()
        self.close_pipes()
        # `runsc delete` takes over a second: callers run destroy off the request path.
        await self.backend.delete(self.sandbox_id)
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.remove)
        await asyncio.to_thread(self.backend.remove_bundle, self.bundle)


class GVisorBackend(Backend):
    name = "gvisor"
    isolation = "kernel"

    def __init__(self, state_dir: Path, platform: str | None = None) -> None:
        self.runsc_path = shutil.which("runsc") or "/usr/bin/runsc"
        self.state_dir = state_dir
        self.root_dir = state_dir / "runsc-state"
        self.platform = platform  # None: systrap if this runsc has it, else ptrace
        self._rootfs: Path | None = None
        self._agents: dict[tuple[tuple[str, Path], ...], str] = {}
        self._install_lock = threading.Lock()
        self._delete_queue: list[tuple[str, asyncio.Future[None]]] = []
        self._deleter: asyncio.Task[None] | None = None

    def check(self) -> tuple[bool, str]:
        if not os.path.exists(self.runsc_path):
            return False, "runsc is not installed (apt-get install runsc)"
        if os.geteuid() != 0:
            return False, "runsc needs root to create sandboxes with cgroup limits"
        if not cgroups.usable()[0]:
            return False, "no usable cgroup hierarchy for the sandbox limits"
        return True, f"runsc, platform {self.platform or 'auto'}"

    def _global_flags(self) -> list[str]:
        # --file-access-mounts=exclusive: the bind mounts (/usr, /etc, the agent, template
        # packages) are never changed in place while a sandbox runs (templates are replaced
        # by rename), so gVisor may cache their dentries instead of asking the gofer again
        # at every lookup. --cpu-num-from-quota: the sandbox sees the CPUs of its quota, not
        # the host's (fewer sentry threads). Together ~15% less CPU per sandbox start here.
        return ["--root", str(self.root_dir), "--network=none", "--oci-seccomp",
                f"--platform={self.platform or 'ptrace'}", "--file-access-mounts=exclusive",
                "--cpu-num-from-quota"]

    async def runsc(self, *args: str, check: bool = True, limit_s: float = 30) -> subprocess.CompletedProcess[bytes]:
        # An asyncio subprocess, not subprocess.run in a worker thread: `runsc delete` waits
        # ~1.5 s (until the sandbox's zombie is reaped) and the default executor has only
        # cpus + 4 threads, so under sustained creates the deletes held them all and
        # creates/s stalled at ~3.5 with the CPUs half idle.
        argv = [self.runsc_path, *self._global_flags(), *args]
        proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE, env=RUNSC_ENV)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), limit_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise subprocess.TimeoutExpired(argv, limit_s) from None
        rc = proc.returncode if proc.returncode is not None else -1
        if check and rc != 0:
            raise BackendError(f"runsc {args[0]} failed: {err.decode(errors='replace')[-500:]}")
        return subprocess.CompletedProcess(argv, rc, out, err)

    async def delete(self, sandbox_id: str) -> None:
        """`runsc delete --force` of one container, batched with those queued while a delete
        runs (group commit: no delete waits for a batch to fill). One runsc process deletes
        many containers for ~0.003 CPU-s each, where a runsc per container costs ~0.010
        (Go start-up and loading its state), and a delete waits ~1.5 s for the sandbox's
        exit to be reaped, so under sustained creates the batches fill by themselves."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._delete_queue.append((sandbox_id, done))
        task = self._deleter
        if task is None or task.done() or task.get_loop() is not loop:
            self._deleter = loop.create_task(self._delete_batches(), name="runsc-delete")
        await done

    async def _delete_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [(cid, f) for cid, f in self._delete_queue if f.get_loop() is loop][:DELETE_BATCH_MAX]
            if not batch:
                return
            self._delete_queue = [item for item in self._delete_queue if item not in batch]
            ids = list(dict.fromkeys(cid for cid, _ in batch))
            error: BaseException | None = None
            try:
                await self.runsc("delete", "--force", *ids, check=False, limit_s=30 + 2 * len(ids))
                # With --force, runsc stops at the first id it cannot find and answers 0: the
                # containers it still knows after the batch are deleted one by one.
                if len(ids) > 1:
                    for cid in await asyncio.to_thread(self._still_known, ids):
                        await self.runsc("delete", "--force", cid, check=False)
            except (OSError, subprocess.SubprocessError) as exc:
                error = exc
            except BaseException:  # cancelled with the loop: nobody waits forever
                for _, f in batch:
                    f.cancel()
                raise
            for _, f in batch:
                if f.done():  # its waiter was cancelled; the container is deleted all the same
                    continue
                if error is not None:
                    f.set_exception(error)
                else:
                    f.set_result(None)

    def _still_known(self, ids: list[str]) -> list[str]:
        """The ids that runsc's state directory still names (a file or folder per container,
        named by its id first, in every runsc layout)."""
        try:
            names = os.listdir(self.root_dir)
        except OSError:
            return []
        return [cid for cid in ids if any(n == cid or n.startswith((f"{cid}_", f"{cid}.")) for n in names)]

    def _prepare(self) -> Path:
        """The read-only root all sandboxes share, made once per backend."""
        if self._rootfs is None:
            for d in (self.state_dir / "staging", self.state_dir / "trash", self.root_dir):
                d.mkdir(parents=True, exist_ok=True)
            rootfs = self.state_dir / "rootfs"
            for name in ("usr", "proc", "dev", "tmp", "workspace", "etc", "sys", "opt", "opt/garrison",
                         "opt/garrison/site-packages"):
                (rootfs / name).mkdir(parents=True, exist_ok=True)
                (rootfs / name).chmod(0o755)
            for link, target in (("lib", "usr/lib"), ("lib64", "usr/lib64"), ("bin", "usr/bin"), ("sbin", "usr/sbin")):
                if not (rootfs / link).is_symlink():
                    (rootfs / link).symlink_to(target)
            for name, text in ETC_FILES.items():
                _replace(rootfs / "etc" / name, text.encode())
            self._rootfs = rootfs
        return self._rootfs

    def _install_agent(self, rootfs: Path, python: str) -> str:
        """Copies the agent's modules (bytecode for ``python``, else sources) into the shared
        root, in a directory named by their content, written once and never changed (gVisor
        caches the root's files); returns the entry point's path in the sandbox."""
        files = tuple(agent_files(python, self.state_dir / "agent"))
        if files not in self._agents or not (rootfs / self._agents[files].lstrip("/")).is_file():
            digest = hashlib.sha256(b"".join(host.read_bytes() for _, host in files)).hexdigest()[:20]
            where = f"{SANDBOX_DIR}/agent-{digest}"
            target = rootfs / where.lstrip("/")
            if not target.is_dir():
                tmp = target.with_name(f".{target.name}-{os.getpid()}")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(mode=0o755)
                for dest, host in files:
                    _replace(tmp / os.path.basename(dest), host.read_bytes())
                try:
                    tmp.rename(target)
                except OSError:  # another garrison process installed it first
                    shutil.rmtree(tmp, ignore_errors=True)
            self._agents[files] = f"{where}/{os.path.basename(files[0][0])}"
        return self._agents[files]

    async def start(self, spec: SandboxSpec) -> SandboxHandle:
        ok, why = self.check()
        if not ok:
            raise BackendError(why)
        if self.platform is None:
            await self.detect_platform()
        bundle = self.state_dir / "bundles" / spec.sandbox_id
        cg_rel = f"{CGROUP_PARENT}/{spec.sandbox_id}"

        def write_bundle() -> int:
            # Once per backend: the shared read-only rootfs and /etc; once per interpreter:
            # the agent's bytecode. Per sandbox only its config (off the event loop). The
            # bundle is made aside and renamed into place: nobody sees one without its owner.
            with self._install_lock:  # concurrent first starts would write the same files
                rootfs = self._prepare()
                agent = self._install_agent(rootfs, spec.template.python)
            staged = self.state_dir / "staging" / spec.sandbox_id
            staged.mkdir(parents=True)
            (staged / "owner.pid").write_text(str(os.getpid()))
            (staged / "config.json").write_text(json.dumps(bundle_config(spec, rootfs, "/" + cg_rel, agent)))
            bundle.parent.mkdir(exist_ok=True)
            staged.rename(bundle)
            return os.open(bundle / "runsc.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)

        log_fd = await asyncio.to_thread(write_bundle)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        argv = [self.runsc_path, *self._global_flags(), "run", "--detach", "--bundle", str(bundle), spec.sandbox_id]

        try:
            # runsc exits once the sandbox runs; the sandbox keeps the pipe ends we pass.
            # Awaited as an asyncio subprocess (no executor thread held for its ~0.2 s).
            proc = await asyncio.create_subprocess_exec(*argv, stdin=in_r, stdout=out_w, stderr=log_fd,
                                                        close_fds=True, env=RUNSC_ENV)
            rc = await proc.wait()
        finally:
            os.close(in_r)
            os.close(out_w)
            os.close(log_fd)
        reader, writer = await connect_pipes(out_r, in_w, MAX_LINE)
        handle = GVisorHandle(self, spec.sandbox_id, reader, writer,
                              cgroups.Cgroup(spec.sandbox_id, parent=CGROUP_PARENT), bundle)
        if rc != 0:
            log = (bundle / "runsc.log").read_text(errors="replace")[-800:]
            await handle.destroy()
            raise BackendError(f"runsc run failed ({rc}): {log}")
        assert handle.cgroup is not None
        try:
            got = await asyncio.to_thread(handle.cgroup.read_limits)
        except (OSError, ValueError) as exc:
            await handle.destroy()
            raise BackendError(f"cannot read back the sandbox cgroup limits: {exc}") from exc
        want_mem = spec.memory_bytes + GVISOR_MEMORY_ALLOWANCE
        if abs(got.memory_bytes - want_mem) > 4096 or got.pids != spec.pids + GVISOR_THREAD_ALLOWANCE \
                or abs(got.cpus - spec.cpus) > 0.011:
            await handle.destroy()
            raise BackendError(f"runsc did not enforce the declared limits: cgroup has {got}")
        return handle

    async def detect_platform(self) -> str:
        """systrap where this runsc has it (faster), else ptrace (works nested, no KVM)."""
        proc = await asyncio.to_thread(
            subprocess.run, [self.runsc_path, "help", "platforms"], capture_output=True, check=False
        )
        text = (proc.stdout + proc.stderr).decode(errors="replace")
        if "systrap" not in text:
            # Old runsc builds have no `help platforms`: ask for the flag's documentation.
            flags = await asyncio.to_thread(subprocess.run, [self.runsc_path, "flags"], capture_output=True, check=False)
            text = (flags.stdout + flags.stderr).decode(errors="replace")
        self.platform = "systrap" if "systrap" in text else "ptrace"
        return self.platform

    async def cleanup_leftovers(self) -> None:
        """Deletes containers in garrison's runsc root whose garrison process is gone, and
        the empty cgroup parents that dead garrison processes left."""
        await asyncio.to_thread(_remove_dead_cgroup_parents)
        try:
            await self._delete_dead_containers()
        finally:
            # Always, even when runsc failed or timed out: bundles whose container runsc
            # already forgot (a delete that finished just before the SIGKILL of garrison, or
            # one that never started) go too.
            await asyncio.to_thread(self._remove_dead_bundles)

    async def _delete_dead_containers(self) -> None:
        if not await asyncio.to_thread(lambda: self.root_dir.is_dir() and os.path.exists(self.runsc_path)):
            return
        proc = await self.runsc("list", "--format=json", check=False)
        try:
            items = json.loads(proc.stdout or b"[]") or []
        except ValueError:
            return
        for item in items:
            bundle = Path(item.get("bundle") or "")
            try:
                owner = int((bundle / "owner.pid").read_text())
            except (OSError, ValueError):
                owner = 0
            if owner != os.getpid() and not pid_alive(owner) \
                    and bundle.parent == self.state_dir / "bundles":
                cid = item.get("id", "")
                with contextlib.suppress(subprocess.SubprocessError, OSError):  # one stuck container must not stop the rest
                    await self.runsc("kill", "--all", cid, "KILL", check=False)
                    await self.runsc("delete", "--force", cid, check=False)
                await asyncio.to_thread(self.remove_bundle, bundle)

    def remove_bundle(self, bundle: Path) -> None:
        """Moves the bundle out of bundles/ in one rename, then deletes it: nobody sees a
        half-deleted bundle (one without its owner.pid)."""
        trash = self.state_dir / "trash" / f"{bundle.name}-{os.urandom(4).hex()}"
        try:
            trash.parent.mkdir(parents=True, exist_ok=True)
            bundle.rename(trash)
        except OSError:
            trash = bundle
        shutil.rmtree(trash, ignore_errors=True)

    def _remove_dead_bundles(self) -> None:
        for where in ("bundles", "staging", "trash"):
            folder = self.state_dir / where
            if not folder.is_dir():
                continue
            for bundle in folder.iterdir():
                try:
                    owner = int((bundle / "owner.pid").read_text())
                except (OSError, ValueError):
                    owner = 0
                if owner != os.getpid() and not pid_alive(owner):
                    if where == "bundles":
                        self.remove_bundle(bundle)  # out of bundles/ in one rename, as above
                    else:
                        shutil.rmtree(bundle, ignore_errors=True)



def _replace(path: Path, data: bytes) -> None:
    """Writes a file of the shared root readable by the sandbox user, only when it differs
    (sandboxes may be running on it), by rename so no sandbox sees it half-written."""
    with contextlib.suppress(OSError):
        if path.read_bytes() == data and path.stat().st_mode & 0o777 == 0o644:
            return
    tmp = path.with_name(f".{path.name}-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    tmp.rename(path)


def _remove_dead_cgroup_parents() -> None:
    for controller in ("memory", "pids", "cpu", "cpuacct", ""):
        base = cgroups.CGROUP_ROOT / controller / "garrison" if controller else cgroups.CGROUP_ROOT / "garrison"
        if not base.is_dir():
            continue
        for parent in base.glob("gvisor-*"):
            pid = parent.name.split("-", 1)[1]
            if pid.isdigit() and not pid_alive(int(pid)):
                for child in parent.iterdir():
                    if child.is_dir():
                        with contextlib.suppress(OSError):
                            child.rmdir()  # fails, rightly, while processes remain
                with contextlib.suppress(OSError):
                    parent.rmdir()
