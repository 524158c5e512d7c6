"""The export is validated against the KAI Scheduler CRDs' openAPIV3Schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from garrison.gpus.kai import QUEUE_LABEL, SCHEDULER_NAME, export, k8s_name
from garrison.gpus.model import QueueSpec, Topology

from .helpers import job

SPECS = Path(__file__).resolve().parents[3] / "shared" / "specs" / "kai-scheduler"


def crd_schema(filename: str) -> dict[str, Any]:
    path = SPECS / filename
    if not path.exists():
        pytest.fail(f"KAI CRD {path} is missing: the shared specs must sit beside the repository")
    crd = yaml.safe_load(path.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


QUEUES = [QueueSpec("acme", quota=6, over_quota_weight=2), QueueSpec("team-a", parent="acme", quota=4, limit=6),
          QueueSpec("team-b", parent="acme", quota=2, priority=150)]
WORKLOADS = [
    job("gpw_01ABC", cls="interactive", fraction=0.25),
    job("gpw_01DEF", cls="batch", memory_mib=16384, queue="team-b"),
    job("gpw_01GHI", cls="training", gpus=2, gang_size=3, topology=Topology.nvlink, topology_required=True),
    job("gpw_01JKL", cls="batch", gpus=1, preemptible=False, topology=Topology.node),
]


def test_queues_validate_against_the_crd() -> None:
    schema = crd_schema("scheduling.run.ai_queues.yaml")
    queues = [d for d in export(QUEUES, []) if d["kind"] == "Queue"]
    assert len(queues) == 3
    for doc in queues:
        jsonschema.validate(doc, schema)
    team_a = next(d for d in queues if d["metadata"]["name"] == "team-a")
    assert team_a["spec"]["parentQueue"] == "acme"
    assert team_a["spec"]["resources"]["gpu"] == {"quota": 4, "overQuotaWeight": 1.0, "limit": 6}
    acme = next(d for d in queues if d["metadata"]["name"] == "acme")
    assert "parentQueue" not in acme["spec"] and acme["spec"]["resources"]["gpu"]["limit"] == -1


def test_pod_groups_validate_against_the_crd() -> None:
    schema = crd_schema("scheduling.run.ai_podgroups.yaml")
    groups = [d for d in export(QUEUES, WORKLOADS, namespace="agents") if d["kind"] == "PodGroup"]
    assert len(groups) == 4
    for doc in groups:
        jsonschema.validate(doc, schema)
    by_name = {d["metadata"]["name"]: d["spec"] for d in groups}
    assert by_name["pg-gpw-01abc"]["priorityClassName"] == "inference"
    assert by_name["pg-gpw-01abc"]["preemptibility"] == "non-preemptible"
    assert by_name["pg-gpw-01def"]["priorityClassName"] == "build-preemptible"
    gang = by_name["pg-gpw-01ghi"]
    assert gang["minMember"] == 3 and gang["priorityClassName"] == "train"
    assert gang["topologyConstraint"]["requiredTopologyLevel"] == "nvidia.com/gpu.clique"
    assert by_name["pg-gpw-01jkl"]["priorityClassName"] == "build"
    assert by_name["pg-gpw-01jkl"]["topologyConstraint"]["preferredTopologyLevel"] == "kubernetes.io/hostname"


def test_a_schema_violation_would_be_caught() -> None:
    schema = crd_schema("scheduling.run.ai_podgroups.yaml")
    doc = next(d for d in export([], WORKLOADS[:1]) if d["kind"] == "PodGroup")
    doc["spec"]["minMember"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)
    doc["spec"]["minMember"] = 1
    doc["spec"]["preemptibility"] = "sometimes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)


def test_pods_carry_queue_label_fraction_annotations_and_scheduler_name() -> None:
    pods = [d for d in export([], WORKLOADS) if d["kind"] == "Pod"]
    assert len(pods) == 1 + 1 + 3 + 1
    for pod in pods:
        assert pod["spec"]["schedulerName"] == SCHEDULER_NAME
        assert pod["metadata"]["labels"][QUEUE_LABEL] in {"team-a", "team-b"}
        assert pod["metadata"]["annotations"]["pod-group-name"].startswith("pg-")
    fraction = next(p for p in pods if p["metadata"]["name"].startswith("gpw-01abc"))
    assert fraction["metadata"]["annotations"]["gpu-fraction"] == "0.25"
    memory = next(p for p in pods if p["metadata"]["name"].startswith("gpw-01def"))
    assert memory["metadata"]["annotations"]["gpu-memory"] == "16384"
    whole = next(p for p in pods if p["metadata"]["name"].startswith("gpw-01ghi"))
    assert whole["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"


@pytest.mark.parametrize("raw", ["GPW_Ünïcode", "-" * 80, "a_b.c/d"])
def test_names_are_rfc1123(raw: str) -> None:
    name = k8s_name(raw, "pg-")
    assert len(name) <= 63 and name == name.lower() and not name.endswith("-")
    assert all(c.isascii() and (c.isalnum() or c == "-") for c in name)
