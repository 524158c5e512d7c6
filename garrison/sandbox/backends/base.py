"""What every sandbox backend provides: start a sandbox whose first process is the agent."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from garrison.sandbox.cgroups import Cgroup, Usage
from garrison.sandbox.templates import Template

AGENT_PATH = Path(__file__).resolve().parent.parent / "agent.py"
AGENT_IN_SANDBOX = "/opt/garrison/agent.py"
SANDBOX_UID = 1000
SANDBOX_GID = 1000


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BackendError(RuntimeError):
    """A backend could not start or verify a sandbox (the service maps it to BackendUnavailable)."""


@dataclass(frozen=True)
class SandboxSpec:
    sandbox_id: str
    template: Template
    memory_bytes: int
    cpus: float
    pids: int
    workspace_bytes: int
    tmp_bytes: int
    output_cap: int
    env: dict[str, str] = field(default_factory=dict)

    def sandbox_env(self) -> dict[str, str]:
        """The whole environment the agent sees: nothing from the host."""
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/workspace",
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
            "GARRISON_WORKSPACE": "/workspace",
            "GARRISON_OUTPUT_CAP": str(self.output_cap),
            "MPLBACKEND": "Agg",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if self.template.site_packages:
            env["PYTHONPATH"] = "/opt/garrison/site-packages"
        env.update(self.template.env)
        env.update(self.env)
        return env


async def connect_pipes(stdout_r: int, stdin_w: int, limit: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Asyncio streams over raw pipe fds (used where the process that made the sandbox
    exits while the sandbox keeps the pipes, as `runsc run --detach` does)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(stdout_r, "rb", 0))
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(stdin_w, "wb", 0)
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    return reader, writer


class SandboxHandle(abc.ABC):
    """A started sandbox: the agent's pipes, its cgroup, how to kill and clean it up."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | asyncio.WriteTransport,
                 cgroup: Cgroup | None) -> None:
        self.reader = reader
        self.writer = writer
        self.cgroup = cgroup

    def usage(self) -> Usage:
        if self.cgroup is None:
            return Usage(0, 0.0, 0, 0)
        try:
            return self.cgroup.usage()
        except OSError:
            return Usage(0, 0.0, 0, 0)

    def memory_bytes(self) -> int | None:
        """Memory the sandbox's cgroup holds now (None: not measurable)."""
        if self.cgroup is None:
            return None
        try:
            return self.cgroup.memory_bytes()
        except (OSError, ValueError):
            return None

    @abc.abstractmethod
    async def kill(self) -> None:
        """Stops every process of the sandbox now (SIGKILL); fast, on the request path."""

    @abc.abstractmethod
    async def destroy(self) -> None:
        """Releases what is left (state dirs, cgroup); may be slow, run off the request path."""

    def host_pids(self) -> list[int]:
        return self.cgroup.pids() if self.cgroup is not None else []

    def close_pipes(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Backend(abc.ABC):
    name: str
    isolation: str  # "kernel" (gVisor), "process" (bubblewrap), "vm" (Kata)

    @abc.abstractmethod
    def check(self) -> tuple[bool, str]:
        """Whether this backend can run here, and why not."""

    async def self_test(self) -> None:  # noqa: B027 - optional hook
        """Starts a sandbox and verifies its isolation; raises BackendError when it fails."""

    @abc.abstractmethod
    async def start(self, spec: SandboxSpec) -> SandboxHandle: ...

    async def cleanup_leftovers(self) -> None:  # noqa: B027 - optional hook
        """Removes sandboxes left behind by a previous garrison process."""
