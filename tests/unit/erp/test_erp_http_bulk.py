"""The generic HTTP adapter's bulk mode against a fake bulk API: one request for many
milestones, per-item results mapped to per-milestone outcomes, one bad item never fails
its neighbours."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from app.erp import BulkSettings, HttpAdapter, make_port
from app.erp.port import NotReadyErpError, PermanentErpError, TransientErpError
from app.settings import load
from tests.fixtures.http_server import serving

KEY = "bulk-erp-key"
ROUTES = json.dumps({
    "OrderPicked": "POST /orders/{order_id}/picked",
    "bulk:OrderPicked": "POST /bulk/picked",
    "bulk:ShipmentConfirmed": "POST /bulk/confirmed",
    "bulk:InventoryAdjusted": "POST /bulk/adjustments",
})


def picked(n: int, **extra: Any) -> dict[str, Any]:
    return {"milestone_id": f"m-{n}", "type": "OrderPicked", "warehouse_id": "WH1", "order_id": f"SO-{n}",
            "occurred_at": "2026-11-27T10:00:00.000Z", "event_ids": ["e"], "lines": [], "short": False, **extra}


class BulkErp:
    """Per item: ``status`` from the milestone's ``want`` (default 201); a milestone with
    ``poison`` makes the whole body a 400 (the way OData $batch refuses a malformed changeset)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.drop_last = False
        self.answer_shape = "list"
        self.refuse: dict[str, int] = {}  # milestone id -> the status its item is answered

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})
        if any(m.get("poison") for m in body):
            return web.json_response({"error": "changeset refused: bad quantity"}, status=400)
        results = []
        for m in body:
            status = self.refuse.get(m["milestone_id"], m.get("want", 201))
            item: dict[str, Any] = {"status": status, "milestone_id": m["milestone_id"]}
            if status < 300:
                item["id"] = f"DOC-{m['milestone_id']}"
            else:
                item["error"] = f"item {m['milestone_id']} refused with {status}"
            results.append(item)
        if self.drop_last:
            results.pop()
        return web.json_response(results if self.answer_shape == "list" else {"results": results})


@pytest.fixture
async def bulk() -> AsyncIterator[tuple[BulkErp, HttpAdapter]]:
    fake = BulkErp()
    async with serving(fake.handle, method="POST", path="/bulk/{tail:.*}") as url:
        settings = load({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "ERP_ADAPTER": "http", "ERP_BASE_URL": url, "ERP_API_KEY": KEY,
                         "ERP_HTTP_ROUTES": ROUTES, "ERP_RATE_PER_S": "50", "ERP_BURST": "5"}).erp
        adapter = make_port(settings, bulk=BulkSettings(batch_max=50))
        assert isinstance(adapter, HttpAdapter)
        yield fake, adapter
        await adapter.close()


async def test_many_milestones_one_request_with_per_item_outcomes(bulk) -> None:
    fake, adapter = bulk
    wants = {0: 201, 1: 409, 2: 425, 3: 422, 4: 503, 5: 200}
    out = await asyncio.gather(*(adapter.post(picked(n, want=w)) for n, w in wants.items()), return_exceptions=True)
    assert len(fake.requests) == 1
    sent = fake.requests[0]
    assert sent["path"] == "/bulk/picked" and [m["milestone_id"] for m in sent["body"]] == [f"m-{n}" for n in wants]
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}" and sent["headers"]["Idempotency-Key"].startswith("bulk-")
    assert (out[0].outcome, out[0].document_ref) == ("posted", "DOC-m-0")
    assert out[1].outcome == "already_done"
    assert isinstance(out[2], NotReadyErpError)
    assert isinstance(out[3], PermanentErpError) and out[3].status == 422 and "item m-3 refused" in out[3].detail
    assert isinstance(out[4], TransientErpError) and out[4].status == 503
    assert out[5].outcome == "posted"


async def test_one_bad_item_in_a_refused_body_never_fails_its_neighbours(bulk) -> None:
    fake, adapter = bulk
    out = await asyncio.gather(*(adapter.post(picked(n, poison=(n == 6))) for n in range(8)), return_exceptions=True)
    assert [o.outcome for n, o in enumerate(out) if n != 6] == ["posted"] * 7
    assert isinstance(out[6], PermanentErpError) and "changeset refused" in out[6].detail and out[6].status == 400
    assert len(fake.requests) <= 1 + 2 * 3  # bisection, not one request per item
    assert KEY not in out[6].detail


async def test_an_item_missing_from_the_answer_is_an_unknown_outcome(bulk) -> None:
    fake, adapter = bulk
    fake.drop_last, fake.answer_shape = True, "results"
    out = await asyncio.gather(*(adapter.post(picked(n)) for n in range(3)), return_exceptions=True)
    assert [o.outcome for o in out[:2]] == ["posted", "posted"]
    assert isinstance(out[2], TransientErpError) and out[2].unknown  # settled, then retried by the sink


async def test_types_without_a_bulk_route_and_sync_exceptions_are_not_bulked(bulk) -> None:
    fake, adapter = bulk
    assert (await adapter.post({**picked(1), "type": "SyncException"})).outcome == "skipped"
    assert (await adapter.post({**picked(2), "type": "OrderPacked"})).outcome == "skipped"
    assert fake.requests == []


async def test_the_ordered_sink_on_bulk_mode_dead_letters_one_item_with_its_own_answer_and_keeps_order(bulk) -> None:
    """Through the ordered sink: the milestones of many documents share bulk requests per
    step; the one item the ERP refuses is dead-lettered with that item's answer, its document's
    successor is held, every other document is posted, each in its own order."""
    from app.erp.sink import SinkConfig
    from tests.unit.erp.sinkfakes import Harness, Topic, milestone

    fake, adapter = bulk
    topic = Topic()
    orders = [f"OUT-{i}" for i in range(6)]
    for i, order in enumerate(orders):
        topic.add(milestone(f"p{i}", "OrderPicked", order))
    for i, order in enumerate(orders):
        topic.add(milestone(f"k{i}", "ShipmentConfirmed", order))
    fake.refuse = {"p3": 422}
    h = Harness(topic, adapter, config=SinkConfig(max_retries=3, settle_s=0.0))
    sink = h.start()
    for _ in range(500):  # real HTTP underneath: real time between the sink's rounds
        await sink.step()
        if h.ledger.offset() == 11:
            break
        await asyncio.sleep(0.02)
    assert [h.ledger.entry(f"p{i}")["outcome"] for i in range(6)] == ["posted"] * 3 + ["dead_lettered"] + ["posted"] * 2
    assert h.ledger.entry("k3")["outcome"] == "held"
    assert all(h.ledger.entry(f"k{i}")["outcome"] == "posted" for i in (0, 1, 2, 4, 5))
    letter = next(v for _, v in h.dead.records if v.get("milestone_id") == "p3")
    assert letter["status"] == 422 and "item p3 refused with 422" in letter["detail"] and KEY not in letter["detail"]
    picks = [m["milestone_id"] for r in fake.requests if r["path"] == "/bulk/picked" for m in r["body"]]
    packs = [(n, m["milestone_id"]) for n, r in enumerate(fake.requests) if r["path"] == "/bulk/confirmed"
             for m in r["body"]]
    assert sorted(picks) == [f"p{i}" for i in range(6)] and "k3" not in [m for _, m in packs]
    for n, mid in packs:  # each pack went after its own pick had been answered
        assert any(m["milestone_id"] == f"p{mid[1:]}" for r in fake.requests[:n] for m in r["body"])
    assert len(fake.requests) < 12 / 2  # shared requests, not one per milestone
