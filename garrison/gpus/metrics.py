"""Prometheus metrics of the GPU scheduler (default registry, served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CAPACITY = Gauge("garrison_gpus_capacity", "Healthy GPUs in the inventory.")
ALLOCATED = Gauge("garrison_gpus_allocated", "GPUs allocated to running workloads (fractions summed).")
UTILISATION = Gauge("garrison_gpus_utilisation_ratio", "Allocated GPUs over healthy GPUs.")
QUEUE_ALLOCATED = Gauge("garrison_gpus_queue_allocated", "GPUs a queue holds.", ["queue"])
QUEUE_FAIR_SHARE = Gauge("garrison_gpus_queue_fair_share", "A queue's fair share of GPUs.", ["queue"])
QUEUE_PENDING = Gauge("garrison_gpus_queue_pending", "Pending workloads of a queue.", ["queue"])
DECISIONS = Counter("garrison_gpus_decisions_total", "Scheduling decisions.", ["action"])
QUEUE_WAIT = Histogram("garrison_gpus_queue_wait_seconds", "Time from submission to first start.",
                       ["priority_class"], buckets=(0.1, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600))
CYCLE = Histogram("garrison_gpus_cycle_seconds", "Duration of one scheduling cycle.",
                  buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
