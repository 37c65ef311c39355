"""The coalescing batcher: grouping, per-item outcomes, one bad item, order within a
document, per-item fences, the latency-adaptive cap, and a strict limiter on a fresh start."""
from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Hashable, Sequence
from typing import Any

import pytest
from aiohttp import web

from app.erp.batcher import Batcher
from app.erp.client import ErpHttpClient
from app.erp.port import PermanentErpError, PostResult, TransientErpError
from app.erp.ratelimit import RatePolicy
from app.erp.sink import Revoked, SinkConfig
from tests.fixtures.http_server import serving
from tests.unit.erp.nginx_limit_req import LimitReq
from tests.unit.erp.sinkfakes import Harness, Topic, milestone


class OpenGate:
    """A rate gate that always grants (counts grants and unused slots)."""

    def __init__(self) -> None:
        self.granted = self.unused = 0

    async def acquire(self) -> None:
        self.granted += 1
        await asyncio.sleep(0)

    def release_unsent(self) -> None:
        self.unused += 1


class SlowGate(OpenGate):
    """Grants one slot per ``interval`` seconds: calls pile up meanwhile (a spent quota)."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval

    async def acquire(self) -> None:
        await asyncio.sleep(self.interval)
        self.granted += 1


class Recorder:
    def __init__(self, fail: set[Any] | None = None) -> None:
        self.batches: list[tuple[Hashable, list[Any]]] = []
        self.fail = fail or set()

    async def __call__(self, group: Hashable, payloads: list[Any]) -> Sequence[Any]:
        self.batches.append((group, list(payloads)))
        await asyncio.sleep(0)
        bad = [p for p in payloads if p in self.fail]
        if bad:  # the ERP refuses the whole request and rolls it back, naming one record
            raise PermanentErpError(400, f"You can not call 'pick' on {bad[0]!r}")
        return [f"ok:{p}" for p in payloads]


async def test_calls_made_together_share_one_request_per_group() -> None:
    rec = Recorder()
    b = Batcher(OpenGate(), rec, window_s=0.01)
    results = await asyncio.gather(*(b.call(("button", "pick" if i % 2 else "pack"), i) for i in range(10)))
    assert results == [f"ok:{i}" for i in range(10)]
    assert sorted((g, p) for g, p in rec.batches) == [
        (("button", "pack"), [0, 2, 4, 6, 8]), (("button", "pick"), [1, 3, 5, 7, 9])]
    await b.close()


async def test_calls_made_while_the_quota_is_spent_join_the_next_request() -> None:
    rec = Recorder()
    b = Batcher(SlowGate(0.05), rec, window_s=0.0)

    async def late(i: int) -> Any:
        await asyncio.sleep(0.01 * (i % 4))  # arrive spread over the gate's wait
        return await b.call("read", i)

    assert await asyncio.gather(*(late(i) for i in range(12))) == [f"ok:{i}" for i in range(12)]
    assert len(rec.batches) == 1 and sorted(rec.batches[0][1]) == list(range(12))
    await b.close()


async def test_each_caller_gets_its_own_outcome() -> None:
    async def mixed(group: Hashable, payloads: list[Any]) -> list[Any]:
        return [PermanentErpError(400, f"bad {p}") if p == "b" else TransientErpError(429, 1.0, "slow")
                if p == "t" else PostResult("posted", p) for p in payloads]

    b = Batcher(OpenGate(), mixed)
    out = await asyncio.gather(b.call("g", "a"), b.call("g", "b"), b.call("g", "t"), b.call("g", "c"),
                               return_exceptions=True)
    assert out[0] == PostResult("posted", "a") and out[3] == PostResult("posted", "c")
    assert isinstance(out[1], PermanentErpError) and out[1].detail == "bad b"
    assert isinstance(out[2], TransientErpError) and out[2].retry_after_s == 1.0
    await b.close()


async def test_one_bad_item_never_fails_its_neighbours() -> None:
    rec = Recorder(fail={5})
    b = Batcher(OpenGate(), rec, splittable=lambda exc: isinstance(exc, PermanentErpError))
    out = await asyncio.gather(*(b.call("pick", i) for i in range(8)), return_exceptions=True)
    assert [o for i, o in enumerate(out) if i != 5] == [f"ok:{i}" for i in range(8) if i != 5]
    assert isinstance(out[5], PermanentErpError) and "5" in out[5].detail
    # bisection: the 8, then halves, until 5 stands alone: log2(8) + 1 levels, not 8 requests per item
    assert [len(p) for _, p in rec.batches] == [8, 4, 4, 2, 1, 1, 2]
    assert b.stats.splits == 3
    await b.close()


async def test_an_error_that_is_not_an_items_fault_goes_to_all_without_splitting() -> None:
    async def throttled(group: Hashable, payloads: list[Any]) -> list[Any]:
        raise TransientErpError(429, 1.0, "rate limited")

    b = Batcher(OpenGate(), throttled, splittable=lambda exc: isinstance(exc, PermanentErpError))
    out = await asyncio.gather(*(b.call("g", i) for i in range(4)), return_exceptions=True)
    assert all(isinstance(o, TransientErpError) for o in out) and b.stats.requests == 1
    await b.close()


async def test_order_within_a_document_is_kept_while_documents_share_requests() -> None:
    rec = Recorder()
    b = Batcher(OpenGate(), rec, window_s=0.005)
    steps = ("accept", "pick", "pack", "do")

    async def document(d: int) -> None:
        for step in steps:  # one call at a time, as the sink's task per document does
            await asyncio.sleep(0.001 * (d % 3))
            assert await b.call(step, (d, step)) == f"ok:{(d, step)}"

    await asyncio.gather(*(document(d) for d in range(20)))
    seen: dict[int, list[str]] = {}
    for _, payloads in rec.batches:
        docs = [d for d, _ in payloads]
        assert len(docs) == len(set(docs)), "a document never has two calls in one request"
        for d, step in payloads:
            seen.setdefault(d, []).append(step)
    assert all(seen[d] == list(steps) for d in range(20))
    assert len(rec.batches) < 20 * len(steps) / 4  # shared: far fewer requests than calls
    await b.close()


async def test_a_fenced_item_is_left_out_and_the_rest_go() -> None:
    part: contextvars.ContextVar[int] = contextvars.ContextVar("part")
    owned = {0}

    def fence() -> None:
        if part.get() not in owned:
            raise Revoked(part.get())

    rec = Recorder()
    b = Batcher(OpenGate(), rec, before_send=fence)

    async def from_partition(p: int, payload: str) -> Any:
        part.set(p)
        return await b.call("g", payload)

    out = await asyncio.gather(from_partition(0, "a"), from_partition(1, "b"), from_partition(0, "c"),
                               return_exceptions=True)
    assert out[0] == "ok:a" and out[2] == "ok:c" and isinstance(out[1], Revoked)
    assert rec.batches == [("g", ["a", "c"])]
    await b.close()


async def test_batch_size_follows_the_erps_latency() -> None:
    clock = [0.0]

    async def slow(group: Hashable, payloads: list[Any]) -> list[Any]:
        clock[0] += 0.5 * len(payloads)  # half a second of ERP work per item
        return payloads

    b = Batcher(OpenGate(), slow, max_items=100, first_items=40, target_s=3.0, clock=lambda: clock[0])
    assert b.cap("g") == 40
    await asyncio.gather(*(b.call("g", i) for i in range(40)))
    assert b.cap("g") == 6  # 3 s of work at 0.5 s per item
    await b.close()


async def test_records_arriving_within_the_window_share_a_request_and_a_full_group_goes_at_once() -> None:
    rec = Recorder()
    b = Batcher(OpenGate(), rec, window_s=0.3, first_items=3, max_items=3)

    async def later(delay: float, payload: str) -> Any:
        await asyncio.sleep(delay)
        return await b.call("g", payload)

    started = time.monotonic()
    await asyncio.gather(later(0.0, "a"), later(0.1, "b"))
    assert rec.batches == [("g", ["a", "b"])]  # b came within a's window
    assert time.monotonic() - started >= 0.25
    started = time.monotonic()
    await asyncio.gather(*(b.call("g", p) for p in "cde"))
    assert rec.batches[-1] == ("g", ["c", "d", "e"]) and time.monotonic() - started < 0.2  # full: no wait
    await b.close()


async def test_batch_size_per_kind_grows_on_fast_full_requests_and_ignores_one_slow_single_record() -> None:
    """Each kind of request has its own limit. A full request answered well within the target
    raises it by half; a single record answered late (the ERP busy with another kind's big
    request) says nothing about the cost per record and leaves it; a slow big request cuts it."""
    clock = [0.0]
    cost = {"pick": 0.01, "do": 0.01, "slow": 0.0}

    async def erp(group: Hashable, payloads: list[Any]) -> list[Any]:
        clock[0] += 8.0 if group == ("button", "m", "slow") else cost[group[2]] * len(payloads)
        return payloads

    b = Batcher(OpenGate(), erp, max_items=100, first_items=10, target_s=3.0, clock=lambda: clock[0],
                kind=lambda g: f"button {g[1]}.{g[2]}")
    pick, do, slow = ("button", "m", "pick"), ("button", "m", "do"), ("button", "m", "slow")
    await asyncio.gather(*(b.call(pick, i) for i in range(10)))
    assert b.cap(pick) == 15 and b.cap(do) == 10  # grown; the other kind untouched
    await b.call(slow, 1)
    assert b.cap(slow) == 10  # one late single record: no lesson about the size
    await asyncio.gather(*(b.call(slow, i) for i in range(10)))
    assert b.cap(slow) == 3  # ten records in 8 s: three fit in the 3 s target
    for _ in range(12):
        await asyncio.gather(*(b.call(pick, i) for i in range(b.cap(pick))))
    assert b.cap(pick) == 100  # never above max_items
    await b.close()


async def test_batch_metrics_count_records_per_request_and_each_records_outcome() -> None:
    from app import metrics

    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    kind = "button t.metrics"
    before = {o: sample("syncgov_erp_batch_record_outcomes_total", kind=kind, outcome=o) for o in ("done", "refused")}
    requests = sample("syncgov_erp_batch_records_count", kind=kind)
    records = sample("syncgov_erp_batch_records_sum", kind=kind)
    splits = sample("syncgov_erp_batch_splits_total", kind=kind)
    rec = Recorder(fail={"b"})
    b = Batcher(OpenGate(), rec, window_s=0.0, splittable=lambda exc: isinstance(exc, PermanentErpError),
                kind=lambda g: kind)
    out = await asyncio.gather(*(b.call("g", p) for p in "abcd"), return_exceptions=True)
    assert [isinstance(o, PermanentErpError) for o in out] == [False, True, False, False]
    assert sample("syncgov_erp_batch_record_outcomes_total", kind=kind, outcome="done") - before["done"] == 3
    assert sample("syncgov_erp_batch_record_outcomes_total", kind=kind, outcome="refused") - before["refused"] == 1
    assert sample("syncgov_erp_batch_splits_total", kind=kind) - splits == len(rec.batches) // 2
    assert sample("syncgov_erp_batch_records_count", kind=kind) - requests == len(rec.batches)
    assert sample("syncgov_erp_batch_records_sum", kind=kind) - records == sum(len(p) for _, p in rec.batches)
    assert sample("syncgov_erp_batch_size_limit", kind=kind) >= 1
    await b.close()


# -- the sink on a batched port ------------------------------------------------------------------


class BatchedErp:
    """A port whose posts go through the batcher: one request per milestone type."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.batcher = Batcher(OpenGate(), self._execute, window_s=0.0)
        self.before_send = None

    async def _execute(self, group: Hashable, ms: list[dict[str, Any]]) -> list[Any]:
        self.batches.append([m["milestone_id"] for m in ms])
        return [PermanentErpError(400, "refused") if m["milestone_id"] == "B2" else PostResult("posted", "d")
                for m in ms]

    async def post(self, m: dict[str, Any]) -> PostResult:
        return await self.batcher.call(m["type"], m)

    async def read_state(self, m: dict[str, Any]) -> None:
        return None

    async def close(self) -> None:
        await self.batcher.close()


