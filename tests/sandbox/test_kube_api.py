"""POST /api/sandbox-templates/{name}/kubernetes: an operator admin applies a template's
SandboxTemplate and SandboxWarmPool to a cluster (the fake API server of kube_fake.py), audited."""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.sandbox.kube_fake import FakeKubeAPI, make_pki

URL = "/api/sandbox-templates/python/kubernetes"


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeKubeAPI]:
    api = FakeKubeAPI(make_pki())
    await api.start(tmp_path)
    try:
        yield api
    finally:
        await api.stop()


def write_kubeconfig(path: Path, server: str, ca_pem: str, token: str) -> str:
    path.write_text(yaml.safe_dump({
        "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server,
                                               "certificate-authority-data": base64.b64encode(ca_pem.encode()).decode()}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    return str(path)


async def test_operator_applies_a_template_to_the_cluster(client, platform, make_key, fake: FakeKubeAPI,  # type: ignore[no-untyped-def]
                                                          tmp_path: Path) -> None:
    settings = platform.services["sandbox"].settings
    settings.kubernetes_kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.server, fake.pki.ca_pem, fake.token)
    settings.kubernetes_namespace = "garrison-sbx"
    body: dict[str, Any] = {"image": "registry.local/garrison-sandbox:1", "replicas": 3, "install_runtime_class": True}
    # The namespace is the operator's: garrison does not create it.
    r = await client.post(URL, json=body)
    assert r.status_code == 400 and 'namespaces \\"garrison-sbx\\" not found' in r.text, r.text
    fake.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "garrison-sbx"}}, "kubectl")
    r = await client.post(URL, json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["server"] == fake.server and [o["kind"] for o in out["objects"]] == [
        "RuntimeClass", "SandboxTemplate", "SandboxWarmPool"]
    template = fake.objects[("sandboxtemplates", "garrison-sbx", "python")]
    pod = template["spec"]["podTemplate"]["spec"]
    assert pod["runtimeClassName"] == "gvisor" and pod["containers"][0]["image"] == body["image"]
    assert fake.objects[("sandboxwarmpools", "garrison-sbx", "python-pool")]["spec"]["replicas"] == 3
    assert fake.objects[("runtimeclasses", "", "gvisor")]["handler"] == "runsc"
    # Kata, without touching the cluster-scoped RuntimeClass.
    r = await client.post(URL, json={"image": "registry.local/garrison-sandbox:1", "runtime_class": "kata"})
    assert r.status_code == 200 and [o["kind"] for o in r.json()["objects"]] == ["SandboxTemplate", "SandboxWarmPool"]
    assert fake.objects[("sandboxtemplates", "garrison-sbx", "python")]["spec"]["podTemplate"]["spec"][
        "runtimeClassName"] == "kata"
    await platform.audit.flush()
    entries = [e for e in await platform.audit.tail(100) if e["action"] == "sandbox:template:kubernetes"]
    assert len(entries) == 3 and sum(1 for e in entries if str(e.get("reason", "")).startswith("failed")) == 1

    # Bad input and unknown templates are 4xx; only an operator admin may apply.
    for bad in ({"image": "x y"}, {"image": "img", "replicas": -1}, {"image": "img", "runtime_class": "runc"}, {}):
        assert (await client.post(URL, json=bad)).status_code == 422, bad
    assert (await client.post("/api/sandbox-templates/nope/kubernetes", json={"image": "img"})).status_code == 404
    other_admin = await make_key(["admin:*"], tenant="acme")
    r = await client.post(URL, json={"image": "img"}, headers={"authorization": f"Bearer {other_admin}"})
    assert r.status_code == 403 and "operator" in r.json()["detail"]
    reader = await make_key(["sandbox:read", "sandbox:create"], tenant="acme")
    r = await client.post(URL, json={"image": "img"}, headers={"authorization": f"Bearer {reader}"})
    assert r.status_code == 403


async def test_an_unusable_cluster_is_a_503(client, platform, fake: FakeKubeAPI, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = platform.services["sandbox"].settings
    settings.kubernetes_kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.server, fake.pki.ca_pem, "wrong")
    r = await client.post(URL, json={"image": "img"})
    assert r.status_code == 503 and "401 Unauthorized" in r.json()["detail"], r.text
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        settings.kubernetes_kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{s.getsockname()[1]}",
                                                          fake.pki.ca_pem, fake.token)
        r = await client.post(URL, json={"image": "img"})
    assert r.status_code == 503 and "unreachable" in r.json()["detail"], r.text
    settings.kubernetes_kubeconfig = str(tmp_path / "absent")
    r = await client.post(URL, json={"image": "img"})
    assert r.status_code == 503 and "cannot read kubeconfig" in r.json()["detail"], r.text


async def test_no_cluster_configured_is_a_409(client, platform, tmp_path: Path,  # type: ignore[no-untyped-def]
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    platform.services["sandbox"].settings.kubernetes_kubeconfig = None
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    r = await client.post(URL, json={"image": "img"})
    assert r.status_code == 409 and "no Kubernetes cluster configured" in r.json()["detail"], r.text


@pytest.mark.slow  # a real `garrison up` (~15 s)
def test_cli_applies_a_template_through_a_live_server(tmp_path: Path) -> None:
    """`garrison sandbox templates k8s-apply` against `garrison up`, which applies to the fake
    API server (run in a thread: the CLI and the server are synchronous to this test)."""
    import asyncio
    import threading

    from typer.testing import CliRunner

    from garrison.cli.sandbox import app
    from tests.support.live import start_server, stop_server

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    api = FakeKubeAPI(make_pki())
    asyncio.run_coroutine_threadsafe(api.start(tmp_path), loop).result(30)
    api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "garrison-sandboxes"}}, "kubectl")
    data = tmp_path / "data"
    data.mkdir()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.server, api.pki.ca_pem, api.token)
    server = start_server(data, extra_env={"GARRISON_SANDBOX_KUBERNETES_KUBECONFIG": kubeconfig,
                                           "GARRISON_SANDBOX_BACKEND": "bubblewrap"})
    try:
        auth = ["--url", server.url, "--key", server.admin_key]
        out = CliRunner().invoke(app, ["templates", "k8s-apply", "python", "--image", "registry.local/sbx:2",
                                       "--replicas", "4", "--runtime-class", "kata", *auth])
        assert out.exit_code == 0, out.output
        assert "applied SandboxWarmPool garrison-sandboxes/python-pool" in out.output and api.server in out.output
        pool = api.objects[("sandboxwarmpools", "garrison-sandboxes", "python-pool")]
        assert pool["spec"]["replicas"] == 4
        out = CliRunner().invoke(app, ["templates", "k8s-apply", "nope", "--image", "img", *auth])
        assert out.exit_code == 1 and "nope" in out.output, out.output
    finally:
        stop_server(server)
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
