"""No 429 from the gateway (``quota_violations`` = 0): the limiter and the client
against an exact model of nginx's ``limit_req`` (``nginx_limit_req``), with adversarial delays
between a request's grant and the wire, from a fresh start, cold or not, and against a gateway
that still counts the burst a previous process just spent; and ``ERP_BURST_RESERVE`` validated."""
from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import os
import random
import time
from collections.abc import Hashable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from app.cli import main
from app.erp import http_client, make_port
from app.erp.batcher import Batcher
from app.erp.client import ErpHttpClient
from app.erp.ratelimit import AdaptiveLimiter, RatePolicy
from app.settings import SettingsError, load
from tests.fixtures.http_server import serving
from tests.unit.erp.nginx_limit_req import LimitReq, zone_rate

BASE = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}


# -- the model is nginx's ------------------------------------------------------------------------


def test_the_model_takes_burst_plus_one_at_once_then_one_per_interval() -> None:
    gw = LimitReq("10r/s", 5)
    assert [gw.arrive(1000) for _ in range(7)] == [True] * 6 + [False]
    assert gw.excess == 5000  # the refused request changed nothing
    assert not gw.arrive(1099)  # 5000 - 990 + 1000 > 5000
    assert gw.arrive(1100) and gw.excess == 5000
    assert gw.arrive(2700) and gw.excess == 0  # idle long enough: max(0, 5000 - 16000 + 1000)


def test_the_model_keeps_excess_in_milli_requests_with_integer_steps() -> None:
    assert zone_rate("10r/s") == 10_000 and zone_rate("600r/m") == 10_000 and zone_rate("7r/m") == 116
    gw = LimitReq("7r/m", 1)
    assert gw.arrive(0) and gw.arrive(1) and gw.excess == 1000  # 116 * 1 // 1000 = 0 drained
    assert not gw.arrive(8000)  # 1000 - 927 + 1000 = 1073 > 1000
    assert gw.arrive(8700)  # 1000 - 1009 + 1000 = 991
    gw = LimitReq("10r/s", 1)
    assert gw.arrive(500) and gw.arrive(500) and not gw.arrive(500)
    assert gw.arrive(499) is False  # a clock step back counts as no time at all
    assert gw.arrive(600) and gw.last == 600


# -- the limiter, simulated: adversarial grant-to-wire delays -----------------------------------


def simulate(policy: RatePolicy, *, cold: bool, n: int, to_wire: list[float], jitter: list[float],
             latency: list[float], count_at_grant: bool = False) -> list[float]:
    """``n`` requests of a backlog through the limiter (every grant is used at once): request
    ``i`` waits ``to_wire[i]`` between its grant and the wire (``sent``), reaches the gateway
    ``jitter[i]`` later, is answered ``latency[i]`` after that. The arrival times.

    ``count_at_grant``: the old accounting (the request counted in the bucket when granted)."""
    limiter = AdaptiveLimiter(policy, 0.0, cold=cold)
    events: list[tuple[float, int, str]] = []
    order = itertools.count()
    arrivals: list[float] = []
    granted, now, retry_at = 0, 0.0, 0.0
    while granted < n or events:
        while granted < n and retry_at <= now:
            wait = limiter.acquire(now)
            if wait == 0.0:
                i = granted
                granted += 1
                if count_at_grant:
                    limiter.sent(now)
                heapq.heappush(events, (now + to_wire[i % len(to_wire)], next(order), "send"))
            else:
                retry_at = now + wait  # inf: until something is sent or answered
        if granted < n and (not events or retry_at < events[0][0]):
            now = retry_at
            continue
        now, i, kind = heapq.heappop(events)
        if kind == "send":
            if not count_at_grant:
                limiter.sent(now)
            arrive = now + jitter[len(arrivals) % len(jitter)]
            arrivals.append(arrive)
            heapq.heappush(events, (arrive + latency[i % len(latency)], i, "answer"))
        else:
            limiter.on_success(now)
        retry_at = now
    return arrivals


