"""Wire contract of /api/sandboxes (E2B's shape where it has one)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ENV_KEY = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsIn(Strict):
    memory_mib: int | None = Field(default=None, ge=32, description="Memory limit in MiB.")
    cpus: float | None = Field(default=None, ge=0.1, le=64, description="CPU quota in CPUs (at least 0.1).")
    pids: int | None = Field(default=None, ge=16)
    workspace_mib: int | None = Field(default=None, ge=1, le=65536)


class CreateIn(Strict):
    template: str = Field(default="python", max_length=40)
    backend: Literal["gvisor", "bubblewrap", "kubernetes"] | None = Field(
        default=None, description="Require this backend (never a silent fallback); unset: the default.")
    timeout_s: int | None = Field(default=None, ge=1, description="Lifetime; the sandbox is killed after it.")
    idle_timeout_s: int | None = Field(default=None, ge=1)
    envs: dict[str, str] = Field(default_factory=dict, max_length=128)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=64)
    limits: LimitsIn = Field(default_factory=LimitsIn)
    network: Literal["none"] = Field(default="none", description="Only 'none' is supported: no network at all.")
    pooled: bool = Field(default=True, description="Take a warm sandbox from a pool when one matches.")

    @field_validator("envs")
    @classmethod
    def _envs(cls, v: dict[str, str]) -> dict[str, str]:
        import re

        for key, value in v.items():
            if not re.match(ENV_KEY, key):
                raise ValueError(f"environment variable name {key!r} must match {ENV_KEY}")
            if "\x00" in value or len(value) > 32768:
                raise ValueError(f"environment variable {key} must be under 32 KiB and without NUL bytes")
        return v

    @field_validator("metadata")
    @classmethod
    def _meta(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if len(key) > 128 or len(value) > 1024:
                raise ValueError("metadata keys are at most 128 characters and values 1024")
        return v


class LimitsOut(BaseModel):
    memory_mib: int
    cpus: float
    pids: int
    workspace_mib: int
    output_cap_bytes: int
    network: str


class SandboxOut(BaseModel):
    id: str
    tenant_id: str
    template: str
    backend: str
    isolation: str
    state: Literal["running", "killed"]
    killed_reason: str | None = None
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None
    limits: LimitsOut
    metadata: dict[str, str]
    pooled: bool
    usage: dict[str, float] = Field(default_factory=dict)


class SandboxList(BaseModel):
    items: list[SandboxOut]


class TimeoutIn(Strict):
    timeout_s: int = Field(ge=1, description="New lifetime from now.")


class RunCodeIn(Strict):
    code: str = Field(max_length=1_000_000)
    context: str | None = Field(default=None, max_length=64)
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    stream: bool = False


class ExecutionError(BaseModel):
    name: str
    value: str
    traceback: str


class ExecutionOut(BaseModel):
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    text: str | None = Field(description="repr() of the value of the last expression, if any.")
    results: list[dict[str, str]] = Field(description="Rich results: {'png': base64}, {'html': ...}.")
    error: ExecutionError | None = None
    duration_ms: float


class CommandIn(Strict):
    cmd: str | list[str] = Field(description="A shell command line (run by /bin/sh -c) or an argv list.")
    cwd: str | None = Field(default=None, max_length=4096)
    envs: dict[str, str] = Field(default_factory=dict, max_length=128)
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    stdin: str | None = Field(default=None, max_length=10_000_000)
    stream: bool = False

    @field_validator("cmd")
    @classmethod
    def _cmd(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and (not v or len(v) > 4096):
            raise ValueError("cmd as a list needs 1 to 4096 arguments")
        text = v if isinstance(v, str) else "".join(v)
        if not text or "\x00" in text or len(text) > 1_000_000:
            raise ValueError("cmd must be non-empty, without NUL bytes, under 1 MB")
        return v


class CommandOut(BaseModel):
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: float


class ContextOut(BaseModel):
    context: str


class FileEntry(BaseModel):
    name: str
    path: str
    type: str
    size: int
    mode: int
    mtime: float


class FileList(BaseModel):
    entries: list[FileEntry]


class WriteOut(BaseModel):
    path: str
    size: int


class UploadOut(BaseModel):
    files: int
    bytes: int


class BackendOut(BaseModel):
    name: str
    isolation: str
    available: bool
    reason: str
    default: bool


class BackendsOut(BaseModel):
    items: list[BackendOut]
    pools: list[dict[str, Any]]


class TemplateIn(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,39}$", description="Lower-case letters, digits and '-'.")
    packages: list[str] = Field(default_factory=list, max_length=100, description=(
        "Requirements ('name', 'name==1.2'), installed from the server's wheelhouse only (no network)."))
    env: dict[str, str] = Field(default_factory=dict, max_length=64,
                                description="Environment variables every sandbox of this template gets.")

    @field_validator("packages")
    @classmethod
    def _packages(cls, v: list[str]) -> list[str]:
        from garrison.sandbox.templates import TemplateError, check_packages

        try:
            check_packages(v)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        from garrison.sandbox.templates import TemplateError, check_env

        try:
            check_env(v)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        return v


class TemplateOut(BaseModel):
    name: str
    python: str
    packages: list[str]
    env: dict[str, str]
    builtin: bool
    fingerprint: str
    installed: dict[str, str] = Field(default_factory=dict, description="Distribution name -> version installed.")
    created_at: str | None = None


class TemplateList(BaseModel):
    items: list[TemplateOut]


class KubernetesApplyIn(Strict):
    image: str = Field(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$",
                       description="Container image with python3, the agent and the template's packages.")
    replicas: int = Field(default=2, ge=0, le=1000, description="Warm sandboxes kept ready.")
    runtime_class: Literal["gvisor", "kata"] | None = Field(
        default=None, description="RuntimeClass of the pods; unset: GARRISON_SANDBOX_KUBERNETES_RUNTIME_CLASS.")
    install_runtime_class: bool = Field(default=False, description=(
        "Also apply the (cluster-scoped) RuntimeClass, handler runsc or kata."))


class KubernetesObjectOut(BaseModel):
    apiVersion: str
    kind: str
    name: str | None
    namespace: str | None = None
    uid: str | None = None
    resourceVersion: str | None = None


class KubernetesApplyOut(BaseModel):
    server: str
    namespace: str
    objects: list[KubernetesObjectOut]
