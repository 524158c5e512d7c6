"""OpenAPI 3 to MCP: each operation becomes a tool whose input schema comes from its
parameters and JSON body; a call becomes one HTTP request to the registered base URL."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx
import mcp_types as types
import orjson

from garrison.core.errors import BadRequest
from garrison.tools.naming import MAX_TOOL_NAME

METHODS = ("get", "post", "put", "patch", "delete")
MAX_OPERATIONS = 2000
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


def _resolve(doc: dict[str, Any], node: Any, depth: int = 0) -> Any:
    """Inline local ``#/...`` references (bounded depth: recursive schemas are cut off)."""
    if depth > 12:
        return {}
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            if not ref.startswith("#/"):
                return {}
            target: Any = doc
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    raise BadRequest(f"OpenAPI document has a dangling $ref {ref}")
                target = target[part]
            return _resolve(doc, target, depth + 1)
        return {k: _resolve(doc, v, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(doc, v, depth + 1) for v in node]
    return node


def _tool_name(op: dict[str, Any], method: str, path: str) -> str:
    raw = op.get("operationId") or f"{method}_{path.strip('/')}"
    name = _NAME_CHARS.sub("_", str(raw)).strip("_") or method
    return name[:MAX_TOOL_NAME]


def tools_from_openapi(doc: Any) -> list[dict[str, Any]]:
    if not isinstance(doc, dict) or not str(doc.get("openapi", "")).startswith("3.") or not isinstance(
            doc.get("paths"), dict):
        raise BadRequest("document must be an OpenAPI 3.x object with 'openapi' and 'paths'")
    tools: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path, item in doc["paths"].items():
        if not isinstance(item, dict):
            continue
        shared = item.get("parameters") or []
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            if len(tools) >= MAX_OPERATIONS:
                raise BadRequest(f"OpenAPI document has more than {MAX_OPERATIONS} operations")
            name = _tool_name(op, method, path)
            if name in seen:
                raise BadRequest(f"two operations map to the tool name {name!r}; give them distinct operationIds")
            seen.add(name)
            properties: dict[str, Any] = {}
            required: list[str] = []
            params = []
            for p in _resolve(doc, list(shared) + list(op.get("parameters") or [])):
                if not isinstance(p, dict) or p.get("in") not in ("path", "query", "header") or not p.get("name"):
                    continue
                schema = dict(p.get("schema") or {"type": "string"})
                if p.get("description"):
                    schema.setdefault("description", p["description"])
                properties[p["name"]] = schema
                params.append({"name": p["name"], "in": p["in"]})
                if p.get("required") or p["in"] == "path":
                    required.append(p["name"])
            has_body = False
            body = _resolve(doc, op.get("requestBody") or {})
            content = body.get("content") if isinstance(body, dict) else None
            if isinstance(content, dict) and "application/json" in content:
                has_body = True
                properties["body"] = content["application/json"].get("schema") or {}
                if body.get("required"):
                    required.append("body")
            schema_out: dict[str, Any] = {"type": "object", "properties": properties}
            if required:
                schema_out["required"] = sorted(set(required))
            tools.append({
                "name": name,
                "description": (op.get("summary") or op.get("description") or f"{method.upper()} {path}")[:1000],
                "inputSchema": schema_out,
                "_method": method, "_path": path, "_params": params, "_body": has_body,
            })
    if not tools:
        raise BadRequest("the OpenAPI document has no operations")
    return tools


async def call_operation(upstream: Any, tool_name: str, arguments: dict[str, Any], headers: dict[str, str],
                         timeout_s: float) -> types.CallToolResult:
    op = next((t for t in upstream.tool_list or [] if t["name"] == tool_name), None)
    if op is None:
        return _error(f"operation {tool_name} is not in the registered document")
    path, query, sent_headers = op["_path"], {}, dict(headers)
    for p in op["_params"]:
        if p["name"] not in arguments:
            if p["in"] == "path":
                return _error(f"missing path parameter {p['name']!r}")
            continue
        value = arguments[p["name"]]
        if p["in"] == "path":
            path = path.replace("{" + p["name"] + "}", quote(str(value), safe=""))
        elif p["in"] == "query":
            query[p["name"]] = value if isinstance(value, (str, int, float, bool, list)) else orjson.dumps(value).decode()
        elif p["name"].lower() not in ("authorization", "host", "cookie"):
            sent_headers[p["name"]] = str(value)
    url = upstream.url.rstrip("/") + path
    kwargs: dict[str, Any] = {"params": query, "headers": sent_headers}
    if op["_body"] and "body" in arguments:
        kwargs["json"] = arguments["body"]
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
        resp = await client.request(op["_method"].upper(), url, **kwargs)
    text = resp.text
    structured = None
    if resp.headers.get("content-type", "").startswith("application/json"):
        try:
            parsed = resp.json()
            structured = parsed if isinstance(parsed, dict) else {"result": parsed}
        except ValueError:
            pass
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text if resp.status_code < 400 else f"HTTP {resp.status_code}: {text}")],
        structured_content=structured, is_error=resp.status_code >= 400,
    )


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)
