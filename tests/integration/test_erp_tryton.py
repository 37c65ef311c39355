"""The Tryton adapter and the order-release source against a real Tryton 8.2 behind real nginx.

Set-up and checks talk to Tryton directly; the code under test goes through
the rate-limit gateway with the gateway's quota.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.erp.client import ErpHttpClient
from app.erp.port import NotReadyErpError, PermanentErpError, TransientErpError, post_with_retry
from app.erp.ratelimit import RatePolicy
from app.erp.sales import new_order, shipment
from app.erp.source import SourceCursor, poll
from app.erp.tryton import TrytonAdapter, TrytonRest
from app.harness.processes import ops_module
from tests.fixtures.erp import ErpStack

pytestmark = pytest.mark.erp

gateway_ops = ops_module("nginx/gateway.py")


@pytest.fixture
async def direct(erp_stack: ErpStack) -> AsyncIterator[TrytonRest]:
    rest = erp_stack.direct_rest()
    yield rest
    await rest.close()


@pytest.fixture
async def adapter(erp_stack: ErpStack) -> AsyncIterator[TrytonAdapter]:
    """A fresh adapter (full bucket) once the gateway has forgotten the previous test's requests."""
    await asyncio.sleep((erp_stack.burst + 1) / erp_stack.rate_per_s)
    port = TrytonAdapter.from_settings(erp_stack.settings())
    yield port
    await port.close()


def milestone(kind: str, milestone_id: str, **body: Any) -> dict[str, Any]:
    return {"milestone_id": milestone_id, "type": kind, "warehouse_id": "WH1",
            "occurred_at": "2026-11-27T10:00:00.000Z", "event_ids": ["e1"], **body}


async def requests_since(stack: ErpStack, start: float) -> list[Any]:
    """Gateway log lines from ``start`` on, once the log has settled (nginx logs after answering)."""
    size = -1
    while size != stack.access_log.stat().st_size:
        size = stack.access_log.stat().st_size
        await asyncio.sleep(0.2)
    return [line for line in gateway_ops.read_access_log(stack.access_log) if line.ts >= start]


async def test_order_lifecycle_is_posted_once_and_repeats_are_no_ops(
        erp_stack: ErpStack, direct: TrytonRest, adapter: TrytonAdapter) -> None:
    ship = await new_order(direct, [("SKU-0011", 3), ("SKU-0012", 2)])
    order_id = ship["number"]
    assert ship["state"] == "waiting"
    lines = [{"line_no": mv["id"], "sku": mv["product"]["code"], "ordered": int(mv["quantity"]),
              "picked": int(mv["quantity"]) - (1 if mv["product"]["code"] == "SKU-0011" else 0)}
             for mv in ship["outgoing_moves"]]
    steps = [
        (milestone("OrderAccepted", f"acc-{order_id}", order_id=order_id, version=1, lines=[]), "waiting"),
        (milestone("OrderPicked", f"pick-{order_id}", order_id=order_id, lines=lines, short=True), "picked"),
        (milestone("OrderPacked", f"pack-{order_id}", order_id=order_id, package_ids=["PKG-1"]), "packed"),
        (milestone("ShipmentConfirmed", f"ship-{order_id}", order_id=order_id, shipment_id="SHP-1",
                   carrier="DHL", tracking_no=f"TRK-{order_id}", lines=[]), "done"),
    ]
    for m, state in steps:
        result = await adapter.post(m)
        assert (result.outcome, result.document_ref) == ("posted", f"stock.shipment.out,{ship['id']}")
        assert (await shipment(direct, ship["id"]))["state"] == state
        started = time.time()
        assert (await adapter.post(m)).outcome == "already_done"
        repeat = await requests_since(erp_stack, started)
        # A repeat only reads; right after this adapter's own step it may not even read (the
        # state its own button left is remembered for the document's next milestone).
        assert {line.method for line in repeat} <= {"GET"}, "a repeat must only read"
        assert (await adapter.read_state(m)).done

    final = await shipment(direct, ship["id"])
    assert final["shipping_reference"] == f"TRK-{order_id}"
    assert {mv["product"]["code"]: mv["quantity"] for mv in final["outgoing_moves"]} == {
        "SKU-0011": 2.0, "SKU-0012": 2.0}
    assert all(mv["state"] == "done" for mv in final["outgoing_moves"])
    notes = await direct.search("ir.note", [("resource", "=", f"stock.shipment.out,{ship['id']}")], ["message"])
    assert len(notes) == 1 and f"[syncgov acc-{order_id}]" in notes[0]["message"]


