"""Prometheus metrics of the sandbox layer (default registry, served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RUNNING = Gauge("garrison_sandbox_running", "Sandboxes running now")
CREATE_SECONDS = Histogram("garrison_sandbox_create_seconds", "Create to ready agent", ["backend", "pooled"],
                           buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
EXEC_SECONDS = Histogram("garrison_sandbox_exec_seconds", "run_code and command duration", ["backend", "op"])
KILLED = Counter("garrison_sandbox_killed_total", "Sandboxes ended, by killed_reason", ["reason"])
CPU_SECONDS = Counter("garrison_sandbox_cpu_seconds_total", "CPU seconds used by sandboxes", ["tenant", "backend"])
MEMORY_GIB_SECONDS = Counter("garrison_sandbox_memory_gib_seconds_total",
                             "Peak memory (GiB) times lifetime (s) of ended sandboxes", ["tenant", "backend"])
