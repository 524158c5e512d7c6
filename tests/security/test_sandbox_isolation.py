"""Isolation of both local sandbox backends (bubblewrap, gVisor), from inside a real sandbox."""

from __future__ import annotations

import ast
import asyncio
import subprocess
from pathlib import Path

import pytest

from garrison.sandbox.protocol import AgentFailure, AgentGone
from tests.sandbox.helpers import Runtimes, code

CANARY = "canary-7f3e9a1c-do-not-leak"


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie holds no memory, files or CPU, only its pid entry)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def probe(rt, source: str):  # type: ignore[no-untyped-def]
    out = await code(rt, source)
    assert out["error"] is None, out["error"]
    return ast.literal_eval(out["text"])


async def test_host_secrets_processes_and_files_are_invisible(rts: Runtimes, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARRISON_CANARY_SECRET", CANARY)
    host_file = tmp_path / "host-secret.txt"
    host_file.write_text(CANARY)
    rt = await rts.start()
    seen = await probe(rt, f"""
import os
leaks = []
for pid in [p for p in os.listdir('/proc') if p.isdigit()] + ['self', 'thread-self']:
    for name in ('environ', 'cmdline'):
        try:
            if {CANARY!r}.encode() in open(f'/proc/{{pid}}/{{name}}', 'rb').read():
                leaks.append((pid, name))
        except OSError:
            pass
leaks += [k for k, v in os.environ.items() if {CANARY!r} in v]
pids = [p for p in os.listdir('/proc') if p.isdigit()]
exists = [p for p in ({str(host_file)!r}, {str(tmp_path)!r}, '/work', '/root', '/home', '/etc/shadow', '/var/run')
          if os.path.exists(p)]
(leaks, len(pids), exists)
""")
    leaks, n_pids, exists = seen
    assert leaks == []
    assert n_pids <= 4, "host processes must not be visible"
    assert exists == []


async def test_writes_outside_the_workspace_fail(rts: Runtimes) -> None:
    rt = await rts.start()
    results = await probe(rt, """
import os
failed = {}
for path in ('/x', '/usr/x', '/etc/passwd', '/opt/garrison/agent.py', '/proc/sys/kernel/hostname', '/dev/x'):
    try:
        with open(path, 'a') as f:
            f.write('x')
        failed[path] = False
    except OSError:
        failed[path] = True
open('/workspace/ok', 'w').write('fine')
open('/tmp/ok', 'w').write('fine')
failed
""")
    assert all(results.values()), results


async def test_no_network_even_to_a_host_loopback_listener(rts: Runtimes) -> None:
    connected = asyncio.Event()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        rt = await rts.start()
        reached = await probe(rt, f"""
import socket
reached = []
for host in ('127.0.0.1', '10.0.2.2', '1.1.1.1', '169.254.169.254'):
    try:
        socket.create_connection((host, {port}), timeout=0.5).close()
        reached.append(host)
    except OSError:
        pass
try:
    socket.getaddrinfo('pypi.org', 443)
    reached.append('dns')
except OSError:
    pass
reached
""")
        assert reached == []
        assert not connected.is_set()
    finally:
        server.close()


async def test_raw_sockets_mount_ptrace_and_unshare_are_denied(rts: Runtimes) -> None:
    rt = await rts.start()
    results = await probe(rt, """
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
res = {}
child = os.fork()
if child == 0:
    import time
    time.sleep(5)
    os._exit(0)
res['ptrace'] = libc.ptrace(16, child, 0, 0)
os.kill(child, 9)
os.waitpid(child, 0)
res['unshare_user'] = libc.unshare(0x10000000)
res['unshare_net'] = libc.unshare(0x40000000)
res['mount'] = libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)
for name, args in (('raw', (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)),
                   ('packet', (socket.AF_PACKET, socket.SOCK_RAW, 0))):
    try:
        socket.socket(*args).close()
        res[name] = 0
    except OSError:
        res[name] = -1
res
""")
    assert results == {k: -1 for k in ("ptrace", "unshare_user", "unshare_net", "mount", "raw", "packet")}


async def test_declared_limits_are_enforced_by_the_kernel(rts: Runtimes) -> None:
    rt = await rts.start(memory_mib=200, cpus=0.5, pids=100)
    assert rt.handle.cgroup is not None
    got = await asyncio.to_thread(rt.handle.cgroup.read_limits)
    extra_mem = 0 if rts.backend.name == "bubblewrap" else 128 * 1024 * 1024
    extra_pids = 0 if rts.backend.name == "bubblewrap" else 64
    assert got.memory_bytes == 200 * 1024 * 1024 + extra_mem
    assert got.pids == 100 + extra_pids
    assert got.cpus == pytest.approx(0.5)


async def test_disk_fill_is_bounded_by_the_workspace_size(rts: Runtimes) -> None:
    rt = await rts.start(workspace_mib=8)
    out = await rt.conn.call("command", cmd="dd if=/dev/zero of=/workspace/fill bs=1M count=64; du -k /workspace/fill")
    assert out["exit_code"] == 0 or "No space left" in out["stderr"] or "File too large" in out["stderr"]
    used_kib = int(out["stdout"].split()[0])
    assert used_kib <= 8 * 1024


async def test_memory_bomb_is_reported_as_oom(rts: Runtimes) -> None:
    rt = await rts.start(memory_mib=96)
    with pytest.raises(AgentGone):
        await code(rt, "blocks = []\nwhile True: blocks.append(bytearray(16 * 1024 * 1024))")
    assert rt.usage().oom_kills >= 1


@pytest.mark.slow
async def test_fork_bomb_is_contained(rts: Runtimes) -> None:
    bystander = await rts.start()
    bomber = await rts.start(pids=64)
    try:
        out = await bomber.conn.call("command", cmd="bomb() { bomb | bomb & }; bomb", timeout=3)
        assert out["exit_code"] is not None
    except AgentFailure as exc:
        # bubblewrap: the pids limit left the agent no thread for the command; it said so.
        assert exc.kind == "PidsExhausted"
    except AgentGone:
        # gVisor: the sentry's own threads hit the host pids limit and the sandbox ends.
        assert bomber.usage().pids_max_hits >= 1
    assert (await code(bystander, "sum(range(10))"))["text"] == "45"
    host = await asyncio.to_thread(subprocess.run, ["/bin/true"], check=False)
    assert host.returncode == 0


async def test_cpu_quota_is_within_ten_percent(rts: Runtimes) -> None:
    rt = await rts.start(cpus=0.5)
    before = rt.usage().cpu_seconds
    loop = "timeout 2 sh -c 'while :; do :; done'"
    started = asyncio.get_running_loop().time()
    out = await rt.conn.call("command", cmd=f"{loop} & {loop} & {loop}; wait", timeout=10)
    wall = asyncio.get_running_loop().time() - started
    assert out["exit_code"] is not None
    used = rt.usage().cpu_seconds - before
    # Three busy loops would use 3 CPUs unconfined; the quota holds them to 0.5 CPU (+10%).
    # (No lower bound: other work on a shared host may leave the sandbox less than its quota.)
    assert 0 < used <= 0.5 * wall * 1.1, (used, wall)


async def test_kill_leaves_no_host_process(rts: Runtimes) -> None:
    rt = await rts.start()
    await rt.conn.call("command", cmd="sleep 100 >/dev/null 2>&1 & sleep 100 >/dev/null 2>&1 & echo started")
    assert rt.handle.host_pids()
    await rt.kill()
    await asyncio.sleep(0)
    left = [p for p in rt.handle.host_pids() if running(p)]
    assert left == []