async def test_pick_of_an_assigned_shipment_rebuilds_its_moves(direct: TrytonRest, adapter: TrytonAdapter) -> None:
    ship = await new_order(direct, [("SKU-0013", 5)])
    assert (await direct.button("stock.shipment.out", ship["id"], "assign_try"))["state"] == "assigned"
    line = ship["outgoing_moves"][0]
    m = milestone("OrderPicked", f"pick-{ship['number']}", order_id=ship["number"], short=True,
                  lines=[{"line_no": line["id"], "sku": "SKU-0013", "ordered": 5, "picked": 4}])
    assert (await adapter.post(m)).outcome == "posted"
    after = await shipment(direct, ship["id"])
    assert after["state"] == "picked" and after["outgoing_moves"][0]["quantity"] == 4.0


async def test_inventory_adjusted_posts_a_stock_move_storage_to_inventory(
        direct: TrytonRest, adapter: TrytonAdapter) -> None:
    window = {"window_start": "2026-11-27T09:55:00.000Z", "window_end": "2026-11-27T10:00:00.000Z"}
    loss = milestone("InventoryAdjusted", "inv-loss-1", sku="SKU-0021", location="A-01-01", net_delta=-3,
                     event_count=2, **window)
    gain = milestone("InventoryAdjusted", "inv-gain-1", sku="SKU-0021", location="A-01-01", net_delta=4,
                     event_count=1, **window)
    for m, source_type, target_type, qty in ((loss, "storage", "lost_found", 3.0), (gain, "lost_found", "storage", 4.0)):
        result = await adapter.post(m)
        assert result.outcome == "posted" and result.document_ref.startswith("stock.shipment.internal,")
        moves = await direct.search("stock.move", [("shipment", "=", result.document_ref)], [
            "product.code", "quantity", "state", "from_location.type", "to_location.type", "effective_date"])
        assert [(mv["product"]["code"], mv["quantity"], mv["state"], mv["from_location"]["type"],
                 mv["to_location"]["type"]) for mv in moves] == [("SKU-0021", qty, "done", source_type, target_type)]
        assert (await adapter.post(m)).outcome == "already_done"
    zero = milestone("InventoryAdjusted", "inv-zero", sku="SKU-0021", location="A-01-01", net_delta=0,
                     event_count=2, **window)
    assert (await adapter.post(zero)).outcome == "skipped"


