"""One trace per agent invocation, read back from garrison's trace store (``GET /api/traces/{id}``).

Real components throughout: a durable run on the embedded Temporal worker, the LLM gateway in front
of the fake upstream, the tools gateway in front of the fixture MCP server, and session sandboxes.
Every span of an invocation (the request's, the runtime's invocation, run and steps, the gateways'
calls, the sandbox's create and exec) is in the caller's trace, and every parent id names a span of
that trace, except the root's, which names the caller's own span.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from garrison.llm.fake_upstream import FakeConfig, FakeUpstream
from garrison.runtime.bundles import pack
from runtime.helpers import deploy
from runtime.test_sessions import backend, deps_cache, upstream  # noqa: F401 (fixtures)


async def _until(predicate: Callable[[], Awaitable[Any]], what: str, within: float = 60.0) -> Any:
    for _ in range(int(within / 0.1)):
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _walk(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for span in spans:
        out.append(span)
        out.extend(_walk(span.get("children") or []))
    return out


def _caller() -> tuple[str, str, dict[str, str]]:
    """A caller's trace id, its span id, and the traceparent header naming them."""
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    return trace_id, span_id, {"traceparent": f"00-{trace_id}-{span_id}-01"}


async def _trace(client: Any, platform: Any, trace_id: str,
                 complete: Callable[[list[dict[str, Any]]], bool], what: str) -> tuple[dict[str, Any], list[dict]]:
    async def read() -> tuple[dict[str, Any], list[dict]] | None:
        await platform.services["telemetry"].flush()
        r = await client.get(f"/api/traces/{trace_id}")
        if r.status_code != 200:
            return None
        body = r.json()
        spans = _walk(body["spans"])
        return (body, spans) if complete(spans) else None

    return await _until(read, what)  # type: ignore[no-any-return]


def _one(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name]
    assert len(found) == 1, (name, [s["name"] for s in spans])
    return found[0]


def _assert_one_tree(body: dict[str, Any], spans: list[dict[str, Any]], caller_span: str) -> dict[str, Any]:
    """Every parent is a span of the trace but the root's, which is the caller's span; returns the root."""
    ids = {s["span_id"] for s in spans}
    assert len(ids) == len(spans)  # no span twice
    roots = [s for s in spans if s["parent_span_id"] not in ids]
    assert [(r["name"], r["parent_span_id"]) for r in roots] == [(roots[0]["name"], caller_span)], roots
    assert body["orphan_count"] == 1 and body["span_count"] == len(spans)
    assert all(s["trace_id"] == body["trace_id"] for s in spans)
    return roots[0]


@pytest.fixture
async def gateways(client, live_url, monkeypatch):  # type: ignore[no-untyped-def]
    """A model behind the LLM gateway and the fixture MCP server behind the tools gateway."""
    from tests.tools.servers import failing_upstream

    async with FakeUpstream(FakeConfig(completion_tokens=5)) as model:
        r = await client.post("/api/llm/models", json={"model": "fake-model", "base_url": model.base_url})
        assert r.status_code == 201, r.text
        with failing_upstream({}) as (url, _):
            r = await client.post("/api/tools/upstreams", json={"name": "fixture", "url": url})
            assert r.status_code == 201, r.text
            r = await client.post("/api/tools/virtual-servers", json={
                "name": "agents", "tools": [{"upstream": "fixture", "tool": "*"}]})
            assert r.status_code in (200, 201), r.text
            monkeypatch.setenv("AGENT_LLM_BASE_URL", live_url + "/v1")
            monkeypatch.setenv("AGENT_MCP_URL", live_url + "/mcp/agents")
            yield model


def _run_done(spans: list[dict[str, Any]]) -> bool:
    """The run has ended, and the span of its last step (which ends after the run's) has arrived."""
    steps = sum(s["name"] == "runtime.run_step" for s in spans)
    return any(s["name"] == "runtime.run" for s in spans) and steps >= 3


