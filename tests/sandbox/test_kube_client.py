"""kube_client against a fake Kubernetes API server on a real TLS socket (tests/sandbox/kube_fake.py),
configured from generated kubeconfigs and a generated in-cluster service account."""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from garrison.sandbox.backends import kubernetes as k8s
from garrison.sandbox.backends.kube_client import (
    KubeClient,
    KubeConfigError,
    KubeNotConfigured,
    KubeNotFound,
    KubeRejected,
    KubeTimeout,
    load_config,
    load_incluster,
    load_kubeconfig,
)
from garrison.sandbox.errors import BackendUnavailable
from tests.sandbox.kube_fake import FakeKubeAPI, Pki, make_pki

EXT = k8s.API_EXT


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kubeconfig(path: Path, server: str, *, cluster: dict[str, Any], user: dict[str, Any],
               namespace: str = "sbx") -> Path:
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "test",
           "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
           "users": [{"name": "u", "user": user}],
           "contexts": [{"name": "other", "context": {"cluster": "missing", "user": "u"}},
                        {"name": "test", "context": {"cluster": "c", "user": "u", "namespace": namespace}}]}
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture
async def fake(pki: Pki, tmp_path: Path) -> AsyncIterator[FakeKubeAPI]:
    api = FakeKubeAPI(pki)
    await api.start(tmp_path)
    try:
        yield api
    finally:
        await api.stop()


@pytest.fixture
def token_config(fake: FakeKubeAPI, tmp_path: Path) -> Path:
    return kubeconfig(tmp_path / "config", fake.server, cluster={"certificate-authority-data": b64(fake.pki.ca_pem)},
                      user={"token": fake.token})


def manifests(ns: str) -> list[dict[str, Any]]:
    return [k8s.sandbox_template("python", ns, image="garrison/sandbox-python:1", runtime_class="gvisor"),
            k8s.sandbox_warm_pool("python-pool", ns, "python", 2),
            k8s.sandbox_claim("c1", ns, "python-pool", tenant_id="ten_1")]


async def test_token_kubeconfig_applies_waits_and_deletes(fake: FakeKubeAPI, token_config: Path) -> None:
    cfg = load_kubeconfig(token_config)
    assert cfg.namespace == "sbx" and cfg.token == fake.token and cfg.ca_pem == fake.pki.ca_pem
    assert not cfg.in_cluster
    async with KubeClient(cfg) as kube:
        assert (await kube.version())["gitVersion"].startswith("v1.")
        assert await kube.has_api("extensions.agents.x-k8s.io/v1beta1")
        assert not await kube.has_api("example.com/v1")
        await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sbx"}})
        rc = await kube.apply(k8s.runtime_class("gvisor", "runsc"))
        assert rc["handler"] == "runsc" and rc["metadata"]["uid"]
        live = [await kube.apply(m) for m in manifests("sbx")]
        assert [o["kind"] for o in live] == ["SandboxTemplate", "SandboxWarmPool", "SandboxClaim"]
        # Applying again is idempotent and bumps the generation (server-side apply, not create).
        again = await kube.apply(k8s.sandbox_warm_pool("python-pool", "sbx", "python", 3))
        assert again["spec"]["replicas"] == 3 and again["metadata"]["generation"] == 2
        assert again["metadata"]["uid"] == live[1]["metadata"]["uid"]
        ready = await kube.wait_claim_ready("c1", "sbx", timeout_s=30, interval=0.05)
        assert ready.sandbox_name.startswith("python-pool-") and ready.pod_ips == ["10.244.0.7"]
        sandbox = await kube.get("agents.x-k8s.io/v1beta1", "Sandbox", ready.sandbox_name, "sbx")
        assert sandbox["spec"]["podTemplate"]["spec"]["runtimeClassName"] == "gvisor"
        got = await kube.get(EXT, "SandboxTemplate", "python", "sbx")
        assert got["spec"]["podTemplate"]["spec"]["runtimeClassName"] == "gvisor"
        for obj in reversed(live):
            assert await kube.delete(obj["apiVersion"], obj["kind"], obj["metadata"]["name"], "sbx")
        assert await kube.delete("node.k8s.io/v1", "RuntimeClass", "gvisor")
        with pytest.raises(KubeNotFound, match="not found"):
            await kube.get(EXT, "SandboxClaim", "c1", "sbx")
        assert not await kube.delete(EXT, "SandboxClaim", "c1", "sbx")
        with pytest.raises(KubeNotFound):
            await kube.delete(EXT, "SandboxClaim", "c1", "sbx", missing_ok=False)
    # The Sandbox is the controller's (its claim's shutdownPolicy deletes it in a real cluster).
    assert {k[0] for k in fake.objects} == {"namespaces", "sandboxes"}


