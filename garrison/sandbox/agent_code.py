"""The in-sandbox agent's modules, compiled once per interpreter, so no sandbox compiles them.

Measured inside gVisor (ptrace platform): compiling agent.py at every start costs
25-50 ms of the agent's start-up, loading the same code object from bytecode under
1 ms. The bytecode is compiled on the host by the template's own interpreter (its
magic number must match), keyed by the modules' content, and cached; when that fails
the sandbox runs the sources, as before.

The agent is its entry point (``agent.py``) and two extension modules it loads at first
use (``agent_relay.py``, ``agent_archive.py``); all three are bound read-only beside each
other at /opt/garrison, all bytecode or all source, never mixed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import threading
from pathlib import Path

from garrison.sandbox.backends.base import AGENT_IN_SANDBOX, AGENT_PATH

log = logging.getLogger("garrison.sandbox")
AGENT_MODULES = ("agent", "agent_relay", "agent_archive")  # the entry point first
SANDBOX_DIR = os.path.dirname(AGENT_IN_SANDBOX)
# Ends in .pyc: the interpreter runs a file with that suffix as bytecode. Tracebacks
# name this path, which the agent filters out of user tracebacks by its __file__.
AGENT_PYC_IN_SANDBOX = AGENT_IN_SANDBOX + "c"
# argv: triples of (source, bytecode file, name in tracebacks).
COMPILE = ("import py_compile, sys; a = sys.argv[1:]\n"
           "for i in range(0, len(a), 3): py_compile.compile(a[i], cfile=a[i + 1], dfile=a[i + 2], doraise=True)")

_lock = threading.Lock()
# Per interpreter, for this process's life (the agent's source changes only with a deploy).
_cache: dict[tuple[str, Path], list[tuple[str, Path]]] = {}


def _source(name: str) -> Path:
    return AGENT_PATH.parent / f"{name}.py"


def source_files() -> list[tuple[str, Path]]:
    """(path in the sandbox, path on the host) of each agent module's source."""
    return [(f"{SANDBOX_DIR}/{name}.py", _source(name)) for name in AGENT_MODULES]


def _digest(python: str) -> str:
    code = b"".join(_source(name).read_bytes() for name in AGENT_MODULES)
    try:
        st = os.stat(os.path.realpath(python))
        interp = f"{os.path.realpath(python)}:{st.st_mtime_ns}:{st.st_size}"
    except OSError:
        interp = python
    return hashlib.sha256(code + interp.encode()).hexdigest()[:20]


def agent_files(python: str, cache_dir: Path) -> list[tuple[str, Path]]:
    """(path in the sandbox, path on the host) of each agent module, the entry point
    first: bytecode for ``python`` when it could be compiled, else the sources.
    Blocking: call it from a thread or at preparation, never on the event loop."""
    key = (python, cache_dir)
    hit = _cache.get(key)
    # A cached path is re-checked: a test's (or an operator's) clean-up may remove it.
    if hit is not None and all(host.is_file() for _, host in hit):
        return hit
    with _lock:
        digest = _digest(python)
        files = [(f"{SANDBOX_DIR}/{name}.pyc", cache_dir / f"{name}-{digest}.pyc") for name in AGENT_MODULES]
        if not all(target.is_file() for _, target in files):
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmps = [cache_dir / f".{target.name}-{os.getpid()}" for _, target in files]
            argv: list[str] = []
            for name, tmp, (dest, _) in zip(AGENT_MODULES, tmps, files, strict=True):
                argv += [str(_source(name)), str(tmp), dest]
            try:
                subprocess.run([python, "-I", "-S", "-c", COMPILE, *argv],
                               env={}, capture_output=True, timeout=60, check=True)
                for tmp, (_, target) in zip(tmps, files, strict=True):
                    tmp.chmod(0o644)  # the unprivileged sandbox user reads it
                    tmp.rename(target)
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("sandbox agent not precompiled for %s (runs from source): %s", python, exc)
                files = source_files()
            finally:
                for tmp in tmps:
                    tmp.unlink(missing_ok=True)
        _cache[key] = files
        return files


def compiled_agent(python: str, cache_dir: Path) -> Path | None:
    """The entry point's bytecode for ``python`` (None: it runs from source)."""
    dest, host = agent_files(python, cache_dir)[0]
    return host if dest.endswith(".pyc") else None
