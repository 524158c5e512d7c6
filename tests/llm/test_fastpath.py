"""The gateway's fast path (llm/fastpath.py): it answers model calls itself and leaves every
other case to the FastAPI routes, with auth, policy, the body cap and audit exactly as strong."""

from __future__ import annotations

import json
from typing import Any

from garrison.llm.fastpath import GatewayFastPath


def _fastpath(app: Any) -> GatewayFastPath:
    layer = app.middleware_stack
    while not isinstance(layer, GatewayFastPath):
        layer = layer.app
    return layer


def chat(model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def test_model_calls_take_the_fast_path(app, client, anon_client, platform, fake, add_model, make_key):
    await add_model("m", fake)
    key = await make_key(["llm:invoke"], tenant="acme")
    h = {"authorization": f"Bearer {key}"}
    fast = _fastpath(app)
    before = fast.served

    r = await anon_client.post("/v1/chat/completions", json=chat(), headers={**h, "x-request-id": "req-fast"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    assert r.headers["x-request-id"] == "req-fast" and r.headers["x-garrison-replica"].startswith("rep_")
    assert r.headers["traceparent"]  # RequestContextMiddleware still wraps it
    r = await anon_client.post("/v1/completions", json={"model": "m", "prompt": "hi"}, headers=h)
    assert r.status_code == 200, r.text
    r = await anon_client.post("/v1/embeddings", json={"model": "m", "input": "hi"}, headers=h)
    assert r.status_code == 200, r.text
    streamed = await anon_client.post("/v1/chat/completions", headers=h,
                                      json=chat(stream=True, stream_options={"include_usage": True}))
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = [e[6:] for e in streamed.text.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["usage"]["completion_tokens"] == 8
    assert fast.served == before + 4

    # Each call is in the ledger, under the caller's tenant.
    svc = platform.services["metering"]
    await svc.ledger.drain()
    entries = await svc.entries(None, limit=10)
    tenant = (await platform.identity.tenant_by_name("acme"))["id"]
    assert len([e for e in entries if e["tenant_id"] == tenant and e["model"] == "m"]) == 4

    # The gateway's own errors: problem+json with OpenAI's error object, from the fast path.
    r = await anon_client.post("/v1/chat/completions", json=chat("nope"), headers=h)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["error"]["code"] == 404 and body["error"]["message"] == body["detail"]
    assert body["instance"] == "/v1/chat/completions" and body["request_id"]
    r = await anon_client.post("/v1/chat/completions", content=b"{not json", headers=h)
    assert r.status_code == 400 and r.json()["error"]["type"] == "bad-request"
    assert fast.served == before + 6


async def test_what_the_fast_path_leaves_to_the_routes(app, client, anon_client, platform, fake, add_model, make_key):
    await add_model("m", fake)
    fast = _fastpath(app)
    served = fast.served
    # No key, a bad key: 401 from the route, and the bad key's deny is audited.
    assert (await anon_client.post("/v1/chat/completions", json=chat())).status_code == 401
    bad = await anon_client.post("/v1/chat/completions", json=chat(), headers={"authorization": "Bearer gk_nope"})
    assert bad.status_code == 401
    # A key without the scope: 403 from the route, audited as a deny of llm:invoke.
    reader = await make_key(["llm:read"], principal="reader")
    r = await anon_client.post("/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {reader}"})
    assert r.status_code == 403
    # Other methods and a query string go to FastAPI too.
    key = await make_key(["llm:invoke"])
    h = {"authorization": f"Bearer {key}"}
    assert (await anon_client.get("/v1/chat/completions", headers=h)).status_code == 405
    r = await anon_client.post("/v1/chat/completions", json=chat(), headers=h, params={"x": "1"})
    assert r.status_code == 200, r.text
    assert fast.served == served

    await platform.audit.flush()
    audited = (await client.get("/api/audit", params={"limit": 500})).json()
    assert any(e["action"] == "auth:authenticate" and e["decision"] == "deny" for e in audited)
    assert any(e["action"] == "llm:invoke" and e["decision"] == "deny" and "missing scope" in e["reason"]
               for e in audited), audited


async def test_body_cap_on_the_fast_path(app, anon_client, platform, fake, add_model, make_key):
    await add_model("m", fake)
    key = await make_key(["llm:invoke"])
    h = {"authorization": f"Bearer {key}"}
    cap = platform.settings.max_body_bytes

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(cap // 65536 + 2):
            yield b"x" * 65536

    r = await anon_client.post("/v1/chat/completions", content=chunks(), headers=h)
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json", r.text
    r = await anon_client.post("/v1/chat/completions", json=chat(), headers=h)
    assert r.status_code == 200, r.text
