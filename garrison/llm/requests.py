"""Parsing and checking of OpenAI-compatible request bodies, and what a key allows.

Bodies are parsed with orjson and checked by hand: the gateway forwards the body as
the client sent it (tools, response formats, vendor fields), so only the fields the
gateway itself relies on are validated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from garrison.core.errors import BadRequest, PayloadTooLarge
from garrison.core.principal import Principal
from garrison.llm.admission import BAND_INDEX, BANDS

OPS = {"chat": "/chat/completions", "text_completion": "/completions", "embeddings": "/embeddings"}
MAX_MODEL_NAME = 200


@dataclass(slots=True)
class ParsedCall:
    op: str
    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    prompt_chars: int
    max_tokens: int | None

    @property
    def prompt_tokens_estimate(self) -> int:
        return self.prompt_chars // 4 + 1


def parse_call(op: str, raw: bytes, max_bytes: int) -> ParsedCall:
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body is {len(raw)} bytes; the gateway accepts at most {max_bytes}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model or len(model) > MAX_MODEL_NAME:
        raise BadRequest(f"'model' must be a model name (1 to {MAX_MODEL_NAME} characters); see GET /v1/models")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false")
    if op == "embeddings" and stream:
        raise BadRequest("embeddings cannot be streamed")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object such as {\"include_usage\": true}")
    include_usage = bool(options and options.get("include_usage"))
    max_tokens = None
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"'{key}' must be a positive integer")
        max_tokens = value
        break
    if op == "chat":
        chars = _chat_chars(body.get("messages"))
        tools = body.get("tools")
        if tools is not None and not isinstance(tools, list):
            raise BadRequest("'tools' must be a list of tool definitions")
    elif op == "text_completion":
        chars = _prompt_chars(body.get("prompt"), "prompt")
    else:
        chars = _prompt_chars(body.get("input"), "input")
    return ParsedCall(op, body, model, stream, include_usage, chars, max_tokens)


def _chat_chars(messages: Any) -> int:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list of {role, content} objects")
    chars = 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string 'role'")
        content = m.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
        elif content is not None:
            raise BadRequest(f"messages[{i}].content must be a string, a list of parts or null")
        chars += 16
    return chars


def _prompt_chars(value: Any, name: str) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list) and value:
        total = 0
        for item in value:
            if isinstance(item, str):
                total += len(item)
            elif isinstance(item, int) and not isinstance(item, bool):
                total += 4  # a token id
            elif isinstance(item, list) and all(isinstance(t, int) for t in item):
                total += 4 * len(item)
            else:
                raise BadRequest(f"'{name}' must be a string, a list of strings or a list of token ids")
        return total
    raise BadRequest(f"'{name}' must be a non-empty string or list")


def allowed_models(principal: Principal) -> set[str] | None:
    """The key's model allowlist (attribute `allowed_models`, list or comma string); None: all."""
    value: Any = principal.attributes.get("allowed_models")
    if value is None or value == "" or value == "*":
        return None
    if isinstance(value, str):
        return {v.strip() for v in value.split(",") if v.strip()}
    if isinstance(value, list):
        return {str(v) for v in value}
    return set()


def priority_band(principal: Principal, header: str | None) -> int:
    """The key's class (attribute `priority_class`); the header may lower it, never raise it."""
    base = BAND_INDEX.get(str(principal.attributes.get("priority_class") or "interactive"), 0)
    if not header:
        return base
    wanted = BAND_INDEX.get(header.strip().lower())
    if wanted is None:
        raise BadRequest(f"x-garrison-priority must be one of {', '.join(BANDS)}")
    return max(base, wanted)


def int_attribute(principal: Principal, name: str) -> int | None:
    value: Any = principal.attributes.get(name)
    if value is None or value == "":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None
