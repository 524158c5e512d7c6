"""Sandboxed LangGraph agents: a version deployed with ``isolation = "sandbox"`` runs its graph's code in
its thread's session sandbox (not in garrison's process), calls the model through the gateway with the
thread's scoped token, and a SIGKILL of that sandbox in the middle of a step is retried in a fresh one."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
from pathlib import Path

import pytest

from garrison.runtime.bundles import pack
from garrison.runtime.sessions import manager
from runtime.helpers import AGENTS, deploy
from runtime.test_sessions import backend, deps_cache, upstream  # noqa: F401 (fixtures)


@pytest.fixture
def graph_env(monkeypatch: pytest.MonkeyPatch, deps_cache: Path, backend: str) -> None:  # noqa: F811
    monkeypatch.setenv("GARRISON_RUNTIME_DEPS_CACHE", str(deps_cache))
    monkeypatch.setenv("GARRISON_RUNTIME_SESSION_BACKEND", backend)
    monkeypatch.setenv("GARRISON_TEST_SECRET", "garrison's own environment")


def _probe(tmp_path: Path) -> Path:
    probe = tmp_path / "garrison-only.txt"
    probe.write_text("a file garrison can read")
    probe.chmod(0o644)
    return probe


def _graph_session(platform, thread_id: str):  # type: ignore[no-untyped-def]
    found = [s for s in manager(platform.services["runtime"]).sessions.values() if s.session_id == thread_id]
    assert len(found) == 1, found
    return found[0]


async def _run_wait(client, tid: str, body: dict) -> dict:  # type: ignore[no-untyped-def]
    r = await client.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "isolated", **body}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.slow
async def test_graph_code_runs_in_the_thread_sandbox(graph_env, client, platform, upstream, tmp_path, backend):  # noqa: F811
    described = await deploy(client, "isolated")
    assert described["versions"][0]["kind"] == "langgraph"
    probe = _probe(tmp_path)
    tid = (await client.post("/threads", json={})).json()["thread_id"]
    values = await _run_wait(client, tid, {"input": {"probe": str(probe)}})

    assert "seen" in values, values
    seen = values["seen"]
    assert seen["read"].startswith("denied"), seen  # garrison's file is not in the sandbox
    assert seen["hostname"] != socket.gethostname()
    assert seen["secret"] is None  # nor is garrison's environment
    assert seen["openai_base_url"].startswith("http://127.0.0.1:")  # its way out is garrison's egress
    assert values["slow_runs"] == 1 and values["answer"]
    assert upstream.stats.completed == 1  # the model call left the sandbox through the gateway
    sess = _graph_session(platform, tid)
    assert sess.alive() and sess.sandboxes_started == 1 and sess.sandbox.backend == backend

    # Durability stays in garrison's checkpointer: the thread's state and history read there.
    state = (await client.get(f"/threads/{tid}/state")).json()
    assert state["values"]["slow_runs"] == 1 and state["next"] == []
    history = (await client.post(f"/threads/{tid}/history", json={"limit": 10})).json()
    assert len(history) >= 3
    # A run's final values read after it ended elsewhere (nothing cached here) come from the sandbox too.
    runs = (await client.get(f"/threads/{tid}/runs")).json()
    platform.services["runtime"].executor._final.clear()
    joined = (await client.get(f"/threads/{tid}/runs/{runs[0]['run_id']}/join")).json()
    assert joined["slow_runs"] == 1 and joined["seen"]["hostname"] == seen["hostname"]
    # Neither the steps nor those reads (nor the deploy check) imported the graph in garrison's process.
    versions = str(platform.settings.data_dir / "runtime" / "agents")
    assert not [m for m in list(sys.modules.values()) if (getattr(m, "__file__", None) or "").startswith(versions)]

    # A second run on the thread continues from the checkpoint, in the same (sticky) sandbox.
    again = await _run_wait(client, tid, {"input": {"probe": str(probe), "no_model": True}})
    assert again["slow_runs"] == 2 and again["seen"]["pid"] == seen["pid"]
    assert sess.sandboxes_started == 1

    # The usage of the sandboxed call is attributed to the agent's version and the thread.
    entries = (await client.get("/api/usage/entries")).json()["entries"]
    mine = [e for e in entries if e["agent"] == "isolated"]
    assert len(mine) == 1 and mine[0]["session_id"] == tid and mine[0]["agent_version"] == "1"
    r = await client.get("/api/usage", params={"by": "agent_version"})
    assert r.status_code == 200, r.text
    rows = [row for row in r.json()["rows"] if row["agent"] == "isolated"]
    assert [(row["agent_version"], row["requests"]) for row in rows] == [("1", 1)]


@pytest.mark.slow
async def test_the_same_graph_in_process_can_read_garrisons_file(client, tmp_path, monkeypatch):
    """The control: with isolation = "process" the very same code reads the file and the environment."""
    monkeypatch.setenv("GARRISON_TEST_SECRET", "garrison's own environment")
    bundle = tmp_path / "inproc"
    shutil.copytree(AGENTS / "isolated", bundle)
    toml = bundle / "agent.toml"
    toml.write_text(toml.read_text().replace('isolation = "sandbox"', 'isolation = "process"'))
    r = await client.post("/api/runtime/agents/inproc/versions", content=pack(bundle),
                          headers={"content-type": "application/gzip"})
    assert r.status_code == 201, r.text
    probe = _probe(tmp_path)
    tid = (await client.post("/threads", json={})).json()["thread_id"]
    values = await _run_wait(client, tid, {"input": {"probe": str(probe), "no_model": True}})
    assert values["seen"]["read"] == "a file garrison can read"
    assert values["seen"]["secret"] == "garrison's own environment"


@pytest.mark.slow
async def test_sigkill_of_the_sandbox_mid_step_is_retried_in_a_fresh_one(graph_env, client, platform, upstream,  # noqa: F811
                                                                      tmp_path):
    await deploy(client, "isolated")
    tid = (await client.post("/threads", json={})).json()["thread_id"]
    run = (await client.post(f"/threads/{tid}/runs", json={
        "assistant_id": "isolated", "input": {"probe": str(_probe(tmp_path)), "sleep_s": 3},
        "stream_mode": ["values", "custom"]})).json()
    runtime = platform.services["runtime"]
    for _ in range(1200):  # the slow step has started in the sandbox
        events = await runtime.events.read(run["run_id"])
        if any(e.event == "custom" for e in events):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the slow step never started")
    sess = _graph_session(platform, tid)
    killed = sess.sandbox
    await killed.runtime.kill()  # SIGKILL to every process of the sandbox, mid-step

    r = await client.get(f"/threads/{tid}/runs/{run['run_id']}/join", timeout=300)
    assert r.status_code == 200, r.text
    assert r.json()["slow_runs"] == 1  # the killed step's work was not kept; the retry's was, once
    final = (await client.get(f"/threads/{tid}/runs/{run['run_id']}")).json()
    assert final["status"] == "success", final
    assert sess.sandboxes_started == 2 and sess.sandbox.id != killed.id
    assert sess.last_sandbox is not None and sess.last_sandbox["id"] == killed.id
    assert upstream.stats.completed == 1  # the completed first step did not run (nor call the model) again


@pytest.mark.slow
async def test_cancelling_a_run_stops_its_step_in_the_sandbox(graph_env, client, platform, upstream,  # noqa: F811
                                                             tmp_path):
    await deploy(client, "isolated")
    tid = (await client.post("/threads", json={})).json()["thread_id"]
    run = (await client.post(f"/threads/{tid}/runs", json={
        "assistant_id": "isolated", "input": {"probe": str(_probe(tmp_path)), "sleep_s": 120},
        "stream_mode": ["values", "custom"]})).json()
    runtime = platform.services["runtime"]
    for _ in range(1200):
        if any(e.event == "custom" for e in await runtime.events.read(run["run_id"])):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the slow step never started")
    sess = _graph_session(platform, tid)
    running = sess.sandbox
    r = await client.post(f"/threads/{tid}/runs/{run['run_id']}/cancel", params={"wait": 1}, timeout=120)
    assert r.status_code == 202, r.text
    final = (await client.get(f"/threads/{tid}/runs/{run['run_id']}")).json()
    assert final["status"] == "interrupted", final
    for _ in range(600):  # the step does not go on in its sandbox: the sandbox ends
        if sess.last_sandbox is not None and sess.last_sandbox["id"] == running.id:
            break
        await asyncio.sleep(0.05)
    assert running.state != "running" and not sess.alive()
    assert sess.last_sandbox is not None and sess.last_sandbox["killed_reason"] == "step_cancelled"


@pytest.mark.slow
async def test_interrupt_and_resume_in_the_sandbox(graph_env, client, tmp_path):
    """Human in the loop: interrupt() inside the sandbox, then Command(resume=...) into it."""
    bundle = tmp_path / "approver"
    shutil.copytree(AGENTS / "steps", bundle)
    (bundle / "langgraph.json").unlink()
    (bundle / "agent.toml").write_text('[agent]\nisolation = "sandbox"\n[graphs]\napprover = "graph.py:approval"\n')
    r = await client.post("/api/runtime/agents/approver/versions", content=pack(bundle),
                          headers={"content-type": "application/gzip"})
    assert r.status_code == 201, r.text
    tid = (await client.post("/threads", json={})).json()["thread_id"]
    r = await client.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "approver", "input": {"log": []}},
                          timeout=300)
    assert r.status_code == 200 and r.json()["__interrupt__"][0]["value"] == {"question": "approve the plan?"}, r.text
    state = (await client.get(f"/threads/{tid}/state")).json()
    assert state["next"] == ["approve"] and state["tasks"][0]["interrupts"][0]["value"]["question"]
    r = await client.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "approver",
                                                             "command": {"resume": "yes"}}, timeout=300)
    assert r.json() == {"log": ["proposed", "approved:yes"]}
    statuses = [run["status"] for run in (await client.get(f"/threads/{tid}/runs")).json()]
    assert statuses == ["success", "interrupted"]


async def test_a_sandboxed_graph_that_does_not_import_is_refused_at_deploy(graph_env, client, tmp_path):
    bundle = tmp_path / "broken"
    bundle.mkdir()
    (bundle / "agent.toml").write_text('[agent]\nisolation = "sandbox"\n[graphs]\nbroken = "graph.py:graph"\n')
    (bundle / "graph.py").write_text("raise RuntimeError('no graph today')\n")
    r = await client.post("/api/runtime/agents/broken/versions", content=pack(bundle),
                          headers={"content-type": "application/gzip"})
    assert r.status_code == 422 and "no graph today" in r.json()["detail"], r.text


async def test_operators_can_refuse_in_process_graphs(client, monkeypatch, tmp_path):
    from garrison.runtime.deploy_sandbox import isolation_of

    bundle = tmp_path / "inproc"
    shutil.copytree(AGENTS / "isolated", bundle)
    toml = bundle / "agent.toml"
    toml.write_text(toml.read_text().replace('isolation = "sandbox"', 'isolation = "process"'))
    monkeypatch.setenv("GARRISON_RUNTIME_GRAPH_ALLOW_PROCESS", "false")
    r = await client.post("/api/runtime/agents/inproc/versions", content=pack(bundle),
                          headers={"content-type": "application/gzip"})
    assert r.status_code == 400 and "sandboxes only" in r.json()["detail"], r.text
    # A bundle that does not say (langgraph.json) is sandboxed there, whatever the default.
    assert isolation_of(AGENTS / "steps", "process", allow_process=False) == "sandbox"
    assert isolation_of(AGENTS / "steps", "process") == "process"


def test_the_runtime_closure_is_what_langgraph_imports():
    from garrison.runtime.deploy_sandbox import runtime_closure

    names = {d.metadata["Name"].lower().replace("_", "-") for d in runtime_closure()}
    assert {"langgraph", "langgraph-checkpoint", "langchain-core", "pydantic", "ormsgpack"} <= names
    assert "temporalio" not in names and "fastapi" not in names  # garrison's own stack stays out


def test_langgraph_versions_run_in_sandboxes_unless_told_otherwise(monkeypatch):
    from garrison.runtime.deploy_sandbox import isolation_of
    from garrison.runtime.sandboxed_steps import GraphIsolationSettings

    monkeypatch.delenv("GARRISON_RUNTIME_GRAPH_ISOLATION", raising=False)
    default = GraphIsolationSettings()
    assert default.isolation == "sandbox" and default.allow_process
    # langgraph.json alone says nothing: sandboxed; an agent.toml may still ask for the process.
    assert isolation_of(AGENTS / "steps", default.isolation, default.allow_process) == "sandbox"
    assert isolation_of(AGENTS / "versioned", default.isolation, default.allow_process) == "sandbox"
    monkeypatch.setenv("GARRISON_RUNTIME_GRAPH_ISOLATION", "process")
    assert GraphIsolationSettings().isolation == "process"
