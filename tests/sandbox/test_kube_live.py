"""kube_client against a REAL Kubernetes API server with the agent-sandbox controller.

Runs when GARRISON_TEST_KUBECONFIG (or KUBECONFIG) names a reachable cluster that serves
extensions.agents.x-k8s.io/v1beta1; otherwise it is skipped with the reason (printed by -ra).
It works in a throwaway namespace, with no RuntimeClass (a test cluster rarely has gVisor/Kata)
and a plain image that sleeps (GARRISON_TEST_K8S_IMAGE, default busybox:1.36), and deletes
everything it applied.
"""

from __future__ import annotations

import os
import uuid

import pytest

from garrison.sandbox.backends import kubernetes as k8s
from garrison.sandbox.backends.kube_client import KubeClient, KubeConfigError, load_kubeconfig
from garrison.sandbox.errors import BackendUnavailable


async def test_apply_claim_and_delete_on_a_real_cluster() -> None:
    path = os.environ.get("GARRISON_TEST_KUBECONFIG") or os.environ.get("KUBECONFIG")
    if not path:
        pytest.skip("no real Kubernetes API server: set GARRISON_TEST_KUBECONFIG to a kubeconfig of a cluster "
                    "with the agent-sandbox CRDs and controller")
    try:
        cfg = load_kubeconfig(path)
    except KubeConfigError as exc:
        pytest.skip(f"kubeconfig {path} unusable: {exc.detail}")
    kube = KubeClient(cfg, timeout=15)
    try:
        try:
            version = await kube.version()
        except BackendUnavailable as exc:
            pytest.skip(f"Kubernetes API server of {path} not reachable: {exc.detail}")
        if not await kube.has_api("extensions.agents.x-k8s.io/v1beta1"):
            pytest.skip(f"cluster {cfg.server} ({version.get('gitVersion')}) does not serve the agent-sandbox "
                        "CRDs (extensions.agents.x-k8s.io/v1beta1)")
        await _round_trip(kube)
    finally:
        await kube.aclose()


async def _round_trip(kube: KubeClient) -> None:
    ns = f"garrison-test-{uuid.uuid4().hex[:8]}"
    image = os.environ.get("GARRISON_TEST_K8S_IMAGE", "busybox:1.36")
    wait_s = float(os.environ.get("GARRISON_TEST_K8S_TIMEOUT", "300"))
    await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns,
                      "labels": {"app.kubernetes.io/managed-by": "garrison"}}})
    try:
        objs = [k8s.sandbox_template("sleeper", ns, image=image, runtime_class=None, memory_mib=64, cpus=0.1,
                                     command=["sleep", "3600"]),
                k8s.sandbox_warm_pool("sleeper-pool", ns, "sleeper", 1),
                k8s.sandbox_claim("claim-1", ns, "sleeper-pool", tenant_id="ten_test")]
        for obj in objs:
            live = await kube.apply(obj)
            # Compare only what defaulting cannot change: the API server may fill in nested spec fields.
            assert live["metadata"]["uid"] and (live["kind"], live["metadata"]["name"]) == (
                obj["kind"], obj["metadata"]["name"])
        ready = await kube.wait_claim_ready("claim-1", ns, timeout_s=wait_s, interval=1.0)
        assert ready.sandbox_name
        sandbox = await kube.get("agents.x-k8s.io/v1beta1", "Sandbox", ready.sandbox_name, ns)
        assert sandbox["metadata"]["name"] == ready.sandbox_name
        for obj in reversed(objs):
            assert await kube.delete(obj["apiVersion"], obj["kind"], obj["metadata"]["name"], ns)
    finally:
        await kube.delete("v1", "Namespace", ns)
