"""End to end against the real ERP: orders released in Tryton flow through the source
connector, the worker and the ERP sink (behind the nginx quota) and end as done shipments
in Tryton, each exactly once, with the right quantities and tracking numbers."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal

import orjson
import pytest

from app.commands import dlq
from app.core.keys import event_key
from app.core.timeutil import format_ts
from app.erp.sales import new_order, shipment
from app.kafka import codec
from app.kafka.clients import produce, read_all
from app.settings import load
from app.simulator.work import tracking_no, warehouse_work, watermark_flush
from tests.fixtures.erp import ErpStack

pytestmark = [pytest.mark.erp, pytest.mark.kafka, pytest.mark.apache_kafka]


def erp_env(stack: ErpStack, **extra: str) -> dict[str, str]:
    return {
        "ERP_SINK_ENABLED": "true",
        "ERP_ADAPTER": "tryton",
        "ERP_BASE_URL": stack.gateway_url,
        "ERP_DATABASE": stack.database,
        "ERP_API_KEY": stack.key,
        "ERP_RATE_PER_S": str(stack.rate_per_s),
        "ERP_BURST": str(stack.burst),
        "ERP_TIMEOUT_S": "30",
        "WINDOW_SIZE_S": "10",
        "WINDOW_GRACE_S": "1",
        **extra,
    }


def check_trace(worker, order_id: str) -> None:
    """The order's trace holds its events, milestones and ERP calls, in time order."""
    status, body = worker.get(f"/orders/WH1/{order_id}/trace")
    assert status == 200, body
    entries = orjson.loads(body)["entries"]
    kinds = {(e["kind"], e["type"]) for e in entries}
    assert ("event", "OrderReleased") in kinds and ("event", "PickConfirmed") in kinds
    for mtype in ("OrderAccepted", "OrderPicked", "OrderPacked", "ShipmentConfirmed"):
        assert ("milestone", mtype) in kinds
    calls = [e for e in entries if e["kind"] == "erp_call"]
    assert {e["type"] for e in calls} >= {"OrderPicked", "OrderPacked", "ShipmentConfirmed"}
    assert all(e["outcome"] in ("posted", "already_done") and e["document_ref"] for e in calls)
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)
    assert worker.get("/orders/WH1/no%24such/trace")[0] == 400
    assert worker.get("/orders/WH1/NO-SUCH-ORDER/trace")[0] == 404


def run_source(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "app.cli", "source", "--once"], env=env, check=True, timeout=120)