def _run_tree(spans: list[dict[str, Any]], root: dict[str, Any]) -> dict[str, Any]:
    """The runtime's spans under the request's: invocation -> run -> steps -> the steps' calls."""
    invoke = _one(spans, "invoke_agent traced")
    run = _one(spans, "runtime.run")
    steps = [s for s in spans if s["name"] == "runtime.run_step"]
    chat = _one(spans, "chat fake-model")
    tool = _one(spans, "tools/call fixture__add")
    assert invoke["parent_span_id"] == root["span_id"]
    assert run["parent_span_id"] == invoke["span_id"]
    assert len(steps) >= 3 and all(s["parent_span_id"] == run["span_id"] for s in steps)
    by_id = {s["span_id"]: s for s in spans}

    def step_above(span: dict[str, Any]) -> int:  # the client's own spans (MCP SDK) may sit between
        while span["name"] != "runtime.run_step":
            span = by_id[span["parent_span_id"]]
        return int(span["attributes"]["garrison.step"])

    # Each call is in the step that made it (ask is step 0, act step 1).
    assert step_above(chat) == 0 and step_above(tool) == 1
    assert by_id[chat["parent_span_id"]]["name"] == "runtime.run_step"  # a plain HTTP client: the step's child
    return {"invoke": invoke, "run": run, "steps": steps, "chat": chat, "tool": tool}


@pytest.mark.parametrize("route", ["background", "wait", "agentcore"])
async def test_a_run_is_one_trace_across_runtime_and_gateways(client, platform, admin_key, gateways, route):
    await deploy(client, "traced")
    trace_id, caller_span, headers = _caller()
    if route == "background":  # a background durable run, joined later by another request
        tid = (await client.post("/threads", json={})).json()["thread_id"]
        r = await client.post(f"/threads/{tid}/runs", headers=headers,
                              json={"assistant_id": "traced", "input": {"question": "traced?"}})
        assert r.status_code == 200, r.text
        joined = await client.get(f"/threads/{tid}/runs/{r.json()['run_id']}/join")
        assert joined.json()["total"] == "42", joined.text
        request = "POST /threads/{thread_id}/runs"
    elif route == "wait":  # a stateless run the request waits for
        r = await client.post("/runs/wait", headers=headers,
                              json={"assistant_id": "traced", "input": {"question": "traced?"}})
        assert r.status_code == 200 and r.json()["total"] == "42", r.text
        request = "POST /runs/wait"
    else:  # AgentCore's client contract: the payload is the graph's input
        r = await client.post("/runtimes/traced/invocations", headers={
            **headers, "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": "trace-session-" + "t" * 30},
            json={"question": "traced?"})
        assert r.status_code == 200 and r.json()["total"] == "42", r.text
        request = "POST /runtimes/{agent_runtime:path}/invocations"
    assert gateways.stats.completed == 1

    body, spans = await _trace(client, platform, trace_id, _run_done, "the run's spans in the caller's trace")
    root = _assert_one_tree(body, spans, caller_span)
    assert root["name"] == request and root["kind"] != "model"
    if route != "agentcore":  # FastAPI's server span: the answer's traceparent names it
        assert r.headers["traceparent"].split("-")[1:3] == [trace_id, root["span_id"]]
    tree = _run_tree(spans, root)

    # Usage is attributed to agent, version, session and user: on the runtime's spans...
    owner = await platform.identity.authenticate(admin_key)
    run, invoke = tree["run"], tree["invoke"]
    for span in (invoke, run):
        assert span["agent"] == "traced" and span["user_id"] == owner.id
        assert span["attributes"]["garrison.agent_version"] == "1"
        assert span["attributes"]["garrison.run_id"] == run["attributes"]["garrison.run_id"]
        assert span["session_id"] == run["attributes"]["gen_ai.conversation.id"]
    assert run["kind"] == "workflow" and invoke["kind"] == "agent" and run["status"] != "error"
    # ... on the gateways' spans, so a trace query by agent, session or user finds the model and tool calls...
    for span in (tree["chat"], tree["tool"]):
        assert (span["agent"], span["user_id"], span["session_id"]) == ("traced", owner.id, run["session_id"]), span
        assert span["attributes"]["garrison.agent_version"] == "1", span
    # ... and in the ledger, where the model call's entry names the same trace.
    entries = (await client.get("/api/usage/entries")).json()["entries"]
    mine = [e for e in entries if e["trace_id"] == trace_id]
    assert len(mine) == 1, entries
    assert (mine[0]["agent"], mine[0]["agent_version"], mine[0]["user_id"], mine[0]["session_id"]) == (
        "traced", "1", owner.id, run["session_id"])
    # Every invocation is audited, with the trace it is in.
    await platform.audit.flush()
    audited = [e for e in (await client.get("/api/audit", params={"limit": 500})).json()
               if e["action"] == "runtime:invoke" and e["resource"] == f"run/{run['attributes']['garrison.run_id']}"]
    assert len(audited) == 1 and json.loads(audited[0]["context"])["trace_id"] == trace_id, audited


