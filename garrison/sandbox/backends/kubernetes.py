"""Kubernetes agent-sandbox manifests (``specs/agent-sandbox/``): SandboxTemplate,
SandboxWarmPool and SandboxClaim with a gVisor or Kata RuntimeClass.

This module renders the manifests (validated against the CRD schemas in tests);
``kube_client`` applies them to a cluster; ``kube_backend`` claims sandboxes from a warm
pool and talks to the agent in the pod (see docs/sandbox.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

API_CORE = "agents.x-k8s.io/v1beta1"
API_EXT = "extensions.agents.x-k8s.io/v1beta1"
AGENT_PORT = 7070


def agent_command(port: int = AGENT_PORT) -> list[str]:
    """The pod's first process: the agent behind its TCP transport (agent_listen.py), which
    serves the first connection that sends the sandbox's token (the claim's env)."""
    return ["/usr/bin/python3", "-I", "-S", "-u", "/opt/garrison/agent_listen.py", "--listen", f"0.0.0.0:{port}",
            "/opt/garrison/agent.py"]


def sandbox_template(name: str, namespace: str, *, image: str, runtime_class: str | None = "gvisor",
                     memory_mib: int = 512, cpus: float = 1.0, workspace_mib: int = 512,
                     command: list[str] | None = None, agent_port: int = AGENT_PORT,
                     garrison_namespace: str | None = None) -> dict[str, Any]:
    """A pod shaped like a local sandbox: uid 1000, no capabilities, read-only root,
    in-memory /workspace and /tmp, no service account token, no network (deny-all policy).

    Ingress is open only to the agent's TCP port (garrison connects there; the agent serves
    no one without the sandbox's token), and only from ``garrison_namespace`` when given;
    egress is denied. ``runtime_class=None`` leaves the cluster's default runtime (for clusters without
    gVisor/Kata, e.g. a test cluster); ``command`` replaces the agent for such tests."""
    container = {
        "name": "sandbox",
        "image": image,
        "command": list(command or agent_command(agent_port)),
        "stdin": True,
        "workingDir": "/workspace",
        "resources": {"limits": {"memory": f"{memory_mib}Mi", "cpu": f"{int(cpus * 1000)}m",
                                 "ephemeral-storage": f"{workspace_mib}Mi"},
                      "requests": {"memory": f"{memory_mib}Mi", "cpu": f"{int(cpus * 1000)}m"}},
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True,
                            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": API_EXT,
        "kind": "SandboxTemplate",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "garrison"}},
        "spec": {
            "podTemplate": {
                "metadata": {"labels": {"garrison.dev/sandbox-template": name}},
                "spec": {
                    **({"runtimeClassName": runtime_class} if runtime_class else {}),
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "hostNetwork": False, "hostPID": False, "hostIPC": False,
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": [
                        {"name": "workspace", "emptyDir": {"medium": "Memory", "sizeLimit": f"{workspace_mib}Mi"}},
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
                    ],
                },
            },
            "networkPolicyManagement": "Managed",
            "networkPolicy": {"ingress": [agent_ingress(agent_port, garrison_namespace)], "egress": []},
            "envVarsInjectionPolicy": "Allowed",
        },
    }


def agent_ingress(port: int, garrison_namespace: str | None) -> dict[str, Any]:
    rule: dict[str, Any] = {"ports": [{"port": port, "protocol": "TCP"}]}
    if garrison_namespace:
        rule["from"] = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": garrison_namespace}}}]
    return rule


def sandbox_warm_pool(name: str, namespace: str, template: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": API_EXT,
        "kind": "SandboxWarmPool",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "garrison"}},
        "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": template}},
    }


def sandbox_claim(name: str, namespace: str, warm_pool: str, *, tenant_id: str | None,
                  envs: dict[str, str] | None = None, shutdown_time: datetime | None = None,
                  labels: dict[str, str] | None = None) -> dict[str, Any]:
    """``tenant_id=None``: a sandbox not yet handed to a tenant (garrison's own warm pool)."""
    labels = {**({"garrison.dev/tenant": tenant_id} if tenant_id else {}), **(labels or {})}
    spec: dict[str, Any] = {
        "warmPoolRef": {"name": warm_pool},
        "additionalPodMetadata": {"labels": labels},
        "lifecycle": {"shutdownPolicy": "Delete"},
    }
    if envs:
        spec["env"] = [{"name": k, "value": v} for k, v in sorted(envs.items())]
    if shutdown_time is not None:
        spec["lifecycle"]["shutdownTime"] = shutdown_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": API_EXT, "kind": "SandboxClaim",
            "metadata": {"name": name, "namespace": namespace, "labels": labels}, "spec": spec}


def runtime_class(name: str = "gvisor", handler: str = "runsc") -> dict[str, Any]:
    return {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name}, "handler": handler}
