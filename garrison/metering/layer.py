"""Wiring of metering into the platform (see docs/layers.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from garrison.metering.service import MeteringService

if TYPE_CHECKING:
    from garrison.platform import Platform

NAME = "metering"


async def start(platform: Platform) -> MeteringService:
    service = MeteringService(platform.db, platform.settings.data_dir / "metering",
                              redis_url=platform.settings.redis_url)
    await service.start()
    return service


async def stop(service: Any) -> None:
    await service.stop()


def routers() -> list[APIRouter]:
    from garrison.metering.api import router

    return [router]
