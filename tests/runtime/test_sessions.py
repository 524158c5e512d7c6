"""AgentCore agents in session sandboxes: an unmodified BedrockAgentCoreApp agent deployed with
its dependencies from a wheelhouse, invoked with boto3's bedrock-agentcore client, calling a
model through the LLM gateway (fake upstream) from inside a sandbox that has no network."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from garrison.llm.fake_upstream import FakeConfig, FakeUpstream
from garrison.runtime.bundles import pack
from runtime.helpers import AGENTS, deploy
from runtime.test_agentcore import agentcore
from tests.sandbox.helpers import make_backend

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".garrison-test-cache"
ARN = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/echo"


def build_wheelhouse() -> Path:
    """bedrock-agentcore and openai with their dependencies, downloaded once and kept."""
    wheelhouse = CACHE / "wheelhouse"
    if not list(wheelhouse.glob("bedrock_agentcore-*.whl")) or not list(wheelhouse.glob("openai-*.whl")):
        wheelhouse.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "bedrock-agentcore", "openai", "-d", str(wheelhouse)], check=True, timeout=600)
    return wheelhouse


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    return build_wheelhouse()


@pytest.fixture(scope="session")
def deps_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deps")  # one install per test session, hard-linked into each version


@pytest.fixture
def db_url(tmp_path):  # type: ignore[no-untyped-def]
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


@pytest.fixture(params=["gvisor", "bubblewrap"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    make_backend(request.param, tmp_path)  # skips (fails in CI) when the backend is missing
    return str(request.param)


@pytest.fixture
def session_env(monkeypatch: pytest.MonkeyPatch, wheelhouse: Path, deps_cache: Path, backend: str) -> None:
    monkeypatch.setenv("GARRISON_RUNTIME_WHEELHOUSE", str(wheelhouse))
    monkeypatch.setenv("GARRISON_RUNTIME_DEPS_CACHE", str(deps_cache))
    monkeypatch.setenv("GARRISON_RUNTIME_SESSION_BACKEND", backend)


@pytest.fixture
async def upstream(client):  # type: ignore[no-untyped-def]
    async with FakeUpstream(FakeConfig(completion_tokens=6)) as up:
        r = await client.post("/api/llm/models", json={"model": "fake-model", "base_url": up.base_url})
        assert r.status_code == 201, r.text
        yield up


def _session() -> str:
    return "session-" + uuid.uuid4().hex  # 40 characters


async def _invoke(ac, session: str, payload: dict, **kw) -> dict:  # type: ignore[no-untyped-def]
    out = await asyncio.to_thread(ac.invoke_agent_runtime, agentRuntimeArn=ARN, runtimeSessionId=session,
                                  payload=json.dumps(payload).encode(), **kw)
    assert out["runtimeSessionId"] == session
    return json.loads(await asyncio.to_thread(out["response"].read))


async def _describe(client, session: str) -> dict:  # type: ignore[no-untyped-def]
    r = await client.get(f"/api/runtime/agents/echo/sessions/{session}")
    assert r.status_code == 200, r.text
    return r.json()[0]


@pytest.mark.slow
async def test_boto3_invokes_an_unmodified_agentcore_agent(session_env, client, live_url, admin_key, make_key,
                                                           upstream, backend):
    described = await deploy(client, "echo", "agentcore")
    assert described["versions"][0]["kind"] == "agentcore"
    ac = agentcore(live_url, admin_key)
    first, second = _session(), _session()

    out = await _invoke(ac, first, {"prompt": "hello from boto3"})
    assert out["answer"] and out["session"] == first and out["turns"] == 1
    assert upstream.stats.completed == 1  # the model call left the sandbox through the gateway
    assert upstream.stats.last_body["messages"][0]["content"] == "hello from boto3"
    info = await _describe(client, first)
    assert info["state"] == "active" and info["backend"] == backend and info["sandboxes_started"] == 1

    # Sticky: the same session id lands in the same sandbox and process; another id gets its own.
    again = await _invoke(ac, first, {"prompt": "second turn"})
    assert again["instance"] == out["instance"] and again["turns"] == 2
    other = await _invoke(ac, second, {"prompt": "another session"})
    assert other["instance"] != out["instance"] and other["turns"] == 1
    assert (await _describe(client, second))["sandbox_id"] != info["sandbox_id"]

    # Streaming: the generator's SSE frames pass through to boto3.
    streamed = await asyncio.to_thread(ac.invoke_agent_runtime, agentRuntimeArn=ARN, runtimeSessionId=first,
                                       accept="text/event-stream", payload=json.dumps(
                                           {"prompt": "stream it", "stream": True}).encode())
    assert streamed["contentType"].startswith("text/event-stream")
    body = (await asyncio.to_thread(streamed["response"].read)).decode()
    frames = [json.loads(f[len("data: "):]) for f in body.split("\n\n") if f.startswith("data: ")]
    assert len([f for f in frames if "delta" in f]) >= 2
    assert frames[-1] == {"done": True, "instance": out["instance"]}

    # Another user of the tenant cannot enter the session, nor see it.
    mallory = agentcore(live_url, await make_key(["runtime:invoke"], principal="mallory", kind="user"))
    with pytest.raises(ClientError) as err:
        await _invoke(mallory, first, {"prompt": "let me in"})
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    # StopRuntimeSession ends the sandbox; the session says why.
    stopped = await asyncio.to_thread(ac.stop_runtime_session, agentRuntimeArn=ARN, runtimeSessionId=second)
    assert stopped["ResponseMetadata"]["HTTPStatusCode"] == 200
    info = await _describe(client, second)
    assert info["state"] == "ended" and info["ended_reason"] == "stopped" and info["sandbox_id"] is None


@pytest.mark.slow
async def test_killed_sandbox_is_reported_and_replaced(session_env, client, live_url, admin_key, upstream):
    await deploy(client, "echo", "agentcore")
    ac = agentcore(live_url, admin_key)
    session = _session()
    out = await _invoke(ac, session, {"prompt": "one"})
    sandbox_id = (await _describe(client, session))["sandbox_id"]
    r = await client.delete(f"/api/sandboxes/{sandbox_id}")
    assert r.status_code in (200, 204), r.text
    info = await _describe(client, session)
    assert info["sandbox_id"] is None or info["sandbox_id"] == sandbox_id
    again = await _invoke(ac, session, {"prompt": "two"})
    assert again["instance"] != out["instance"] and again["turns"] == 1  # a fresh sandbox and process
    info = await _describe(client, session)
    assert info["sandboxes_started"] == 2 and info["sandbox_id"] != sandbox_id
    assert info["last_sandbox"]["id"] == sandbox_id and info["last_sandbox"]["killed_reason"] == "killed_by_user"
    # Both sandboxes' model calls are the agent version's: garrison names it on the session's egress.
    r = await client.get("/api/usage", params={"by": "agent_version"})
    assert r.status_code == 200, r.text
    assert [(row["agent"], row["agent_version"], row["requests"]) for row in r.json()["rows"]] == [("echo", "1", 2)]


@pytest.mark.slow
async def test_idle_expiry_and_healthy_busy(session_env, monkeypatch, client, live_url, admin_key, upstream):
    monkeypatch.setenv("GARRISON_RUNTIME_SESSION_IDLE_TIMEOUT_S", "1")
    monkeypatch.setenv("GARRISON_RUNTIME_SESSION_REAP_INTERVAL_S", "0.2")
    await deploy(client, "echo", "agentcore")
    ac = agentcore(live_url, admin_key)
    session = _session()
    busy = await _invoke(ac, session, {"busy_s": 3})  # background work: /ping says HealthyBusy for 3 s
    await asyncio.sleep(2.0)
    info = await _describe(client, session)
    assert info["state"] == "active", info  # idle past the timeout, but busy: kept
    deadline = time.monotonic() + 20
    while (info := await _describe(client, session))["state"] == "active" and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    assert info["state"] == "ended" and info["ended_reason"] == "idle"
    assert info["last_sandbox"]["killed_reason"] == "idle"
    fresh = await _invoke(ac, session, {"prompt": "back again"})
    assert fresh["instance"] != busy["instance"] and fresh["turns"] == 1


async def test_missing_wheel_is_a_clear_4xx(session_env, client, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "main.py").write_text((AGENTS / "agentcore" / "main.py").read_text())
    (bundle / "requirements.txt").write_text("bedrock-agentcore\nno-such-package-garrison==1.0\n")
    r = await client.post("/api/runtime/agents/broken/versions", content=pack(bundle),
                          headers={"content-type": "application/gzip"})
    assert r.status_code == 400 and "no-such-package-garrison" in r.json()["detail"], r.text
    (bundle / "requirements.txt").write_text("--index-url https://example.com\n")
    r = await client.post("/api/runtime/agents/broken/versions", content=pack(bundle),
                          headers={"content-type": "application/gzip"})
    assert r.status_code == 400 and "requirements.txt line 1" in r.json()["detail"], r.text


@pytest.mark.slow
async def test_killed_sandbox_comes_back_with_the_sessions_state(session_env, client, live_url, admin_key, platform):
    from garrison.runtime.sessions import manager

    await deploy(client, "echo", "stateful")
    ac = agentcore(live_url, admin_key)
    session = _session()
    assert (await _invoke(ac, session, {"prompt": "one"}))["turns"] == ["one"]
    first = await _invoke(ac, session, {"prompt": "two"})
    assert first["turns"] == ["one", "two"] and first["restored"] == 0
    [sess] = [s for s in manager(platform.services["runtime"]).sessions.values() if s.session_id == session]
    for _ in range(400):  # checkpointed off the response path
        if sess.state_saved is not None and json.loads(sess.state_saved)["turns"] == ["one", "two"]:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the session state was not checkpointed: {sess.state_saved!r}")
    killed = sess.sandbox
    await killed.runtime.kill()  # SIGKILL to every process of the sandbox

    again = await _invoke(ac, session, {"prompt": "three"})
    assert again["instance"] != first["instance"]  # a fresh sandbox and process ...
    assert again["restored"] == 2 and again["turns"] == ["one", "two", "three"]  # ... with the state restored
    info = await _describe(client, session)
    assert info["sandboxes_started"] == 2 and info["last_sandbox"]["id"] == killed.id
    assert info["saved_state"]["restored_bytes"] == len(b'{"turns": ["one", "two"]}')