async def test_return_received_receives_the_customer_return(direct: TrytonRest, adapter: TrytonAdapter) -> None:
    ship = await new_order(direct, [("SKU-0031", 2), ("SKU-0032", 1)])
    order_id = ship["number"]
    lines = [{"line_no": mv["id"], "sku": mv["product"]["code"], "ordered": int(mv["quantity"]),
              "picked": int(mv["quantity"])} for mv in ship["outgoing_moves"]]
    early = milestone("ReturnReceived", f"ret-early-{order_id}", rma_id=f"RMA-{order_id}", order_id=order_id,
                      sku="SKU-0031", qty=1, disposition="restock")
    with pytest.raises(NotReadyErpError, match="not shipped"):  # deferred by the sink, not dead-lettered
        await adapter.post(early)
    for m in (milestone("OrderPicked", "p", order_id=order_id, lines=lines, short=False),
              milestone("OrderPacked", "k", order_id=order_id, package_ids=["P"]),
              milestone("ShipmentConfirmed", "c", order_id=order_id, shipment_id="S", carrier="UPS",
                        tracking_no="T", lines=[])):
        await adapter.post(m)
    restock = milestone("ReturnReceived", f"ret-1-{order_id}", rma_id=f"RMA-{order_id}", order_id=order_id,
                        sku="SKU-0031", qty=1, disposition="restock")
    inspect = milestone("ReturnReceived", f"ret-2-{order_id}", rma_id=f"RMA-{order_id}", order_id=order_id,
                        sku="SKU-0032", qty=1, disposition="inspect")
    for m, state in ((restock, "done"), (inspect, "received")):
        result = await adapter.post(m)
        assert result.outcome == "posted"
        ret, = await direct.search("stock.shipment.out.return", [("id", "=", int(result.document_ref.split(",")[1]))],
                                   ["state", "reference", "incoming_moves.product.code", "incoming_moves.quantity",
                                    "incoming_moves.origin", "customer.name"])
        assert ret["state"] == state and ret["reference"] == f"RMA-{order_id}/{m['sku']}"
        assert ret["customer"]["name"] == "Acme Retail"
        assert [(mv["product"]["code"], mv["quantity"]) for mv in ret["incoming_moves"]] == [(m["sku"], 1.0)]
        assert ret["incoming_moves"][0]["origin"].startswith("stock.move,")
        assert (await adapter.post(m)).outcome == "already_done"


