"""The in-sandbox agent on each real backend: code, commands, files."""

from __future__ import annotations

import asyncio
import base64

import pytest

from garrison.sandbox.protocol import AgentFailure
from tests.sandbox.helpers import Runtimes, code


async def test_stateful_python_with_last_expression_and_traceback(rts: Runtimes) -> None:
    rt = await rts.start()
    first = await code(rt, "x = 40\nprint('hello')\nx + 2")
    assert first["stdout"] == "hello\n"
    assert first["text"] == "42"
    assert first["error"] is None
    second = await code(rt, "x += 1\nx")
    assert second["text"] == "41"
    failed = await code(rt, "def f():\n    return 1/0\nf()")
    assert failed["error"]["name"] == "ZeroDivisionError"
    assert 'File "<cell>", line 2, in f' in failed["error"]["traceback"]
    assert "agent.py" not in failed["error"]["traceback"]
    syntax = await code(rt, "def (")
    assert syntax["error"]["name"] == "SyntaxError"


async def test_contexts_are_separate(rts: Runtimes) -> None:
    rt = await rts.start()
    ctx = (await rt.conn.call("create_context"))["context"]
    await rt.conn.call("run_code", code="y = 'default'")
    await rt.conn.call("run_code", code="y = 'other'", context=ctx)
    assert (await rt.conn.call("run_code", code="y"))["text"] == "'default'"
    assert (await rt.conn.call("run_code", code="y", context=ctx))["text"] == "'other'"
    with pytest.raises(AgentFailure) as err:
        await rt.conn.call("run_code", code="1", context="nope")
    assert err.value.kind == "NotFound"


async def test_streamed_output_and_output_cap(rts: Runtimes) -> None:
    rt = await rts.start(output_cap=4096)
    events: list[tuple[str, str]] = []
    out = await rt.conn.call("run_code", code="import sys\nprint('a')\nprint('b', file=sys.stderr)",
                             on_event=lambda k, d: events.append((k, d)))
    assert ("stdout", "a") in [(k, d.strip()) for k, d in events]
    assert ("stderr", "b") in [(k, d.strip()) for k, d in events]
    assert out["stderr"] == "b\n"
    big = await code(rt, "print('x' * 10000)")
    assert big["stdout_truncated"] is True
    assert len(big["stdout"]) == 4096


async def test_commands_exit_code_stream_and_timeout(rts: Runtimes) -> None:
    rt = await rts.start()
    events: list[tuple[str, str]] = []
    out = await rt.conn.call("command", cmd="echo out; echo err >&2; exit 3", on_event=lambda k, d: events.append((k, d)))
    assert out["exit_code"] == 3 and out["stdout"] == "out\n" and out["stderr"] == "err\n"
    assert ("stdout", "out\n") in events
    argv = await rt.conn.call("command", cmd=["/bin/echo", "a b", "$HOME"])
    assert argv["stdout"] == "a b $HOME\n"
    env = await rt.conn.call("command", cmd="echo $FOO; cat", env={"FOO": "bar"}, stdin="piped")
    assert env["stdout"] == "bar\npiped"
    slow = await rt.conn.call("command", cmd="sleep 30", timeout=0.5)
    assert slow["timed_out"] is True and slow["exit_code"] != 0


async def test_interrupt_stops_a_running_cell(rts: Runtimes) -> None:
    rt = await rts.start()
    rid, fut = rt.conn.send("run_code", code="import time\nwhile True: time.sleep(0.01)")
    await asyncio.sleep(0.3)
    rt.conn.send("interrupt", target=rid)
    result = await asyncio.wait_for(fut, 10)
    assert result["error"]["name"] == "KeyboardInterrupt"
    assert (await code(rt, "1 + 1"))["text"] == "2"


async def test_files_inside_the_workspace(rts: Runtimes) -> None:
    rt = await rts.start()
    data = base64.b64encode(b"hello").decode()
    await rt.conn.call("write", path="dir/a.txt", data=data)
    assert (await rt.conn.call("read", path="/workspace/dir/a.txt"))["data"] == data
    listing = await rt.conn.call("list", path="", depth=2)
    assert {e["path"] for e in listing["entries"]} == {"dir", "dir/a.txt"}
    assert (await code(rt, "open('dir/a.txt').read()"))["text"] == "'hello'"
    await rt.conn.call("remove", path="dir")
    with pytest.raises(AgentFailure) as err:
        await rt.conn.call("read", path="dir/a.txt")
    assert err.value.kind == "NotFound"


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "a/../../x", "/workspace/../etc/passwd"])
async def test_paths_outside_the_workspace_are_refused(rts: Runtimes, path: str) -> None:
    rt = await rts.start()
    with pytest.raises(AgentFailure) as err:
        await rt.conn.call("read", path=path)
    assert err.value.kind == "PathEscape"


async def test_symlinks_planted_by_code_are_never_followed(rts: Runtimes) -> None:
    rt = await rts.start()
    await code(rt, "import os\nos.symlink('/etc', 'link')\nos.symlink('/etc/passwd', 'file')")
    for path in ("link/passwd", "file"):
        with pytest.raises(AgentFailure) as err:
            await rt.conn.call("read", path=path)
        assert err.value.kind == "PathEscape"
    with pytest.raises(AgentFailure) as err:
        await rt.conn.call("write", path="link/x", data="")
    assert err.value.kind == "PathEscape"


async def test_sandbox_identity_and_environment(rts: Runtimes) -> None:
    rt = await rts.start(env={"MY_VAR": "1"})
    out = await code(rt, "import os\n(os.getuid(), os.getgid(), sorted(os.environ))")
    uid, gid, names = eval(out["text"])  # noqa: S307 - our own literal
    assert (uid, gid) == (1000, 1000)
    assert "MY_VAR" in names
    assert not [n for n in names if n.startswith(("GARRISON_SELFTEST", "PYTEST", "VIRTUAL_ENV", "SSH_"))]


async def test_huge_unicode_output_is_capped_and_the_sandbox_survives(rts: Runtimes) -> None:
    rt = await rts.start()
    out = await code(rt, "import sys\nprint('\\U0001F600' * 2_000_000)\nprint('\\x01' * 2_000_000, file=sys.stderr)\n"
                         "'\\U0001F600' * 3_000_000")
    assert out["stdout_truncated"] and out["stderr_truncated"]
    assert len(out["stdout"].encode()) <= 1024 * 1024 and len(out["stderr"].encode()) <= 1024 * 1024
    assert (await code(rt, "'still here'"))["text"] == "'still here'"


async def test_large_file_round_trip_in_chunks(rts: Runtimes) -> None:
    rt = await rts.start()
    payload = bytes(range(256)) * 8192  # 2 MiB
    chunk = 512 * 1024
    for i in range(0, len(payload), chunk):
        await rt.conn.call("write", path="big.bin", append=i > 0, data=base64.b64encode(payload[i:i + chunk]).decode())
    got = b""
    while True:
        part = await rt.conn.call("read", path="big.bin", offset=len(got), length=chunk)
        got += base64.b64decode(part["data"])
        if part["eof"]:
            break
    assert got == payload