def tolerance_s(policy: RatePolicy) -> float:
    """The send-to-arrival jitter the gateway absorbs: (burst + 1 - usable) / rate, less
    nginx's whole millisecond (its clock can make a window look up to 1 ms shorter)."""
    return (policy.burst + 1 - policy.usable_burst) / policy.rate_per_s - 0.0011


GATEWAYS = ["10r/s", "20r/s", "5r/s", "2r/s", "600r/m", "120r/m"]
delays = st.one_of(st.just(0.0), st.floats(0, 0.05), st.floats(0, 3.0))


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(GATEWAYS),
    burst=st.integers(1, 10),
    reserve=st.integers(0, 3),
    max_in_flight=st.integers(1, 8),
    cold=st.booleans(),
    to_wire=st.lists(delays, min_size=1, max_size=40),
    jitter=st.lists(st.floats(0, 1), min_size=1, max_size=40),
    latency=st.lists(st.floats(0, 1.5), min_size=1, max_size=40),
    phase_ms=st.floats(0, 999),
)
def test_whatever_the_grant_to_wire_delays_the_gateway_never_refuses(
        zone: str, burst: int, reserve: int, max_in_flight: int, cold: bool, to_wire: list[float],
        jitter: list[float], latency: list[float], phase_ms: float) -> None:
    gateway = LimitReq(zone, burst)
    policy = RatePolicy(gateway.rate_per_s, burst, max_in_flight, reserve=min(reserve, burst - 1))
    d = tolerance_s(policy)
    arrivals = simulate(policy, cold=cold, n=60, to_wire=to_wire, jitter=[j * d for j in jitter], latency=latency)
    assert len(arrivals) == 60
    assert gateway.replay(arrivals, phase_ms) == []


@settings(max_examples=200, deadline=None)
@given(
    zone=st.sampled_from(GATEWAYS),
    burst=st.integers(1, 10),
    reserve=st.integers(0, 3),
    to_wire=st.lists(delays, min_size=1, max_size=40),
    jitter=st.lists(st.floats(0, 1), min_size=1, max_size=40),
    phase_ms=st.floats(0, 999),
)
def test_a_cold_limiter_after_a_process_that_spent_the_whole_burst_gets_no_429(
        zone: str, burst: int, reserve: int, to_wire: list[float], jitter: list[float], phase_ms: float) -> None:
    gateway = LimitReq(zone, burst)
    for _ in range(burst + 1):  # the previous process, the instant this one starts
        assert gateway.arrive_s(0.0, phase_ms)
    policy = RatePolicy(gateway.rate_per_s, burst, 4, reserve=min(reserve, burst - 1))
    d = tolerance_s(policy)
    arrivals = simulate(policy, cold=True, n=40, to_wire=to_wire, jitter=[j * d for j in jitter], latency=[0.05])
    assert gateway.replay(arrivals, phase_ms) == []


#: Five grants at once whose requests go 0.5 s later, and a sixth granted at 0.1 s that goes at 0.5 s too.
BUNCHED = [0.5] * 5 + [0.4] + [0.0] * 10


@pytest.mark.parametrize(("count_at_grant", "refused"), [(True, True), (False, False)])
def test_counting_at_the_grant_lets_bunched_requests_through_counting_at_the_wire_does_not(
        count_at_grant: bool, refused: bool) -> None:
    """The cause of the 429s: a bucket charged at the grant (the old accounting, even with no
    reserve) lets seven requests reach the gateway in the same instant; charged at the wire, it
    holds the sixth grant until the five before it have gone."""
    gateway = LimitReq("10r/s", 5)
    policy = RatePolicy(10, 5, 100, reserve=0)
    arrivals = simulate(policy, cold=False, n=16, to_wire=BUNCHED, jitter=[0.0], latency=[0.01],
                        count_at_grant=count_at_grant)
    assert bool(gateway.replay(arrivals)) is refused


