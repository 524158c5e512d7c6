"""OpenAPI-to-MCP against a real HTTP API, and tool search (meta-tool and API)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from garrison.core.errors import BadRequest
from garrison.tools.openapi import tools_from_openapi
from garrison.tools.search import rank
from tests.tools.servers import threaded
from tests.tools.test_gateway import base_url, mcp_client, text  # noqa: F401

PETS = {
    "openapi": "3.0.3",
    "info": {"title": "pets", "version": "1"},
    "paths": {
        "/pets/{pet_id}": {
            "parameters": [{"name": "pet_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "get": {"operationId": "getPet", "summary": "Get one pet by id",
                    "parameters": [{"name": "verbose", "in": "query", "schema": {"type": "boolean"}}]},
        },
        "/pets": {"post": {"operationId": "createPet", "summary": "Create a pet",
                           "requestBody": {"required": True, "content": {"application/json": {
                               "schema": {"$ref": "#/components/schemas/Pet"}}}}}},
    },
    "components": {"schemas": {"Pet": {"type": "object", "properties": {"name": {"type": "string"}},
                                       "required": ["name"]}}},
}


class Pet(BaseModel):
    name: str


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


@pytest.fixture(scope="module")
def pets_api():
    api = FastAPI()

    @api.get("/pets/{pet_id}")
    async def get_pet(pet_id: int, verbose: bool = False) -> dict:
        return {"id": pet_id, "verbose": verbose}

    @api.post("/pets", status_code=201)
    async def create_pet(body: Pet) -> dict:
        return {"created": body.name}

    with threaded(api) as url:
        yield url


def test_operations_become_tools_with_schemas():
    tools = {t["name"]: t for t in tools_from_openapi(PETS)}
    assert tools["getPet"]["inputSchema"]["required"] == ["pet_id"]
    assert tools["getPet"]["inputSchema"]["properties"]["verbose"] == {"type": "boolean"}
    body = tools["createPet"]["inputSchema"]["properties"]["body"]
    assert body["properties"]["name"] == {"type": "string"}  # $ref resolved
    assert tools["createPet"]["inputSchema"]["required"] == ["body"]


@pytest.mark.parametrize("doc", [{}, {"openapi": "2.0", "paths": {}}, {"openapi": "3.0.0", "paths": {}},
                                 {"openapi": "3.0.0", "paths": {"/x": {"get": {"parameters": [
                                     {"$ref": "#/components/parameters/missing"}]}}}}])
def test_bad_documents_refused(doc):
    with pytest.raises(BadRequest):
        tools_from_openapi(doc)


def test_recursive_refs_are_cut_off():
    doc = {"openapi": "3.1.0", "paths": {"/n": {"post": {"requestBody": {"content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Node"}}}}}}},
        "components": {"schemas": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/components/schemas/Node"}}}}}}
    assert tools_from_openapi(doc)[0]["name"] == "post_n"


async def test_openapi_tools_through_the_gateway(client, base_url, admin_key, pets_api):  # noqa: F811
    r = await client.post("/api/tools/openapi", json={"name": "pets", "base_url": pets_api, "document": PETS})
    assert r.status_code == 201, r.text
    await client.post("/api/tools/virtual-servers", json={"name": "api", "tools": [{"upstream": "pets"}]})
    async with mcp_client(f"{base_url}/mcp/api", admin_key) as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == {"pets__getPet", "pets__createPet", "search_tools"}
        got = await mcp.call_tool("pets__getPet", {"pet_id": 7, "verbose": True})
        assert got.structured_content == {"id": 7, "verbose": True}
        made = await mcp.call_tool("pets__createPet", {"body": {"name": "Rex"}})
        assert made.structured_content == {"created": "Rex"}
        missing = await mcp.call_tool("pets__getPet", {})
        assert missing.is_error and "pet_id" in text(missing)
        wrong = await mcp.call_tool("pets__createPet", {"body": {}})
        assert wrong.is_error and "422" in text(wrong)


async def test_search_api_ranks_by_name_and_description(client, pets_api):
    await client.post("/api/tools/openapi", json={"name": "pets", "base_url": pets_api, "document": PETS})
    await client.post("/api/tools/virtual-servers", json={"name": "api", "tools": [{"upstream": "pets"}]})
    r = await client.get("/api/tools/search", params={"virtual_server": "api", "q": "create a new pet"})
    assert r.status_code == 200 and r.json()[0]["name"] == "pets__createPet"
    r = await client.get("/api/tools/search", params={"virtual_server": "api", "q": "zebra"})
    assert r.json() == []
    r = await client.get("/api/tools/search", params={"virtual_server": "nope", "q": "pet"})
    assert r.status_code == 404
    r = await client.get("/api/tools/search", params={"virtual_server": "api", "q": ""})
    assert r.status_code == 422


def test_rank_prefers_name_hits():
    docs = [("fs__list", "read many files"), ("fs__read_file", "open one file"), ("web__get", "fetch")]
    assert [i for i, _ in rank("read file", docs)] == [1, 0]


async def test_stdio_registry_entry_gives_a_clear_error(client, platform):
    doc = {"name": "io.github.acme/local", "description": "stdio", "version": "1.0.0", "packages": [
        {"registryType": "npm", "identifier": "@acme/local", "version": "1.0.0", "transport": {"type": "stdio"}}]}
    assert (await client.post("/v0.1/publish", json=doc)).status_code == 200
    r = await client.post("/api/tools/upstreams", json={"name": "local", "from_registry": "io.github.acme/local"})
    assert r.status_code in (400, 501) and "stdio" in r.json()["detail"]
    r = await client.post("/api/tools/upstreams", json={"name": "ghost", "from_registry": "io.github.acme/none"})
    assert r.status_code == 404
