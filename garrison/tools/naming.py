"""Namespaced tool names: ``<upstream>__<tool>`` within MCP's 128 characters of [A-Za-z0-9_.-]."""

from __future__ import annotations

import hashlib
import re

MAX_TOOL_NAME = 128
SEPARATOR = "__"
_TOOL_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
UPSTREAM_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def exposed_name(upstream: str, tool: str) -> str:
    """A stable, valid, unique-per-(upstream, tool) name; long names keep a hash suffix."""
    name = f"{upstream}{SEPARATOR}{_TOOL_CHARS.sub('_', tool)}"
    if len(name) <= MAX_TOOL_NAME and name == f"{upstream}{SEPARATOR}{tool}":
        return name
    digest = hashlib.sha256(f"{upstream}/{tool}".encode()).hexdigest()[:10]
    return f"{name[: MAX_TOOL_NAME - 11]}-{digest}"


def valid_tool_name(name: str) -> bool:
    return 1 <= len(name) <= MAX_TOOL_NAME and not _TOOL_CHARS.search(name)
