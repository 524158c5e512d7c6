"""Runtime state of model pools and replicas: slots, circuit breakers, load metrics.

The persisted configuration lives in the store; this is what the hot path reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

KINDS = ("openai", "vllm", "ollama", "llamacpp")


@dataclass
class Breaker:
    """Closed -> open after N consecutive failures -> half-open after a cooldown (one trial)."""

    failures_to_open: int
    cooldown_s: float
    failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False

    def allows(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        if now - self.opened_at >= self.cooldown_s and not self.trial_in_flight:
            return True
        return False

    def on_dispatch(self, now: float) -> None:
        if self.opened_at is not None:
            self.trial_in_flight = True

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.trial_in_flight = False

    def failure(self, now: float) -> None:
        self.failures += 1
        self.trial_in_flight = False
        if self.opened_at is not None or self.failures >= self.failures_to_open:
            self.opened_at = now

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if time.monotonic() - self.opened_at >= self.cooldown_s else "open"


@dataclass
class Replica:
    id: str
    model: str
    base_url: str
    kind: str
    upstream_model: str | None
    api_key: str | None
    max_concurrency: int
    priority_scheduling: bool
    breaker: Breaker
    in_flight: int = 0
    healthy: bool = True
    # Scraped load (vLLM /metrics, llama.cpp --metrics); None when never scraped.
    waiting: float | None = None
    kv_usage: float | None = None
    scraped_at: float = 0.0

    @property
    def target_model(self) -> str:
        return self.upstream_model or self.model

    def saturated(self, now: float, stale_s: float, max_waiting: int, max_kv: float) -> bool:
        if self.in_flight >= self.max_concurrency:
            return True
        if self.waiting is not None and now - self.scraped_at <= stale_s:
            if self.waiting >= max_waiting or (self.kv_usage or 0.0) >= max_kv:
                return True
        return False

    def available(self, now: float, stale_s: float, max_waiting: int, max_kv: float) -> bool:
        return (
            self.healthy
            and self.breaker.allows(now)
            and not self.saturated(now, stale_s, max_waiting, max_kv)
        )


@dataclass
class ModelPool:
    name: str
    fallbacks: list[str]
    context_window: int | None
    provider: str | None
    rpm: int | None = None
    tpm: int | None = None
    tenant_rpm: int | None = None
    tenant_tpm: int | None = None
    replicas: list[Replica] = field(default_factory=list)


WAITING = ("vllm:num_requests_waiting", "llamacpp:requests_deferred")
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "llamacpp:kv_cache_usage_ratio")


def parse_load_metrics(text: str) -> tuple[float | None, float | None]:
    """(waiting requests, KV cache usage 0..1) from vLLM or llama.cpp Prometheus text.

    Only two families matter, so a line scan beats a full exposition parser; waiting
    requests are summed over label sets (models, engines), KV usage is the maximum.
    """
    waiting: float | None = None
    kv: float | None = None
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name_end = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=-1)
        if name_end < 0:
            continue
        name = line[:name_end]
        if name not in WAITING and name not in KV_USAGE:
            continue
        try:
            value = float(line.rsplit("}", 1)[-1].split()[0])
        except (ValueError, IndexError):
            continue
        if name in WAITING:
            waiting = (waiting or 0.0) + value
        else:
            kv = value if kv is None else max(kv, value)
    return waiting, kv
