"""Hostile text in the LangGraph API's plain-JSON bodies, on both databases."""

from __future__ import annotations

from runtime.helpers import deploy


async def test_text_with_nul_in_assistant_bodies_is_a_400_naming_the_field(client):
    # Found by probing on PostgreSQL: graph_id is compared in SQL and a NUL in it was a 500 there;
    # an assistant's name is stored as text.
    for path in ("/assistants/search", "/assistants/count"):
        r = await client.post(path, json={"graph_id": "steps\x00"})
        assert r.status_code == 400 and "graph_id" in r.text, (path, r.status_code, r.text)
    await deploy(client, "steps")
    r = await client.post("/assistants", json={"graph_id": "steps", "name": "mine\x00"})
    assert r.status_code == 400 and "name" in r.text, r.text
    ok = await client.post("/assistants", json={"graph_id": "steps", "name": "mine"})
    assert ok.status_code == 200, ok.text
    r = await client.patch(f"/assistants/{ok.json()['assistant_id']}", json={"description": "d\x00"})
    assert r.status_code == 400 and "description" in r.text, r.text
    assert [a["name"] for a in (await client.post("/assistants/search", json={"graph_id": "steps"})).json()
            if a["name"] != "steps"] == ["mine"]
