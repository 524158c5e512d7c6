"""Registry layer wiring (see docs/layers.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from garrison.registry.config import RegistrySettings
from garrison.registry.service import RegistryService

if TYPE_CHECKING:
    from garrison.platform import Platform

NAME = "registry"


async def start(platform: Platform) -> RegistryService:
    service = RegistryService(platform, platform.db, RegistrySettings())
    await service.start()
    return service


async def stop(service: RegistryService) -> None:
    await service.stop()


def routers() -> list[APIRouter]:
    from garrison.registry.admin_api import router as admin_router
    from garrison.registry.api import build_router

    return [build_router("/v0.1"), build_router("/v0"), admin_router]