async def test_a_run_resumed_by_another_request_stays_in_its_trace(client, platform, gateways, monkeypatch):
    # The trace crosses Temporal's workflow/activity boundary through the run's row, not memory: the
    # steps after a human's input (a request in a trace of its own) are still children of the run.
    monkeypatch.setenv("AGENT_REVIEW", "1")
    await deploy(client, "traced")
    trace_id, caller_span, headers = _caller()
    tid = (await client.post("/threads", json={})).json()["thread_id"]
    r = await client.post(f"/threads/{tid}/runs", headers=headers, json={
        "assistant_id": "traced", "input": {"question": "approve?"}, "hold_for_input_s": 120})
    assert r.status_code == 200, r.text
    run_id = r.json()["run_id"]

    async def waiting() -> bool:
        return bool((await client.get(f"/threads/{tid}")).json()["status"] == "interrupted")

    await _until(waiting, "the run to wait for review")
    other_trace, _, other = _caller()
    r = await client.post(f"/api/runtime/runs/{run_id}/input", json={"value": "approved"}, headers=other)
    assert r.status_code == 202, r.text
    joined = await client.get(f"/threads/{tid}/runs/{run_id}/join")
    assert joined.json()["verdict"] == "approved", joined.text

    body, spans = await _trace(client, platform, trace_id, _run_done, "the resumed run's spans in its trace")
    root = _assert_one_tree(body, spans, caller_span)
    tree = _run_tree(spans, root)
    resumed = [s for s in tree["steps"] if s["attributes"]["garrison.step"] >= 2]
    assert resumed and all(s["parent_span_id"] == tree["run"]["span_id"] for s in resumed)
    r = await client.get(f"/api/traces/{other_trace}")
    assert r.status_code in (200, 404)
    if r.status_code == 200:  # the input request's own trace holds no step of the run
        assert not [s for s in _walk(r.json()["spans"]) if s["name"].startswith("runtime.")]


SERVER = r'''
import http.server, json, os, time, urllib.request
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self._json({"status": "Healthy", "time_of_last_update": int(time.time())})
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        # An agent that knows nothing of tracing: its model call carries no traceparent.
        request = urllib.request.Request(
            os.environ["OPENAI_BASE_URL"] + "/chat/completions", method="POST",
            data=json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}).encode(),
            headers={"content-type": "application/json", "authorization": "Bearer " + os.environ["OPENAI_API_KEY"]})
        with urllib.request.urlopen(request, timeout=60) as resp:
            answer = json.loads(resp.read())["choices"][0]["message"]["content"]
        self._json({"answer": answer, "traceparent": self.headers.get("traceparent")})
    def _json(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), H).serve_forever()
'''


