"""Rendered agent-sandbox manifests validate against the CRD schemas in shared/specs."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from garrison.sandbox.backends import kubernetes as k8s

SPECS = Path(__file__).resolve().parents[3] / "shared" / "specs" / "agent-sandbox"


@functools.cache
def _crds() -> tuple[dict[str, Any], ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(yaml.load(p.read_text(), Loader=loader) for p in sorted(SPECS.glob("*.yaml")))  # noqa: S506


def schema_for(kind: str, version: str = "v1alpha1") -> dict[str, Any]:
    if not SPECS.is_dir():
        pytest.skip(f"agent-sandbox CRDs not found at {SPECS}")
    for crd in _crds():
        if crd["spec"]["names"]["kind"] == kind:
            for v in crd["spec"]["versions"]:
                if v["name"] == version:
                    return dict(v["schema"]["openAPIV3Schema"])
    raise AssertionError(f"no CRD for {kind} {version}")


def validate(doc: dict[str, Any]) -> None:
    schema = schema_for(doc["kind"], doc["apiVersion"].rsplit("/", 1)[1])
    jsonschema.validate(doc, schema)


def test_manifests_validate_against_the_crds() -> None:
    template = k8s.sandbox_template("python", "sbx", image="garrison/sandbox-python:1", runtime_class="gvisor",
                                    memory_mib=512, cpus=1.0)
    validate(template)
    pod = template["spec"]["podTemplate"]["spec"]
    sc = pod["containers"][0]["securityContext"]
    assert pod["runtimeClassName"] == "gvisor" and pod["automountServiceAccountToken"] is False
    assert sc["runAsUser"] == 1000 and sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
    # Egress denied; ingress only to the agent's port (it needs the sandbox's token too).
    assert template["spec"]["networkPolicy"] == {"ingress": [{"ports": [{"port": 7070, "protocol": "TCP"}]}],
                                                 "egress": []}
    assert pod["containers"][0]["command"][-3:] == ["--listen", "0.0.0.0:7070", "/opt/garrison/agent.py"]
    only_garrison = k8s.sandbox_template("python", "sbx", image="img", agent_port=9000, garrison_namespace="garrison")
    validate(only_garrison)
    assert only_garrison["spec"]["networkPolicy"]["ingress"] == [{
        "ports": [{"port": 9000, "protocol": "TCP"}],
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "garrison"}}}]}]
    validate(k8s.sandbox_warm_pool("python-pool", "sbx", "python", 3))
    claim = k8s.sandbox_claim("c1", "sbx", "python-pool", tenant_id="ten_1", envs={"A": "1"},
                              shutdown_time=datetime(2030, 1, 1, tzinfo=UTC))
    validate(claim)
    assert claim["spec"]["env"] == [{"name": "A", "value": "1"}]


def test_the_schemas_reject_a_broken_manifest() -> None:
    claim = k8s.sandbox_claim("c1", "sbx", "pool", tenant_id="t")
    del claim["spec"]["warmPoolRef"]
    with pytest.raises(jsonschema.ValidationError):
        validate(claim)
    pool = k8s.sandbox_warm_pool("p", "sbx", "python", 1)
    pool["spec"]["replicas"] = "three"
    with pytest.raises(jsonschema.ValidationError):
        validate(pool)
    template = k8s.sandbox_template("python", "sbx", image="img")
    template["spec"]["envVarsInjectionPolicy"] = "Sometimes"
    with pytest.raises(jsonschema.ValidationError):
        validate(template)
