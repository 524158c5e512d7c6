"""Wiring of the GPU layer into the platform (see docs/layers.md)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from garrison.gpus.launcher import LocalLauncher
from garrison.gpus.service import GpuService

if TYPE_CHECKING:
    from garrison.platform import Platform

NAME = "gpus"


async def start(platform: Platform) -> GpuService:
    service = GpuService(platform)
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
