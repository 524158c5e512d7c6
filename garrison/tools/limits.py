"""Rate limits (token buckets) and a circuit breaker per upstream, in process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from garrison.core.errors import ServiceUnavailable, TooManyRequests


@dataclass(slots=True)
class TokenBucket:
    rate_per_s: float
    capacity: float
    tokens: float = -1.0
    updated: float = field(default_factory=time.monotonic)

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one will be there."""
        now = time.monotonic()
        if self.tokens < 0:
            self.tokens = self.capacity
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate_per_s


class RateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[tuple[str, ...], TokenBucket] = {}

    def check(self, key: tuple[str, ...], per_minute: int) -> None:
        bucket = self._buckets.get(key)
        if bucket is None or bucket.capacity != per_minute:
            bucket = self._buckets[key] = TokenBucket(per_minute / 60.0, float(per_minute))
            if len(self._buckets) > 100_000:  # bound memory under key churn
                self._buckets = {key: bucket}
        wait = bucket.take()
        if wait:
            raise TooManyRequests(f"tool call rate limit of {per_minute}/min reached; retry later",
                                  retry_after_s=wait)


class CircuitBreaker:
    """Opens after ``failures`` errors in a row; lets one trial call through after ``reset_s``."""

    def __init__(self, failures: int, reset_s: float) -> None:
        self.failures, self.reset_s = failures, reset_s
        self._count: dict[str, int] = {}
        self._opened: dict[str, float] = {}

    def before(self, key: str, label: str) -> None:
        opened = self._opened.get(key)
        if opened is None:
            return
        remaining = opened + self.reset_s - time.monotonic()
        if remaining > 0:
            raise ServiceUnavailable(f"upstream {label} is failing; circuit open for {remaining:.0f} s more",
                                     headers={"Retry-After": str(int(remaining) + 1)})
        self._opened[key] = time.monotonic()  # half-open: this call is the trial

    def success(self, key: str) -> None:
        self._count.pop(key, None)
        self._opened.pop(key, None)

    def failure(self, key: str) -> None:
        n = self._count.get(key, 0) + 1
        self._count[key] = n
        if n >= self.failures:
            self._opened[key] = time.monotonic()

    def is_open(self, key: str) -> bool:
        opened = self._opened.get(key)
        return opened is not None and opened + self.reset_s > time.monotonic()
