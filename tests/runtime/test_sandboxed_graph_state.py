"""Sandboxed LangGraph graphs and the state beyond their root checkpoint: ``get_store()`` inside the sandbox is
garrison's long-term store (the /store API through the sandbox's egress, with the run's scopes), and a
subgraph that interrupts inside itself resumes from its own checkpoint namespace.

On bubblewrap only (the isolation itself is tested on both backends in test_sessions_graphs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.core.principal import Principal
from garrison.runtime.attribution import RUN_SCOPES, run_scopes
from garrison.runtime.sessions import Session, manager
from runtime.helpers import deploy
from runtime.test_sessions import deps_cache  # noqa: F401 (fixture)
from tests.sandbox.helpers import make_backend


@pytest.fixture
def bwrap_env(monkeypatch: pytest.MonkeyPatch, deps_cache: Path, tmp_path: Path) -> None:  # noqa: F811
    make_backend("bubblewrap", tmp_path)  # skips (fails in CI) when bubblewrap is missing
    monkeypatch.setenv("GARRISON_RUNTIME_DEPS_CACHE", str(deps_cache))
    monkeypatch.setenv("GARRISON_RUNTIME_SESSION_BACKEND", "bubblewrap")


def _session(platform, thread_id: str):  # type: ignore[no-untyped-def]
    found = [s for s in manager(platform.services["runtime"]).sessions.values() if s.session_id == thread_id]
    assert len(found) == 1, found
    return found[0]


async def _wait(client, tid: str, assistant: str, **body) -> dict:  # type: ignore[no-untyped-def]
    r = await client.post(f"/threads/{tid}/runs/wait", json={"assistant_id": assistant, **body}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.slow
async def test_get_store_in_the_sandbox_is_garrisons_store_across_threads(bwrap_env, client, platform):
    await deploy(client, "isolated-extras")
    first = (await client.post("/threads", json={})).json()["thread_id"]
    values = await _wait(client, first, "remembering", input={"user": "ada", "key": "k1", "note": "likes tea"})
    assert "__error__" not in values, values
    assert values["got"] == {"text": "likes tea"} and values["found"] == ["likes tea"], values
    assert values["namespaces"] == [["memories", "ada"]]
    # What the graph put is in the tenant's store, as an API client sees it.
    r = await client.get("/store/items", params={"namespace": "memories.ada", "key": "k1"})
    assert r.status_code == 200 and r.json()["value"] == {"text": "likes tea"}, r.text

    # Another thread: another sandbox, the same memory; it adds an item, then forgets the first.
    second = (await client.post("/threads", json={})).json()["thread_id"]
    values = await _wait(client, second, "remembering", input={"user": "ada", "key": "k2", "note": "likes chess"})
    assert values["got"] == {"text": "likes tea"} and values["found"] == ["likes chess", "likes tea"], values
    assert _session(platform, second).sandbox.id != _session(platform, first).sandbox.id
    values = await _wait(client, second, "remembering", input={"user": "ada", "forget": "k1"})
    assert values["got"] is None and values["found"] == ["likes chess"], values
    r = await client.get("/store/items", params={"namespace": "memories.ada", "key": "k1"})
    assert r.status_code == 404, r.text

    # The run's store scopes went to the store token that only the egress holds, never to the sandbox's own.
    sess = _session(platform, second)
    assert {"runtime:read", "runtime:invoke"} <= set(sess.scopes)
    visible = await platform.identity.authenticate(sess.token)
    assert not visible.has_scope("runtime:read") and not visible.has_scope("runtime:invoke")


async def test_store_scopes_go_only_to_the_egress_token(platform):
    sessions = manager(platform.services["runtime"])
    tenant = platform.identity.default_tenant_id
    sess = Session(tenant, "graph", "v1", "t" * 40, owner="alice",
                   scopes=("llm:invoke", "runtime:read", "runtime:invoke"), kind="langgraph")
    visible = await platform.identity.authenticate(sessions.current_token(sess))
    assert visible.scopes == frozenset({"llm:invoke"})
    store = await platform.identity.authenticate(sessions.current_token(sess, store=True))
    assert store.scopes == frozenset({"runtime:read", "runtime:invoke"}) and store.id == "alice"
    assert store.tenant_id == tenant and store.session_id == "t" * 40
    sess.scopes = ("llm:invoke",)  # a run whose creator has no store scope: no store token at all
    sess.store_token_expires = 0.0
    assert sessions.current_token(sess, store=True) == ""


def test_runs_get_only_the_store_scopes_their_owner_has():
    def who(*scopes: str) -> Principal:
        return Principal(id="u", tenant_id="t", kind="user", scopes=frozenset(scopes), name="u")

    assert run_scopes(who("runtime:invoke", "llm:invoke")) == ["llm:invoke", "runtime:invoke"]
    assert set(run_scopes(who("admin:*"))) == {*RUN_SCOPES, "runtime:read", "runtime:invoke"}
    assert run_scopes(who("runtime:read")) == ["runtime:read"]


@pytest.mark.slow
async def test_a_subgraph_that_interrupts_in_the_sandbox_resumes_with_its_own_state(bwrap_env, client, platform):
    await deploy(client, "isolated-extras")
    tid = (await client.post("/threads", json={})).json()["thread_id"]
    first = await _wait(client, tid, "nested", input={"log": []})
    asked = first["__interrupt__"][0]["value"]
    assert asked["question"] == "approve the draft?" and asked["draft"].startswith("plan-"), first
    state = (await client.get(f"/threads/{tid}/state")).json()
    assert state["next"] == ["plan"], state

    # The subgraph's own checkpoint (namespace plan:<task id>) came back out of the sandbox into garrison's.
    saver = platform.services["state"].saver(_session(platform, tid).tenant_id)
    where = {"configurable": {"thread_id": tid}}
    spaces = {t.config["configurable"]["checkpoint_ns"] async for t in saver.alist(where)}
    assert any(ns.startswith("plan:") for ns in spaces), spaces

    # Resumed: the review sees the draft the subgraph made before it interrupted (not a fresh one).
    done = await _wait(client, tid, "nested", command={"resume": "yes"})
    assert done == {"log": [f"reviewed {asked['draft']}: yes", "finished"]}, done
    runs = (await client.get(f"/threads/{tid}/runs")).json()
    assert [r["status"] for r in runs] == ["success", "interrupted"]
    assert _session(platform, tid).sandboxes_started == 1
