"""The warm-session fast path for ``POST /runtimes/{agent}/invocations`` (runtime/invoke_fastpath.py):
it answers a live session's invocation itself and leaves every other case to the FastAPI route,
with auth, policy, ownership, the body cap and the audit entry exactly as strong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from garrison.runtime.invoke_fastpath import InvokeFastPath
from runtime.helpers import deploy
from runtime.test_sessions import _session, deps_cache, session_env, upstream, wheelhouse  # noqa: F401
from tests.sandbox.helpers import make_backend

URL = "/runtimes/arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/echo/invocations"
HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"


@pytest.fixture
def db_url(tmp_path):  # type: ignore[no-untyped-def]
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


@pytest.fixture
def backend(tmp_path: Path) -> str:
    make_backend("bubblewrap", tmp_path)  # the cheaper backend: the fast path is the same on both
    return "bubblewrap"


def _fastpath(app: Any) -> InvokeFastPath:
    layer = app.middleware_stack
    while not isinstance(layer, InvokeFastPath):
        layer = layer.app
    return layer


@pytest.mark.slow
async def test_warm_session_fast_path(session_env, app, client, anon_client, make_key, platform,  # noqa: F811
                                      upstream):  # noqa: F811
    await deploy(client, "echo", "agentcore")
    sid = _session()
    headers = {HEADER: sid, "content-type": "application/json"}
    cold = await client.post(URL, json={"prompt": "first"}, headers=headers)
    assert cold.status_code == 200, cold.text
    fast = _fastpath(app)
    before = fast.served

    warm = await client.post(URL, json={"prompt": "second"}, headers=headers, params={"qualifier": "DEFAULT"})
    assert warm.status_code == 200, warm.text
    assert warm.json()["turns"] == 2 and warm.json()["instance"] == cold.json()["instance"]
    assert warm.headers[HEADER] == sid and warm.headers["content-type"].startswith("application/json")
    assert warm.headers["x-request-id"]  # RequestContextMiddleware still wraps it
    assert fast.served == before + 1

    # Streaming passes through the fast path too.
    streamed = await client.post(URL, content=json.dumps({"prompt": "s", "stream": True}),
                                 headers={**headers, "accept": "text/event-stream"})
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    frames = [json.loads(f[6:]) for f in streamed.text.split("\n\n") if f.startswith("data: ")]
    assert frames[-1]["done"] is True and fast.served == before + 2

    # Every answered invocation is audited as the route's require() does.
    await platform.audit.flush()
    audited = [e for e in (await client.get("/api/audit", params={"limit": 500})).json()
               if e["action"] == "runtime:invoke" and e["resource"] == URL]
    assert len(audited) == 3 and {e["decision"] for e in audited} == {"allow"}, audited  # once each

    served = fast.served
    # No key, a bad key: 401 from the route, and the bad key's deny is audited.
    assert (await anon_client.post(URL, json={}, headers=headers)).status_code == 401
    bad = await anon_client.post(URL, json={}, headers={**headers, "authorization": "Bearer gk_not_a_key"})
    assert bad.status_code == 401
    await platform.audit.flush()
    denies = [e for e in (await client.get("/api/audit", params={"limit": 500})).json()
              if e["action"] == "auth:authenticate"]
    assert denies
    # A key without the scope: 403.
    no_scope = await make_key(["runtime:read"], principal="reader")
    assert (await anon_client.post(URL, json={}, headers={**headers, "authorization": f"Bearer {no_scope}"})
            ).status_code == 403
    # Another user of the tenant: the session does not exist for them.
    mallory = await make_key(["runtime:invoke"], principal="mallory", kind="user")
    r = await anon_client.post(URL, json={}, headers={**headers, "authorization": f"Bearer {mallory}"})
    assert r.status_code == 404, r.text
    # An endpoint the agent does not have.
    r = await client.post(URL, json={}, headers=headers, params={"qualifier": "nope"})
    assert 400 <= r.status_code < 500, r.text
    assert fast.served == served  # none of those was answered by the fast path

    # Oversized bodies: declared (RequestContextMiddleware) and chunked (read by the fast path).
    cap = platform.settings.max_body_bytes
    r = await client.post(URL, content=b"x" * (cap + 1), headers=headers)
    assert r.status_code == 413

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(cap // 65536 + 2):
            yield b"x" * 65536

    r = await client.post(URL, content=chunks(), headers=headers)
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json", r.text
    # The session is still warm and answers.
    again = await client.post(URL, json={"prompt": "after"}, headers=headers)
    assert again.status_code == 200 and again.json()["instance"] == cold.json()["instance"]
