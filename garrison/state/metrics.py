"""Prometheus metrics of the state layer (default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RETENTION_RUNS = Counter("garrison_state_retention_runs_total", "Retention passes run, by outcome.", ["outcome"])
RETENTION_DROPPED = Counter("garrison_state_retention_checkpoints_dropped_total",
                            "Checkpoints removed by retention policies.")
RETENTION_THREADS_DROPPED = Counter("garrison_state_retention_threads_dropped_total",
                                    "Idle threads removed by retention policies.")
STATE_BYTES = Gauge("garrison_state_bytes", "Checkpoint bytes stored, by tenant (as of the last stats).",
                    ["tenant"])
