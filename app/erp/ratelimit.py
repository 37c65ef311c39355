"""Adaptive ERP rate-limit policy: leaky bucket counted at the wire + in-flight cap + AIMD + Retry-After.

Pure policy: no IO, no asyncio, no clock. Every method takes ``now`` (float
seconds on any monotonic scale); the caller sleeps.

**What the gateway counts.** nginx's ``limit_req rate=r burst=b`` (and gateways like it)
keeps, per client, a level that every *arriving* request raises by one and that drains at
``r`` per second; a request that would lift it above ``b`` is answered 429 (nginx keeps
the level in milli-requests: ``excess = max(0, excess - r * ms + 1000)``, refused when
``excess > 1000 * b``; a refused request changes nothing). So it accepts any arrivals with
at most ``b + 1 + r * (t_k - t_j)`` requests in every window ``[t_j, t_k]``.

**What the limiter counts.** The same bucket, on our clock, filled when a request is
*sent* (``sent(now)``, called right before it goes on the wire), not when it is granted:
a request may wait between its grant and the wire (a connection, building the body, the
batcher filling it), and two grants spaced correctly could otherwise arrive bunched.
A granted request that has not been sent yet holds one place in the bucket (``pending``)
until it is sent or cancelled. A grant needs ``level + pending + 1 <= capacity``, where
``capacity = burst - reserve`` (at least 1) scaled with the adaptive rate; the level drains
at the current rate (never above the quota). ``level + pending <= capacity`` therefore
holds at every instant, and the sends satisfy ``sends in [s_j, s_k] <= capacity + r *
(s_k - s_j)``. If every request reaches the gateway between 0 and ``D`` seconds after its
``sent``, arrivals in any window are at most ``capacity + r * (t_k - t_j + D)``: the
gateway accepts all of them whenever ``capacity + r * D <= b + 1``, i.e. ``D <= (reserve +
1) / r`` (0.2 s at 10 r/s with the default reserve of 1). The reserve (``ERP_BURST_RESERVE``)
is the part of the gateway's burst never used: it pays for that send-to-arrival jitter (and
nginx's whole-millisecond clock), so a fresh limiter's first burst (``capacity`` requests at
once) is always below the ``b + 1`` the gateway accepts.

**Adaptive.** The rate starts at the quota; a throttle answer (429 or a configured
equivalent) halves it (multiplicative decrease, at most once per ``decrease_interval_s``),
fills the bucket and blocks every request until ``Retry-After`` has passed; each success
adds ``increase_step`` back (additive increase) up to the quota. The capacity shrinks with
the rate so a recovering limiter does not re-burst. A slower rate drains the level more
slowly than the gateway does, so the bound above holds at any adaptive rate.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

_EPS = 1e-9


@dataclass(frozen=True)
class RatePolicy:
    """Quota and AIMD tuning. ``rate_per_s`` and ``burst`` are the ERP's quota; ``reserve``
    requests of the burst are never used (the bucket holds ``burst - reserve``, at least 1)."""

    rate_per_s: float
    burst: int
    max_in_flight: int
    decrease_factor: float = 0.5
    increase_step: float | None = None  # per success; None: 5 % of the quota
    min_rate_per_s: float | None = None  # None: 2 % of the quota
    decrease_interval_s: float = 1.0
    reserve: int = 0

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1 or self.max_in_flight < 1:
            raise ValueError("rate_per_s > 0, burst >= 1 and max_in_flight >= 1 are required")
        if not 0 < self.decrease_factor < 1:
            raise ValueError("decrease_factor must be in (0, 1)")
        if self.reserve < 0:
            raise ValueError("reserve must be >= 0")

    @property
    def step(self) -> float:
        return self.increase_step if self.increase_step is not None else self.rate_per_s * 0.05

    @property
    def floor(self) -> float:
        return self.min_rate_per_s if self.min_rate_per_s is not None else self.rate_per_s * 0.02

    @property
    def usable_burst(self) -> int:
        """The requests the limiter may send at once at the quota: the burst less the reserve, at least 1."""
        return max(1, self.burst - self.reserve)


class AdaptiveLimiter:
    """Mutable limiter state driven by an injected clock value ``now``.

    Protocol: ``acquire(now)`` until it returns 0.0 (a place in the bucket and an in-flight
    slot are taken), then ``sent(now)`` right before the request goes on the wire (or
    ``cancel(now)`` if it never will), then exactly one of ``on_success`` (answered, not
    throttled), ``on_throttle`` (throttled) or ``on_error`` (no usable answer: timeout,
    connection error, 5xx). An answer for a request never marked sent counts it sent then.

    ``cold``: the level starts at ``burst + 1``, as if the process before this one had just
    sent all the gateway takes at once (it cannot know what the gateway still counts from the
    requests just before it): the first request waits ``(reserve + 2) / rate``, then they go at
    the rate. At our k-th arrival ``t`` the gateway's excess is at most ``burst - r * (t -
    start) + k`` (nginx's own count of that past burst, ``excess = 1000 * burst``, drained), and
    the sends are held to ``k <= usable_burst - burst - 1 + r * (t - start)``: it stays
    ``reserve + 1`` below the refusal, from the first request on.
    """

    def __init__(self, policy: RatePolicy, now: float, *, cold: bool = False) -> None:
        self.policy = policy
        self.rate = policy.rate_per_s
        self.in_flight = 0  # granted and not answered (pending ones included)
        self.pending = 0  # granted, not sent yet: each holds a place in the bucket
        self.level = 0.0  # requests sent, draining at ``rate``
        self.blocked_until = -math.inf
        self._updated = now
        self._last_decrease = -math.inf
        if cold:
            self.level = float(policy.burst + 1)

    @property
    def capacity(self) -> float:
        """Bucket size: the usable burst, scaled with the current rate (at least one request)."""
        return max(1.0, self.policy.usable_burst * self.rate / self.policy.rate_per_s)

    @property
    def tokens(self) -> float:
        """Requests that could be granted at once now (as of the last update)."""
        return max(0.0, self.capacity - self.level - self.pending)

    @tokens.setter
    def tokens(self, value: float) -> None:
        self.level = max(0.0, self.capacity - self.pending - value)

    def _drain(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self.level = max(0.0, self.level - elapsed * self.rate)
        self._updated = max(self._updated, now)

    def acquire(self, now: float) -> float:
        """Take a slot: 0.0 when granted, else seconds to wait (``inf``: wait for a request
        to be sent, cancelled or answered)."""
        self._drain(now)
        if now < self.blocked_until:
            return self.blocked_until - now
        if self.in_flight >= self.policy.max_in_flight:
            return math.inf
        room = self.capacity - self.pending - 1.0  # the most the level may be for one more grant
        if room < -_EPS:
            return math.inf  # granted requests not sent yet fill the bucket
        if self.level <= room + _EPS:  # tolerate float rounding of the drain
            self.pending += 1
            self.in_flight += 1
            return 0.0
        return (self.level - room) / self.rate

    def sent(self, now: float) -> None:
        """A granted request goes on the wire now: it moves from ``pending`` into the level."""
        self._drain(now)
        self.pending = max(0, self.pending - 1)
        self.level += 1.0

    def cancel(self, now: float) -> None:
        """A granted request was not sent after all: its place and its in-flight slot are free again."""
        self._drain(now)
        self.pending = max(0, self.pending - 1)
        self.in_flight = max(0, self.in_flight - 1)

    def _release(self, now: float) -> None:
        self._drain(now)
        if self.in_flight <= self.pending and self.pending > 0:
            self.sent(now)  # answered, so it was sent: at the latest now
        self.in_flight = max(0, self.in_flight - 1)

    def on_success(self, now: float) -> None:
        """The ERP answered without throttling: additive increase up to the quota."""
        self._release(now)
        self.rate = min(self.policy.rate_per_s, self.rate + self.policy.step)

    def on_throttle(self, now: float, retry_after_s: float | None) -> None:
        """The ERP throttled: multiplicative decrease, full bucket, honour Retry-After."""
        self._release(now)
        if now - self._last_decrease >= self.policy.decrease_interval_s:
            self.rate = max(self.policy.floor, self.rate * self.policy.decrease_factor)
            self._last_decrease = now
        self.level = max(self.level, self.capacity - self.pending)
        if retry_after_s is not None and retry_after_s > 0:
            self.blocked_until = max(self.blocked_until, now + retry_after_s)

    def set_quota(self, rate_per_s: float, burst: int, now: float) -> None:
        """A new quota (this process's share changed): the adaptive rate keeps its ratio to
        the quota (a throttled limiter stays as far below the new quota), and the level of
        the requests already sent is kept, so the new capacity holds from now on."""
        if rate_per_s == self.policy.rate_per_s and burst == self.policy.burst:
            return
        self._drain(now)
        ratio = self.rate / self.policy.rate_per_s
        self.policy = replace(self.policy, rate_per_s=rate_per_s, burst=burst)
        self.rate = max(self.policy.floor, min(rate_per_s, rate_per_s * ratio))

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
