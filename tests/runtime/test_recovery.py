"""A real `garrison up`, SIGKILLed in the middle of a background run: after restart the run completes
and no completed step runs again. Uses the embedded Temporal dev server (no GARRISON_TEMPORAL_ADDRESS)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from support.live import GARRISON, start_server, stop_server

from runtime.helpers import AGENTS

pytestmark = pytest.mark.slow


def _wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _is_dev_server(proc: Path, db: bytes) -> bool:
    try:
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"start-dev" in cmdline and db in cmdline


def test_sigkill_mid_run_resumes_without_repeating_completed_steps(tmp_path):
    data = tmp_path / "data"
    log = tmp_path / "steps.log"
    env = {"STEPS_LOG": str(log), "STEP_SLEEP_S": "2", "GARRISON_TEMPORAL_ADDRESS": ""}
    server = start_server(data, extra_env=env)
    headers = {"authorization": f"Bearer {server.admin_key}"}
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
            # Deployed with the command line, as a user would.
            cli = lambda *a: subprocess.run([GARRISON, "agents", *a], env=server.env, capture_output=True,  # noqa: E731
                                            text=True, timeout=120)
            done = cli("deploy", str(AGENTS / "steps"))
            assert done.returncode == 0 and "deployed steps version 1" in done.stdout, done.stderr
            shown = json.loads(cli("show", "steps", "--format", "json").stdout)
            assert shown["endpoints"] == {"default": 1} and shown["versions"][0]["graphs"] == ["approval", "steps"]
            assert cli("endpoint", "steps", "7").returncode == 1  # no such version: a clear error, exit 1
            tid = http.post("/threads", json={}).json()["thread_id"]
            run = http.post(f"/threads/{tid}/runs", json={"assistant_id": "steps", "input": {"log": []}}).json()
            _wait_for(lambda: log.exists() and "first" in log.read_text(), 60, "the first step")
            temporal_pid = int((data / "temporal" / "temporal.pid").read_text())
            time.sleep(0.5)  # inside the slow second step
            assert http.get(f"/threads/{tid}/runs/{run['run_id']}").json()["status"] == "running"
    finally:
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
    # The embedded Temporal server dies with garrison (PR_SET_PDEATHSIG), so nothing holds its database.
    _wait_for(lambda: not _pid_alive(temporal_pid), 10, "the Temporal dev server to exit")
    assert log.read_text().split() == ["first"]

    again = start_server(data, extra_env={**env, "GARRISON_LOG_LEVEL": "INFO"})
    try:
        with httpx.Client(base_url=again.url, headers=headers, timeout=30) as http:
            def finished():  # type: ignore[no-untyped-def]
                status = http.get(f"/threads/{tid}/runs/{run['run_id']}").json()["status"]
                return status if status not in ("pending", "running") else None
            assert _wait_for(finished, 60, "the recovered run") == "success"
            state = http.get(f"/threads/{tid}/state").json()
            assert state["values"]["log"] == ["first", "second", "third"]
            # `garrison up` started Temporal before importing the platform, and the runtime used that one.
            db = str((data / "temporal" / "temporal.db").resolve()).encode()
            servers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_dev_server(p, db)]
            assert [int(p.name) for p in servers] == [int((data / "temporal" / "temporal.pid").read_text())]
    finally:
        out = stop_server(again)
    assert "adopting the Temporal dev server started with garrison" in out
    # The step that had completed before the kill ran once; the interrupted one ran to completion once.
    assert log.read_text().split() == ["first", "second", "third"]