async def test_client_certificate_files_relative_to_the_kubeconfig(fake: FakeKubeAPI, tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    for name, text in (("ca.crt", fake.pki.ca_pem), ("client.crt", fake.pki.client_cert_pem),
                       ("client.key", fake.pki.client_key_pem)):
        (tmp_path / "pki" / name).write_text(text)
    path = kubeconfig(tmp_path / "config", fake.server, cluster={"certificate-authority": "pki/ca.crt"},
                      user={"client-certificate": "pki/client.crt", "client-key": "pki/client.key"})
    cfg = load_kubeconfig(path)
    assert cfg.token is None and cfg.client_cert_pem == fake.pki.client_cert_pem
    async with KubeClient(cfg) as kube:
        ns = await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sbx"}})
        assert ns["metadata"]["name"] == "sbx"
    # The same key pair given inline as -data, and KUBECONFIG picked up from the environment.
    inline = kubeconfig(tmp_path / "inline", fake.server, cluster={"certificate-authority-data": b64(fake.pki.ca_pem)},
                        user={"client-certificate-data": b64(fake.pki.client_cert_pem),
                              "client-key-data": b64(fake.pki.client_key_pem)})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUBECONFIG", str(inline))
        cfg = load_config()
    async with KubeClient(cfg) as kube:
        assert (await kube.get("v1", "Namespace", "sbx"))["metadata"]["uid"]


async def test_a_wrong_token_is_backend_unavailable_with_the_status_message(fake: FakeKubeAPI, tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", fake.server, cluster={"certificate-authority-data": b64(fake.pki.ca_pem)},
                      user={"token": "not-the-token"})
    async with KubeClient(load_kubeconfig(path)) as kube:
        with pytest.raises(BackendUnavailable, match="401 Unauthorized") as info:
            await kube.get("v1", "Namespace", "sbx")
    assert info.value.extra["reason"] == "Unauthorized"


async def test_an_untrusted_server_certificate_is_refused(fake: FakeKubeAPI, tmp_path: Path) -> None:
    other_ca = make_pki().ca_pem
    path = kubeconfig(tmp_path / "config", fake.server, cluster={"certificate-authority-data": b64(other_ca)},
                      user={"token": fake.token})
    async with KubeClient(load_kubeconfig(path)) as kube:
        with pytest.raises(BackendUnavailable, match="unreachable.*CERTIFICATE_VERIFY_FAILED"):
            await kube.version()


async def test_an_unreachable_server_is_backend_unavailable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        path = kubeconfig(tmp_path / "config", f"https://127.0.0.1:{port}", cluster={}, user={"token": "t"})
        async with KubeClient(load_kubeconfig(path), timeout=5) as kube:
            with pytest.raises(BackendUnavailable, match="unreachable: ConnectError"):
                await kube.version()


async def test_schema_violations_and_missing_namespaces_are_typed_errors(fake: FakeKubeAPI,
                                                                          token_config: Path) -> None:
    async with KubeClient(load_kubeconfig(token_config)) as kube:
        with pytest.raises(KubeNotFound, match='namespaces "sbx" not found'):
            await kube.apply(k8s.sandbox_warm_pool("p", "sbx", "python", 1))
        await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sbx"}})
        claim = k8s.sandbox_claim("c1", "sbx", "pool", tenant_id="t")
        del claim["spec"]["warmPoolRef"]
        with pytest.raises(KubeRejected, match="422 SandboxClaim.extensions.agents.x-k8s.io \"c1\" is invalid"
                                               ".*warmPoolRef"):
            await kube.apply(claim)
        with pytest.raises(KubeRejected, match="handler: Required value"):
            await kube.apply({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "kata"}})
        with pytest.raises(KubeRejected, match="does not manage Kubernetes kind 'Pod'"):
            await kube.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "namespace": "sbx"}})
    assert ("sandboxclaims", "sbx", "c1") not in fake.objects


