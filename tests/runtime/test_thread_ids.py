"""Client-chosen thread ids are unique across tenants: reusing another tenant's is a 409, never a
500, and that tenant's thread stays as it was."""

from __future__ import annotations

import uuid

import httpx

from runtime.helpers import deploy


async def test_another_tenants_thread_id_is_a_409_and_leaves_its_thread_alone(client, app, make_key):
    tid = str(uuid.uuid4())
    r = await client.post("/threads", json={"thread_id": tid, "metadata": {"owner": "operator"}})
    assert r.status_code == 200, r.text
    acme_admin = await make_key(["admin:*"], tenant="acme")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 headers={"authorization": f"Bearer {acme_admin}"}) as acme:
        await deploy(acme, "steps")
        for path, body in (("/threads", {"thread_id": tid, "metadata": {"owner": "acme"}}),
                           ("/threads", {"thread_id": tid, "if_exists": "do_nothing"}),
                           (f"/threads/{tid}/runs/wait", {"assistant_id": "steps", "input": {"log": []},
                                                          "if_not_exists": "create"})):
            r = await acme.post(path, json=body)
            assert r.status_code == 409, (path, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert "already in use" in r.json()["detail"]
        assert (await acme.get(f"/threads/{tid}")).status_code == 404  # still not acme's to see
        assert (await acme.post("/threads/search", json={})).json() == []
        # A fresh id works.
        assert (await acme.post("/threads", json={"thread_id": str(uuid.uuid4())})).status_code == 200
    thread = (await client.get(f"/threads/{tid}")).json()
    assert thread["metadata"] == {"owner": "operator"}
    assert (await client.get(f"/threads/{tid}/runs")).json() == []
