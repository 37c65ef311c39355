"""One table of cases per paragraph of the contract's "Precise semantics"."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from core_support import (
    DL,
    END,
    HOLD,
    L,
    M,
    X,
    cancel,
    change,
    check,
    dispatch,
    ms,
    pack,
    pick,
    release,
    ret,
    run,
    scan,
    short,
    stock,
    tote,
)

from app.core import ids
from app.core.engine import Engine
from app.core.model import DeadLetter, Milestone

ACCEPTED = M("OrderAccepted", 0, ["r1"])

IDENTITY = [
    pytest.param(
        [release("r1"), release("r2", 0, warehouse_id="W2"), pick("p1", 1, qty=2, warehouse_id="W2")],
        [ACCEPTED, M("OrderAccepted", 0, ["r2"], warehouse_id="W2"),
         M("OrderPicked", 1, ["p1"], warehouse_id="W2")],
        id="identity-orders-are-keyed-by-warehouse-and-order",
    ),
    pytest.param(
        [pick("p1", 1, qty=0), pick("p1", 1, qty=-1, location="L9")],
        [X("INVALID_EVENT", 1, ["p1"]), DL("qty"), DL("qty")],
        id="identity-bad-record-reported-once-per-source-and-event-id",
    ),
    pytest.param(
        [b"garbage", b"garbage", b"other garbage"],
        [X("INVALID_EVENT", None, []), DL(), DL(), X("INVALID_EVENT", None, []), DL()],
        id="identity-undecodable-record-reported-once-per-raw-hash",
    ),
    pytest.param(
        [release("r1"), release("r1", lines=[])],
        [ACCEPTED, DL("lines")],
        id="identity-corrupt-copy-of-an-accepted-record-is-dead-lettered-only",
    ),
    pytest.param(
        [scan("s1", 0), scan("s1", 0, barcode=""), scan("s1", 0)],
        [X("INVALID_EVENT", 0, ["s1"]), DL("barcode")],
        id="identity-corrupt-copy-of-accepted-telemetry-is-reported-once",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=0), pick("p1", 2, qty=3)],
        [ACCEPTED, X("INVALID_EVENT", 1, ["p1"]), DL("qty"), M("OrderPicked", 2, ["p1"])],
        id="identity-corrected-record-keeps-its-single-sync-exception",
    ),
    pytest.param(
        [release("r1"), scan("s1", 24 * 3600), release("r1", lines=[])],
        [ACCEPTED, X("INVALID_EVENT", 0, ["r1"], detail="field 'lines' must not be empty"), DL("lines")],
        id="identity-corrupt-copy-after-the-dedup-retention-is-reported",
    ),
    pytest.param(
        [pick("p1", 1, qty=0, warehouse_id="", order_id=""), pick("p2", 2, qty=0, warehouse_id=5, order_id=7)],
        [X("INVALID_EVENT", 1, ["p1"], warehouse_id=None, order_id=None), DL("warehouse_id"),
         X("INVALID_EVENT", 2, ["p2"], warehouse_id=None, order_id=None), DL("warehouse_id")],
        id="identity-invalid-event-keeps-only-non-empty-string-warehouse-and-order-ids",
    ),
]

ORDER_OF_CHECKS = [
    pytest.param(
        [pick("p1", 1, source="mes", qty=0)],
        [X("INVALID_EVENT", 1, ["p1"]), DL("qty")],
        id="checks-rule8-before-authority",
    ),
    pytest.param(
        [scan("s1", 0, source="erp"), scan("s1", 0, source="erp")],
        [X("SOURCE_NOT_AUTHORIZED", 0, ["s1"])],
        id="checks-dedup-before-authority",
    ),
    pytest.param(
        [pick("p1", 0, source="carrier", order="O9")],
        [X("SOURCE_NOT_AUTHORIZED", 0, ["p1"], order_id="O9")],
        id="checks-authority-before-order-rules",
    ),
    pytest.param(
        [scan("s1", 0, order_id="O9"), tote("t1", 1, order_id="O9"), tote("t2", 2, source="robotics"),
         scan("s2", 3, device_id="")],
        [X("SOURCE_NOT_AUTHORIZED", 2, ["t2"]), X("INVALID_EVENT", 3, ["s2"]), DL("device_id")],
        id="checks-telemetry-causes-only-rule2-and-rule8-exceptions",
    ),
]

WATERMARK = [
    pytest.param(
        [pick("p1", 0, order="O9"), tote("t1", HOLD)],
        [X("UNKNOWN_ORDER", 0, ["p1"]), END],
        id="watermark-telemetry-moves-it",
    ),
    pytest.param(
        [pick("p1", 0, qty=2), release("r1", HOLD)],
        [X("UNKNOWN_ORDER", 0, ["p1"]), M("OrderAccepted", HOLD, ["r1"])],
        id="watermark-updated-with-the-event-before-it-is-applied",
    ),
    pytest.param(
        [pick("p1", 0, qty=2), scan("s1", HOLD - 0.001), release("r1", 10)],
        [M("OrderAccepted", 10, ["r1"]), M("OrderPicked", 0, ["p1"])],
        id="watermark-just-before-the-deadline-keeps-the-hold",
    ),
    pytest.param(
        [scan("s1", 5000), pick("p1", 0, qty=2, order="O9")],
        [X("UNKNOWN_ORDER", 0, ["p1"], order_id="O9"), END],
        id="watermark-does-not-go-back-and-a-late-hold-expires-at-once",
    ),
    pytest.param(
        [scan("s1", 365 * 24 * 3600)],
        [],
        id="watermark-replay-has-no-future-check",
    ),
]

WINDOWS = [
    pytest.param(
        [stock("s1", 0, 1), scan("x", 359.999)], [], id="windows-open-until-end-plus-grace",
    ),
    pytest.param(
        [stock("s1", 0, 1), scan("x", 360)], [M("InventoryAdjusted", 300, ["s1"])],
        id="windows-close-when-the-watermark-reaches-end-plus-grace",
    ),
    pytest.param(
        [scan("x", 1000), stock("s1", 0, 1), stock("s1", 0, 1)], [X("INVALID_EVENT", 0, ["s1"], detail="late")],
        id="windows-stock-adjusted-for-a-closed-window-is-late-and-recorded-for-dedup",
    ),
]

EXECUTION_EVENTS = [
    pytest.param(
        [pick("p1", 0, order="O9"), short("s1", 1, order="O9"), pack("k1", 2, order="O9"),
         dispatch("d1", 3, order="O9"), change("c1", 4, [L(1, "A", 1)], order="O9"), cancel("x1", 5, order="O9")],
        [X("UNKNOWN_ORDER", 5, ["p1", "s1", "k1", "d1", "c1", "x1"], order_id="O9")],
        id="execution-events-and-order-changes-are-held",
    ),
    pytest.param(
        [scan("s1", 0, order_id="O9"), ret("t1", 1, order="O9")],
        [X("RETURN_NOT_SHIPPED", 1, ["t1"], order_id="O9")],
        id="execution-telemetry-and-returns-are-not-held",
    ),
]

HOLDS = [
    pytest.param(
        [pick("p1", 100, order="O9"), pick("p2", 0, order="O9"), scan("s1", HOLD)],
        [X("UNKNOWN_ORDER", 100, ["p1", "p2"]), END],
        id="holds-expire-at-the-earliest-held-time-plus-the-window",
    ),
    pytest.param(
        [pick("p1", 100, order="O9"), pick("p2", 0, order="O9"), scan("s1", HOLD - 0.001)],
        [END, X("UNKNOWN_ORDER", 100, ["p1", "p2"])],
        id="holds-kept-until-the-earliest-held-time-plus-the-window",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=2), dispatch("d1", 600), scan("s1", 599 + HOLD),
         scan("s2", 600 + HOLD)],
        [ACCEPTED, M("OrderPicked", 1), X("NOT_PACKED", 600, ["d1"]), END],
        id="holds-waiting-dispatch-measured-from-its-own-time",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=2), dispatch("d1", 600), scan("s1", 600 + HOLD - 0.001)],
        [ACCEPTED, M("OrderPicked", 1), END, X("NOT_PACKED", 600, ["d1"])],
        id="holds-waiting-dispatch-kept-until-its-own-time-plus-the-window",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=2), dispatch("d2", 5, shipment="S2"), dispatch("d1", 3), pack("k1", 6)],
        [ACCEPTED, M("OrderPicked", 1), M("OrderPacked", 6), M("ShipmentConfirmed", 3, ["d1"])],
        id="holds-waiting-dispatches-applied-in-time-order-first-confirms",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=2), dispatch("d1", 2), scan("s", 2 + HOLD), pack("k1", 3)],
        [ACCEPTED, M("OrderPicked", 1), X("NOT_PACKED", 2, ["d1"]), M("OrderPacked", 3)],
        id="holds-not-packed-dispatch-is-dropped",
    ),
]

LIFECYCLE = [
    pytest.param(
        [release("r1"), release("r2", 1)],
        [ACCEPTED, X("INVALID_EVENT", 1, ["r2"], order_id="O1",
                     detail="order already released; changes must be OrderChanged")],
        id="lifecycle-second-release-is-invalid-event-not-dead-letter",
    ),
    pytest.param(
        [release("r1"), cancel("x1", 1), release("r2", 2), change("c1", 3, [L(1, "A", 1)]), cancel("x2", 4),
         pick("p1", 5), short("s1", 6), pack("k1", 7), dispatch("d1", 8), ret("t1", 9)],
        [ACCEPTED] + [X("ORDER_CANCELLED", t, [e], order_id="O1")
                      for t, e in enumerate(["r2", "c1", "x2", "p1", "s1", "k1", "d1", "t1"], start=2)],
        id="lifecycle-cancelled-order-rejects-every-order-scoped-event",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, line=2), pack("k1", 2, items=[(1, 1), (3, 1)]), short("s1", 3, line=4)],
        [ACCEPTED, X("INVALID_EVENT", 1, ["p1"], detail="order has no line_no 2"),
         X("INVALID_EVENT", 2, ["k1"], detail="order has no line_no 3"),
         X("INVALID_EVENT", 3, ["s1"], detail="order has no line_no 4")],
        id="lifecycle-pick-pack-or-short-close-naming-a-missing-line-is-invalid",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, sku="B", qty=99)],
        [ACCEPTED, X("INVALID_EVENT", 1, ["p1"], detail="sku 'B' differs from line 1's sku 'A'")],
        id="lifecycle-sku-mismatch-is-invalid-and-wins-over-over-pick",
    ),
    pytest.param(
        [release("r1", lines=[L(1, "A", 2), L(2, "B", 2)]), short("s1", 1), pick("p1", 2),
         pick("p2", 3, line=2, sku="B", qty=2)],
        [ACCEPTED, M("OrderPicked", 3, ["s1", "p1", "p2"],
                     lines=[{"line_no": 1, "sku": "A", "ordered": 2, "picked": 1},
                            {"line_no": 2, "sku": "B", "ordered": 2, "picked": 2}], short=True)],
        id="lifecycle-pick-on-short-closed-line-before-order-picked-counts",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=2), pick("p2", 2), pack("k1", 3), dispatch("d1", 4)],
        [ACCEPTED, M("OrderPicked", 1), X("OVER_PICK", 2, ["p2"], detail="order already picked; pick not counted"),
         M("OrderPacked", 3), M("ShipmentConfirmed", 4, lines=[{"line_no": 1, "qty": 2}])],
        id="lifecycle-picks-after-order-picked-are-over-pick-and-change-nothing",
    ),
    pytest.param(
        [release("r1"), short("s1", 1), pack("k1", 2), dispatch("d1", 3)],
        [ACCEPTED, M("OrderPicked", 1, ["s1"], short=True,
                     lines=[{"line_no": 1, "sku": "A", "ordered": 2, "picked": 0}]),
         X("NOT_PACKED", 3, ["d1"], detail="order has nothing picked")],
        id="lifecycle-nothing-picked-ends-at-order-picked-packs-ignored-dispatch-not-packed",
    ),
    pytest.param(
        [release("r1"), dispatch("d1", 1), short("s1", 2)],
        [ACCEPTED, M("OrderPicked", 2), X("NOT_PACKED", 1, ["d1"], detail="order has nothing picked"), END],
        id="lifecycle-nothing-picked-ends-a-waiting-dispatch",
    ),
    pytest.param(
        [release("r1", lines=[L(1, "A", 2), L(2, "B", 1)]), short("s1", 1, line=2), short("s2", 2, line=2),
         pick("p1", 3, qty=2), short("s3", 4)],
        [ACCEPTED, M("OrderPicked", 3, ["s1", "p1"], short=True)],
        id="lifecycle-repeated-or-late-short-close-is-ignored",
    ),
    pytest.param(
        [release("r1"), dispatch("d1", 1), cancel("x1", 2)],
        [ACCEPTED, X("ORDER_CANCELLED", 1, ["d1"], detail="order is cancelled"), END],
        id="lifecycle-cancel-ends-a-waiting-dispatch",
    ),
    pytest.param(
        [pick("p1", 0, order="O9"), scan("a", HOLD), pick("p2", HOLD + 1, order="O9"), scan("b", 3 * HOLD)],
        [X("UNKNOWN_ORDER", 0, ["p1"])],
        id="lifecycle-at-most-one-unknown-order-later-expiry-drops-silently",
    ),
]

FIELDS = [
    pytest.param(
        [release("r1", lines=[L(1, "A", 2), L(2, "B", 1)]), pick("p1", 1, qty=2), short("s1", 2, line=2),
         pack("k1", 3), dispatch("d1", 4)],
        [ACCEPTED, M("OrderPicked", 2), M("OrderPacked", 3, package_ids=["P1"]),
         M("ShipmentConfirmed", 4, ["d1"], lines=[{"line_no": 1, "qty": 2}], shipment_id="S1", carrier="UPS",
           tracking_no="1Z1")],
        id="fields-shipment-lines-carry-picked-qty-and-omit-zero",
    ),
    pytest.param(
        [release("r1", lines=[L(1, "A", 60)])] + [pick(f"p{i:02d}", i) for i in range(60)],
        [ACCEPTED, M("OrderPicked", 59, [f"p{i:02d}" for i in range(50)])],
        id="fields-event-ids-keep-the-first-50",
    ),
    pytest.param(
        [pick("p1", 30), pick("p2", 20), release("r1", 40)],
        [M("OrderAccepted", 40), M("OrderPicked", 30, ["p1", "p2"])],
        id="fields-event-ids-in-arrival-order-also-when-released-from-hold",
    ),
    pytest.param(
        [release("r1", lines=[L(1, "A", 60)])] + [pick(f"p{i:02d}", 100 - i) for i in range(60)]
        + [release("r0", 200, order="O0")],
        [ACCEPTED, M("OrderPicked", 41, [f"p{i:02d}" for i in range(50)]), M("OrderAccepted", 200)],
        id="fields-event-ids-first-50-by-arrival-not-by-time",
    ),
    pytest.param(
        # held picks p01..p60 (arrival order) are applied by time: p01..p49, p60, p50..p59
        [pick(f"p{i:02d}", i if i < 50 else (50 if i == 60 else i + 1)) for i in range(1, 61)]
        + [release("r1", 70, lines=[L(1, "A", 60)])],
        [M("OrderAccepted", 70), M("OrderPicked", 60, [f"p{i:02d}" for i in range(1, 51)])],
        id="fields-event-ids-first-50-by-arrival-when-held-events-apply-out-of-arrival-order",
    ),
    pytest.param(
        [pick(f"p{i:02d}", i, order="O9") for i in range(60)],
        [X("UNKNOWN_ORDER", 59, [f"p{i:02d}" for i in range(50)], order_id="O9",
           detail="no OrderReleased within the hold window; 60 held event(s) dropped")],
        id="fields-unknown-order-evidence-keeps-the-first-50",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=2), pack("k1", 2, items=[(1, 1)], package="P1"),
         pack("k2", 3, items=[(1, 1)], package="P2"), pack("k3", 4, items=[(1, 1)], package="P1")],
        [ACCEPTED, M("OrderPicked", 1), M("OrderPacked", 3, ["k1", "k2"], package_ids=["P1", "P2"])],
        id="fields-packed-qty-is-summed-over-packs-and-package-ids-are-distinct",
    ),
    pytest.param(
        [stock(f"s{i:02d}", i, 1) for i in range(60)],
        [M("InventoryAdjusted", 300, [f"s{i:02d}" for i in range(50)], event_count=60, net_delta=60)],
        id="fields-inventory-evidence-keeps-the-first-50",
    ),
    pytest.param(
        [stock("s1", 10, 1), scan("x", 1000), stock("s2", 20, 1, order_id="O1")],
        [M("InventoryAdjusted", 300), X("INVALID_EVENT", 20, ["s2"], order_id=None)],
        id="fields-order-id-only-when-the-event-type-has-one",
    ),
]


@pytest.mark.parametrize(("records", "expected"), IDENTITY)
def test_identity(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected)


@pytest.mark.parametrize(("records", "expected"), ORDER_OF_CHECKS)
def test_order_of_checks(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected)


@pytest.mark.parametrize(("records", "expected"), WATERMARK)
def test_watermark(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected)


@pytest.mark.parametrize(("records", "expected"), WINDOWS)
def test_windows(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected, finish=False)


@pytest.mark.parametrize(("records", "expected"), EXECUTION_EVENTS)
def test_execution_events(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected)


@pytest.mark.parametrize(("records", "expected"), HOLDS)
def test_holds(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected)


@pytest.mark.parametrize(("records", "expected"), LIFECYCLE)
def test_lifecycle_edges(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected)


@pytest.mark.parametrize(("records", "expected"), FIELDS)
def test_milestone_fields(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected)


# -- worker-only future check (needs an injected clock) --------------------------------


@pytest.mark.parametrize(
    ("ahead_s", "rejected"),
    [
        pytest.param(300, False, id="watermark-future-exactly-5-minutes-ahead-is-accepted"),
        pytest.param(300.001, True, id="watermark-future-more-than-5-minutes-ahead-is-invalid"),
    ],
)
def test_watermark_future_check_with_a_clock(ahead_s: float, rejected: bool) -> None:
    engine = Engine(clock=lambda: ms(0))
    out = run([scan("s1", ahead_s)], finish=False, engine=engine)
    if rejected:
        assert [type(o) for o in out] == [Milestone, DeadLetter]
        assert out[0].body == {"code": "INVALID_EVENT", "order_id": None, "detail": "future"}
        assert out[0].occurred_at == ms(ahead_s)
        assert out[1].reason == "future"
        assert engine.watermark is None
    else:
        assert out == []
        assert engine.watermark == ms(ahead_s)


def test_watermark_future_event_does_not_move_it_nor_count_for_dedup() -> None:
    clock_ms = [ms(0)]
    engine = Engine(clock=lambda: clock_ms[0])
    out = run([pick("p1", 0, qty=2), pick("p9", 2 * HOLD, order="O9")], finish=False, engine=engine)
    assert [o.body["detail"] for o in out if isinstance(o, Milestone)] == ["future"]
    clock_ms[0] = ms(2 * HOLD)
    out = run([pick("p9", 2 * HOLD, order="O9"), release("r1", 10)], finish=False, engine=engine)
    # the redelivered p9 is processed now; its time expires O1's hold before r1 arrives
    assert [(m.type, m.body.get("code")) for m in out] == [("SyncException", "UNKNOWN_ORDER"),
                                                           ("OrderAccepted", None)]


# -- undecodable records -----------------------------------------------------------------


def test_undecodable_record_id_derives_from_the_raw_bytes() -> None:
    raw = b'{"event_id": '
    out = Engine().process(raw)
    assert isinstance(out[0], Milestone) and isinstance(out[1], DeadLetter)
    assert out[0].milestone_id == ids.raw_exception_id(raw) == out[1].record_id
    assert out[1].raw == raw


def test_reject_from_the_caller_is_invalid_event_and_dead_letter() -> None:
    engine = Engine()
    engine.process(orjson.dumps(scan("s1", 7)))
    m, letter = engine.reject(b"\xc3\x01\x00", "undecodable: unknown schema fingerprint")
    assert isinstance(m, Milestone) and isinstance(letter, DeadLetter)
    assert m.occurred_at == ms(7) and m.warehouse_id is None and m.event_ids == ()
    assert m.body["detail"] == letter.reason == "undecodable: unknown schema fingerprint"
    assert engine.reject(b"\xc3\x01\x00", "again") == [DeadLetter(b"\xc3\x01\x00", "again", m.milestone_id)]


def test_decoded_dict_without_raw_is_dead_lettered_as_canonical_json() -> None:
    d = {"type": "ItemScanned", "b": 1}
    m, letter = Engine().process_event(d)
    assert letter.raw == b'{"b":1,"type":"ItemScanned"}'
    assert m.milestone_id == ids.raw_exception_id(letter.raw)


def test_process_event_accepts_datetimes_and_int_ms() -> None:
    from datetime import UTC, datetime

    engine = Engine()
    out = engine.process_event(release("r1", 0, occurred_at=datetime(2026, 11, 27, 10, tzinfo=UTC)))
    out += engine.process_event(pick("p1", 0, qty=2, occurred_at=ms(1)))
    assert [(m.type, m.occurred_at) for m in out] == [("OrderAccepted", ms(0)), ("OrderPicked", ms(1))]