def test_a_fresh_limiters_first_burst_is_the_burst_less_the_reserve() -> None:
    limiter = AdaptiveLimiter(RatePolicy(10, 5, 100, reserve=1), 0.0)
    granted = 0
    while limiter.acquire(0.0) == 0.0:
        granted += 1
    assert granted == 4  # the gateway would take 6
    cold = AdaptiveLimiter(RatePolicy(10, 5, 100, reserve=1), 0.0, cold=True)
    assert cold.acquire(0.0) == pytest.approx(0.3)  # (reserve + 2) / rate


def test_granted_requests_not_sent_yet_hold_the_bucket_until_sent_or_cancelled() -> None:
    limiter = AdaptiveLimiter(RatePolicy(10, 5, 100, reserve=1), 0.0)
    for _ in range(4):
        assert limiter.acquire(0.0) == 0.0
    assert limiter.acquire(5.0) == math.inf  # seconds later: still held, not refilled
    limiter.sent(5.0)
    assert limiter.acquire(5.0) == pytest.approx(0.1)  # now it drains like a sent request
    limiter.cancel(5.0)
    assert limiter.acquire(5.0) == 0.0 and limiter.pending == 3
    assert limiter.in_flight == 3 + 1  # one sent, not answered yet
    limiter.on_success(5.01)  # the sent one
    assert limiter.pending == 3 and limiter.in_flight == 3


def test_the_reserve_is_validated() -> None:
    with pytest.raises(ValueError, match="reserve"):
        RatePolicy(10, 5, 4, reserve=-1)
    assert RatePolicy(10, 1, 4, reserve=1).usable_burst == 1  # a share of 1 still sends


# -- the client on the wire: an aiohttp server that answers as nginx would ----------------------


def gateway_server(gateway: LimitReq) -> AbstractAsyncContextManager[str]:
    """An aiohttp server that answers as nginx would (its base URL)."""
    async def handler(request: web.Request) -> web.Response:
        ok = gateway.arrive_s(time.monotonic())
        return web.json_response({}, status=200 if ok else 429, headers={} if ok else {"Retry-After": "1"})

    return serving(handler)


def adversarial_delays(seed: int, n: int) -> list[float]:
    """Grant-to-wire delays: mostly none, some long (a batch filling, a token fetched, a body built)."""
    rng = random.Random(seed)
    return [rng.choice((0.0, 0.0, rng.uniform(0, 0.05), rng.uniform(0.1, 0.7))) for _ in range(n)]


