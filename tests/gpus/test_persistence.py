"""A restart puts running work back on its GPUs and keeps pending work queued."""

from __future__ import annotations

from garrison.config import Settings
from garrison.gpus.schemas import InventoryIn, QueuesIn, WorkloadIn
from garrison.platform import Platform

from .conftest import NODES, QUEUES


async def test_restart_restores_running_and_pending_work(settings: Settings) -> None:
    first = Platform(settings)
    await first.start()
    try:
        admin = await first.identity.authenticate(settings.admin_key_path.read_text().strip())
        gpus = first.services["gpus"]
        await gpus.set_inventory(admin, InventoryIn.model_validate({"nodes": NODES}))
        await first.identity.create_tenant("acme")
        await gpus.set_queues(admin, QueuesIn.model_validate({"queues": QUEUES}))
        running = await gpus.submit(admin, WorkloadIn(queue="ops-a", gpus=4, gang_size=2))
        waiting = await gpus.submit(admin, WorkloadIn(queue="ops-a", fraction=0.5))
        await gpus.run_cycle()
        held = [p.gpu for p in (await gpus.get(admin, running.id)).placement]
        assert len(held) == 8
        assert (await gpus.get(admin, waiting.id)).state == "pending"
    finally:
        await first.stop()

    second = Platform(settings)
    await second.start()
    try:
        gpus = second.services["gpus"]
        admin = await second.identity.authenticate(settings.admin_key_path.read_text().strip())
        again = await gpus.get(admin, running.id)
        assert again.state == "running" and [p.gpu for p in again.placement] == held
        assert (await gpus.get(admin, waiting.id)).state == "pending"
        assert gpus.sched.tree.by_name["ops-a"].allocated == 8
        assert len(gpus.sched.cluster.slots) == 8 and gpus.source == "declared"
        await gpus.cancel(admin, running.id)
        await gpus.run_cycle()
        assert (await gpus.get(admin, waiting.id)).state == "running"
    finally:
        await second.stop()
