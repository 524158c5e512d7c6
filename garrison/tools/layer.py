"""Tools layer wiring (see docs/layers.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from garrison.tools.config import ToolsSettings
from garrison.tools.gateway import Gateway
from garrison.tools.service import ToolsService

if TYPE_CHECKING:
    from garrison.platform import Platform

NAME = "tools"


async def start(platform: Platform) -> ToolsService:
    service = ToolsService(platform, platform.db, platform.settings.data_dir, ToolsSettings())
    await service.start()
    service.gateway = Gateway(service)
    await service.gateway.start()
    return service


async def stop(service: ToolsService) -> None:
    if service.gateway is not None:
        await service.gateway.stop()
    await service.stop()


def routers() -> list[APIRouter]:
    from garrison.tools.api import router

    return [router]
