"""boto3's real `bedrock-agentcore` client (invoke_agent_runtime) against garrison's URL."""

from __future__ import annotations

import asyncio
import json
import uuid

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from runtime.helpers import deploy

ARN = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/versioned"


@pytest.fixture
def db_url(tmp_path):  # type: ignore[no-untyped-def]
    """SQLite only: the wire contract does not depend on the database; test_runs.py covers both stores."""
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


def agentcore(url: str, key: str):  # type: ignore[no-untyped-def]
    client = boto3.client("bedrock-agentcore", endpoint_url=url, region_name="us-east-1",
                          config=Config(signature_version=UNSIGNED, retries={"max_attempts": 0}))

    def bearer(request, **_):  # type: ignore[no-untyped-def]
        request.headers["Authorization"] = f"Bearer {key}"

    client.meta.events.register("before-send.bedrock-agentcore.*", bearer)
    return client


async def test_invoke_agent_runtime_with_sessions_qualifiers_and_streaming(client, live_url, admin_key, make_key):
    await deploy(client, "versioned")
    await deploy(client, "steps")
    ac = agentcore(live_url, admin_key)
    session = "session-" + uuid.uuid4().hex  # 40 characters
    out = await asyncio.to_thread(ac.invoke_agent_runtime, agentRuntimeArn=ARN, runtimeSessionId=session,
                                  qualifier="DEFAULT", payload=json.dumps({}).encode())
    assert out["runtimeSessionId"] == session and out["contentType"].startswith("application/json")
    assert json.loads(await asyncio.to_thread(out["response"].read)) == {"answer": "one"}

    # The session is a thread: a second invocation continues it (the steps graph appends to its log).
    steps_arn = ARN.replace("versioned", "steps")
    for expected in (["first", "second", "third"], ["first", "second", "third"] * 2):
        out = await asyncio.to_thread(ac.invoke_agent_runtime, agentRuntimeArn=steps_arn, runtimeSessionId=session,
                                      payload=json.dumps({"log": []}).encode())
        assert json.loads(await asyncio.to_thread(out["response"].read))["log"] == expected

    streamed = await asyncio.to_thread(ac.invoke_agent_runtime, agentRuntimeArn=ARN, runtimeSessionId=session,
                                       accept="text/event-stream", payload=b"{}")
    assert streamed["contentType"].startswith("text/event-stream")
    body = await asyncio.to_thread(streamed["response"].read)  # the server shares this event loop
    frames = [json.loads(line[6:]) for line in body.decode().split("\n\n") if line]
    assert frames[-1] == {"answer": "one"}

    # A qualifier that does not exist, a malformed session id, a non-JSON payload: 4xx, never 5xx.
    for kwargs, status in ((dict(qualifier="canary", payload=b"{}"), 404),
                           (dict(payload=b"not json"), 400), (dict(payload=b"[1]"), 400)):
        with pytest.raises(ClientError) as err:
            await asyncio.to_thread(ac.invoke_agent_runtime, agentRuntimeArn=ARN, runtimeSessionId=session, **kwargs)
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status

    # Another user of the tenant cannot enter this session.
    other = agentcore(live_url, await make_key(["runtime:invoke"], principal="mallory", kind="user"))
    with pytest.raises(ClientError) as err:
        await asyncio.to_thread(other.invoke_agent_runtime, agentRuntimeArn=ARN, runtimeSessionId=session,
                                payload=b"{}")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # ...and no key at all is a 401.
    bare = boto3.client("bedrock-agentcore", endpoint_url=live_url, region_name="us-east-1",
                        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 0}))
    with pytest.raises(ClientError) as err:
        await asyncio.to_thread(bare.invoke_agent_runtime, agentRuntimeArn=ARN, runtimeSessionId=session, payload=b"{}")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401


async def test_bad_sessions_unknown_agents_and_ambiguous_graphs(client):
    await deploy(client, "versioned")
    await deploy(client, "multi", "steps")
    r = await client.post("/runtimes/multi/invocations", content=b"{}")
    assert r.status_code == 400 and "several graphs" in r.json()["detail"]
    r = await client.post("/runtimes/versioned/invocations", content=b"{}",
                          headers={"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": "short"})
    assert r.status_code == 400 and "33 to 256" in r.json()["detail"]
    r = await client.post("/runtimes/no-such-agent/invocations", content=b"{}")
    assert r.status_code == 404
