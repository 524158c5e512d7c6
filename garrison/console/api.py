"""The console shell. It holds no data: every figure it shows comes from the authenticated
API, called from the browser with the key the operator pastes in."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from garrison import __version__

router = APIRouter(tags=["console"])
_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


@lru_cache(maxsize=1)
def _page() -> str:
    return (Path(__file__).with_name("page.html").read_text()).replace("__VERSION__", __version__)


@router.get("/console", response_class=HTMLResponse, include_in_schema=False)
async def console() -> HTMLResponse:
    return HTMLResponse(_page(), headers={"content-security-policy": _CSP, "x-frame-options": "DENY",
                                          "referrer-policy": "no-referrer", "cache-control": "no-store"})
