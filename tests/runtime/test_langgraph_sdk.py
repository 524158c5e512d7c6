"""The real `langgraph-sdk` client (get_client, RemoteGraph) against garrison over a real socket."""

from __future__ import annotations

import pytest
from langgraph.pregel.remote import RemoteGraph
from langgraph_sdk import get_client
from langgraph_sdk.errors import NotFoundError

from runtime.helpers import deploy, sse_events


@pytest.fixture
def db_url(tmp_path):  # type: ignore[no-untyped-def]
    """SQLite only: the wire protocol does not depend on the database; test_runs.py covers both stores."""
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


@pytest.fixture
async def sdk(client, live_url, admin_key):
    await deploy(client, "steps")
    lg = get_client(url=live_url, headers={"Authorization": f"Bearer {admin_key}"})
    yield lg
    await lg.http.client.aclose()


async def test_sdk_thread_stream_interrupt_resume_history(sdk):
    assistants = await sdk.assistants.search(graph_id="approval")
    assert [a["graph_id"] for a in assistants] == ["approval"]
    thread = await sdk.threads.create(metadata={"user": "ada"})
    created = []
    parts = [p async for p in sdk.runs.stream(thread["thread_id"], "approval", input={"log": []},
                                             stream_mode=["values", "updates"], on_run_created=created.append)]
    assert parts[0].event == "metadata" and created and created[0]["thread_id"] == thread["thread_id"]
    interrupts = [p.data["__interrupt__"] for p in parts if p.event == "updates" and "__interrupt__" in p.data]
    assert interrupts and interrupts[0][0]["value"] == {"question": "approve the plan?"}
    state = await sdk.threads.get_state(thread["thread_id"])
    assert state["next"] == ["approve"]

    resumed = [p async for p in sdk.runs.stream(thread["thread_id"], "approval", command={"resume": "ok"},
                                               stream_mode="values")]
    assert resumed[-1].data == {"log": ["proposed", "approved:ok"]}
    history = await sdk.threads.get_history(thread["thread_id"], limit=10)
    assert history[0]["values"]["log"] == ["proposed", "approved:ok"] and len(history) >= 4
    # Time travel: the state at an earlier checkpoint.
    earlier = history[-2]["checkpoint"]["checkpoint_id"]
    assert (await sdk.threads.get_state(thread["thread_id"], checkpoint_id=earlier))["checkpoint"][
        "checkpoint_id"] == earlier
    found = await sdk.threads.search(metadata={"user": "ada"})
    assert [t["thread_id"] for t in found] == [thread["thread_id"]]


async def test_sdk_background_run_join_wait_and_stateless(sdk):
    thread = await sdk.threads.create()
    run = await sdk.runs.create(thread["thread_id"], "steps", input={"log": []})
    assert (await sdk.runs.join(thread["thread_id"], run["run_id"]))["log"] == ["first", "second", "third"]
    assert (await sdk.runs.get(thread["thread_id"], run["run_id"]))["status"] == "success"
    joined = [p async for p in sdk.runs.join_stream(thread["thread_id"], run["run_id"])]
    assert joined[0].event == "metadata" and joined[-1].data["log"] == ["first", "second", "third"]
    assert await sdk.runs.wait(None, "steps", input={"log": ["s"]}) == {"log": ["s", "first", "second", "third"]}
    stateless = [p async for p in sdk.runs.stream(None, "steps", input={"log": []}, stream_mode="updates")]
    assert [list(p.data) for p in stateless if p.event == "updates"] == [["first"], ["second"], ["third"]]
    with pytest.raises(NotFoundError):
        await sdk.threads.get("00000000-0000-0000-0000-000000000000")


async def test_remote_graph_invoke_and_stream(sdk, live_url, admin_key):
    remote = RemoteGraph("steps", url=live_url, headers={"Authorization": f"Bearer {admin_key}"})
    out = await remote.ainvoke({"log": []})
    assert out == {"log": ["first", "second", "third"]}
    chunks = [c async for c in remote.astream({"log": []}, stream_mode="updates")]
    assert [list(c) for c in chunks] == [["first"], ["second"], ["third"]]


async def test_sdk_store_on_the_state_layer(sdk):
    await sdk.store.put_item(["users", "ada"], "prefs", {"seat": "window", "meal": "veg"})
    await sdk.store.put_item(["users", "bob"], "prefs", {"seat": "aisle"})
    item = await sdk.store.get_item(["users", "ada"], "prefs")
    assert item["value"] == {"seat": "window", "meal": "veg"} and item["namespace"] == ["users", "ada"]
    found = await sdk.store.search_items(["users"], filter={"seat": "aisle"})
    assert [i["namespace"] for i in found["items"]] == [["users", "bob"]]
    spaces = await sdk.store.list_namespaces(prefix=["users"])
    assert sorted(spaces["namespaces"]) == [["users", "ada"], ["users", "bob"]]
    await sdk.store.delete_item(["users", "ada"], "prefs")
    with pytest.raises(NotFoundError):
        await sdk.store.get_item(["users", "ada"], "prefs")


