"""Deploying agents: immutable versions, endpoints for roll-out and roll-back, hostile bundles, access."""

from __future__ import annotations

import io
import shutil
import tarfile

import pytest

from garrison.runtime.bundles import pack
from runtime.helpers import AGENTS, deploy


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


async def _upload(client, name: str, body: bytes, ctype: str = "application/gzip"):
    return await client.post(f"/api/runtime/agents/{name}/versions", content=body, headers={"content-type": ctype})


async def _answer(client, assistant: str = "versioned") -> str:
    r = await client.post("/runs/wait", json={"assistant_id": assistant, "input": {}})
    assert r.status_code == 200, r.text
    return r.json()["answer"]


async def test_versions_are_immutable_and_endpoints_roll_out_and_back(client, tmp_path):
    source = tmp_path / "versioned"
    shutil.copytree(AGENTS / "versioned", source)
    one = await _upload(client, "versioned", pack(source))
    assert one.status_code == 201 and one.json()["endpoints"] == {"default": 1}
    assert await _answer(client) == "one"
    (source / "graph.py").write_text((source / "graph.py").read_text().replace('VERSION = "one"', 'VERSION = "two"'))
    two = (await _upload(client, "versioned", pack(source))).json()
    assert [v["version"] for v in two["versions"]] == [1, 2] and two["endpoints"] == {"default": 2}
    assert two["versions"][0]["digest"] != two["versions"][1]["digest"]
    assert await _answer(client) == "two"
    # Roll back: one call.
    r = await client.put("/api/runtime/agents/versioned/endpoints/default", json={"version": 1})
    assert r.status_code == 200 and r.json()["endpoints"] == {"default": 1}
    assert await _answer(client) == "one"
    # A deploy that is not promoted leaves the endpoint where it was.
    three = (await client.post("/api/runtime/agents/versioned/versions?promote=false", content=pack(source),
                               headers={"content-type": "application/gzip"})).json()
    assert three["endpoints"] == {"default": 1} and len(three["versions"]) == 3
    assert (await client.put("/api/runtime/agents/versioned/endpoints/canary", json={"version": 9})).status_code == 404
    assert (await client.put("/api/runtime/agents/versioned/endpoints/Bad!", json={"version": 1})).status_code == 400
    assert (await client.put("/api/runtime/agents/versioned/endpoints/canary", json={"version": 0})).status_code == 422
    listed = (await client.get("/api/runtime/agents")).json()
    assert [a["name"] for a in listed] == ["versioned"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # validation happens before the store
async def test_a_hostile_bundle_is_a_400_and_leaves_nothing(client):
    r = await _upload(client, "broken", _tar([_file("../escape.py", b"x = 1")]))
    assert r.status_code == 400 and "escapes" in r.json()["detail"]
    assert (await client.get("/api/runtime/agents/broken")).status_code == 404
    r = await _upload(client, "broken", _tar([_file("langgraph.json", b'{"graphs": {"g": "./g.py:graph"}}'),
                                              _file("g.py", b"raise SystemExit(1)")]))
    assert r.status_code == 422 and "importing" in r.json()["detail"]
    assert (await client.get("/api/runtime/agents/broken")).status_code == 404


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # validation happens before the store
async def test_bad_names_types_and_sizes(client):
    assert (await _upload(client, "Bad_Name", pack(AGENTS / "steps"))).status_code == 400
    assert (await _upload(client, "steps", pack(AGENTS / "steps"), "text/plain")).status_code == 400
    assert (await _upload(client, "steps", b"")).status_code == 400


async def test_scopes_and_tenants(client, anon_client, make_key, app):
    import httpx

    await deploy(client, "steps")
    assert (await anon_client.get("/api/runtime/agents")).status_code == 401
    assert (await anon_client.post("/threads", json={})).status_code == 401
    reader = await make_key(["runtime:read"])
    invoker = await make_key(["runtime:invoke", "runtime:read"])
    other = await make_key(["runtime:invoke", "runtime:read", "runtime:deploy"], tenant="acme")

    def as_key(key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://garrison.test",
                                 headers={"authorization": f"Bearer {key}"})

    async with as_key(reader) as c:
        assert (await c.get("/api/runtime/agents")).status_code == 200
        assert (await c.post("/threads", json={})).status_code == 403
        assert (await _upload(c, "steps", pack(AGENTS / "steps"))).status_code == 403
    async with as_key(invoker) as c:
        tid = (await c.post("/threads", json={})).json()["thread_id"]
        r = await c.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "steps", "input": {"log": []}})
        assert r.json()["log"] == ["first", "second", "third"]
        assert (await _upload(c, "steps", pack(AGENTS / "steps"))).status_code == 403
    async with as_key(other) as c:
        # Another tenant sees neither the thread nor the agent, and its own deploy is separate.
        assert (await c.get(f"/threads/{tid}")).status_code == 404
        assert (await c.post(f"/threads/{tid}/runs", json={"assistant_id": "steps"})).status_code == 404
        assert (await c.get("/api/runtime/agents")).json() == []
        assert (await c.post("/runs/wait", json={"assistant_id": "steps", "input": {}})).status_code == 404
        await deploy(c, "steps")
        assert (await c.get("/api/runtime/agents")).json()[0]["versions"][0]["version"] == 1
