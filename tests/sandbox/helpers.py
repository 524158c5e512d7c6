"""Shared by tests/sandbox and tests/security: real backends, skipped with the reason when
missing, except in CI (GARRISON_REQUIRE_SANDBOX=1) where a missing backend fails."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from garrison.core.ids import new_id
from garrison.sandbox.backends.base import Backend, SandboxSpec
from garrison.sandbox.backends.bubblewrap import BubblewrapBackend
from garrison.sandbox.backends.gvisor import GVisorBackend
from garrison.sandbox.runtime import SandboxRuntime
from garrison.sandbox.templates import Template

REQUIRE = os.environ.get("GARRISON_REQUIRE_SANDBOX") == "1"
BACKENDS = ["bubblewrap", "gvisor"]
MiB = 1024 * 1024


def make_backend(name: str, state_dir: Path) -> Backend:
    backend: Backend = GVisorBackend(state_dir / "gvisor") if name == "gvisor" else BubblewrapBackend(state_dir / "bwrap")
    ok, why = backend.check()
    if not ok:
        if REQUIRE:
            pytest.fail(f"GARRISON_REQUIRE_SANDBOX=1 but the {name} backend is unavailable: {why}")
        pytest.skip(f"{name} backend unavailable: {why}")
    return backend


def spec(memory_mib: int = 256, cpus: float = 1.0, pids: int = 128, workspace_mib: int = 64,
         output_cap: int = MiB, env: dict[str, str] | None = None) -> SandboxSpec:
    return SandboxSpec(sandbox_id=new_id("sbx"), template=Template("python"), memory_bytes=memory_mib * MiB,
                       cpus=cpus, pids=pids, workspace_bytes=workspace_mib * MiB, tmp_bytes=32 * MiB,
                       output_cap=output_cap, env=env or {})


class Runtimes:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.started: list[SandboxRuntime] = []

    async def start(self, **kw: object) -> SandboxRuntime:
        rt = await SandboxRuntime.start(self.backend, spec(**kw))  # type: ignore[arg-type]
        self.started.append(rt)
        return rt

    async def close(self) -> None:
        for rt in self.started:
            with contextlib.suppress(Exception):
                await rt.destroy()


@contextlib.asynccontextmanager
async def runtimes(name: str, state_dir: Path) -> AsyncIterator[Runtimes]:
    rts = Runtimes(make_backend(name, state_dir))
    try:
        yield rts
    finally:
        await rts.close()


async def code(rt: SandboxRuntime, source: str) -> dict:
    return await rt.conn.call("run_code", code=source)
