"""Prefixed, time-sortable identifiers (``run_01J...``)."""

from __future__ import annotations

import re

from ulid import ULID

_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,15}$")


def new_id(prefix: str) -> str:
    """A new id such as ``key_01JABC...``: the ULID keeps ids sortable by creation time."""
    if not _PREFIX.match(prefix):
        raise ValueError(f"bad id prefix {prefix!r}")
    return f"{prefix}_{ULID()}"
