"""End to end against the real ERP: orders released in Tryton flow through the source
connector, the worker and the ERP sink (behind the nginx quota) and end as done shipments
in Tryton, each exactly once, with the right quantities and tracking numbers."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import orjson
import pytest

from app import codec
from app.kafka_io import produce, read_all
from app.simulator.work import tracking_no, warehouse_work
from tests.fixtures.erp import ErpStack
from tests.integration.test_erp_tryton import new_order, shipment

pytestmark = [pytest.mark.erp, pytest.mark.kafka]


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
        env = {**__import__("os").environ, **worker.env, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
        run_source(env)
        events_topic = worker.env["TOPIC_EVENTS"]
        releases = [codec.decode(r.value) for r in read_all(kafka_bootstrap, events_topic)]
        releases = [r for r in releases if r["type"] == "OrderReleased" and r["order_id"] in numbers]
        assert {r["order_id"] for r in releases} == numbers
        start = max(r["occurred_at"] for r in releases) + 1000
        work = warehouse_work(releases, seed=3, start_ms=start)
        flush = {**work[-1], "event_id": "flush", "type": "ItemScanned", "occurred_at": start + 30_000,
                 "source": "wms", "barcode": "X", "location": "DOCK", "device_id": "t"}
        for key in ("order_id", "delta", "reason", "sku", "tote_id"):
            flush.pop(key, None)
        produce(kafka_bootstrap, events_topic, [(e["warehouse_id"].encode(), orjson.dumps(e)) for e in [*work, flush]])

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
        answers = [worker.get(path)[1] for path in ("/metrics", "/readyz", f"/orders/WH1/{sorted(numbers)[0]}/trace")]
        for text in [worker.log_file.read_bytes(), *answers]:
            assert erp_stack.key.encode() not in text
    finally:
        await rest.close()
