"""The ERP quota shared by partition ownership, each client's figures under its role, and
the sink's backlog gauges true when read (refreshed from current end offsets)."""
from __future__ import annotations

import random
from typing import Any

import pytest
from aiohttp import web

from app import metrics
from app.erp import http_client, make_port, quota
from app.erp.client import ErpHttpClient
from app.erp.port import TransientErpError
from app.erp.ratelimit import AdaptiveLimiter, RatePolicy
from app.settings import load
from tests.unit.erp.sinkfakes import Erp, Harness, Topic, milestone
from tests.unit.erp.test_erp_client import serve  # noqa: F401 - the fixture

BASE = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}


def value(metric: Any, *labels: str) -> float:
    return float((metric.labels(*labels) if labels else metric)._value.get())


# -- the share ---------------------------------------------------------------------------------


def settings(**env: str) -> Any:
    return load({**BASE, "ERP_QUOTA_PER_S": "20", "ERP_SOURCE_RATE_PER_S": "1", "RECONCILE_RATE_PER_S": "0.5",
                 "ERP_BURST": "12", "TOPIC_PARTITIONS": "12", **env})


def assignments(partitions: int, workers: int, rng: random.Random) -> list[set[int]]:
    """Every partition to exactly one of ``workers`` workers (some may get none)."""
    owners: list[set[int]] = [set() for _ in range(workers)]
    for p in range(partitions):
        owners[rng.randrange(workers)].add(p)
    return owners


@pytest.mark.parametrize("workers", [1, 2, 3, 5, 12, 20])
def test_the_fleet_uses_the_whole_quota_and_never_more_whatever_the_replica_count(workers: int) -> None:
    s = settings()
    pool = quota.sinks_pool(s)
    assert pool == pytest.approx(20 - 1 - 0.5)
    rng = random.Random(workers)
    for _ in range(50):
        owners = assignments(12, workers, rng)
        shares = [quota.sink_share(pool, 12, len(o), 12) for o in owners if o]
        fleet = sum(sh.rate_per_s for sh in shares) + s.erp.source_rate_per_s + s.reconcile.rate_per_s
        assert fleet == pytest.approx(20)  # every partition owned: the whole quota, not more
        assert sum(sh.burst for sh in shares) <= max(12, len(shares))


def test_during_a_rebalance_partitions_not_yet_owned_leave_their_share_unused() -> None:
    pool = quota.sinks_pool(settings())
    owned_now = [{0, 1, 2}, {3, 4}]  # 7 of 12 partitions are between owners
    total = sum(quota.sink_share(pool, 12, len(o), 12).rate_per_s for o in owned_now)
    assert total == pytest.approx(pool * 5 / 12) and total < pool


def test_a_share_needs_an_owned_partition() -> None:
    with pytest.raises(ValueError):
        quota.sink_share(10.0, 5, 0, 4)
    with pytest.raises(ValueError):
        quota.sink_share(10.0, 5, 5, 4)


def test_the_burst_is_shared_too_at_least_one_request() -> None:
    assert quota.sink_share(18.5, 12, 3, 12).burst == 3
    assert quota.sink_share(18.5, 3, 1, 12).burst == 1


def test_the_quota_must_leave_something_for_the_sinks() -> None:
    from app.settings import SettingsError

    with pytest.raises(SettingsError) as err:
        settings(ERP_QUOTA_PER_S="1.5")
    assert "ERP_QUOTA_PER_S=1.5: must be more than ERP_SOURCE_RATE_PER_S=1.0 + RECONCILE_RATE_PER_S=0.5" in str(err.value)


def test_without_a_fleet_quota_the_sink_keeps_its_own_rate() -> None:
    s = load({**BASE, "ERP_RATE_PER_S": "7", "ERP_BURST": "3"})
    assert quota.sink_settings(s) is s.erp
    owned = lambda: {0}  # noqa: E731
    client = http_client(make_port(s.erp))
    assert quota.follow(client, s, owned) is owned


async def test_the_sink_clients_limiter_follows_every_rebalance() -> None:
    s = settings()
    port = make_port(quota.sink_settings(s), role="sink")
    client = http_client(port)
    pool = quota.sinks_pool(s)
    assert client.limiter.policy.rate_per_s == pytest.approx(pool / 12)  # one partition's share until owned
    owned: set[int] | None = {0, 1, 2, 3, 4, 5}
    follow = quota.follow(client, s, lambda: owned)
    assert follow() == owned
    assert client.limiter.policy.rate_per_s == pytest.approx(pool / 2) and client.limiter.policy.burst == 6
    assert value(metrics.ERP_QUOTA_SHARE, "sink") == pytest.approx(pool / 2)
    owned = None  # a rebalance under way: nothing changes
    follow()
    assert client.limiter.policy.rate_per_s == pytest.approx(pool / 2)
    owned = {7, 8, 9}  # another worker joined: a quarter
    follow()
    assert client.limiter.policy.rate_per_s == pytest.approx(pool / 4) and client.limiter.policy.burst == 3
    assert value(metrics.ERP_QUOTA_SHARE, "sink") == pytest.approx(pool / 4)
    owned = set()  # none left: no sink request can go out; the share shown is 0
    follow()
    assert value(metrics.ERP_QUOTA_SHARE, "sink") == 0
    await port.close()


