"""State layer wiring (see docs/layers.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from garrison.state.service import StateService

if TYPE_CHECKING:
    from garrison.platform import Platform

NAME = "state"


async def start(platform: Platform) -> StateService:
    service = StateService(platform.settings, platform.db)
    service.start_background()
    # Memory strategy jobs: the LLM layer may start after this one, so it is looked up per job.
    service.strategies.start(service.store, lambda: platform.services.get("llm"))
    return service


async def stop(service: StateService) -> None:
    await service.stop()


def routers() -> list[APIRouter]:
    from garrison.state.api import memory_router, state_router

    return [state_router, memory_router]
