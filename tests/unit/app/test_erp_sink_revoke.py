"""The ERP sink's fencing hook: no ERP request for a partition this worker no longer owns,
checked per partition right before every request (not a process-wide flag), and the
worker's wiring of ownership to Faust's assignment and the group lease."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agents import erp_sink
from app.erp.client import ErpHttpClient
from app.erp.ratelimit import RatePolicy
from app.erp.sink import _PARTITION, Revoked, fence
from app.faust_app import WorkerApp
from tests.fixtures.worker_app import built_worker


@pytest.fixture
def worker(tmp_path: Path) -> WorkerApp:
    """A worker's app with the ERP sink on (built, never started)."""
    return built_worker(tmp_path, ERP_SINK_ENABLED="true")


def test_the_fence_stops_only_requests_of_partitions_no_longer_owned() -> None:
    owned = {0, 2}
    check = fence(lambda p: p in owned)

    def in_partition(p: int) -> None:
        _PARTITION.set(p)
        check()

    import contextvars

    contextvars.copy_context().run(in_partition, 0)  # ours: goes
    with pytest.raises(Revoked):
        contextvars.copy_context().run(in_partition, 1)
    check()  # no partition (the source connector, reconciliation): never fenced


async def test_a_fenced_request_is_never_sent_and_gives_its_rate_token_back() -> None:
    sent = []

    class Session:
        def request(self, *args: object, **kwargs: object) -> None:
            sent.append(args)
            raise AssertionError("no request may be sent")

    owned: set[int] = set()
    # not cold: a cold client's first grant waits (reserve + 2) / rate = 2 s, this test's bound
    client = ErpHttpClient("http://erp", policy=RatePolicy(rate_per_s=1, burst=1, max_in_flight=1), timeout_s=1,
                           session=Session(), before_send=fence(lambda p: p in owned),  # type: ignore[arg-type]
                           cold_start=False)

    async def call() -> None:
        _PARTITION.set(3)
        await client.request("GET", "/x")

    for _ in range(3):  # the token is given back each time: no wait piles up
        with pytest.raises(Revoked):
            await asyncio.wait_for(call(), 2)
    assert sent == []


def test_ownership_follows_faust_assignment_of_the_ownership_topic_and_the_lease(
    worker: WorkerApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faust.types import TP

    app = worker.app
    own, other = worker.ownership_topic.get_topic_name(), "something-else"
    monkeypatch.setattr(app.assignor, "assigned_actives", lambda: {TP(own, 1), TP(own, 3), TP(other, 0)})
    monkeypatch.setattr(app, "rebalancing", False)
    monkeypatch.setattr(app, "in_recovery", False)
    app.tables.recovery.completed.set()
    ownership = worker.ownership
    try:
        assert ownership.owned() == {1, 3}
        assert not ownership.still_owner(1)  # no answered heartbeat yet: no lease
        import time

        ownership.lease.renew(time.monotonic())
        assert ownership.still_owner(1) and not ownership.still_owner(0)
        monkeypatch.setattr(app, "rebalancing", True)
        assert ownership.owned() is None and not ownership.still_owner(1)
    finally:
        app.tables.recovery.completed.clear()


def test_the_sink_settles_unknown_outcomes_for_the_erp_request_timeout(worker: WorkerApp) -> None:
    erp = worker.settings.erp
    config = erp_sink.config(erp)
    assert config.settle_s == erp.timeout_s and config.max_retries == erp.max_retries
