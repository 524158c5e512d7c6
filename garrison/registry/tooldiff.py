"""Tool schema versioning: the difference between two versions' tool lists, and whether it
breaks callers (tool removed, required parameter added, parameter type changed)."""

from __future__ import annotations

from typing import Any

from garrison.core.errors import BadRequest
from garrison.registry.versions import parse_semver

MAX_TOOLS = 5000


def check_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise BadRequest(f"tools must be a list of at most {MAX_TOOLS} MCP tool objects")
    names = set()
    for t in tools:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            raise BadRequest("every tool needs a non-empty string 'name'")
        if "inputSchema" in t and not isinstance(t["inputSchema"], dict):
            raise BadRequest(f"tool {t['name']!r}: inputSchema must be an object")
        if t["name"] in names:
            raise BadRequest(f"tool {t['name']!r} is listed twice")
        names.add(t["name"])
    return tools


def _params(tool: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    schema = tool.get("inputSchema") or {}
    props: dict[str, Any] = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
    required = {r for r in schema.get("required") or [] if isinstance(r, str)}
    return props, required


def _type(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return None
    t = schema.get("type")
    return sorted(t) if isinstance(t, list) else t


def diff(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Changes from ``old`` to ``new``, each with ``breaking`` set when callers would fail."""
    before = {t["name"]: t for t in old}
    after = {t["name"]: t for t in new}
    changes: list[dict[str, Any]] = []
    for name in sorted(before.keys() - after.keys()):
        changes.append({"change": "tool_removed", "tool": name, "breaking": True})
    for name in sorted(after.keys() - before.keys()):
        changes.append({"change": "tool_added", "tool": name, "breaking": False})
    for name in sorted(before.keys() & after.keys()):
        old_props, old_req = _params(before[name])
        new_props, new_req = _params(after[name])
        for p in sorted(new_req - old_req):
            changes.append({"change": "required_parameter_added", "tool": name, "parameter": p, "breaking": True})
        for p in sorted(old_props.keys() - new_props.keys()):
            changes.append({"change": "parameter_removed", "tool": name, "parameter": p, "breaking": p in old_req})
        for p in sorted(new_props.keys() - old_props.keys() - new_req):
            changes.append({"change": "optional_parameter_added", "tool": name, "parameter": p, "breaking": False})
        for p in sorted(old_props.keys() & new_props.keys()):
            a, b = _type(old_props[p]), _type(new_props[p])
            if a is not None and b is not None and a != b:
                changes.append({"change": "type_changed", "tool": name, "parameter": p, "from": a, "to": b,
                                "breaking": True})
    return changes


def is_major_bump(old_version: str, new_version: str) -> bool | None:
    """True/False when both are semver (for 0.x a minor bump counts as major); None when unknown."""
    a, b = parse_semver(old_version), parse_semver(new_version)
    if a is None or b is None:
        return None
    if b[0] != a[0]:
        return b[0] > a[0]
    return a[0] == 0 and b[1] > a[1]