def test_a_new_quota_keeps_a_throttled_limiters_distance_and_caps_its_bucket() -> None:
    lim = AdaptiveLimiter(RatePolicy(rate_per_s=10, burst=10, max_in_flight=4), 0.0)
    lim.on_throttle(0.0, None)  # rate halved: 5 of 10
    lim.tokens = 0.0
    lim.set_quota(4.0, 2, 10.0)  # 10 s later the share drops to 4/s, burst 2
    assert lim.rate == pytest.approx(2.0)  # still half of the quota
    assert lim.tokens <= lim.capacity <= 2
    lim.tokens = 10.0  # even a bucket that was full under the old quota
    lim.set_quota(4.0, 2, 10.0)
    granted = 0
    while lim.acquire(10.0) == 0.0:
        granted += 1
        lim.on_success(10.0)
    assert granted <= 2  # at once: at most the new burst


# -- roles ----------------------------------------------------------------------------------------


async def test_each_client_reports_under_its_own_role(serve) -> None:  # noqa: F811 - the fixture
    async def throttled(request: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "0"})

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    policy = RatePolicy(rate_per_s=100, burst=10, max_in_flight=4)
    sink = ErpHttpClient(await serve(ok), policy=policy, timeout_s=2, role="sink")
    rec = ErpHttpClient(await serve(throttled), policy=RatePolicy(rate_per_s=0.5, burst=1, max_in_flight=1,
                                                                  min_rate_per_s=0.01), timeout_s=2, role="reconcile")
    rec.limiter.tokens = 1.0
    before = {r: value(metrics.ERP_THROTTLED, r) for r in ("sink", "reconcile")}
    ok_before = value(metrics.ERP_REQUESTS, "sink", "2xx")
    await sink.request("GET", "/")
    with pytest.raises(TransientErpError):
        await rec.request("GET", "/")
    await sink.close(), await rec.close()
    assert value(metrics.ERP_RATE, "sink") == 100  # the reconciliation's cut does not touch the sink's rate
    assert value(metrics.ERP_RATE, "reconcile") == pytest.approx(0.25)
    assert value(metrics.ERP_THROTTLED, "reconcile") == before["reconcile"] + 1
    assert value(metrics.ERP_THROTTLED, "sink") == before["sink"]
    assert value(metrics.ERP_REQUESTS, "sink", "2xx") == ok_before + 1
    assert value(metrics.ERP_QUOTA_SHARE, "reconcile") == 0.5


def test_the_adapters_pass_their_role_to_their_client() -> None:
    s = load({**BASE, "ERP_ADAPTER": "http", "ERP_HTTP_ROUTES": '{"OrderPicked": "POST /picks"}'})
    assert http_client(make_port(s.erp, role="source")).role == "source"
    assert http_client(make_port(load(BASE).erp, role="reconcile")).role == "reconcile"
    assert http_client(make_port(load(BASE).erp)).role == "sink"


# -- the backlog gauges ----------------------------------------------------------------------------


class BlindSource:
    """A consumer that has fetched nothing yet: no cached end (like librdkafka before a fetch)."""

    @staticmethod
    def cached_end(partition: int) -> None:
        return None


async def test_backlog_gauges_are_true_when_read_not_frozen_at_the_last_batch() -> None:
    topic = Topic()
    for i in range(5):
        topic.add(milestone(f"m{i}", "OrderPicked", f"OUT-{i}"))
    erp = Erp(script={f"m{i}": [TransientErpError(503, None, "down")] * 50 for i in range(5)})
    h = Harness(topic, erp)
    sink = h.start()
    assert h.source is not None
    h.source.cached_end = BlindSource.cached_end  # type: ignore[method-assign]
    await h.settle(3)
    await sink.refresh_gauges()
    assert value(metrics.ERP_BACKLOG) == 5  # from the partition's queried end, not a cached view
    assert value(metrics.ERP_BACKLOG_AGE) > 0
    # The partition goes to another worker: this sink owns nothing, its loop does not even poll.
    h.owner.partitions = set()
    await h.settle(3)
    assert sink.runs == {}
    await sink.refresh_gauges()
    assert value(metrics.ERP_BACKLOG) == 0 and value(metrics.ERP_BACKLOG_AGE) == 0


async def test_the_gauges_refresh_on_their_own_timer_while_the_sink_is_idle() -> None:
    topic = Topic()
    topic.add(milestone("a", "OrderPicked", "OUT-A"))
    h = Harness(topic, Erp())
    sink = h.start()
    await h.run_until(lambda: h.done("a") and h.ledger.offset() == 0)
    assert h.source is not None
    h.source.cached_end = BlindSource.cached_end  # type: ignore[method-assign]
    topic.add(milestone("b", "OrderPicked", "OUT-B"))  # arrives; the sink's loop is not running
    topic.add(milestone("c", "OrderPicked", "OUT-C"))
    sleeps: list[float] = []

    async def stop_after_two(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt  # leaves the timer loop

    sink.sleep = stop_after_two
    with pytest.raises(KeyboardInterrupt):
        await sink.refresh_gauges_every(5.0)
    assert sleeps == [5.0, 5.0]
    assert value(metrics.ERP_BACKLOG) == 2
