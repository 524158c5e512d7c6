"""Start-up self-test: a backend is used only after a real sandbox proved its isolation."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Callable
from typing import Any

from garrison.sandbox.backends.base import SANDBOX_UID, Backend, BackendError, SandboxSpec
from garrison.sandbox.runtime import SandboxRuntime

PROBE = r"""
import os, socket
facts = {"uid": os.getuid(), "env_ok": "GARRISON_SELFTEST_CANARY" not in open("/proc/1/environ").read(),
         "root_ro": False, "net": False, "host_pids": len([p for p in os.listdir("/proc") if p.isdigit()])}
try:
    open("/garrison-selftest", "w")
except OSError:
    facts["root_ro"] = True
try:
    socket.create_connection(("1.1.1.1", 53), timeout=0.5)
    facts["net"] = True
except OSError:
    pass
facts
"""


async def self_test(backend: Backend, spec: SandboxSpec, spawn: Callable[[Any], object], timeout_s: float = 30.0) -> dict[str, object]:
    """Runs a probe in a fresh sandbox: unprivileged uid, no host environment, read-only
    root, no network, no host processes. Raises BackendError on any failure."""
    rt = await asyncio.wait_for(SandboxRuntime.start(backend, spec), timeout_s)
    try:
        value = await asyncio.wait_for(rt.conn.call("run_code", code=PROBE), timeout_s)
        if value.get("error"):
            raise BackendError(f"probe failed: {value['error']}")
        facts = ast.literal_eval(value["text"] or "{}")  # untrusted text: literals only
        problems = []
        if facts.get("uid") != SANDBOX_UID:
            problems.append(f"runs as uid {facts.get('uid')}, not {SANDBOX_UID}")
        if not facts.get("root_ro"):
            problems.append("the root filesystem is writable")
        if facts.get("net"):
            problems.append("the network is reachable")
        if facts.get("host_pids", 99) > 8:
            problems.append(f"{facts.get('host_pids')} processes visible")
        if problems:
            raise BackendError("isolation self-test failed: " + "; ".join(problems))
        return facts
    finally:
        await rt.kill()
        spawn(rt.destroy())
