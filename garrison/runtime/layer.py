"""Runtime layer wiring (see docs/layers.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from garrison.runtime.service import RuntimeService

if TYPE_CHECKING:
    from garrison.platform import Platform

NAME = "runtime"


async def start(platform: Platform) -> RuntimeService:
    service = RuntimeService(platform)
    await service.start()
    return service


async def stop(service: RuntimeService) -> None:
    await service.stop()


def routers() -> list[APIRouter]:
    from garrison.runtime.agent_protocol import router as agent_protocol_router
    from garrison.runtime.agentcore_api import router as agentcore_router
    from garrison.runtime.api import router
    from garrison.runtime.langgraph_api import router as langgraph_router
    from garrison.runtime.store_api import router as store_router

    return [router, langgraph_router, store_router, agentcore_router, agent_protocol_router]
