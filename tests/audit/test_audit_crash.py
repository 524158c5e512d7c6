"""kill -9 during audit writes loses no flushed entry, and the chain still verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from garrison.audit.verify import verify

CHILD = textwrap.dedent("""
    import asyncio, sys
    from garrison.config import Settings
    from garrison.platform import Platform

    async def main():
        p = Platform(Settings(data_dir=sys.argv[1], database_url=sys.argv[2], audit_flush_ms=10))
        await p.start()
        i = 0
        while True:
            for _ in range(50):
                p.audit.record(None, "crash:test", f"thing/{i}", tenant_id="t")
                i += 1
            await p.audit.record_now(None, "crash:sync", f"thing/{i}", tenant_id="t")
            i += 1
            print(p.audit.flushed_total, flush=True)

    asyncio.run(main())
""")


@pytest.mark.slow
def test_sigkill_during_writes_loses_no_flushed_entry(tmp_path, db_url):
    data = tmp_path / "crash"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data), db_url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    acknowledged = 0
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acknowledged = int(line)
        if acknowledged > 3000:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert acknowledged > 3000, proc.stderr.read() if proc.stderr else ""
    res = verify(db_url, data / "audit")
    assert res.ok, res.problems
    assert res.entries >= acknowledged  # flushed_total counts every stored entry
