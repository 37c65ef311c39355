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

KEY = "bulk-erp-key"
ROUTES = json.dumps({
    "OrderPicked": "POST /orders/{order_id}/picked",
    "bulk:OrderPicked": "POST /bulk/picked",
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

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})
        if any(m.get("poison") for m in body):
            return web.json_response({"error": "changeset refused: bad quantity"}, status=400)
        results = []
        for m in body:
            status = m.get("want", 201)
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
    app = web.Application()
    app.router.add_route("POST", "/bulk/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    settings = load({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "ERP_ADAPTER": "http", "ERP_BASE_URL": f"http://127.0.0.1:{port}", "ERP_API_KEY": KEY,
                     "ERP_HTTP_ROUTES": ROUTES, "ERP_RATE_PER_S": "50", "ERP_BURST": "5"}).erp
    adapter = make_port(settings, bulk=BulkSettings(batch_max=50))
    assert isinstance(adapter, HttpAdapter)
    yield fake, adapter
    await adapter.close()
    await runner.cleanup()


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
