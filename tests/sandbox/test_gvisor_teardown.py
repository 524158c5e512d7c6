"""gVisor teardown: `runsc delete` runs batched (one runsc for the containers queued while
a delete runs); every container goes, even when runsc does not know one of the batch."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from garrison.sandbox.backends.gvisor import GVisorBackend
from garrison.sandbox.runtime import SandboxRuntime
from tests.sandbox.helpers import make_backend, spec


async def _listed(backend: GVisorBackend) -> list[str]:
    proc = await backend.runsc("list", "--format=json")
    return [item["id"] for item in json.loads(proc.stdout or b"[]") or []]


async def test_a_batch_with_an_unknown_container_deletes_all_the_others(tmp_path: Path) -> None:
    backend = make_backend("gvisor", tmp_path)
    assert isinstance(backend, GVisorBackend)
    rts = [await SandboxRuntime.start(backend, spec()) for _ in range(3)]
    try:
        ids = [rt.spec.sandbox_id for rt in rts]
        assert set(ids) <= set(await _listed(backend))
        for rt in rts:
            await rt.kill()
        # Queued together they go in one batch, an id runsc never had second in it (with
        # --force runsc stops at the first id it cannot find, and answers 0).
        await asyncio.gather(backend.delete(ids[0]), backend.delete("sbx_never_started"),
                             *[backend.delete(cid) for cid in ids[1:]])
        assert await _listed(backend) == []
    finally:
        for rt in rts:
            await rt.destroy()  # a second delete of a deleted container is harmless
    assert await _listed(backend) == []


async def test_concurrent_destroys_leave_no_container_cgroup_or_bundle(tmp_path: Path) -> None:
    backend = make_backend("gvisor", tmp_path)
    assert isinstance(backend, GVisorBackend)
    rts = [await SandboxRuntime.start(backend, spec()) for _ in range(4)]
    for rt in rts:
        assert (await rt.conn.call("run_code", code="6 * 7"))["text"] == "42"
    await asyncio.gather(*[rt.destroy() for rt in rts])
    assert await _listed(backend) == []
    for rt in rts:
        assert rt.handle.cgroup is not None
        assert not any(d.exists() for d in rt.handle.cgroup.dirs().values())
        assert rt.handle.host_pids() == []
    assert list((tmp_path / "gvisor" / "bundles").iterdir()) == []
