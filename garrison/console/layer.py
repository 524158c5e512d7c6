"""Console layer wiring."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

NAME = "console"


async def start(platform: Any) -> None:
    return None


def routers() -> list[APIRouter]:
    from garrison.console.api import router

    return [router]