async def test_agent_protocol_aliases(client):
    await deploy(client, "steps")
    agents = (await client.post("/agents/search", json={"name": "steps"})).json()
    assert [a["name"] for a in agents] == ["steps"]
    agent_id = agents[0]["agent_id"]
    assert (await client.get(f"/agents/{agent_id}")).json()["agent_id"] == agent_id
    tid = (await client.post("/threads", json={})).json()["thread_id"]
    # POST /runs with thread_id in the body: a run on that thread, addressed by run id alone.
    run = (await client.post("/runs", json={"agent_id": agent_id, "assistant_id": agent_id, "thread_id": tid,
                                            "input": {"log": []}})).json()
    assert run["thread_id"] == tid
    assert (await client.get(f"/runs/{run['run_id']}/wait")).json() == {"log": ["first", "second", "third"]}
    assert (await client.get(f"/runs/{run['run_id']}")).json()["status"] == "success"
    async with client.stream("GET", f"/runs/{run['run_id']}/stream", headers={"Last-Event-ID": "1"}) as r:
        replayed = await sse_events(r)
    assert replayed and replayed[0]["id"] == "2"
    found = (await client.post("/runs/search", json={"thread_id": tid, "status": "success"})).json()
    assert [f["run_id"] for f in found] == [run["run_id"]]
    assert (await client.post("/runs/search", json={"status": "bogus"})).status_code == 400
    assert (await client.delete(f"/runs/{run['run_id']}")).status_code == 204
    assert (await client.get(f"/runs/{run['run_id']}")).status_code == 404


async def test_graph_calling_a_model_through_the_gateway_with_human_review(client, sdk, live_url, make_key,
                                                                          monkeypatch):
    """langgraph-sdk drives a graph whose nodes call a model via garrison's LLM gateway (fake upstream)
    and a tool via garrison's tools gateway (garrison's fixture MCP server), with the run's own token."""
    from tests.tools.servers import fixture_mcp

    with fixture_mcp() as mcp_upstream:
        r = await client.post("/api/tools/upstreams", json={"name": "fixture", "url": mcp_upstream})
        assert r.status_code == 201, r.text
        r = await client.post("/api/tools/virtual-servers", json={
            "name": "agents", "tools": [{"upstream": "fixture", "tool": "*"}]})
        assert r.status_code == 201, r.text
        monkeypatch.setenv("AGENT_MCP_URL", live_url + "/mcp/agents")
        await _model_tool_review(client, sdk, live_url, make_key, monkeypatch)


async def _model_tool_review(client, sdk, live_url, make_key, monkeypatch):  # type: ignore[no-untyped-def]
    from garrison.llm.fake_upstream import FakeConfig, FakeUpstream

    async with FakeUpstream(FakeConfig(completion_tokens=8)) as upstream:
        r = await client.post("/api/llm/models", json={"model": "fake-model", "base_url": upstream.base_url})
        assert r.status_code == 201, r.text
        monkeypatch.setenv("AGENT_LLM_BASE_URL", live_url + "/v1")
        monkeypatch.setenv("AGENT_LLM_KEY", await make_key(["llm:invoke"], principal="assistant-agent"))
        await deploy(client, "assistant")
        thread = await sdk.threads.create()
        parts = [p async for p in sdk.runs.stream(thread["thread_id"], "assistant",
                                                 input={"question": "What is garrison?"}, stream_mode="updates")]
        drafted = [p.data["draft"] for p in parts if p.event == "updates" and "draft" in p.data]
        assert drafted and drafted[0]["draft"] and drafted[0]["tokens"] > 0
        checked = [p.data["check"] for p in parts if p.event == "updates" and "check" in p.data]
        assert checked == [{"checked": str(drafted[0]["tokens"] + 1)}]  # the tool answered, through the gateway
        waiting = [p.data["__interrupt__"] for p in parts if p.event == "updates" and "__interrupt__" in p.data]
        assert waiting[0][0]["value"] == {"draft": drafted[0]["draft"]}
        assert upstream.stats.completed == 1  # the model call went through the gateway to the upstream
        assert upstream.stats.last_body["messages"][0]["content"] == "What is garrison?"
        final = await sdk.runs.wait(thread["thread_id"], "assistant", command={"resume": "approved"})
        assert final["verdict"] == "approved" and final["draft"] == drafted[0]["draft"]
        history = await sdk.threads.get_history(thread["thread_id"])
        assert [h["next"] for h in history][:3] == [[], ["review"], ["check"]]
        assert upstream.stats.completed == 1  # resuming did not call the model again