async def test_a_session_invocation_is_one_trace_across_sandbox_and_gateway(client, platform, admin_key, gateways,
                                                                           tmp_path):
    bundle = tmp_path / "plain"
    bundle.mkdir()
    (bundle / "agent.toml").write_text('[agent]\nname = "plain"\nkind = "agentcore"\nentrypoint = "server.py"\n')
    (bundle / "server.py").write_text(SERVER)
    r = await client.post("/api/runtime/agents/plain/versions", content=pack(bundle),
                          headers={"content-type": "application/gzip"})
    assert r.status_code == 201, r.text
    session = {"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": "trace-plain-" + "p" * 30}
    route = "POST /runtimes/{agent_runtime:path}/invocations"
    owner = await platform.identity.authenticate(admin_key)

    for turn in ("cold", "warm"):  # the first starts the sandbox; the second takes the fast path
        trace_id, caller_span, headers = _caller()
        r = await client.post("/runtimes/plain/invocations", json={}, headers={**session, **headers})
        assert r.status_code == 200, r.text
        # The agent was handed garrison's invocation span as its parent, not the caller's.
        handed = r.json()["traceparent"].split("-")
        assert handed[1] == trace_id and handed[2] != caller_span

        wanted = {route, "chat fake-model"} | ({"sandbox.create", "sandbox.exec"} if turn == "cold" else set())
        body, spans = await _trace(client, platform, trace_id, lambda spans, wanted=wanted: wanted <= {s["name"] for s in spans},
                                   f"the {turn} invocation's spans in the caller's trace")
        root = _assert_one_tree(body, spans, caller_span)
        assert root["name"] == route and root["span_id"] == handed[2]
        assert root["agent"] == "plain" and root["session_id"] == session[next(iter(session))]
        assert root["attributes"]["garrison.agent_version"] == "1"
        chat = _one(spans, "chat fake-model")
        assert chat["parent_span_id"] == root["span_id"]  # the agent's call, through the sandbox's egress
        # The agent's model call is attributed to agent, version, session and user on its span too.
        assert (chat["agent"], chat["session_id"], chat["user_id"]) == ("plain", root["session_id"], owner.id), chat
        assert chat["attributes"]["garrison.agent_version"] == "1"
        # The invocation is audited, with the trace it is in (cold: the route's entry; warm: the fast path's).
        await platform.audit.flush()
        audited = [e for e in (await client.get("/api/audit", params={"limit": 500})).json()
                   if e["action"] == "runtime:invoke" and e["resource"] == "/runtimes/plain/invocations"
                   and json.loads(e["context"]).get("trace_id") == trace_id]
        assert len(audited) == 1 and audited[0]["decision"] == "allow", audited
        if turn == "cold":
            create, spawn = _one(spans, "sandbox.create"), _one(spans, "sandbox.exec")
            assert create["parent_span_id"] == root["span_id"] and spawn["parent_span_id"] == root["span_id"]
            assert spawn["attributes"]["sandbox.id"] == root["attributes"]["sandbox.id"]
        else:
            assert not {"sandbox.create", "sandbox.exec"} & {s["name"] for s in spans}
    assert gateways.stats.completed == 2


@pytest.mark.slow
async def test_a_sandboxed_graph_step_is_one_trace_with_its_sandbox(client, platform, tmp_path, monkeypatch,
                                                                    deps_cache, backend, upstream):  # noqa: F811
    # isolation = "sandbox": the step's session sandbox is created and its runner started inside the
    # step's span, and the graph's model call (from the sandbox, through its egress) is the step's child.
    monkeypatch.setenv("GARRISON_RUNTIME_DEPS_CACHE", str(deps_cache))
    monkeypatch.setenv("GARRISON_RUNTIME_SESSION_BACKEND", backend)
    await deploy(client, "isolated")
    trace_id, caller_span, headers = _caller()
    tid = (await client.post("/threads", json={})).json()["thread_id"]
    r = await client.post(f"/threads/{tid}/runs/wait", headers=headers, timeout=300,
                          json={"assistant_id": "isolated", "input": {"probe": str(tmp_path / "none")}})
    assert r.status_code == 200 and r.json()["answer"], r.text

    def done(spans: list[dict[str, Any]]) -> bool:
        names = [s["name"] for s in spans]
        return {"runtime.run", "sandbox.create", "sandbox.exec", "chat fake-model"} <= set(names) \
            and names.count("runtime.run_step") >= 2

    body, spans = await _trace(client, platform, trace_id, done, "the sandboxed run's spans in the caller's trace")
    root = _assert_one_tree(body, spans, caller_span)
    invoke = _one(spans, "invoke_agent isolated")
    run = _one(spans, "runtime.run")
    assert invoke["parent_span_id"] == root["span_id"] and run["parent_span_id"] == invoke["span_id"]
    first = next(s for s in spans if s["name"] == "runtime.run_step" and s["attributes"]["garrison.step"] == 0)
    assert first["parent_span_id"] == run["span_id"]
    create, start, chat = (_one(spans, n) for n in ("sandbox.create", "sandbox.exec", "chat fake-model"))
    assert create["parent_span_id"] == first["span_id"] and start["parent_span_id"] == first["span_id"]
    assert chat["parent_span_id"] == first["span_id"]
    assert create["attributes"]["sandbox.backend"] == backend == start["attributes"]["sandbox.backend"]
