"""Runtime settings (GARRISON_RUNTIME_*); the Temporal address is the platform's GARRISON_TEMPORAL_ADDRESS."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from garrison.config import LayerSettings


class RuntimeSettings(LayerSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_RUNTIME_", extra="ignore")

    # "lazy": Temporal starts on the first durable run (or at start when unfinished runs
    # wait to be recovered), so a Platform that never runs an agent pays nothing.
    temporal_start: Literal["lazy", "eager"] = "lazy"
    temporal_namespace: str = "default"
    temporal_start_timeout_s: float = Field(default=30.0, gt=0)
    # One graph superstep is one activity: it heartbeats every heartbeat_timeout_s / 3, so a
    # worker that dies is noticed after heartbeat_timeout_s and the step retried elsewhere.
    step_timeout_s: float = Field(default=600.0, gt=0)
    heartbeat_timeout_s: float = Field(default=5.0, gt=0)
    step_max_attempts: int = Field(default=5, ge=1)
    # "local" (default): each step is a Temporal local activity run inside the workflow task: one
    # server round trip for a whole short run, still one marker per step in the history; a worker
    # that dies is noticed when its workflow task times out (workflow_task_timeout_s), and garrison's
    # cancel reaches the step in this process at once. "activity": each step is a regular activity
    # (server-side heartbeats every heartbeat_timeout_s / 3, cancellation through the server; two
    # more round trips per step): for agents whose steps run for many minutes.
    step_mode: Literal["activity", "local"] = "local"
    # A crash is noticed this long after the dead worker's workflow task began (local steps);
    # long local steps keep their task alive by heartbeating it at 80 % of this.
    workflow_task_timeout_s: float = Field(default=5.0, ge=1, le=60)
    # Workflow history stays small: continue-as-new after this many steps.
    continue_as_new_after_steps: int = Field(default=100, ge=2)
    max_steps: int = Field(default=1000, ge=1)
    # Event streams: "store" (the platform database) or "nats" (JetStream).
    events_backend: Literal["store", "nats"] = "store"
    nats_url: str = "nats://127.0.0.1:4222"
    max_bundle_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    max_input_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
