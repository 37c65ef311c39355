"""Reconciliation: the pure comparison (a table of cases), the drift records and gauges,
and replay safety of a whole run (IO replaced by an in-memory topic and ERP)."""
from __future__ import annotations

from typing import Any

import orjson
import pytest

from app import metrics
from app.core.ids import milestone_id
from app.core.model import Milestone
from app.core.timeutil import format_ts, parse_ts
from app.erp import reconcile
from app.erp.port import DocumentState
from app.erp.reconcile import ErpInternal, ErpShipment, ErpView, compare, overdue
from app.kafka import codec
from app.settings import load

T0 = parse_ts("2026-11-27T10:00:00.000Z")
SHIP_REF = "stock.shipment.out,7"


def order_m(kind: str, order: str = "OUT-1", at: int = T0) -> dict[str, Any]:
    return {"milestone_id": f"{kind}-{order}", "type": kind, "warehouse_id": "WH1", "occurred_at": format_ts(at),
            "event_ids": ["e1"], "order_id": order}


def adjusted(net: int = -2, mid: str = "adj1") -> dict[str, Any]:
    return {"milestone_id": mid, "type": "InventoryAdjusted", "warehouse_id": "WH1", "occurred_at": format_ts(T0),
            "event_ids": ["e2"], "sku": "SKU-0011", "location": "A-01-01", "net_delta": net, "event_count": 1,
            "window_start": "2026-11-27T09:55:00.000Z", "window_end": "2026-11-27T10:00:00.000Z"}


def ship(state: str, order: str = "OUT-1") -> dict[tuple[str, str], ErpShipment]:
    return {("WH1", order): ErpShipment("WH1", order, state, SHIP_REF, T0 + 5000)}


def internal(state: str = "done", qty: float = 2.0, mid: str = "adj1") -> dict[str, ErpInternal]:
    return {mid: ErpInternal(mid, state, "stock.shipment.internal,3", qty)}


CONFIRMED = [order_m("OrderAccepted"), order_m("OrderPicked"), order_m("ShipmentConfirmed")]
ACCEPTED = [order_m("OrderAccepted")]
EXCEPTION = {"milestone_id": "x", "type": "SyncException", "warehouse_id": "WH1", "occurred_at": format_ts(T0),
             "event_ids": [], "code": "OVER_PICK", "order_id": "OUT-1", "detail": "d"}

CASES = [
    # (name, milestones, shipments, internal shipments, expected [(kind, document, erp_ref, since)])
    ("in sync", [*CONFIRMED, adjusted()], ship("done"), internal(), []),
    ("shipped, ERP has no shipment", CONFIRMED, {}, {},
     [("shipped_not_posted", "WH1/OUT-1", "", T0)]),
    ("shipped, ERP shipment cancelled", CONFIRMED, ship("cancelled"), {},
     [("shipped_not_posted", "WH1/OUT-1", SHIP_REF, T0)]),
    ("shipped, ERP shipment still packed", CONFIRMED, ship("packed"), {},
     [("shipped_not_posted", "WH1/OUT-1", SHIP_REF, T0)]),
    ("done in ERP, never confirmed", ACCEPTED, ship("done"), {},
     [("posted_not_shipped", "WH1/OUT-1", SHIP_REF, T0 + 5000)]),
    ("ERP waiting, warehouse working", ACCEPTED, ship("waiting"), {}, []),
    ("order unknown to the ERP, not shipped yet", ACCEPTED, {}, {}, []),
    ("adjustment without internal shipment", [adjusted()], {}, {},
     [("stock_moves_missing", "WH1/SKU-0011@A-01-01/2026-11-27T09:55:00.000Z", "", T0)]),
    ("adjustment reset to draft", [adjusted()], {}, internal("draft"),
     [("stock_moves_missing", "WH1/SKU-0011@A-01-01/2026-11-27T09:55:00.000Z", "stock.shipment.internal,3", T0)]),
    ("adjustment moved the wrong quantity", [adjusted(net=3)], {}, internal(qty=2.0),
     [("stock_moves_missing", "WH1/SKU-0011@A-01-01/2026-11-27T09:55:00.000Z", "stock.shipment.internal,3", T0)]),
    ("adjustment netting to zero is not ERP-bound", [adjusted(net=0)], {}, {}, []),
    ("sync exceptions are not ERP-bound", [EXCEPTION], ship("done"), {}, []),
    ("redelivered milestones count once", [*CONFIRMED, *CONFIRMED], {}, {},
     [("shipped_not_posted", "WH1/OUT-1", "", T0)]),
    ("other warehouse's shipment does not match", CONFIRMED,
     {("WH2", "OUT-1"): ErpShipment("WH2", "OUT-1", "done", SHIP_REF, T0)}, {},
     [("shipped_not_posted", "WH1/OUT-1", "", T0)]),
]


