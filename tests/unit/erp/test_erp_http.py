"""The generic HTTP/JSON adapter against a tiny local aiohttp ERP."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from app.erp import HttpAdapter, TrytonAdapter, make_port
from app.erp.http import Route, parse_routes
from app.erp.port import PermanentErpError
from app.settings import load
from tests.fixtures.http_server import serving

KEY = "generic-erp-key"
ROUTES = json.dumps({
    "OrderPicked": "POST /orders/{order_id}/picked",
    "ShipmentConfirmed": "PUT /shipments/{order_id}",
    "read:ShipmentConfirmed": "GET /shipments/{order_id}",
    "InventoryAdjusted": "POST /stock/{sku}/adjustments",
})
PICKED = {"milestone_id": "m-1", "type": "OrderPicked", "warehouse_id": "WH1", "order_id": "SO 1/2",
          "occurred_at": "2026-11-27T10:00:00.000Z", "event_ids": ["e"], "lines": [], "short": False}


class FakeErp:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.shipments: set[str] = set()
        self.answer: tuple[int, str] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append({"method": request.method, "path": request.raw_path, "headers": dict(request.headers),
                              "body": json.loads(body) if body else None})
        if self.answer:
            status, text = self.answer
            return web.Response(status=status, text=text)
        if request.method == "GET":
            order = request.match_info["tail"].split("/")[-1]
            if order in self.shipments:
                return web.json_response({"order_id": order, "status": "SHIPPED"})
            return web.json_response({"error": "not found"}, status=404)
        if request.path.startswith("/shipments/"):
            self.shipments.add(request.path.split("/")[-1])
        return web.json_response({"id": "DOC-42"}, status=201)


@pytest.fixture
async def erp() -> AsyncIterator[tuple[FakeErp, HttpAdapter]]:
    fake = FakeErp()
    async with serving(fake.handle) as url:
        settings = load({"KAFKA_BOOTSTRAP_SERVERS": "unused:9092", "ERP_ADAPTER": "http", "ERP_BASE_URL": url, "ERP_API_KEY": KEY,
                         "ERP_HTTP_ROUTES": ROUTES, "ERP_RATE_PER_S": "100", "ERP_BURST": "10"}).erp
        adapter = make_port(settings)
        assert isinstance(adapter, HttpAdapter)
        yield fake, adapter
        await adapter.close()


async def test_post_sends_the_milestone_with_idempotency_key_and_auth(erp) -> None:
    fake, adapter = erp
    result = await adapter.post(PICKED)
    assert (result.outcome, result.document_ref) == ("posted", "DOC-42")
    sent, = fake.requests
    assert sent["method"] == "POST" and sent["path"] == "/orders/SO%201%2F2/picked"
    assert sent["headers"]["Idempotency-Key"] == "m-1"
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent["body"] == PICKED


async def test_a_read_route_makes_a_repeat_a_no_op(erp) -> None:
    fake, adapter = erp
    confirmed = {**PICKED, "milestone_id": "m-2", "type": "ShipmentConfirmed", "order_id": "SO-7"}
    assert await adapter.read_state(confirmed) is None
    assert (await adapter.post(confirmed)).outcome == "posted"
    state = await adapter.read_state(confirmed)
    assert state is not None and state.done and state.state == "SHIPPED"
    before = len(fake.requests)
    assert (await adapter.post(confirmed)).outcome == "already_done"
    assert [r["method"] for r in fake.requests[before:]] == ["GET"]


async def test_409_is_already_done_and_unrouted_types_are_skipped(erp) -> None:
    fake, adapter = erp
    fake.answer = (409, '{"error": "duplicate Idempotency-Key"}')
    assert (await adapter.post(PICKED)).outcome == "already_done"
    before = len(fake.requests)
    for kind in ("OrderPacked", "SyncException"):
        assert (await adapter.post({**PICKED, "type": kind})).outcome == "skipped"
    assert len(fake.requests) == before


async def test_validation_errors_and_unparseable_answers_are_permanent(erp) -> None:
    fake, adapter = erp
    fake.answer = (422, '{"error": "Quantity exceeds order"}')
    with pytest.raises(PermanentErpError, match="Quantity exceeds order"):
        await adapter.post(PICKED)
    fake.answer = (200, "<html>login</html>")
    with pytest.raises(PermanentErpError, match="unparseable answer: <html>login</html>") as caught:
        await adapter.post(PICKED)
    assert KEY not in str(caught.value)
    with pytest.raises(PermanentErpError, match="milestone has no sku"):
        await adapter.post({**PICKED, "type": "InventoryAdjusted"})


def test_routes_parse_and_reject_malformed_specs() -> None:
    posts, reads = parse_routes(ROUTES)
    assert posts["OrderPicked"] == Route("POST", "/orders/{order_id}/picked", ("order_id",))
    assert reads["ShipmentConfirmed"].method == "GET"
    for bad in ("not json", '["POST /x"]', '{"OrderPicked": "SEND /x"}', '{"OrderPicked": "POST x"}',
                '{"OrderPicked": "POST"}', '{"OrderPicked": 3}'):
        with pytest.raises(ValueError):
            parse_routes(bad)


def test_make_port_picks_the_configured_adapter() -> None:
    settings = load({"KAFKA_BOOTSTRAP_SERVERS": "unused:9092", "ERP_ADAPTER": "tryton", "ERP_API_KEY": KEY}).erp
    assert isinstance(make_port(settings), TrytonAdapter)
