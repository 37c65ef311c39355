"""Adaptive ERP rate-limit policy: token bucket + in-flight cap + AIMD + Retry-After.

Pure policy: no IO, no asyncio, no clock. Every method takes ``now`` (float
seconds on any monotonic scale); the caller sleeps. The limiter never lets the
sending rate exceed the configured quota: the refill rate starts at the quota,
a throttle answer (429 or a configured equivalent) halves it (multiplicative
decrease, at most once per ``decrease_interval_s``) and blocks every request
until ``Retry-After`` has passed, and each success adds ``increase_step`` back
(additive increase) up to the quota. The bucket holds at most ``burst`` tokens,
scaled down with the current rate so a recovering limiter does not re-burst.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

_EPS = 1e-9


@dataclass(frozen=True)
class RatePolicy:
    """Quota and AIMD tuning. ``rate_per_s`` and ``burst`` are the ERP's quota."""

    rate_per_s: float
    burst: int
    max_in_flight: int
    decrease_factor: float = 0.5
    increase_step: float | None = None  # per success; None: 5 % of the quota
    min_rate_per_s: float | None = None  # None: 2 % of the quota
    decrease_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1 or self.max_in_flight < 1:
            raise ValueError("rate_per_s > 0, burst >= 1 and max_in_flight >= 1 are required")
        if not 0 < self.decrease_factor < 1:
            raise ValueError("decrease_factor must be in (0, 1)")

    @property
    def step(self) -> float:
        return self.increase_step if self.increase_step is not None else self.rate_per_s * 0.05

    @property
    def floor(self) -> float:
        return self.min_rate_per_s if self.min_rate_per_s is not None else self.rate_per_s * 0.02


class AdaptiveLimiter:
    """Mutable limiter state driven by an injected clock value ``now``.

    Protocol: ``acquire(now)`` until it returns 0.0 (a token and an in-flight
    slot are taken), send, then exactly one of ``on_success`` (answered, not
    throttled), ``on_throttle`` (throttled) or ``on_error`` (no usable answer:
    timeout, connection error, 5xx).
    """

    def __init__(self, policy: RatePolicy, now: float) -> None:
        self.policy = policy
        self.rate = policy.rate_per_s
        self.tokens = float(policy.burst)
        self.in_flight = 0
        self.blocked_until = -math.inf
        self._updated = now
        self._last_decrease = -math.inf

    @property
    def capacity(self) -> float:
        """Bucket size: the burst, scaled with the current rate (at least one token)."""
        return max(1.0, self.policy.burst * self.rate / self.policy.rate_per_s)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self._updated = max(self._updated, now)

    def acquire(self, now: float) -> float:
        """Take a slot: 0.0 when granted, else seconds to wait (``inf``: wait for a release)."""
        self._refill(now)
        if now < self.blocked_until:
            return self.blocked_until - now
        if self.in_flight >= self.policy.max_in_flight:
            return math.inf
        if self.tokens >= 1.0 - _EPS:  # tolerate float rounding of the refill
            self.tokens = max(0.0, self.tokens - 1.0)
            self.in_flight += 1
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def _release(self, now: float) -> None:
        self._refill(now)
        self.in_flight = max(0, self.in_flight - 1)

    def cancel(self, now: float) -> None:
        """A granted request was not sent after all: its in-flight slot is free again."""
        self._release(now)

    def on_success(self, now: float) -> None:
        """The ERP answered without throttling: additive increase up to the quota."""
        self._release(now)
        self.rate = min(self.policy.rate_per_s, self.rate + self.policy.step)

    def on_throttle(self, now: float, retry_after_s: float | None) -> None:
        """The ERP throttled: multiplicative decrease, empty bucket, honour Retry-After."""
        self._release(now)
        if now - self._last_decrease >= self.policy.decrease_interval_s:
            self.rate = max(self.policy.floor, self.rate * self.policy.decrease_factor)
            self._last_decrease = now
        self.tokens = 0.0
        if retry_after_s is not None and retry_after_s > 0:
            self.blocked_until = max(self.blocked_until, now + retry_after_s)

    def set_quota(self, rate_per_s: float, burst: int, now: float) -> None:
        """A new quota (this process's share changed): the adaptive rate keeps its ratio to
        the quota (a throttled limiter stays as far below the new quota), and the bucket
        never holds more than the new capacity, so the new share holds from now on."""
        if rate_per_s == self.policy.rate_per_s and burst == self.policy.burst:
            return
        self._refill(now)
        ratio = self.rate / self.policy.rate_per_s
        self.policy = replace(self.policy, rate_per_s=rate_per_s, burst=burst)
        self.rate = max(self.policy.floor, min(rate_per_s, rate_per_s * ratio))
        self.tokens = min(self.tokens, self.capacity)

    def on_error(self, now: float) -> None:
        """No usable answer (timeout, refused, 5xx): free the slot, keep the rate."""
        self._release(now)


def backoff(attempt: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Capped exponential backoff with full jitter: ``rand() * min(cap, base * 2**attempt)``.

    ``attempt`` counts from 0; ``rand`` returns a float in [0, 1).
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    ceiling = cap if attempt >= 64 else min(cap, base * 2.0**attempt)
    return rand() * ceiling
