"""Start and stop a real garrison process (`garrison up`) on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
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


def start_server(data_dir: Path, extra_env: dict[str, str] | None = None, scheme: str = "http",
                 verify: object = False) -> LiveServer:
    port = free_port()
    env = {**os.environ, "GARRISON_DATA_DIR": str(data_dir), "GARRISON_PORT": str(port),
           "GARRISON_HOST": "127.0.0.1", **(extra_env or {})}
    proc = subprocess.Popen([GARRISON, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=data_dir.parent)
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("garrison up exited early:\n" + (proc.stdout.read() if proc.stdout else ""))
        try:
            if httpx.get(url + "/healthz", timeout=1, verify=verify).status_code == 200:  # type: ignore[arg-type]
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("garrison up did not become healthy within 60 s")
    key = (data_dir / "admin.key").read_text().strip()
    return LiveServer(url, data_dir, key, proc, [], env)


def stop_server(server: LiveServer) -> str:
    server.proc.terminate()
    try:
        out, _ = server.proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        out, _ = server.proc.communicate()
    return out or ""
