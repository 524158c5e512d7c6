"""Sandbox settings: GARRISON_SANDBOX_* environment variables (defaults from the issue)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from garrison.config import LayerSettings

MiB = 1024 * 1024


class PoolConfig(BaseModel):
    template: str = "python"
    backend: str | None = None
    size: int = Field(default=2, ge=0, le=256)
    memory_mib: int | None = None
    cpus: float | None = None
    pids: int | None = None


class SandboxSettings(LayerSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_SANDBOX_", extra="ignore")

    backend: Literal["auto", "gvisor", "bubblewrap", "kubernetes"] = Field(
        default="auto", description="auto: gVisor when runsc passes its self-test, else bubblewrap (never kubernetes).")
    require_backend: bool = Field(default=False, description="Refuse to start when `backend` is not usable.")
    self_test: bool = True
    gvisor_platform: str | None = Field(default=None, description="systrap or ptrace; unset: detect.")
    default_timeout_s: int = Field(default=300, ge=1)
    max_lifetime_s: int = Field(default=8 * 3600, ge=1)
    idle_timeout_s: int = Field(default=900, ge=1)
    command_timeout_s: float = Field(default=60, gt=0)
    memory_mib: int = Field(default=512, ge=32)
    max_memory_mib: int = Field(default=8192, ge=32)
    cpus: float = Field(default=1.0, gt=0)
    max_cpus: float = Field(default=4.0, gt=0)
    pids: int = Field(default=256, ge=16)
    max_pids: int = Field(default=4096, ge=16)
    workspace_mib: int = Field(default=512, ge=1)
    tmp_mib: int = Field(default=256, ge=1)
    output_cap_bytes: int = Field(default=MiB, ge=1024)
    upload_cap_bytes: int = Field(default=100 * MiB, ge=1024)
    max_sandboxes: int = Field(default=200, ge=1)
    max_sandboxes_per_tenant: int = Field(default=50, ge=1)
    pools: list[PoolConfig] = Field(default_factory=list, description="Warm pools (JSON list).")
    pool_max_age_s: int = Field(default=3600, ge=10)
    host_uid_base: int = Field(default=200_000, ge=1000)
    host_uid_count: int = Field(default=10_000, ge=1)
    wheelhouse: str | None = Field(default=None, description=(
        "Directory of wheels templates install from (pip --no-index); unset: <data dir>/sandbox/wheelhouse."))
    default_packages: list[str] = Field(default_factory=list, description=(
        "Packages of the default 'python' template, installed from the wheelhouse at start-up (JSON list)."))
    kubernetes_namespace: str = "garrison-sandboxes"
    kubernetes_runtime_class: str = "gvisor"
    kubernetes_kubeconfig: str | None = Field(default=None, description=(
        "Kubeconfig for applying templates to a cluster; unset: $KUBECONFIG, ~/.kube/config, "
        "else the in-cluster service account."))
    kubernetes_context: str | None = Field(default=None, description="Kubeconfig context; unset: current-context.")
    kubernetes_enabled: bool = Field(default=False, description=(
        "Create sandboxes in the cluster (backend=kubernetes): claims from the template's warm pool."))
    kubernetes_agent_port: int = Field(default=7070, ge=1, le=65535, description=(
        "TCP port of the agent in the sandbox pod (rendered into the SandboxTemplate; tests override it)."))
    kubernetes_claim_timeout_s: float = Field(default=120.0, gt=0, description=(
        "How long a SandboxClaim may take to become Ready and its agent to accept the connection."))
    kubernetes_warm_pool: str | None = Field(default=None, description=(
        "SandboxWarmPool to claim from; unset: '<template>-pool' (what the apply endpoint creates)."))
    kubernetes_self_test: bool = Field(default=True, description=(
        "Run the isolation self-test in a claimed pod at start-up (takes one pod of the warm pool)."))
    kubernetes_garrison_namespace: str | None = Field(default=None, description=(
        "Namespace garrison runs in: only its pods may reach the agent port (unset: garrison's own namespace when "
        "it runs in the cluster, else any source, the sandbox's token still required)."))
