"""Opaque cursors: base64url of a small JSON document."""

from __future__ import annotations

import base64
import json
from typing import Any

from garrison.core.errors import BadRequest


def encode_cursor(value: dict[str, Any]) -> str:
    raw = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        pad = "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(cursor + pad))
    except Exception as exc:  # any malformed cursor is the client's error
        raise BadRequest("cursor is not valid: pass back the nextCursor value unchanged") from exc
    if not isinstance(value, dict):
        raise BadRequest("cursor is not valid: pass back the nextCursor value unchanged")
    return value
