"""`garrison sandbox k8s-manifests` prints manifests that validate against the CRDs."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from garrison.cli.sandbox import app
from tests.sandbox.test_kubernetes import validate


def test_k8s_manifests_command_renders_valid_yaml() -> None:
    result = CliRunner().invoke(app, ["k8s-manifests", "--image", "registry.local/sbx:1", "--replicas", "3"])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.output))
    assert [d["kind"] for d in docs] == ["RuntimeClass", "SandboxTemplate", "SandboxWarmPool"]
    assert docs[0]["handler"] == "runsc"
    for doc in docs[1:]:
        validate(doc)
    assert docs[2]["spec"]["replicas"] == 3