async def test_the_ordered_sink_on_a_batched_port_keeps_each_documents_order() -> None:
    topic = Topic()
    kinds = ("OrderPicked", "OrderPacked", "ShipmentConfirmed")
    for n, kind in enumerate(kinds):
        for doc in "ABCD":
            topic.add(milestone(f"{doc}{n + 1}", kind, f"OUT-{doc}"))
    erp = BatchedErp()
    h = Harness(topic, erp, config=SinkConfig(settle_s=0.0))
    h.start()
    await h.run_until(lambda: h.ledger.offset() == 11)
    done = [mid for batch in erp.batches for mid in batch]
    for doc in "ABCD":
        mine = [mid for mid in done if mid.startswith(doc)]
        assert mine == sorted(mine)  # 1 before 2 before 3
    assert max(len(b) for b in erp.batches) > 1  # documents shared requests
    # B2 was refused alone: dead-lettered, B3 held behind it; its neighbours posted.
    assert h.ledger.entry("B2")["outcome"] == "dead_lettered" and h.ledger.entry("B3")["outcome"] == "held"
    assert all(h.done(f"{d}{n}") for d in "ACD" for n in (1, 2, 3))
    await erp.close()


# -- a strict limiter on a fresh start ------------------------------------------------------------


@pytest.mark.parametrize("cold_start, expect_429", [(True, False), (False, True)])
async def test_a_fresh_limiter_gets_no_429_from_a_gateway_that_remembers_the_last_burst(
        cold_start: bool, expect_429: bool) -> None:
    rate, burst = 20.0, 5
    gateway = LimitReq("20r/s", burst)  # nginx's limit_req, exactly (tests/unit/erp/nginx_limit_req.py)
    start = time.monotonic()
    for _ in range(burst + 1):  # the previous process spent the gateway's whole burst just now
        assert gateway.arrive_s(start)

    async def handler(request: web.Request) -> web.Response:
        ok = gateway.arrive_s(time.monotonic())
        return web.json_response({}, status=200 if ok else 429)

    async with serving(handler) as url:
        client = ErpHttpClient(url, policy=RatePolicy(rate, burst, 4), timeout_s=5, cold_start=cold_start)
        try:
            out = await asyncio.gather(*(client.request("GET", "/x") for _ in range(15)), return_exceptions=True)
        finally:
            await client.close()
    throttled = [o for o in out if isinstance(o, TransientErpError)]
    assert bool(throttled) is expect_429, out
