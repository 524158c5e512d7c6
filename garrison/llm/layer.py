"""Wiring of the LLM gateway into the platform (see docs/layers.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from garrison.llm.service import LLMService
from garrison.llm.settings import LLMSettings

if TYPE_CHECKING:
    from garrison.platform import Platform

NAME = "llm"


async def start(platform: Platform) -> LLMService:
    service = LLMService(
        platform.db,
        settings=LLMSettings(),
        redis_url=platform.settings.redis_url,
        metering=platform.services.get("metering"),
        policy=platform.policy,
        audit=platform.audit,
    )
    await service.start()
    return service


async def stop(service: Any) -> None:
    await service.stop()


def routers() -> list[APIRouter]:
    from garrison.llm.api import admin, v1

    return [v1, admin]
