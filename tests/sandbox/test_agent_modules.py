"""The in-sandbox agent is three modules: the entry point loads agent_relay and
agent_archive at first use, from bytecode or (when compiling failed) from source, on each
real backend; and a cold start imports none of the modules it avoids for start-up cost."""

from __future__ import annotations

import ast
import base64
import io
import tarfile
from pathlib import Path

import pytest

from garrison.sandbox import agent_code
from garrison.sandbox.backends import bubblewrap, gvisor
from tests.sandbox.helpers import Runtimes, code

# What the agent's start-up must not import (each costs milliseconds of CPU under gVisor).
AVOIDED = ("json", "re", "enum", "signal", "ast", "base64", "agent_relay", "agent_archive")


def _tar(files: dict[str, bytes]) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return base64.b64encode(buf.getvalue()).decode()


async def _use_both_extensions(rts: Runtimes, suffix: str) -> None:
    rt = await rts.start()
    loaded = (await code(rt, f"import sys; sorted(m for m in sys.modules if m in {AVOIDED!r})"))["text"]
    assert loaded == "[]", f"the agent's cold start imported {loaded}"
    entry = ast.literal_eval((await code(rt, "__import__('sys').modules['garrison_agent'].__file__"))["text"])
    assert entry.startswith("/opt/garrison/") and entry.endswith("/agent" + suffix), entry
    home = entry.rsplit("/", 1)[0]

    await rt.conn.call("write", path="in.tar", data=_tar({"d/a.txt": b"alpha"}))
    assert (await rt.conn.call("upload_archive", path="up", archive="in.tar", format="tar"))["files"] == 1
    assert (await code(rt, "open('up/d/a.txt').read()"))["text"] == "'alpha'"
    out = await rt.conn.call("download_archive", path="up", archive="out.tar.gz")
    assert out["size"] > 0
    port = (await rt.conn.call("egress_listen", port=0))["port"]
    assert port > 0

    files = (await code(rt, "import sys; {m: sys.modules[m].__file__ for m in ('agent_relay', 'agent_archive')}"))
    assert files["text"] == repr({"agent_relay": f"{home}/agent_relay{suffix}",
                                  "agent_archive": f"{home}/agent_archive{suffix}"})


async def test_extensions_load_from_bytecode(rts: Runtimes) -> None:
    await _use_both_extensions(rts, ".pyc")


async def test_extensions_load_from_source_when_not_compiled(rts: Runtimes, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (gvisor, bubblewrap):
        monkeypatch.setattr(module, "agent_files", lambda python, cache_dir: agent_code.source_files())
    await _use_both_extensions(rts, ".py")


def test_all_modules_compile_to_one_set(tmp_path: Path) -> None:
    files = agent_code.agent_files("/usr/bin/python3", tmp_path)
    assert [dest for dest, _ in files] == [f"/opt/garrison/{m}.pyc" for m in agent_code.AGENT_MODULES]
    assert all(host.is_file() and host.stat().st_mode & 0o004 for _, host in files)
