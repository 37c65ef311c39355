"""The pure adaptive rate-limit policy, driven by an injected clock."""
from __future__ import annotations

import math
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.erp.ratelimit import AdaptiveLimiter, RatePolicy, backoff

POLICY = RatePolicy(rate_per_s=10, burst=5, max_in_flight=100)


def drain(limiter: AdaptiveLimiter, now: float) -> int:
    """Grant (and finish at once) every request possible at ``now``."""
    granted = 0
    while limiter.acquire(now) == 0.0:
        limiter.on_success(now)
        granted += 1
    return granted


def test_a_fresh_limiter_allows_the_burst_then_paces_at_the_rate() -> None:
    limiter = AdaptiveLimiter(POLICY, now=0.0)
    assert drain(limiter, 0.0) == 5
    assert limiter.acquire(0.0) == pytest.approx(0.1)
    assert limiter.acquire(0.1) == 0.0


def test_the_in_flight_cap_waits_for_a_release() -> None:
    limiter = AdaptiveLimiter(RatePolicy(rate_per_s=100, burst=10, max_in_flight=2), now=0.0)
    assert limiter.acquire(0.0) == 0.0
    assert limiter.acquire(0.0) == 0.0
    assert limiter.acquire(0.0) == math.inf
    limiter.on_success(0.01)
    assert limiter.acquire(0.01) == 0.0
    assert limiter.in_flight == 2


def test_a_cancelled_request_frees_its_slot_without_changing_the_rate() -> None:
    limiter = AdaptiveLimiter(RatePolicy(rate_per_s=100, burst=10, max_in_flight=1), now=0.0)
    assert limiter.acquire(0.0) == 0.0
    assert limiter.acquire(0.0) == math.inf
    rate = limiter.rate
    limiter.cancel(0.0)
    assert limiter.in_flight == 0 and limiter.rate == rate
    assert limiter.acquire(0.0) == 0.0


def test_a_throttle_halves_the_rate_empties_the_bucket_and_honours_retry_after() -> None:
    limiter = AdaptiveLimiter(POLICY, now=0.0)
    assert limiter.acquire(0.0) == 0.0
    limiter.on_throttle(0.0, retry_after_s=2.0)
    assert limiter.rate == 5.0
    assert limiter.tokens == 0.0
    assert limiter.acquire(0.5) == pytest.approx(1.5)  # blocked by Retry-After
    assert limiter.acquire(2.0) == 0.0  # tokens refilled at the new rate meanwhile


def test_concurrent_throttles_cut_the_rate_once_per_interval() -> None:
    limiter = AdaptiveLimiter(POLICY, now=0.0)
    for _ in range(4):
        assert limiter.acquire(0.0) == 0.0
    for t in (0.0, 0.1, 0.2, 0.3):
        limiter.on_throttle(t, retry_after_s=None)
    assert limiter.rate == 5.0
    limiter.acquire(1.0)
    limiter.on_throttle(1.0, None)
    assert limiter.rate == 2.5


def test_the_rate_never_falls_below_the_floor() -> None:
    limiter = AdaptiveLimiter(POLICY, now=0.0)
    for second in range(30):
        limiter.acquire(float(second))
        limiter.on_throttle(float(second), None)
    assert limiter.rate == pytest.approx(POLICY.floor)


def test_successes_grow_the_rate_back_additively_but_never_above_the_quota() -> None:
    limiter = AdaptiveLimiter(POLICY, now=0.0)
    limiter.acquire(0.0)
    limiter.on_throttle(0.0, None)
    assert limiter.rate == 5.0
    now, rates = 0.0, []
    for _ in range(200):
        wait = limiter.acquire(now)
        while wait:
            now += wait
            wait = limiter.acquire(now)
        limiter.on_success(now)
        rates.append(limiter.rate)
    assert rates[0] == pytest.approx(5.0 + POLICY.step)
    assert all(b - a == pytest.approx(POLICY.step) or b == POLICY.rate_per_s for a, b in pairwise(rates))
    assert max(rates) == POLICY.rate_per_s


def test_the_bucket_shrinks_with_the_rate_so_recovery_does_not_burst() -> None:
    limiter = AdaptiveLimiter(POLICY, now=0.0)
    limiter.acquire(0.0)
    limiter.on_throttle(0.0, None)
    assert limiter.capacity == pytest.approx(2.5)
    assert drain(limiter, 100.0) <= 3


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=50),
    burst=st.integers(min_value=1, max_value=20),
    outcomes=st.lists(st.sampled_from(["ok", "ok", "ok", "throttle", "error"]), min_size=1, max_size=150),
    retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=3)),
    gaps=st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=150),
)
def test_never_above_the_quota(rate: float, burst: int, outcomes: list[str], retry_after: float | None,
                               gaps: list[float]) -> None:
    """Over any horizon T the limiter grants at most burst + rate * T requests."""
    policy = RatePolicy(rate_per_s=rate, burst=burst, max_in_flight=4)
    limiter = AdaptiveLimiter(policy, now=0.0)
    now, grants = 0.0, []
    for i, outcome in enumerate(outcomes):
        wait = limiter.acquire(now)
        while wait:
            now += wait if not math.isinf(wait) else 1.0
            wait = limiter.acquire(now)
        grants.append(now)
        assert limiter.rate <= rate
        now += gaps[i % len(gaps)]
        if outcome == "ok":
            limiter.on_success(now)
        elif outcome == "error":
            limiter.on_error(now)
        else:
            limiter.on_throttle(now, retry_after)
    for i, start in enumerate(grants):
        for j in range(i, len(grants)):
            assert j - i + 1 <= burst + rate * (grants[j] - start) + 1e-6


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    assert backoff(0, 0.5, 30, lambda: 0.999999) == pytest.approx(0.5, rel=1e-5)
    assert backoff(3, 0.5, 30, lambda: 0.5) == pytest.approx(2.0)
    assert backoff(10, 0.5, 30, lambda: 0.5) == pytest.approx(15.0)
    assert backoff(10_000, 0.5, 30, lambda: 1.0) == 30
    assert backoff(4, 0.5, 30, lambda: 0.0) == 0.0
    with pytest.raises(ValueError):
        backoff(-1, 0.5, 30, lambda: 0.5)


@given(attempt=st.integers(min_value=0, max_value=200), r=st.floats(min_value=0, max_value=0.999999))
def test_backoff_stays_within_zero_and_the_cap(attempt: int, r: float) -> None:
    assert 0.0 <= backoff(attempt, 0.25, 10.0, lambda: r) <= 10.0


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RatePolicy(rate_per_s=0, burst=1, max_in_flight=1)
    with pytest.raises(ValueError):
        RatePolicy(rate_per_s=1, burst=1, max_in_flight=1, decrease_factor=1.0)
