"""backend=kubernetes end to end against the fake API server: the template is applied through
the API, a sandbox is a SandboxClaim whose "pod" is a real garrison agent (agent_listen.py,
run locally by the fake controller), code, commands and files go over its TCP transport,
and a kill deletes the claim. Plus: the agent's TCP transport refuses a wrong token."""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from garrison.config import Settings
from tests.sandbox.kube_fake import FakeKubeAPI, make_pki
from tests.sandbox.test_kube_api import write_kubeconfig

NS = "garrison-sbx"
AGENT = Path(__file__).resolve().parents[2] / "garrison" / "sandbox"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeKubeAPI]:
    api = FakeKubeAPI(make_pki(), run_agents=True, workspaces=tmp_path / "pods")
    await api.start(tmp_path)
    api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}, "kubectl")
    try:
        yield api
    finally:
        await api.stop()


@pytest.fixture
def settings(settings: Settings, fake: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The platform's sandbox service reads these at start: the cluster is configured and enabled."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.server, fake.pki.ca_pem, fake.token)
    for key, value in {"ENABLED": "true", "KUBECONFIG": kubeconfig, "NAMESPACE": NS,
                       "AGENT_PORT": str(free_port()), "CLAIM_TIMEOUT_S": "20",
                       # the fake's pod is a plain local process, not an isolated pod: nothing to self-test
                       "SELF_TEST": "false"}.items():
        monkeypatch.setenv(f"GARRISON_SANDBOX_KUBERNETES_{key}", value)
    return settings


async def test_kubernetes_sandbox_runs_code_commands_files_and_kill_deletes_the_claim(
        client: httpx.AsyncClient, fake: FakeKubeAPI, platform) -> None:  # type: ignore[no-untyped-def]
    backends = {b["name"]: b for b in (await client.get("/api/sandboxes/backends")).json()["items"]}
    assert backends["kubernetes"]["available"] and backends["kubernetes"]["isolation"] == "kernel"
    assert not backends["kubernetes"]["default"]  # only when asked for by name
    r = await client.post("/api/sandbox-templates/python/kubernetes", json={"image": "registry.local/sbx:1"})
    assert r.status_code == 200, r.text

    r = await client.post("/api/sandboxes", json={"backend": "kubernetes", "envs": {"GREETING": "hi"}})
    assert r.status_code == 201, r.text
    sbx = r.json()
    sid = sbx["id"]
    assert sbx["backend"] == "kubernetes" and sbx["isolation"] == "kernel"
    [(ns, claim_name)] = list(fake.pods)
    claim = fake.objects[("sandboxclaims", ns, claim_name)]
    assert claim["spec"]["warmPoolRef"]["name"] == "python-pool" and "shutdownTime" in claim["spec"]["lifecycle"]

    r = await client.post(f"/api/sandboxes/{sid}/run_code", json={"code": "import os\nv = os.environ['GREETING']\nv"})
    assert r.status_code == 200 and r.json()["text"] == "'hi'", r.text
    # The token is gone from the agent's environment (it was exec'd without it).
    r = await client.post(f"/api/sandboxes/{sid}/run_code",
                          json={"code": "'GARRISON_AGENT_TOKEN' in os.environ or "
                                        "b'GARRISON_AGENT_TOKEN' in open(f'/proc/{os.getpid()}/environ','rb').read()"})
    assert r.json()["text"] == "False", r.text
    r = await client.post(f"/api/sandboxes/{sid}/commands", json={"cmd": "echo $GREETING; exit 4"})
    assert r.json()["exit_code"] == 4 and r.json()["stdout"] == "hi\n", r.text
    r = await client.put(f"/api/sandboxes/{sid}/files", params={"path": "data/in.bin"}, content=b"\x00\x01binary")
    assert r.status_code == 200 and r.json()["size"] == 8, r.text
    r = await client.get(f"/api/sandboxes/{sid}/files", params={"path": "data/in.bin"})
    assert r.content == b"\x00\x01binary"
    assert (fake.workspaces / claim_name / "data" / "in.bin").read_bytes() == b"\x00\x01binary"  # type: ignore[operator]

    r = await client.delete(f"/api/sandboxes/{sid}")
    assert r.json()["state"] == "killed" and r.json()["killed_reason"] == "killed_by_user"
    for _ in range(100):  # the claim is deleted on the kill path; allow the request to land
        if ("sandboxclaims", ns, claim_name) not in fake.objects:
            break
        await asyncio.sleep(0.05)
    assert ("sandboxclaims", ns, claim_name) not in fake.objects and not fake.pods
    r = await client.post(f"/api/sandboxes/{sid}/run_code", json={"code": "1"})
    assert r.status_code == 410


async def test_a_claim_that_never_gets_ready_is_a_503_and_is_deleted(
        client: httpx.AsyncClient, fake: FakeKubeAPI, platform) -> None:  # type: ignore[no-untyped-def]
    platform.services["sandbox"].settings.kubernetes_claim_timeout_s = 1.0
    # No template applied: the controller reports WarmPoolNotFound; never a fallback to another backend.
    r = await client.post("/api/sandboxes", json={"backend": "kubernetes"})
    assert r.status_code == 503 and "WarmPoolNotFound" in r.text, r.text
    assert not [k for k in fake.objects if k[0] == "sandboxclaims"]


def _start_listener(token: str | None, port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {"PATH": "/usr/bin:/bin", "GARRISON_WORKSPACE": str(tmp_path)}
    if token is not None:
        env["GARRISON_AGENT_TOKEN"] = token
    return subprocess.Popen([sys.executable, "-I", "-S", "-u", str(AGENT / "agent_listen.py"), "--listen",
                             f"127.0.0.1:{port}", str(AGENT / "agent.py")], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _connect(port: int) -> socket.socket:
    for _ in range(200):
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except ConnectionRefusedError:
            import time
            time.sleep(0.05)
    raise AssertionError("the agent never listened")


def test_the_agent_transport_refuses_a_wrong_token_and_serves_the_right_one(tmp_path: Path) -> None:
    token, port = secrets.token_urlsafe(32), free_port()
    proc = _start_listener(token, port, tmp_path)
    try:
        with _connect(port) as bad:
            bad.sendall(b"not-the-token-at-all\n")
            assert bad.recv(4096) == b""  # closed without a byte of the protocol
        with _connect(port) as good:
            good.sendall(token.encode() + b"\n")
            reader = good.makefile("rb")
            assert b'"type":"ready"' in reader.readline().replace(b" ", b"")
            good.sendall(b'{"id": 1, "op": "run_code", "code": "6*7"}\n')
            line = reader.readline()
            assert b'"42"' in line, line
            reader.close()  # the makefile holds the socket's fd open otherwise
        # The host closed the connection: the agent (the pod's first process) exits.
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_agent_transport_will_not_serve_without_a_token(tmp_path: Path) -> None:
    proc = _start_listener(None, free_port(), tmp_path)
    assert proc.wait(10) == 2
    assert proc.stderr is not None and b"GARRISON_AGENT_TOKEN" in proc.stderr.read()
