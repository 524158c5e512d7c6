"""JSON for what graphs produce: LangChain messages, Interrupts, dataclasses, pydantic models."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson


def _default(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    to_json = getattr(obj, "to_json", None)
    if callable(to_json):
        return to_json()
    return repr(obj)


_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def dumps(value: Any) -> str:
    return orjson.dumps(value, default=_default, option=_OPTIONS).decode()


def dumpb(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def loads(text: str | bytes | None) -> Any:
    return None if text is None or text == "" else orjson.loads(text)


def jsonable(value: Any) -> Any:
    return orjson.loads(dumpb(value))
