"""nginx's ``limit_req`` for one client key, computed exactly as ngx_http_limit_req_module does
(nginx 1.15+, the Debian 1.22 the gateway runs: ``ops/nginx/erp-gateway.conf.tmpl``).

- ``limit_req_zone ... rate=Nr/s`` keeps ``ctx->rate = N * 1000`` milli-requests per second
  (``Nr/m``: ``N * 1000 / 60``, C integer division); ``limit_req burst=B`` keeps ``B * 1000``.
- Time is nginx's whole milliseconds (``ngx_current_msec``).
- The first request of a key creates its node with ``excess = 0`` and is accepted.
- Each later request: ``ms = now - last`` (below -60000: 1; below 0: 0);
  ``excess = excess - rate * ms / 1000 + 1000`` (integer division), 0 if negative; refused
  (429) when ``excess > burst``, and then nothing changes; accepted: ``excess`` is kept and
  ``last = now`` when ``ms`` is not 0.
- ``nodelay``: an accepted request is served at once (no queueing delay).
- A zone node is removed only when nginx creates a node for *another* key (and then only
  after 60 s of zero excess): with one client address the node lives as long as the zone.
"""
from __future__ import annotations

import math


def zone_rate(rate: str) -> int:
    """``ctx->rate`` of ``limit_req_zone rate=<rate>`` (``10r/s``, ``600r/m``)."""
    if rate.endswith("r/s"):
        number, scale = rate[:-3], 1
    elif rate.endswith("r/m"):
        number, scale = rate[:-3], 60
    else:
        number, scale = rate, 1
    n = int(number)
    if n <= 0:
        raise ValueError(f"invalid rate {rate!r}")
    return n * 1000 // scale


class LimitReq:
    """One ``limit_req zone=... burst=B nodelay`` for one key; ``arrive(ms)`` answers accepted or not."""

    def __init__(self, rate: str, burst: int) -> None:
        self.rate = zone_rate(rate)  # milli-requests per second
        self.burst = burst * 1000  # milli-requests
        self.excess: int | None = None  # None: no node yet
        self.last = 0
        self.accepted = 0
        self.rejected: list[int] = []  # the arrival times (ms) answered 429

    @property
    def rate_per_s(self) -> float:
        return self.rate / 1000

    def arrive(self, now_ms: int) -> bool:
        if self.excess is None:
            self.excess, self.last = 0, now_ms
            self.accepted += 1
            return True
        ms = now_ms - self.last
        if ms < -60000:
            ms = 1
        elif ms < 0:
            ms = 0
        excess = self.excess - self.rate * ms // 1000 + 1000
        if excess < 0:
            excess = 0
        if excess > self.burst:
            self.rejected.append(now_ms)
            return False
        self.excess = excess
        if ms:
            self.last = now_ms
        self.accepted += 1
        return True

    def arrive_s(self, now_s: float, phase_ms: float = 0.0) -> bool:
        """An arrival at ``now_s`` seconds of our clock; nginx's millisecond clock is ours
        shifted by ``phase_ms`` and truncated to the millisecond."""
        return self.arrive(math.floor(now_s * 1000 + phase_ms))

    def replay(self, arrivals_s: list[float], phase_ms: float = 0.0) -> list[int]:
        """Every arrival in the order nginx sees them; the 429s' times (ms)."""
        for t in sorted(arrivals_s):
            self.arrive_s(t, phase_ms)
        return self.rejected
