"""Wiring of the GPU layer into the platform (see docs/layers.md).

Settings of this layer are GARRISON_GPUS_* environment variables (config.py belongs to the
foundation): LAUNCHER (1 to run submitted commands), NODE (this host's node name),
CYCLE_S, STARVATION_S, HALF_LIFE_S and FAIRSHARE_K.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from garrison.gpus.launcher import LocalLauncher
from garrison.gpus.scheduler import SchedulerConfig
from garrison.gpus.service import GpuService

if TYPE_CHECKING:
    from garrison.platform import Platform

NAME = "gpus"


def _number(name: str, default: float, low: float, high: float) -> float:
    raw = os.environ.get(f"GARRISON_GPUS_{name}")
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise ValueError(f"GARRISON_GPUS_{name} must be a number from {low:g} to {high:g}, not {raw!r}")
    return value


async def start(platform: Platform) -> GpuService:
    config = SchedulerConfig(fairshare_k=_number("FAIRSHARE_K", 1.0, 0, 10),
                             usage_half_life_s=_number("HALF_LIFE_S", 3600, 1, 30 * 86400),
                             starvation_s=_number("STARVATION_S", 1800, 1, 7 * 86400))
    service = GpuService(platform, interval_s=_number("CYCLE_S", 1.0, 0.05, 60), config=config)
    if os.environ.get("GARRISON_GPUS_LAUNCHER", "").lower() in ("1", "true", "yes"):
        service.launcher = LocalLauncher(service, platform.settings.data_dir / "gpus" / "logs",
                                         node=os.environ.get("GARRISON_GPUS_NODE") or None)
    await service.start()
    return service


async def stop(service: Any) -> None:
    await service.stop()


def routers() -> list[APIRouter]:
    from garrison.gpus.api import router

    return [router]
