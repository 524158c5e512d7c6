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
