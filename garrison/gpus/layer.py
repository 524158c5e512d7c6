"""Wiring of the GPU layer into the platform (see docs/layers.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from garrison.gpus.service import GpuService

if TYPE_CHECKING:
    from garrison.platform import Platform

NAME = "gpus"


async def start(platform: Platform) -> GpuService:
    service = GpuService(platform)
    await service.start()
    return service


async def stop(service: Any) -> None:
    await service.stop()


def routers() -> list[APIRouter]:
    from garrison.gpus.api import router

    return [router]