async def test_permanent_errors_carry_trytons_words_and_never_the_key(
        erp_stack: ErpStack, direct: TrytonRest, adapter: TrytonAdapter, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ship = await new_order(direct, [("SKU-0041", 2)])
    line = ship["outgoing_moves"][0]["id"]
    cases = [
        (milestone("OrderPicked", "x1", order_id="OUT-999999", lines=[], short=False),
         "no stock.shipment.out with number 'OUT-999999'", 200),
        (milestone("InventoryAdjusted", "x2", sku="SKU-9999", location="A", net_delta=1, event_count=1,
                   window_start="2026-11-27T09:55:00.000Z", window_end="2026-11-27T10:00:00.000Z"),
         "no product.product with code 'SKU-9999'", 200),
        (milestone("OrderPicked", "x3", order_id=ship["number"], short=True,
                   lines=[{"line_no": line, "sku": "SKU-0041", "ordered": 2, "picked": -1}]),
         "is not valid according to its domain", 400),
    ]
    for m, words, status in cases:
        with pytest.raises(PermanentErpError) as caught:
            await adapter.post(m)
        assert words in caught.value.detail and caught.value.status == status
        assert erp_stack.key not in str(caught.value)
    # A precondition not met yet (packed while the shipment still waits for its pick) is not
    # permanent: the sink defers it until the pick's effect is in Tryton.
    with pytest.raises(NotReadyErpError) as early:
        await adapter.post(milestone("OrderPacked", "x4", order_id=ship["number"], package_ids=[]))
    assert "is in state 'waiting'" in early.value.detail
    assert erp_stack.key not in caplog.text


async def test_gateway_429_is_transient_with_retry_after(erp_stack: ErpStack) -> None:
    # A client configured far above the quota: nginx has to throttle it.
    client = ErpHttpClient(
        erp_stack.gateway_url, policy=RatePolicy(rate_per_s=1000, burst=100, max_in_flight=30), timeout_s=30,
        auth_header=("Authorization", f"bearer {erp_stack.key}"), secret=erp_stack.key)
    started = time.time()
    try:
        results = await asyncio.gather(
            *(client.request("GET", f"/{erp_stack.database}/rest/model/res.user", params=[("s", "1")])
              for _ in range(30)), return_exceptions=True)
    finally:
        await client.close()
    throttled = [r for r in results if isinstance(r, TransientErpError)]
    assert throttled and all(r.status == 429 and r.retry_after_s == 1.0 for r in throttled)
    assert all(not isinstance(r, Exception) or isinstance(r, TransientErpError) for r in results)
    assert client.limiter.rate < 1000  # multiplicative decrease
    seen = await requests_since(erp_stack, started)
    assert sum(line.status == 429 for line in seen) == len(throttled)


async def test_adaptive_limiter_rides_out_a_quota_below_its_setting(erp_stack: ErpStack, direct: TrytonRest) -> None:
    """Configured at 3x the gateway's quota: 429s cut the rate and every post still lands."""
    settings = erp_stack.settings(ERP_RATE_PER_S=str(3 * erp_stack.rate_per_s), ERP_BURST="15")
    port = TrytonAdapter.from_settings(settings)
    ships = [await new_order(direct, [("SKU-0051", 1)]) for _ in range(6)]
    try:
        results = await asyncio.gather(*(
            post_with_retry(port, milestone("OrderAccepted", f"acc-burst-{s['number']}", order_id=s["number"],
                                            version=1, lines=[]),
                            max_retries=8, backoff_base_s=0.2, backoff_cap_s=2.0, rand=lambda: 0.5)
            for s in ships))
    finally:
        await port.close()
    assert [r.outcome for r in results] == ["posted"] * len(ships)
    assert port.rest.client.limiter.rate <= 3 * erp_stack.rate_per_s


async def test_limiter_at_the_quota_gets_no_429(erp_stack: ErpStack, adapter: TrytonAdapter) -> None:
    started = time.time()
    await asyncio.gather(*(adapter.rest.search("product.product", [("code", "=", f"SKU-{n:04d}")], ["code"])
                           for n in range(1, 41)))
    seen = await requests_since(erp_stack, started)
    assert len(seen) >= 40
    assert [line.status for line in seen if line.status == 429] == []
    span = seen[-1].ts - seen[0].ts
    assert len(seen) <= erp_stack.rate_per_s * span + erp_stack.burst + 1


async def test_source_yields_each_change_once(direct: TrytonRest, adapter: TrytonAdapter) -> None:
    _, cursor = await poll(adapter.rest, SourceCursor())
    ship = await new_order(direct, [("SKU-0061", 2), ("SKU-0062", 1)], customer="Globex Stores")
    order_id = ship["number"]

    async def mine() -> list[dict[str, Any]]:
        nonlocal cursor
        events, cursor = await poll(adapter.rest, cursor)
        return [e for e in events if e["order_id"] == order_id]

    released = await mine()
    assert [e["type"] for e in released] == ["OrderReleased"]
    event = released[0]
    assert event["source"] == "erp" and event["warehouse_id"] == "WH1"
    assert event["event_id"].startswith(f"tryton:stock.shipment.out:{ship['id']}:")
    assert sorted((line["sku"], line["qty"]) for line in event["lines"]) == [("SKU-0061", 2), ("SKU-0062", 1)]
    assert await mine() == []

    # The ERP changes a line: reset to draft, edit, wait again.
    await direct.button("stock.shipment.out", ship["id"], "draft")
    assert await mine() == []
    first = ship["outgoing_moves"][0]
    await direct.write("stock.shipment.out", ship["id"],
                       {"outgoing_moves": [["write", [first["id"]], {"quantity": 5.0}]]})
    await direct.button("stock.shipment.out", ship["id"], "wait")
    changed = await mine()
    assert [e["type"] for e in changed] == ["OrderChanged"]
    assert {line["line_no"]: line["qty"] for line in changed[0]["lines"]}[first["id"]] == 5
    assert changed[0]["event_id"] != event["event_id"]
    assert await mine() == []

    await direct.button("stock.shipment.out", ship["id"], "cancel")
    cancelled = await mine()
    assert [e["type"] for e in cancelled] == ["OrderCancelled"]
    assert await mine() == []
    assert ship["id"] not in cursor.open
    # The cursor survives a JSON round trip.
    assert SourceCursor.from_json(cursor.to_json()) == cursor


# -- ERP capacity: batched reads and JSON-RPC bulk writes -------------------------------------------


async def test_bulk_lifecycle_many_orders_few_requests_one_bad_item_alone(
        erp_stack: ErpStack, direct: TrytonRest) -> None:
    """Eight orders' lifecycles concurrently through the batcher: one search per batch, one
    JSON-RPC button call per (model, button) group; one order's pick is refused by Tryton and
    only that order fails; every other order is done, each step once, in its own order."""
    await asyncio.sleep((erp_stack.burst + 1) / erp_stack.rate_per_s)
    port = TrytonAdapter.from_settings(erp_stack.settings(), rpc_login="admin", rpc_password="admin")
    ships = [await new_order(direct, [("SKU-0071", 2), ("SKU-0072", 1)]) for _ in range(8)]
    bad = ships[3]["number"]
    started = time.time()

    async def lifecycle(ship: dict[str, Any]) -> list[str]:
        order_id = ship["number"]
        lines = [{"line_no": mv["id"], "sku": mv["product"]["code"], "ordered": int(mv["quantity"]),
                  "picked": -1 if order_id == bad else int(mv["quantity"])} for mv in ship["outgoing_moves"]]
        steps = [
            milestone("OrderAccepted", f"bacc-{order_id}", order_id=order_id, version=1, lines=[]),
            milestone("OrderPicked", f"bpick-{order_id}", order_id=order_id, lines=lines, short=False),
            milestone("OrderPacked", f"bpack-{order_id}", order_id=order_id, package_ids=[]),
            milestone("ShipmentConfirmed", f"bship-{order_id}", order_id=order_id, shipment_id="S", carrier="DHL",
                      tracking_no=f"TRK-{order_id}", lines=[]),
        ]
        outcomes = []
        for m in steps:
            try:
                outcomes.append((await port.post(m)).outcome)
            except PermanentErpError as exc:
                outcomes.append(f"permanent: {exc.detail}")
                break
        return outcomes

    try:
        results = await asyncio.gather(*(lifecycle(s) for s in ships))
        repeat = await port.post(milestone("OrderPacked", "bpack-again", order_id=ships[0]["number"], package_ids=[]))
    finally:
        await port.close()
    for ship, outcomes in zip(ships, results, strict=False):
        if ship["number"] == bad:
            assert outcomes[0] == "posted" and outcomes[1].startswith("permanent:")
            assert "is not valid according to its domain" in outcomes[1] and erp_stack.key not in outcomes[1]
        else:
            assert outcomes == ["posted"] * 4, (ship["number"], outcomes)
    assert repeat.outcome == "already_done"
    states = {s["id"]: s for s in await direct.search(
        "stock.shipment.out", [("id", "in", [s["id"] for s in ships])], ["state", "shipping_reference", "number"])}
    assert {states[s["id"]]["state"] for s in ships if s["number"] != bad} == {"done"}
    assert states[ships[3]["id"]]["state"] == "waiting"  # refused whole: nothing of it committed
    assert all(states[s["id"]]["shipping_reference"] == f"TRK-{s['number']}" for s in ships if s["number"] != bad)
    notes = await direct.search("ir.note", [("resource", "in", [f"stock.shipment.out,{s['id']}" for s in ships])],
                                ["message"])
    assert len(notes) == 8  # one acceptance note each, none twice
    seen = await requests_since(erp_stack, started)
    assert [line.status for line in seen if line.status == 429] == []
    rpc = [line for line in seen if "/rpc/" in line.uri]
    assert any("model.stock.shipment.out.pick" in line.uri and "n=7" in line.uri for line in rpc)
    # 8 orders x ~13 requests one by one; batched: a handful per step for all of them
    # (+ login, preferences, warnings answered ahead, the bisection for the bad pick).
    assert len(seen) <= 40, [line.uri for line in seen]
