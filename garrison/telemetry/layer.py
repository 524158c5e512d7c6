"""Telemetry layer wiring (see docs/layers.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from garrison.telemetry.config import TelemetrySettings
from garrison.telemetry.service import TelemetryService

if TYPE_CHECKING:
    from garrison.platform import Platform

NAME = "telemetry"


async def start(platform: Platform) -> TelemetryService:
    service = TelemetryService(platform.db, TelemetrySettings(), metering=platform.services.get("metering"),
                               audit=platform.audit)
    await service.start()
    return service


async def stop(service: TelemetryService) -> None:
    await service.stop()


def routers() -> list[APIRouter]:
    from garrison.telemetry.api import router

    return [router]
