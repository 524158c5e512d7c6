"""The in-sandbox agent, compiled once per interpreter, so no sandbox compiles it again.

Measured inside gVisor (ptrace platform): compiling agent.py at every start costs
25-50 ms of the agent's start-up, loading the same code object from bytecode under
1 ms. The bytecode is compiled on the host by the template's own interpreter (its
magic number must match), keyed by the agent's content, and cached; when that fails
the sandbox runs the source, as before.
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
# Ends in .pyc: the interpreter runs a file with that suffix as bytecode. Tracebacks
# name this path, which the agent filters out of user tracebacks by its __file__.
AGENT_PYC_IN_SANDBOX = AGENT_IN_SANDBOX + "c"
COMPILE = ("import py_compile, sys; "
           "py_compile.compile(sys.argv[1], cfile=sys.argv[2], dfile=sys.argv[3], doraise=True)")

_lock = threading.Lock()
# Per interpreter, for this process's life (the agent's source changes only with a deploy).
_cache: dict[tuple[str, Path], Path | None] = {}


def _digest(python: str) -> str:
    agent = AGENT_PATH.read_bytes()
    try:
        st = os.stat(os.path.realpath(python))
        interp = f"{os.path.realpath(python)}:{st.st_mtime_ns}:{st.st_size}"
    except OSError:
        interp = python
    return hashlib.sha256(agent + interp.encode()).hexdigest()[:20]


def compiled_agent(python: str, cache_dir: Path) -> Path | None:
    """Bytecode of the agent for ``python`` (None: run the source). Blocking: call it
    from a thread or at preparation, never on the event loop."""
    key = (python, cache_dir)
    if key in _cache:
        hit = _cache[key]
        # A cached path is re-checked: a test's (or an operator's) clean-up may remove it.
        if hit is None or hit.is_file():
            return hit
    with _lock:
        digest = _digest(python)
        target = cache_dir / f"agent-{digest}.pyc"
        result: Path | None = target
        if not target.is_file():
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache_dir / f".agent-{digest}-{os.getpid()}.pyc"
            try:
                subprocess.run([python, "-I", "-S", "-c", COMPILE, str(AGENT_PATH), str(tmp), AGENT_PYC_IN_SANDBOX],
                               env={}, capture_output=True, timeout=60, check=True)
                tmp.chmod(0o644)  # the unprivileged sandbox user reads it
                tmp.rename(target)
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("sandbox agent not precompiled for %s (runs from source): %s", python, exc)
                tmp.unlink(missing_ok=True)
                result = None
        _cache[key] = result
        return result
