"""The E2B-shaped Python client against a real `garrison up`, then SIGKILL of garrison:
no sandbox process may survive it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from garrison.client.sandbox import CommandTimeoutError, PathEscapeError, Sandbox, SandboxGoneError
from tests.sandbox.helpers import BACKENDS, make_backend
from tests.support.live import start_server, stop_server

pytestmark = pytest.mark.slow


def sandbox_processes(data_dir: Path, server_pid: int) -> list[str]:
    """Host processes that belong to this server's sandboxes."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(data_dir) in cmd and ("runsc" in cmd or "bwrap" in cmd):
            found.append(f"{pid}: {cmd[:120]}")
    for ctrl in ("pids", "memory"):
        parent = Path(f"/sys/fs/cgroup/{ctrl}/garrison/bwrap-{server_pid}")
        if parent.is_dir():
            for procs in parent.glob("*/cgroup.procs"):
                found += [f"cgroup {procs.parent.name}: {p}" for p in procs.read_text().split()]
    return found


_GONE = "gone"


def _owner(bundle: Path) -> str | None:
    """The pid in a bundle's owner.pid, None if it has none; ``_GONE`` if the bundle is being deleted
    as we look (the new process deletes its own self-test bundle off the request path)."""
    try:
        return (bundle / "owner.pid").read_text().strip()
    except FileNotFoundError:
        deadline = time.monotonic() + 2
        while bundle.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return None if bundle.exists() else _GONE


def test_client_flow_and_sigkill_leaves_no_sandbox(tmp_path: Path) -> None:
    backends = []
    for name in BACKENDS:
        try:
            make_backend(name, tmp_path / "probe")
            backends.append(name)
        except pytest.skip.Exception:
            continue
    if not backends:
        pytest.skip("no sandbox backend available")
    data = tmp_path / "data"
    data.mkdir()
    server = start_server(data)
    killed = False
    try:
        sandboxes = []
        for backend in backends:
            sbx = Sandbox.create(backend=backend, envs={"NAME": "world"}, api_key=server.admin_key, url=server.url)
            sandboxes.append(sbx)
            assert sbx.info["backend"] == backend
            execution = sbx.run_code("import os\ngreeting = 'hello ' + os.environ['NAME']\ngreeting")
            assert execution.text == "'hello world'" and execution.error is None
            assert sbx.run_code("greeting.upper()").text == "'HELLO WORLD'"
            err = sbx.run_code("raise ValueError('bad')").error
            assert err is not None and err.name == "ValueError"
            chunks: list[str] = []
            res = sbx.commands.run("echo streamed; echo oops >&2; exit 2", on_stdout=chunks.append)
            assert res.exit_code == 2 and "streamed\n" in "".join(chunks) and res.stderr == "oops\n"
            with pytest.raises(CommandTimeoutError):
                sbx.commands.run("sleep 10", timeout=0.3)
            sbx.files.write("notes/a.txt", "text")
            assert sbx.files.read("notes/a.txt") == "text"
            assert [e["name"] for e in sbx.files.list("notes")] == ["a.txt"]
            with pytest.raises(PathEscapeError):
                sbx.files.read("../../etc/shadow")
            ctx = sbx.create_code_context()
            assert sbx.run_code("'greeting' in globals()", context=ctx).text == "False"
            sbx.set_timeout(120)
            assert sbx.is_running()
        done = sandboxes.pop()
        done.kill()
        assert done.info["killed_reason"] == "killed_by_user"
        with pytest.raises(SandboxGoneError):
            done.run_code("1")
        assert sandbox_processes(data, server.proc.pid), "the live sandboxes should have host processes"
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        killed = True
        deadline = time.monotonic() + 10
        left = sandbox_processes(data, server.proc.pid)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = sandbox_processes(data, server.proc.pid)
        assert left == [], f"sandbox processes survived SIGKILL of garrison: {left}"
        # The restart: the dead process's sandboxes are history (killed, garrison_restart),
        # its runsc containers, bundles and cgroups are gone.
        again = start_server(data)
        try:
            for sbx in sandboxes:
                info = Sandbox.connect(sbx.sandbox_id, api_key=again.admin_key, url=again.url).info
                assert info["state"] == "killed" and info["killed_reason"] == "garrison_restart", info
            assert Sandbox.connect(done.sandbox_id, api_key=again.admin_key,
                                   url=again.url).info["killed_reason"] == "killed_by_user"
            runsc_root = data / "sandbox" / "gvisor" / "runsc-state"
            if "gvisor" in backends and runsc_root.is_dir():
                listed = subprocess.run(["runsc", "--root", str(runsc_root), "list", "--format=json"],
                                        capture_output=True, text=True, check=False).stdout
                assert json.loads(listed or "[]") in ([], None), listed
                # Only the new process's own bundles may remain (its start-up self-test's bundle
                # is deleted off the request path, maybe after this check).
                mine = str(again.proc.pid)
                owners = {b.name: _owner(b) for b in (data / "sandbox" / "gvisor" / "bundles").glob("*")}
                left_bundles = {name: owner for name, owner in owners.items() if owner not in (mine, _GONE)}
                assert left_bundles == {}, f"{left_bundles} (garrison before the restart: {server.proc.pid}, after: {mine})"
            for ctrl in ("pids", "memory", "cpu"):
                for kind in ("bwrap", "gvisor"):
                    assert not Path(f"/sys/fs/cgroup/{ctrl}/garrison/{kind}-{server.proc.pid}").exists()
        finally:
            stop_server(again)
    finally:
        if not killed:
            stop_server(server)
