"""Wiring of the GPU layer into the platform (see docs/layers.md).

Settings of this layer (``GpuSettings``, settings.py) are GARRISON_GPUS_* environment
variables, or the same names lower-case without the prefix in ``[gpus]`` of garrison.toml:
LAUNCHER (1 to run submitted commands), NODE (this host's node name), CYCLE_S, STARVATION_S,
HALF_LIFE_S, FAIRSHARE_K and METER_S (how often running work's GPU-seconds go to the
resource meter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from garrison.gpus.launcher import LocalLauncher
from garrison.gpus.scheduler import SchedulerConfig
from garrison.gpus.service import GpuService
from garrison.gpus.settings import GpuSettings

if TYPE_CHECKING:
    from garrison.platform import Platform

NAME = "gpus"


async def start(platform: Platform) -> GpuService:
    gs = GpuSettings()
    config = SchedulerConfig(fairshare_k=gs.fairshare_k, usage_half_life_s=gs.half_life_s,
                             starvation_s=gs.starvation_s)
    service = GpuService(platform, interval_s=gs.cycle_s, config=config, meter_every_s=gs.meter_s)
    if gs.launcher:
        service.launcher = LocalLauncher(service, platform.settings.data_dir / "gpus" / "logs", node=gs.node)
    await service.start()
    return service


async def stop(service: Any) -> None:
    await service.stop()


def routers() -> list[APIRouter]:
    from garrison.gpus.api import router

    return [router]