async def test_apply_without_force_conflicts_with_another_field_manager(fake: FakeKubeAPI,
                                                                         token_config: Path) -> None:
    fake.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sbx"}}, "kubectl")
    fake.seed(k8s.sandbox_warm_pool("p", "sbx", "python", 1), "kubectl-edit")
    async with KubeClient(load_kubeconfig(token_config)) as kube:
        with pytest.raises(KubeRejected, match='409 Apply failed with 1 conflict: conflict with "kubectl-edit"'):
            await kube.apply(k8s.sandbox_warm_pool("p", "sbx", "python", 4), force=False)
        taken = await kube.apply(k8s.sandbox_warm_pool("p", "sbx", "python", 4))
    assert taken["spec"]["replicas"] == 4 and fake.managers[("sandboxwarmpools", "sbx", "p")] == "garrison"


async def test_a_claim_whose_pool_is_missing_times_out_with_the_controller_reason(fake: FakeKubeAPI,
                                                                                   token_config: Path) -> None:
    fake.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sbx"}}, "kubectl")
    async with KubeClient(load_kubeconfig(token_config)) as kube:
        await kube.apply(k8s.sandbox_claim("c1", "sbx", "no-such-pool", tenant_id="t"))
        with pytest.raises(KubeTimeout, match=r"sbx/c1 not ready after 1s \(Ready=False WarmPoolNotFound"):
            await kube.wait_claim_ready("c1", "sbx", timeout_s=1, interval=0.05)


async def test_in_cluster_service_account_rereads_its_token(fake: FakeKubeAPI, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(fake.token + "\n")
    (sa / "ca.crt").write_text(fake.pki.ca_pem)
    (sa / "namespace").write_text("garrison-sbx")
    port = fake.server.rsplit(":", 1)[1]
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeNotConfigured, match="no Kubernetes cluster configured"):
        load_incluster(sa)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config either
    with pytest.raises(KubeNotConfigured):
        load_config()
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    cfg = load_incluster(sa)
    assert cfg.namespace == "garrison-sbx" and cfg.server == fake.server
    assert cfg.in_cluster  # garrison's own namespace: the only source the agent port admits
    async with KubeClient(cfg) as kube:
        await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "garrison-sbx"}})
        (sa / "token").write_text("rotated-but-not-accepted")
        with pytest.raises(BackendUnavailable, match="401"):
            await kube.get("v1", "Namespace", "garrison-sbx")


def test_kubeconfig_errors_are_clear(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", "https://k", cluster={},
                      user={"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1"}})
    with pytest.raises(KubeConfigError, match="exec/auth-provider plugin"):
        load_kubeconfig(path)
    with pytest.raises(KubeConfigError, match="no cluster named 'missing'"):
        load_kubeconfig(path, context="other")
    with pytest.raises(KubeConfigError, match="no context named 'nope'"):
        load_kubeconfig(path, context="nope")
    with pytest.raises(KubeConfigError, match="cannot read kubeconfig"):
        load_kubeconfig(tmp_path / "absent")
    assert KubeConfigError("x").status == 503