@pytest.mark.parametrize("name,milestones,shipments,internals,expected", CASES, ids=[c[0] for c in CASES])
def test_compare(name: str, milestones: list, shipments: dict, internals: dict, expected: list) -> None:
    drift = compare(milestones, ErpView(shipments, internals))
    assert [(d.kind, d.document, d.erp_ref, d.since_ms) for d in drift] == expected


def test_compare_is_deterministic_and_sorted() -> None:
    milestones = [*CONFIRMED, order_m("OrderAccepted", "OUT-2"), adjusted()]
    erp = ErpView({**ship("cancelled"), **ship("done", "OUT-2")}, {})
    first = compare(milestones, erp)
    assert compare(list(reversed(milestones)), erp) == first
    assert [d.kind for d in first] == ["posted_not_shipped", "shipped_not_posted", "stock_moves_missing"]


def test_ledger_outcome_is_named_in_the_detail() -> None:
    ledger = {"ShipmentConfirmed-OUT-1": {"outcome": "dead_lettered", "at": "2026-11-27T10:00:03.000Z"}}
    drift, = compare(CONFIRMED, ErpView({}, {}), ledger)
    assert "ERP sink ledger: dead_lettered at 2026-11-27T10:00:03.000Z" in drift.detail
    assert drift.milestone_id == "ShipmentConfirmed-OUT-1"
    assert drift.key == "WH1|OUT-1"
    assert "ledger" not in compare(CONFIRMED, ErpView({}, {}))[0].detail


def test_overdue_is_drift_older_than_the_window() -> None:
    drift = compare(CONFIRMED, ErpView({}, {}))
    assert overdue(drift, T0 + 900_000, 900) == []
    assert overdue(drift, T0 + 900_001, 900) == drift


def test_drift_record_has_a_deterministic_id_and_decodes_like_a_milestone() -> None:
    d, = compare(CONFIRMED, ErpView(ship("cancelled"), {}))
    assert d.record_id == milestone_id("SyncException", "DRIFT", "shipped_not_posted", "WH1/OUT-1")
    record = d.record(T0 + 1_000_000, 900)
    back = Milestone.from_dict(codec.decode(orjson.dumps(record))).to_dict()
    assert back["type"] == "SyncDrift" and back["milestone_id"] == d.record_id
    assert back["occurred_at"] == format_ts(T0)
    assert back["kind"] == "shipped_not_posted" and back["order_id"] == "OUT-1" and back["erp_ref"] == SHIP_REF
    assert back["detected_at"] == format_ts(T0 + 1_000_000)


