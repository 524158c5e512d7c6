"""server.json validation against server.schema.json and the name rules."""

import pytest

from garrison.core.errors import BadRequest, ValidationFailed
from garrison.registry.validation import check_name, validate_server_json


def doc(**over):
    base = {"name": "com.example/weather", "description": "Weather", "version": "1.0.0",
            "remotes": [{"type": "streamable-http", "url": "https://example.com/mcp"}]}
    base.update(over)
    return base


def test_valid_document_passes():
    assert validate_server_json(doc())["name"] == "com.example/weather"


@pytest.mark.parametrize("bad", [
    {"description": 5}, {"description": ""}, {"description": "x" * 101},
    {"remotes": [{"type": "carrier-pigeon", "url": "https://x"}]},
    {"remotes": [{"type": "streamable-http", "url": "ftp://x"}]},
    {"packages": [{"registryType": "npm"}]},
    {"name": "no-slash"}, {"name": "a/b/c"}, {"version": 1},
])
def test_schema_errors_are_422_with_paths(bad):
    with pytest.raises(ValidationFailed) as err:
        validate_server_json(doc(**bad))
    assert err.value.extra["errors"]


def test_missing_required_fields_named():
    with pytest.raises(ValidationFailed) as err:
        validate_server_json({"name": "com.example/x"})
    assert "description" in err.value.detail and "version" in err.value.detail


def test_not_an_object():
    with pytest.raises(ValidationFailed):
        validate_server_json(["com.example/x"])


@pytest.mark.parametrize("name", ["com.example/..", "../x", "com..example/x", ".hidden/x", "com.example/.x",
                                  "a/", "/a", "x" * 201 + "/y", "com example/x"])
def test_traversal_and_malformed_names_refused(name):
    with pytest.raises(BadRequest):
        check_name(name)


def test_range_version_in_document_refused():
    with pytest.raises(BadRequest):
        validate_server_json(doc(version="^1.0.0"))
    with pytest.raises(BadRequest):
        validate_server_json(doc(version="latest"))
