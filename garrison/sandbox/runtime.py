"""A started sandbox (backend handle + agent connection) and the tenant's record of it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from garrison.sandbox.backends.base import Backend, SandboxHandle, SandboxSpec
from garrison.sandbox.cgroups import Usage
from garrison.sandbox.protocol import AgentConnection

AGENT_READY_TIMEOUT_S = 30.0


class SandboxRuntime:
    def __init__(self, backend: Backend, spec: SandboxSpec, handle: SandboxHandle, conn: AgentConnection) -> None:
        self.backend = backend
        self.spec = spec
        self.handle = handle
        self.conn = conn
        self.started = time.monotonic()
        self.ready_info: dict[str, Any] = {}
        self.killed = False

    @classmethod
    async def start(cls, backend: Backend, spec: SandboxSpec) -> SandboxRuntime:
        handle = await backend.start(spec)
        conn = AgentConnection(handle.reader, handle.writer)
        rt = cls(backend, spec, handle, conn)
        try:
            rt.ready_info = await asyncio.wait_for(asyncio.shield(conn.ready), AGENT_READY_TIMEOUT_S)
        except BaseException:
            conn.close()
            await handle.destroy()
            raise
        return rt

    def alive(self) -> bool:
        return not self.killed and not self.conn.closed.is_set()

    def usage(self) -> Usage:
        return self.handle.usage()

    async def kill(self) -> None:
        """Fast: every sandbox process gets SIGKILL now."""
        self.killed = True
        await self.handle.kill()
        self.conn.close()

    async def destroy(self) -> None:
        """Slow cleanup (runsc delete, cgroup removal): run it off the request path."""
        self.killed = True
        self.conn.close()
        with contextlib.suppress(Exception):
            await self.handle.destroy()


@dataclass
class Sandbox:
    id: str
    tenant_id: str
    principal_id: str
    template: str
    runtime: SandboxRuntime
    created_at: datetime
    expires_at: datetime
    idle_timeout_s: float
    metadata: dict[str, str]
    pooled: bool
    state: str = "running"
    killed_reason: str | None = None
    ended_at: datetime | None = None
    last_used: float = field(default_factory=time.monotonic)
    final_usage: Usage | None = None
    timer: asyncio.TimerHandle | None = None
    busy: int = 0
    # memory GiB-seconds integrated from cgroup samples (see SandboxService._sample_memory)
    mem_gib_s: float = 0.0
    mem_samples: int = 0
    mem_sampled_at: float = field(default_factory=time.monotonic)
    # the newest queued write of this sandbox's record (SandboxService._persist)
    record_write: asyncio.Task[None] | None = None

    @property
    def backend(self) -> str:
        return self.runtime.backend.name

    @property
    def isolation(self) -> str:
        return self.runtime.backend.isolation