@pytest.mark.parametrize("cold_start", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_client_with_adversarial_grant_to_wire_delays_gets_no_429(seed: int, cold_start: bool) -> None:
    gateway = LimitReq("10r/s", 5)
    async with gateway_server(gateway) as url:
        client = ErpHttpClient(url, policy=RatePolicy(10, 5, 4, reserve=1), timeout_s=5, cold_start=cold_start)

        async def one(delay: float) -> None:
            await client.acquire()
            await asyncio.sleep(delay)  # granted, not on the wire yet
            await client.request("GET", "/x", acquired=True)

        try:
            out = await asyncio.gather(*(one(d) for d in adversarial_delays(seed, 18)), return_exceptions=True)
        finally:
            await client.close()
    assert [o for o in out if o is not None] == [] and gateway.rejected == []
    assert gateway.accepted == 18


async def test_the_batcher_filling_its_request_after_the_grant_gets_no_429() -> None:
    """The batcher takes its slot, then fills the request and builds its body (here: up to
    0.6 s): the slot holds its place in the bucket meanwhile."""
    gateway = LimitReq("10r/s", 5)
    async with gateway_server(gateway) as url:
        client = ErpHttpClient(url, policy=RatePolicy(10, 5, 4, reserve=1), timeout_s=5, cold_start=False)
        rng = random.Random(7)

        async def execute(group: Hashable, payloads: list[Any]) -> list[Any]:
            await asyncio.sleep(rng.choice((0.0, 0.6)))
            await client.request("GET", f"/{group}", acquired=True)
            return [None] * len(payloads)

        batcher = Batcher(client, execute, window_s=0.0, max_items=1, first_items=1)
        try:
            await asyncio.gather(*(batcher.call(i % 5, i) for i in range(16)))
        finally:
            await batcher.close()
            await client.close()
    assert gateway.rejected == [] and gateway.accepted == 16


@pytest.mark.parametrize("failure", ["raises", "cancelled", "sends nothing"])
async def test_a_slot_whose_request_never_went_on_the_wire_is_given_back(failure: str) -> None:
    """A batch that fails (or answers locally) between its grant and its send must not keep
    its place in the bucket: with a burst of 1 the next request would wait forever."""
    gateway = LimitReq("50r/s", 1)
    async with gateway_server(gateway) as url:
        client = ErpHttpClient(url, policy=RatePolicy(50, 1, 4, reserve=0), timeout_s=5, cold_start=False)
        first = True

        async def execute(group: Hashable, payloads: list[Any]) -> list[Any]:
            nonlocal first
            if first:
                first = False
                if failure == "raises":
                    raise ValueError("the body could not be built")
                if failure == "cancelled":
                    raise asyncio.CancelledError
                return [None] * len(payloads)  # every item answered without a request
            await client.request("GET", f"/{group}", acquired=True)
            return [None] * len(payloads)

        batcher = Batcher(client, execute, window_s=0.0, max_items=1, first_items=1)
        try:
            outcomes = await asyncio.gather(batcher.call("a", 1), return_exceptions=True)
            assert client.limiter.pending == 0
            await asyncio.wait_for(asyncio.gather(*(batcher.call("b", i) for i in range(3))), timeout=5)
        finally:
            await batcher.close()
            await client.close()
    assert gateway.accepted == 3 and gateway.rejected == [] and client.limiter.pending == 0
    assert (outcomes == [None]) is (failure == "sends nothing")


# -- ERP_BURST_RESERVE ---------------------------------------------------------------------------


def test_the_reserve_defaults_to_one_and_reaches_the_sinks_limiter() -> None:
    s = load({**BASE, "ERP_BURST": "5"})
    assert s.erp.burst_reserve == 1
    limiter = http_client(make_port(s.erp)).limiter
    assert limiter.policy.reserve == 1 and limiter.policy.usable_burst == 4
    assert load({**BASE, "ERP_BURST": "5", "ERP_BURST_RESERVE": "0"}).erp.burst_reserve == 0


@pytest.mark.parametrize(("env", "error"), [
    ({"ERP_BURST_RESERVE": "-1"}, "ERP_BURST_RESERVE='-1': must be >= 0"),
    ({"ERP_BURST_RESERVE": "one"}, "ERP_BURST_RESERVE='one'"),
    ({"ERP_BURST_RESERVE": "1.5"}, "ERP_BURST_RESERVE='1.5'"),
    ({"ERP_BURST_RESERVE": "5", "ERP_BURST": "5"},
     "ERP_BURST_RESERVE=5: must be less than ERP_BURST=5"),
    ({"ERP_BURST": "1"}, "ERP_BURST_RESERVE=1: must be less than ERP_BURST=1"),
])
def test_a_bad_reserve_is_refused_naming_it(env: dict[str, str], error: str) -> None:
    with pytest.raises(SettingsError) as err:
        load({**BASE, **env})
    assert error in str(err.value)


def test_a_bad_reserve_stops_start_up(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("KAFKA_", "TOPIC_", "ERP_", "WORKER_", "LOG_", "RECONCILE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k:9092")
    monkeypatch.setenv("ERP_BURST_RESERVE", "9")
    assert main(["check-config"]) == 2
    assert "configuration error: ERP_BURST_RESERVE=9: must be less than ERP_BURST=5" in capsys.readouterr().err
