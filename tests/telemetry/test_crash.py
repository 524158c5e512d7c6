"""kill -9 during ingest loses no span that was acknowledged with 200."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.telemetry.live import free_port
from tests.telemetry.spans import agent_run, new_trace_id, protobuf_request


def _start(data: Path, port: int, database_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GARRISON_DATA_DIR": str(data), "GARRISON_PORT": str(port),
           "GARRISON_DATABASE_URL": database_url}
    code = ("import uvicorn; from garrison.server import create_app; "
            f"uvicorn.run(create_app(), host='127.0.0.1', port={port}, log_level='warning')")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("garrison did not start")


def _stored(backend: str, data: Path, database_url: str) -> dict[str, int]:
    """Spans stored per trace, read after the crash straight from the database."""
    query = "SELECT trace_id, count(*) FROM telemetry_spans GROUP BY trace_id"
    if backend == "sqlite":
        with sqlite3.connect(data / "garrison.db") as conn:
            return dict(conn.execute(query).fetchall())
    import psycopg

    with psycopg.connect("postgresql://" + database_url.split("://", 1)[1]) as conn:
        return {t: int(n) for t, n in conn.execute(query).fetchall()}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_loses_no_acknowledged_span(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    data = tmp_path / "data"
    port = free_port()
    database_url = (f"sqlite:///{data / 'garrison.db'}" if backend == "sqlite"
                    else request.getfixturevalue("pg_url"))
    proc = _start(data, port, database_url)
    key = (data / "admin.key").read_text().strip()
    acked: list[str] = []
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                batch: list[dict] = []  # type: ignore[type-arg]
                ids = [new_trace_id() for _ in range(25)]
                for tid in ids:
                    batch += agent_run(tid)
                try:
                    r = c.post(f"http://127.0.0.1:{port}/v1/traces", content=protobuf_request(batch),
                               headers={"authorization": f"Bearer {key}", "content-type": "application/x-protobuf"})
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    acked.extend(ids)

    senders = [threading.Thread(target=send) for _ in range(3)]
    try:
        for t in senders:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # mid-stream: requests are in flight
        proc.wait(10)
    finally:
        stop.set()
        for t in senders:
            t.join(15)
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 200
    counts = _stored(backend, data, database_url)
    missing = [t for t in acked if t not in counts]
    assert missing == []
    assert all(counts[t] == 4 for t in acked)  # whole batches, never half of one
