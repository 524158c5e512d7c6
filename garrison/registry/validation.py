"""server.json validation: the official server.schema.json plus the registry's own name rules."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs

from garrison.core.errors import BadRequest, ValidationFailed
from garrison.core.inputs import check_storable
from garrison.registry.versions import check_version

SCHEMA_PATH = Path(__file__).with_name("server.schema.json")
_NAME = re.compile(r"^[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+$")
MAX_NAME_LENGTH = 200


@cache
def _validator() -> Any:
    return jsonschema_rs.Draft7Validator(json.loads(SCHEMA_PATH.read_text()))


def check_name(name: str) -> str:
    """Reverse-DNS ``namespace/server``: exactly one slash, no traversal segments."""
    if not (3 <= len(name) <= MAX_NAME_LENGTH) or not _NAME.match(name):
        raise BadRequest(
            "server name must be 'namespace/name' in reverse-DNS form (e.g. com.example/weather): "
            "3 to 200 characters of letters, digits, '.', '-' and '_' with exactly one '/'"
        )
    namespace, server = name.split("/")
    for part in (namespace, server):
        if part.startswith(".") or part.endswith(".") or ".." in part:
            raise BadRequest("server name segments must not start or end with '.' nor contain '..'")
    return name


def namespace_of(name: str) -> str:
    return name.split("/", 1)[0].lower()


def validate_server_json(doc: Any) -> dict[str, Any]:
    """Validate a server.json document; a 422 lists every schema error with its JSON path."""
    if not isinstance(doc, dict):
        raise ValidationFailed("server.json must be a JSON object")
    errors = []
    for err in _validator().iter_errors(doc):
        path = "/".join(str(p) for p in err.instance_path) or "(root)"
        errors.append(f"{path}: {err.message}")
        if len(errors) >= 20:
            break
    if errors:
        raise ValidationFailed(
            "server.json does not match server.schema.json: " + "; ".join(errors), errors=errors
        )
    check_name(doc["name"])
    check_version(doc["version"])
    check_storable(doc, "server.json")  # stored as text: PostgreSQL cannot hold a NUL
    return doc