async def test_released_orders_end_as_done_shipments_exactly_once(erp_stack, kafka_bootstrap, worker_factory) -> None:
    rest = erp_stack.direct_rest()
    try:
        created = [await new_order(rest, [("SKU-0011", 2), ("SKU-0012", 1)]) for _ in range(3)]
        numbers = {s["number"] for s in created}
        worker = worker_factory(**erp_env(erp_stack))
        env = {**os.environ, **worker.env, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
        run_source(env)
        events_topic = worker.env["TOPIC_EVENTS"]
        releases = [codec.decode(r.value) for r in read_all(kafka_bootstrap, events_topic)]
        releases = [r for r in releases if r["type"] == "OrderReleased" and r["order_id"] in numbers]
        assert {r["order_id"] for r in releases} == numbers
        start = max(r["occurred_at"] for r in releases) + 1000
        work = warehouse_work(releases, seed=3, start_ms=start)
        records = [(event_key(e), orjson.dumps(e)) for e in work]
        records += [(key, orjson.dumps(e)) for key, e in watermark_flush(work[-1]["warehouse_id"], start + 30_000, 4, "erp")]
        produce(kafka_bootstrap, events_topic, records)

        deadline = time.monotonic() + 120
        done: dict[str, dict] = {}
        while time.monotonic() < deadline and len(done) < len(created):
            for s in created:
                found = await shipment(rest, s["id"])
                if found["state"] == "done":
                    done[found["number"]] = found
            await asyncio.sleep(1)
        assert set(done) == numbers, f"not done in Tryton: {numbers - set(done)}"
        for number, found in done.items():
            assert found["shipping_reference"] == tracking_no(3, number)
            moves = {m["product"]["code"]: m["quantity"] for m in found["outgoing_moves"]}
            assert moves == {"SKU-0011": 2, "SKU-0012": 1}
        # Exactly once: one `do` per shipment reached the ERP, and no request was throttled
        # (the sink stays within the gateway's quota).
        log = erp_stack.access_log.read_text().splitlines()
        for s in created:
            dos = [line for line in log if f"/stock.shipment.out/{s['id']}/do" in line and " 200 " in line]
            assert len(dos) == 1, dos
        check_trace(worker, sorted(numbers)[0])
        # The ERP key appears in no log line and no response of the worker.
        answers = [worker.get(path) for path in ("/metrics", "/readyz", f"/orders/WH1/{sorted(numbers)[0]}/trace")]
        assert [status for status, _ in answers] == [200, 200, 200]
        assert b"syncgov_erp_calls_total" in answers[0][1]
        for text in [worker.log_file.read_bytes(), *(body for _, body in answers)]:
            assert erp_stack.key.encode() not in text
    finally:
        await rest.close()


async def test_permanent_error_is_dead_lettered_then_redriven_once(erp_stack, kafka_bootstrap, worker_factory) -> None:
    rest = erp_stack.direct_rest()
    token = "admin-token-for-test"
    sku = f"SKU-9{int(time.time()) % 100000:05d}"  # the cause: a SKU the ERP does not know yet
    try:
        worker = worker_factory(**erp_env(erp_stack, WORKER_ADMIN_TOKEN=token))
        env = {**os.environ, **worker.env, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
        now = int(time.time() * 1000)
        adjust = {"event_id": "adj-1", "type": "StockAdjusted", "occurred_at": format_ts(now - 120_000),
                  "source": "wms", "warehouse_id": "WH1", "sku": sku, "location": "A-01-01",
                  "delta": -4, "reason": "damage"}
        scan = {"event_id": "scan-1", "type": "ItemScanned", "occurred_at": format_ts(now), "source": "wms",
                "warehouse_id": "WH1", "barcode": "X", "location": "DOCK", "device_id": "t"}
        produce(kafka_bootstrap, worker.env["TOPIC_EVENTS"], [(b"WH1", orjson.dumps(e)) for e in (adjust, scan)])
        settings = load(env)
        wait = time.monotonic() + 60
        while time.monotonic() < wait and not dlq.open_entries(settings):
            await asyncio.sleep(1)
        entries = dlq.open_entries(settings)
        assert [e.record["type"] for e in entries] == ["InventoryAdjusted"]
        assert sku in entries[0].record["detail"] and entries[0].record["status"] == 200
        milestone_id = entries[0].milestone_id

        unit, = await rest.search("product.uom", [("name", "=", "Unit")], ["name"])
        await rest.create("product.template", {  # the fix: the ERP's users create the product
            "name": f"Late item {sku}", "code": sku, "type": "goods", "default_uom": unit["id"],
            "list_price": Decimal("10"), "products": [["create", [{}]]]})
        assert post(worker, "/admin/dlq/replay", None)[0] == 401
        assert post(worker, "/admin/dlq/replay", "wrong")[0] == 403
        status, body = post(worker, "/admin/dlq/replay", token)
        assert status == 200 and orjson.loads(body)["ids"] == [milestone_id]

        async def moves() -> list:
            return await rest.search("stock.shipment.internal", [("reference", "=", milestone_id)], ["state"])

        wait = time.monotonic() + 60
        while time.monotonic() < wait and [m["state"] for m in await moves()] != ["done"]:
            await asyncio.sleep(1)
        assert [m["state"] for m in await moves()] == ["done"]
        assert dlq.open_entries(settings) == []
        listed = subprocess.run([sys.executable, "-m", "app.cli", "dlq", "list"], env=env, capture_output=True,  # noqa: ASYNC221
                                text=True, check=True)
        assert "0 open ERP dead letter(s)" in listed.stdout
        await asyncio.sleep(3)
        assert len(await moves()) == 1  # posted once, not again
    finally:
        await rest.close()


def post(worker, path: str, token: str | None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(worker.url + path, data=b"{}", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
