"""Sandbox layer wiring (see docs/layers.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from garrison.sandbox.config import SandboxSettings
from garrison.sandbox.service import SandboxService

if TYPE_CHECKING:
    from garrison.platform import Platform

NAME = "sandbox"


async def start(platform: Platform) -> SandboxService:
    service = SandboxService(platform, SandboxSettings())
    await service.start()
    return service


async def stop(service: SandboxService) -> None:
    await service.stop()


def routers() -> list[APIRouter]:
    from garrison.sandbox.api import router

    return [router]


def body_limits() -> list[tuple[str, int]]:
    """File and archive uploads read their body against the sandbox upload cap themselves."""
    cap = SandboxSettings().upload_cap_bytes
    return [(r"^/api/sandboxes/[^/]+/files(/archive)?$", cap)]
