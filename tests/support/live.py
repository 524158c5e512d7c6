"""Start and stop a real garrison process (`garrison up`) on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

GARRISON = str(Path(sys.executable).with_name("garrison"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    data_dir: Path
    admin_key: str
    proc: subprocess.Popen[str]
    output: list[str]
    env: dict[str, str]
    log: list[str] = field(default_factory=list)  # the server's output so far
    reader: threading.Thread | None = None


def start_server(data_dir: Path, extra_env: dict[str, str] | None = None, scheme: str = "http",
                 verify: object = False) -> LiveServer:
    port = free_port()
    env = {**os.environ, "GARRISON_DATA_DIR": str(data_dir), "GARRISON_PORT": str(port),
           "GARRISON_HOST": "127.0.0.1", **(extra_env or {})}
    proc = subprocess.Popen([GARRISON, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=data_dir.parent)
    # Read the output as it comes: a server that logs more than a pipe holds (64 KiB, a few
    # dozen tracebacks under a fuzzer) blocks in its next write and stops answering.
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stdout or ()), daemon=True)
    reader.start()
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            reader.join(5)
            raise RuntimeError("garrison up exited early:\n" + "".join(log))
        try:
            if httpx.get(url + "/healthz", timeout=1, verify=verify).status_code == 200:  # type: ignore[arg-type]
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("garrison up did not become healthy within 60 s")
    key = (data_dir / "admin.key").read_text().strip()
    return LiveServer(url, data_dir, key, proc, [], env, log, reader)


def stop_server(server: LiveServer) -> str:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
    if server.reader is not None:
        server.reader.join(10)
    return "".join(server.log)
