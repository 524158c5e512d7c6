"""Host-side CPU per run_code round trip: the agent over TCP (agent_listen.py, the
kubernetes backend's transport) vs the agent over pipes (the other backends), both as
plain local processes (no sandbox), so only the transport differs. Each is run twice,
alternating; the first pair includes warm-up.

    .venv/bin/python benchmarks/sandbox_agent_transport.py [N]
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from garrison.sandbox.protocol import MAX_LINE, AgentConnection  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "garrison" / "sandbox"
N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000


async def measure(conn: AgentConnection, n: int) -> tuple[float, float]:
    await conn.ready
    for _ in range(50):
        await conn.call("run_code", code="1")
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        await conn.call("run_code", code="1")
    return (time.process_time() - c0) / n * 1e6, (time.perf_counter() - w0) / n * 1e6


async def over_tcp() -> tuple[float, float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_urlsafe(32)
    env = {"PATH": "/usr/bin:/bin", "GARRISON_AGENT_TOKEN": token, "GARRISON_WORKSPACE": tempfile.mkdtemp()}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", "-u", str(SRC / "agent_listen.py"), "--listen", f"127.0.0.1:{port}",
        str(SRC / "agent.py"), env=env)
    for _ in range(200):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=MAX_LINE)
            break
        except OSError:
            await asyncio.sleep(0.05)
    writer.write(token.encode() + b"\n")
    conn = AgentConnection(reader, writer)
    out = await measure(conn, N)
    conn.close()
    await proc.wait()
    return out


async def over_pipes() -> tuple[float, float]:
    env = {"PATH": "/usr/bin:/bin", "GARRISON_WORKSPACE": tempfile.mkdtemp()}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", "-u", str(SRC / "agent.py"), env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=MAX_LINE)
    assert proc.stdout is not None and proc.stdin is not None
    conn = AgentConnection(proc.stdout, proc.stdin)
    out = await measure(conn, N)
    conn.close()
    await proc.wait()
    return out


async def main() -> None:
    for name, run in (("tcp", over_tcp), ("pipes", over_pipes), ("tcp", over_tcp), ("pipes", over_pipes)):
        cpu, wall = await run()
        print(f"{name}: host CPU {cpu:.0f} us/call, wall {wall:.0f} us/call (n={N})")


if __name__ == "__main__":
    asyncio.run(main())