def _gauge(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def test_gauges_are_absolute_per_kind() -> None:
    drift = compare([*CONFIRMED, adjusted()], ErpView({}, {}))
    for _ in range(2):
        reconcile.set_gauges(drift, T0 + 60_000)
    assert _gauge("syncgov_sync_drift_documents", kind="shipped_not_posted") == 1
    assert _gauge("syncgov_sync_drift_documents", kind="stock_moves_missing") == 1
    assert _gauge("syncgov_sync_drift_documents", kind="posted_not_shipped") == 0
    assert _gauge("syncgov_sync_drift_oldest_age_seconds", kind="shipped_not_posted") == 60
    assert _gauge("syncgov_sync_drift_oldest_age_seconds", kind="posted_not_shipped") == 0
    assert _gauge("syncgov_reconcile_last_success_timestamp_seconds") == (T0 + 60_000) / 1000


class FakeAdapter:
    async def close(self) -> None:
        pass


@pytest.fixture
def fake_io(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """An in-memory exceptions topic; milestones and ERP fixed: one shipment reset in the ERP."""
    topic: list[dict[str, Any]] = []
    erp = ErpView(ship("draft"), internal())

    async def read_erp(port: object, milestones: object, page_size: int) -> ErpView:
        return erp

    monkeypatch.setattr(reconcile, "read_milestones", lambda s, since: [*CONFIRMED, adjusted()])
    monkeypatch.setattr(reconcile, "read_erp", read_erp)
    monkeypatch.setattr(reconcile, "make_port", lambda erp, role="sink": FakeAdapter())
    monkeypatch.setattr(reconcile, "published_ids", lambda s: {r["milestone_id"] for r in topic})
    monkeypatch.setattr(reconcile, "publish",
                        lambda s, items, now, window: topic.extend(d.record(now, window) for d in items))
    return topic


async def test_a_second_run_changes_nothing(fake_io: list[dict[str, Any]]) -> None:
    settings = load({"KAFKA_BOOTSTRAP_SERVERS": "unused:9092", "RECONCILE_WINDOW_S": "60"})
    options = settings.reconcile
    first = await reconcile.run(settings, options, clock=lambda: (T0 + 3_600_000) / 1000)
    assert first.counts() == {"shipped_not_posted": 1, "posted_not_shipped": 0, "stock_moves_missing": 0}
    assert len(first.published) == 1 and first.known == 0
    assert [r["kind"] for r in fake_io] == ["shipped_not_posted"]
    second = await reconcile.run(settings, options, clock=lambda: (T0 + 7_200_000) / 1000)
    assert second.drift == first.drift
    assert second.published == () and second.known == 1
    assert len(fake_io) == 1
    assert "1 document(s) out of sync" in reconcile.format_report(second, 60)


async def test_young_drift_is_counted_but_not_published(fake_io: list[dict[str, Any]]) -> None:
    settings = load({"KAFKA_BOOTSTRAP_SERVERS": "unused:9092", "RECONCILE_WINDOW_S": "900"})
    report = await reconcile.run(settings, settings.reconcile, clock=lambda: (T0 + 60_000) / 1000)
    assert report.counts()["shipped_not_posted"] == 1
    assert report.published == () and fake_io == []



async def test_the_erp_is_read_through_the_port_and_types_it_cannot_check_are_not_drift() -> None:
    """One probe per order (its ShipmentConfirmed, or one with the order's keys), one per
    stock adjustment; an adapter that leaves a type out of its answer cannot check it."""
    asked: list[dict[str, Any]] = []

    class Port:
        async def reconcile_states(self, probes: list[dict[str, Any]], page_size: int) -> dict[str, Any]:
            asked.extend(probes)
            return {p["milestone_id"]: DocumentState(f"doc-{p['order_id']}", "shipped", True, changed_ms=T0 + 5)
                    for p in probes if p["type"] == "ShipmentConfirmed"}

    milestones = [order_m("OrderPicked", "OUT-1"), order_m("OrderPicked", "OUT-2"), order_m("ShipmentConfirmed", "OUT-2"),
                  adjusted()]
    view = await reconcile.read_erp(Port(), milestones, 100)  # type: ignore[arg-type]
    assert [(p["milestone_id"], p["type"]) for p in asked] == [
        ("probe:WH1|OUT-1", "ShipmentConfirmed"), ("ShipmentConfirmed-OUT-2", "ShipmentConfirmed"),
        ("adj1", "InventoryAdjusted")]
    assert view.unchecked == frozenset({"InventoryAdjusted"})
    drift = compare(milestones, view)
    assert [(d.kind, d.document, d.erp_ref, d.since_ms) for d in drift] == [
        ("posted_not_shipped", "WH1/OUT-1", "doc-OUT-1", T0 + 5)]
