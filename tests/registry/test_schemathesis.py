"""schemathesis against the official Registry OpenAPI file, for every read endpoint.

The overlay declares what the official file leaves out and garrison returns on purpose:
problem+json 4xx for bad input, and the newer ``statusChangedAt``/``statusMessage``
fields of the official metadata.
"""

from __future__ import annotations

import copy
from pathlib import Path

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings

from garrison.config import Settings
from tests.registry.live import live_server

# A verbatim copy of the official file (modelcontextprotocol/registry, 2025-12-01).
SPEC = Path(__file__).with_name("openapi-2025-12-01.yaml")

PROBLEM = {"type": "object", "required": ["type", "title", "status", "detail"],
           "properties": {"type": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}}}


def overlay(spec: dict) -> dict:
    spec = copy.deepcopy(spec)
    official = spec["components"]["schemas"]["ServerResponse"]["properties"]["_meta"]["properties"][
        "io.modelcontextprotocol.registry/official"]["properties"]
    official["statusChangedAt"] = {"type": "string", "format": "date-time"}
    official["statusMessage"] = {"type": "string"}
    for ops in spec["paths"].values():
        op = ops.get("get")
        if op is None:
            continue
        op.setdefault("parameters", []).append(
            {"name": "include_deleted", "in": "query", "required": False, "schema": {"type": "boolean"}})
        for code in ("400", "401", "403", "404", "422"):
            resp = op["responses"].setdefault(code, {"description": "bad input", "content": {}})
            resp.setdefault("content", {})["application/problem+json"] = {"schema": PROBLEM}
    return spec


schema = schemathesis.openapi.from_dict(overlay(yaml.safe_load(SPEC.read_text()))).include(method="GET")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    data = tmp_path_factory.mktemp("schemathesis")
    settings_ = Settings(data_dir=data, database_url=f"sqlite+aiosqlite:///{data}/g.db")
    with live_server(settings_) as (url, app):
        key = app.state.platform.bootstrap_key
        headers = {"Authorization": f"Bearer {key}"}
        for i, version in enumerate(["1.0.0", "1.1.0", "2.0.0-rc.1", "nightly"]):
            doc = {"name": f"com.example/my-server{i % 2}", "description": "Example", "version": version,
                   "remotes": [{"type": "streamable-http", "url": "https://example.com/mcp"}]}
            httpx.post(f"{url}/v0.1/publish", json=doc, headers=headers).raise_for_status()
        yield url, headers


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_read_endpoints_conform(case, live):
    url, headers = live
    excluded = []
    if case.operation.path == "/v0.1/servers":
        # The file types `cursor` as any string; a cursor garrison did not issue is a 400 by design.
        from schemathesis.checks import positive_data_acceptance

        excluded.append(positive_data_acceptance)
    case.call_and_validate(base_url=url, headers=headers, excluded_checks=excluded)
