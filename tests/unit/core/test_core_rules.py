"""One table of cases per governance rule (contract rules 1-9); exact milestones."""

from __future__ import annotations

from typing import Any

import pytest
from core_support import (
    DL,
    DROP,
    END,
    HOLD,
    L,
    M,
    X,
    cancel,
    change,
    check,
    dispatch,
    ev,
    pack,
    pick,
    release,
    ret,
    run,
    scan,
    shipped_order,
    short,
    stock,
    tote,
    ts,
)

from app.core.model import CoreSettings, Milestone

ACCEPTED_V1 = M("OrderAccepted", 0, ["r1"], order_id="O1", version=1)
DAY = 24 * 3600


def picked_line(line_no: int, sku: str, ordered: int, picked: int) -> dict[str, Any]:
    return {"line_no": line_no, "sku": sku, "ordered": ordered, "picked": picked}


SHIPPED = [
    M("OrderAccepted", 0, ["O1-r"]),
    M("OrderPicked", 1, ["O1-p"]),
    M("OrderPacked", 2, ["O1-k"]),
    M("ShipmentConfirmed", 3, ["O1-d"]),
]

RULE1 = [
    pytest.param([release("r1"), release("r1")], [ACCEPTED_V1], id="rule1-redelivered-event-is-ignored"),
    pytest.param(
        [release("r1"), pick("p1", 1, source="wms"), pick("p1", 2, source="robotics")],
        [ACCEPTED_V1, M("OrderPicked", 2, ["p1", "p1"], lines=[picked_line(1, "A", 2, 2)])],
        id="rule1-same-event-id-from-another-source-is-another-event",
    ),
    pytest.param(
        [release("r1"), scan("s1", DAY), release("r1")],
        [ACCEPTED_V1, X("INVALID_EVENT", 0, ["r1"], order_id="O1")],
        id="rule1-dedup-forgets-after-24h-of-event-time",
    ),
    pytest.param(
        [release("r1"), scan("s1", DAY - 0.001), release("r1")],
        [ACCEPTED_V1],
        id="rule1-dedup-remembers-within-24h",
    ),
    pytest.param(
        [release("r1"), scan("s1", DAY), release("r1"), scan("s2", DAY + 120), release("r1")],
        [ACCEPTED_V1, X("INVALID_EVENT", 0, ["r1"], order_id="O1")],
        id="rule1-a-key-seen-again-after-24h-is-remembered-for-another-24h",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=2), pick("p2", 2)],
        [ACCEPTED_V1, M("OrderPicked", 1, ["p1"]), X("OVER_PICK", 2, ["p2"], order_id="O1")],
        id="rule1-order-picked-at-most-once",
    ),
    pytest.param(
        [release("r1"), change("c1", 1, [L(1, "A", 3)]), change("c1", 1, [L(1, "A", 3)])],
        [ACCEPTED_V1, M("OrderAccepted", 1, ["c1"], version=2, lines=[L(1, "A", 3)])],
        id="rule1-order-accepted-once-per-version",
    ),
    pytest.param(
        [*shipped_order(), dispatch("d2", 10, shipment="S2")],
        SHIPPED,
        id="rule1-shipment-confirmed-at-most-once",
    ),
    pytest.param(
        [*shipped_order(), ret("t1", 10), ret("t2", 11), ret("t3", 12, sku="B")],
        [
            *SHIPPED,
            M("ReturnReceived", 10, ["t1"], rma_id="R1", sku="A"),
            M("ReturnReceived", 12, ["t3"], rma_id="R1", sku="B"),
        ],
        id="rule1-return-received-once-per-rma-and-sku",
    ),
    pytest.param(
        [*shipped_order(0, "O1"), *shipped_order(0, "O2"), ret("t1", 10), ret("t2", 11, order="O2")],
        [
            *SHIPPED,
            M("OrderAccepted", 0, ["O2-r"]),
            M("OrderPicked", 1, ["O2-p"]),
            M("OrderPacked", 2, ["O2-k"]),
            M("ShipmentConfirmed", 3, ["O2-d"]),
            M("ReturnReceived", 10, ["t1"], order_id="O1"),
        ],
        id="rule1-return-received-once-per-rma-and-sku-across-orders",
    ),
    pytest.param(
        [*shipped_order(0, "O1"), *[{**e, "warehouse_id": "W2"} for e in shipped_order(0, "O2")],
         ret("t1", 10), ret("t2", 11, order="O2", warehouse_id="W2")],
        [*SHIPPED, *[M(m["type"], m["t"], warehouse_id="W2") for m in SHIPPED],
         M("ReturnReceived", 10, ["t1"], warehouse_id="W1"), M("ReturnReceived", 11, ["t2"], warehouse_id="W2")],
        id="rule1-return-received-once-per-warehouse-rma-and-sku",
    ),
    pytest.param(
        [stock("s1", 0, 5), stock("s2", 10, 3), stock("s1", 20, 5)],
        [M("InventoryAdjusted", 300, ["s1", "s2"], net_delta=8, event_count=2)],
        id="rule1-inventory-adjusted-once-per-window-and-key",
    ),
    pytest.param(
        [pick("p1", 0, source="erp"), pick("p1", 0, source="erp")],
        [X("SOURCE_NOT_AUTHORIZED", 0, ["p1"], order_id="O1")],
        id="rule1-sync-exception-once-per-record",
    ),
    pytest.param(
        [pick("p1", 0, order="O9"), scan("s1", HOLD), pick("p2", HOLD + 10, order="O9")],
        [X("UNKNOWN_ORDER", 0, ["p1"], order_id="O9")],
        id="rule1-unknown-order-once-per-order",
    ),
]

RULE2 = [
    pytest.param(
        [release("r1"), pick("p1", 1, qty=2, source="erp"), pick("p2", 2, qty=2)],
        [
            ACCEPTED_V1,
            X("SOURCE_NOT_AUTHORIZED", 1, ["p1"], order_id="O1",
              detail="source 'erp' is not authorized for PickConfirmed (allowed: robotics, wms)"),
            M("OrderPicked", 2, ["p2"], lines=[picked_line(1, "A", 2, 2)]),
        ],
        id="rule2-pick-from-erp-is-not-authorized-and-changes-nothing",
    ),
    pytest.param(
        [scan("s1", 0, source="mes")],
        [X("SOURCE_NOT_AUTHORIZED", 0, ["s1"], order_id=None)],
        id="rule2-unknown-source-is-not-authorized",
    ),
    pytest.param(
        [tote("t1", 0, source="wms", order_id="O1")],
        [X("SOURCE_NOT_AUTHORIZED", 0, ["t1"], order_id="O1")],
        id="rule2-telemetry-from-wrong-source-is-not-authorized",
    ),
    pytest.param(
        [release("r0", 0, source="wms"), release("r1", 1)],
        [X("SOURCE_NOT_AUTHORIZED", 0, ["r0"], order_id="O1"), M("OrderAccepted", 1, ["r1"], version=1)],
        id="rule2-release-from-wms-is-not-authorized-and-changes-nothing",
    ),
    pytest.param(
        [pick("p1", 0, qty=2), scan("s1", 2 * HOLD, source="mes"), release("r1", 60)],
        [
            X("SOURCE_NOT_AUTHORIZED", 2 * HOLD, ["s1"]),
            M("OrderAccepted", 60, ["r1"]),
            M("OrderPicked", 0, ["p1"]),
        ],
        id="rule2-unauthorized-event-does-not-move-the-watermark",
    ),
    pytest.param(
        [release("r1"), change("c1", 1, [L(1, "A", 1)], source="wms"), pick("p1", 2, qty=2)],
        [ACCEPTED_V1,
         X("SOURCE_NOT_AUTHORIZED", 1, ["c1"], order_id="O1",
           detail="source 'wms' is not authorized for OrderChanged (allowed: erp)"),
         M("OrderPicked", 2, ["p1"], lines=[picked_line(1, "A", 2, 2)], short=False)],
        id="rule2-order-changed-from-wms-is-not-authorized-and-changes-nothing",
    ),
    pytest.param(
        [release("r1"), cancel("x1", 1, source="wms"), pick("p1", 2, qty=2)],
        [ACCEPTED_V1,
         X("SOURCE_NOT_AUTHORIZED", 1, ["x1"], order_id="O1",
           detail="source 'wms' is not authorized for OrderCancelled (allowed: erp)"),
         M("OrderPicked", 2, ["p1"])],
        id="rule2-order-cancelled-from-wms-is-not-authorized-and-changes-nothing",
    ),
    pytest.param(
        [release("r1"), short("s1", 1, source="robotics"), pick("p1", 2, qty=2)],
        [ACCEPTED_V1,
         X("SOURCE_NOT_AUTHORIZED", 1, ["s1"], order_id="O1",
           detail="source 'robotics' is not authorized for LineShortClosed (allowed: wms)"),
         M("OrderPicked", 2, ["p1"], lines=[picked_line(1, "A", 2, 2)], short=False)],
        id="rule2-line-short-closed-from-robotics-is-not-authorized-and-changes-nothing",
    ),
    pytest.param(
        [*shipped_order(), ret("t1", 10, source="robotics"), ret("t2", 11, source="carrier"), ret("t3", 12)],
        [*SHIPPED,
         X("SOURCE_NOT_AUTHORIZED", 10, ["t1"], order_id="O1",
           detail="source 'robotics' is not authorized for ReturnReceived (allowed: wms)"),
         X("SOURCE_NOT_AUTHORIZED", 11, ["t2"], order_id="O1"),
         M("ReturnReceived", 12, ["t3"], rma_id="R1", sku="A")],
        id="rule2-return-received-from-robotics-or-carrier-is-not-authorized-and-changes-nothing",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=2, source="robotics"), pack("k1", 2, source="robotics"),
         dispatch("d1", 3, source="wms")],
        [ACCEPTED_V1, M("OrderPicked", 1), M("OrderPacked", 2), M("ShipmentConfirmed", 3)],
        id="rule2-every-authorized-source-is-accepted",
    ),
]

RULE3 = [
    pytest.param(
        [release("r1"), pack("k1", 1, package="P1"), change("c1", 2, [L(1, "A", 2)]), pick("p1", 3, qty=2),
         pack("k2", 4, package="P2")],
        [ACCEPTED_V1, M("OrderAccepted", 2, ["c1"], version=2), M("OrderPicked", 3, ["p1"]),
         M("OrderPacked", 4, ["k2"], package_ids=["P2"])],
        id="rule3-new-version-clears-earlier-packs-and-package-ids",
    ),
    pytest.param(
        [release("r1"), change("c1", 1, [L(1, "A", 1), L(2, "B", 1)]), pick("p1", 2, line=2, sku="B"),
         pick("p2", 3)],
        [
            ACCEPTED_V1,
            M("OrderAccepted", 1, ["c1"], version=2, lines=[L(1, "A", 1), L(2, "B", 1)]),
            M("OrderPicked", 3, ["p1", "p2"], lines=[picked_line(1, "A", 1, 1), picked_line(2, "B", 1, 1)]),
        ],
        id="rule3-changed-before-picking-is-a-new-version",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1), change("c1", 2, [L(1, "A", 5)]), pick("p2", 3)],
        [
            ACCEPTED_V1,
            X("AUTHORITY_CONFLICT", 2, ["c1"], order_id="O1"),
            M("OrderPicked", 3, ["p1", "p2"], lines=[picked_line(1, "A", 2, 2)]),
        ],
        id="rule3-changed-after-pick-is-authority-conflict",
    ),
    pytest.param(
        [release("r1"), cancel("x1", 1)],
        [ACCEPTED_V1],
        id="rule3-cancelled-before-picking-ends-silently",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1), cancel("x1", 2), pick("p2", 3)],
        [ACCEPTED_V1, X("AUTHORITY_CONFLICT", 2, ["x1"], order_id="O1"), M("OrderPicked", 3, ["p1", "p2"])],
        id="rule3-cancelled-after-pick-is-authority-conflict",
    ),
    pytest.param(
        [release("r1", lines=[L(1, "A", 2), L(2, "B", 1)]), short("s1", 1, line=2),
         change("c1", 2, [L(1, "A", 1)])],
        [ACCEPTED_V1, M("OrderAccepted", 2, ["c1"], version=2)],
        id="rule3-short-close-alone-does-not-start-picking",
    ),
    pytest.param(
        [release("r1", lines=[L(1, "A", 2), L(2, "B", 1)]), pick("p1", 1, qty=3),
         change("c1", 2, [L(1, "A", 1)])],
        [ACCEPTED_V1, X("OVER_PICK", 1, ["p1"]), X("AUTHORITY_CONFLICT", 2, ["c1"])],
        id="rule3-over-pick-starts-picking",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, line=9), change("c1", 2, [L(1, "A", 1)])],
        [ACCEPTED_V1, X("INVALID_EVENT", 1, ["p1"], detail="order has no line_no 9"),
         M("OrderAccepted", 2, ["c1"], version=2)],
        id="rule3-rejected-pick-does-not-start-picking",
    ),
    # An order whose every line is short-closed before any pick reaches OrderPicked with
    # nothing picked; picking never started, so its content is still the ERP's.
    pytest.param(
        [release("r1"), short("s1", 1), change("c1", 2, [L(1, "A", 3)])],
        [ACCEPTED_V1, M("OrderPicked", 1, ["s1"], short=True, lines=[picked_line(1, "A", 2, 0)]),
         M("OrderAccepted", 2, ["c1"], order_id="O1", version=2, lines=[L(1, "A", 3)])],
        id="rule3-changed-after-order-picked-with-nothing-picked-is-a-new-version",
    ),
    pytest.param(
        [release("r1"), short("s1", 1), cancel("x1", 2), pick("p1", 3), dispatch("d1", 4)],
        [ACCEPTED_V1, M("OrderPicked", 1, ["s1"], short=True),
         X("ORDER_CANCELLED", 3, ["p1"], order_id="O1"), X("ORDER_CANCELLED", 4, ["d1"], order_id="O1")],
        id="rule3-cancelled-after-order-picked-with-nothing-picked-ends-silently",
    ),
    pytest.param(
        [release("r1"), short("s1", 1), pick("p1", 2, qty=2), change("c1", 3, [L(1, "A", 1)]), cancel("x1", 4)],
        [ACCEPTED_V1, M("OrderPicked", 1, ["s1"]),
         X("OVER_PICK", 2, ["p1"], detail="order already picked; pick not counted"),
         M("OrderAccepted", 3, ["c1"], version=2)],
        id="rule3-pick-after-order-picked-with-nothing-picked-does-not-start-picking",
    ),
    pytest.param(
        [short("s1", 1), change("c1", 2, [L(1, "A", 3)]), release("r1", 3)],
        [M("OrderAccepted", 3, ["r1"], version=1), M("OrderPicked", 1, ["s1"], short=True),
         M("OrderAccepted", 2, ["c1"], version=2, lines=[L(1, "A", 3)])],
        id="rule3-held-change-after-held-short-closes-is-a-new-version",
    ),
    # Decision (docs/rules.md, rule 3): the new version restarts the content, but the order
    # stays ended at its one OrderPicked (rule 1): no second OrderPicked, no OrderPacked.
    pytest.param(
        [release("r1"), short("s1", 1), change("c1", 2, [L(2, "B", 1)]), pick("p1", 3, line=1),
         pick("p2", 4, line=2, sku="B"), short("s2", 5, line=2), pack("k1", 6, items=[(2, 1)]),
         dispatch("d1", 7), change("c2", 8, [L(2, "B", 2)])],
        [ACCEPTED_V1, M("OrderPicked", 1, ["s1"], short=True),
         M("OrderAccepted", 2, ["c1"], version=2, lines=[L(2, "B", 1)]),
         X("INVALID_EVENT", 3, ["p1"], detail="order has no line_no 1"),
         X("OVER_PICK", 4, ["p2"], detail="order already picked; pick not counted"),
         X("NOT_PACKED", 7, ["d1"], detail="order has nothing picked"),
         M("OrderAccepted", 8, ["c2"], version=3, lines=[L(2, "B", 2)])],
        id="rule3-new-version-after-order-picked-with-nothing-picked-is-not-picked-again",
    ),
    pytest.param(
        [release("r1", lines=[L(1, "A", 2), L(2, "B", 1)]), short("s1", 1, line=2),
         change("c1", 2, [L(1, "A", 2), L(2, "B", 1)]), pick("p1", 3, qty=2), pick("p2", 4, line=2, sku="B")],
        [ACCEPTED_V1, M("OrderAccepted", 2, ["c1"], version=2), M("OrderPicked", 4, ["p1", "p2"], short=False)],
        id="rule3-new-version-clears-earlier-short-closes",
    ),
]

RULE4 = [
    pytest.param(
        [pick("p1", 1, qty=2), release("r1", 2)],
        [M("OrderAccepted", 2, ["r1"]), M("OrderPicked", 1, ["p1"])],
        id="rule4-execution-event-before-release-is-held-then-applied",
    ),
    pytest.param(
        [pick("p2", 30), pick("p1", 20, qty=2), release("r1", 40)],
        [M("OrderAccepted", 40, ["r1"]), M("OrderPicked", 20, ["p1"]), X("OVER_PICK", 30, ["p2"])],
        id="rule4-held-events-applied-in-occurred-at-order",
    ),
    pytest.param(
        [pick("pa", 10, qty=2), pick("pb", 10, qty=2), release("r1", 20)],
        [M("OrderAccepted", 20), M("OrderPicked", 10, ["pa"]), X("OVER_PICK", 10, ["pb"])],
        id="rule4-held-ties-keep-arrival-order",
    ),
    pytest.param(
        [pick("pb", 10, qty=2), pick("pa", 10, qty=2), release("r1", 20)],
        [M("OrderAccepted", 20), M("OrderPicked", 10, ["pb"]), X("OVER_PICK", 10, ["pa"])],
        id="rule4-held-ties-keep-arrival-order-not-event-id-order",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=2), dispatch("d1", 2), dispatch("d2", 100, shipment="S2"),
         scan("s1", 2 + HOLD), pack("k1", 2 + HOLD + 1)],
        [ACCEPTED_V1, M("OrderPicked", 1), X("NOT_PACKED", 2, ["d1"]), M("OrderPacked", 2 + HOLD + 1),
         M("ShipmentConfirmed", 100, ["d2"], shipment_id="S2"), END],
        id="rule4-a-dispatch-not-yet-due-keeps-waiting-when-another-expires",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=2), dispatch("d1", 2), dispatch("d2", 100, shipment="S2"),
         scan("s1", 2 + HOLD), scan("s2", 100 + HOLD)],
        [ACCEPTED_V1, M("OrderPicked", 1), X("NOT_PACKED", 2, ["d1"]), X("NOT_PACKED", 100, ["d2"]), END],
        id="rule4-each-waiting-dispatch-expires-at-its-own-deadline",
    ),
    pytest.param(
        [pick("p1", 100, qty=2), release("r1", 101), pick("p2", 200, order="O2"), scan("s1", 200 + HOLD)],
        [M("OrderAccepted", 101, ["r1"]), M("OrderPicked", 100, ["p1"]),
         X("UNKNOWN_ORDER", 200, ["p2"], order_id="O2"), END],
        id="rule4-a-released-hold-does-not-delay-other-orders-expiry",
    ),
    pytest.param(
        [pick("p1", 0, order="O9"), scan("s1", HOLD)],
        [X("UNKNOWN_ORDER", 0, ["p1"], order_id="O9"), END],
        id="rule4-unreleased-order-yields-unknown-order-after-hold-window",
    ),
    pytest.param(
        [pick("p1", 0, order="O9"), scan("s1", HOLD - 0.001)],
        [END, X("UNKNOWN_ORDER", 0, ["p1"], order_id="O9")],
        id="rule4-unreleased-order-is-held-for-the-whole-hold-window",
    ),
    pytest.param(
        [pick("p1", 0, order="O9"), pick("p2", 300, order="O9"), scan("s1", HOLD)],
        [X("UNKNOWN_ORDER", 300, ["p1", "p2"], order_id="O9",
           detail="no OrderReleased within the hold window; 2 held event(s) dropped")],
        id="rule4-unknown-order-drops-every-held-event",
    ),
    pytest.param(
        [pick("p1", 0, qty=2), scan("s1", HOLD), release("r1", HOLD + 50)],
        [X("UNKNOWN_ORDER", 0, ["p1"]), M("OrderAccepted", HOLD + 50, ["r1"])],
        id="rule4-release-after-expiry-starts-without-the-dropped-events",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=2), dispatch("d1", 2), pack("k1", 3)],
        [ACCEPTED_V1, M("OrderPicked", 1), M("OrderPacked", 3, ["k1"]), M("ShipmentConfirmed", 2, ["d1"])],
        id="rule4-dispatch-before-packed-is-held-until-packed",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=2), dispatch("d1", 2), scan("s1", 2 + HOLD)],
        [ACCEPTED_V1, M("OrderPicked", 1),
         X("NOT_PACKED", 2, ["d1"], order_id="O1",
           detail="order not packed within the hold window; dispatch dropped"), END],
        id="rule4-dispatch-never-packed-is-not-packed-after-the-hold-window",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=2), dispatch("d1", 2), scan("s1", 2 + HOLD - 0.001)],
        [ACCEPTED_V1, M("OrderPicked", 1), END, X("NOT_PACKED", 2, ["d1"], order_id="O1")],
        id="rule4-dispatch-waits-for-packed-for-the-whole-hold-window",
    ),
    pytest.param(
        [change("c1", 5, [L(1, "A", 3)]), release("r1", 10)],
        [M("OrderAccepted", 10, ["r1"], version=1), M("OrderAccepted", 5, ["c1"], version=2)],
        id="rule4-held-order-changed-applies-after-the-release",
    ),
    pytest.param(
        [cancel("x1", 5), pick("p1", 6), release("r1", 10)],
        [M("OrderAccepted", 10, ["r1"]), X("ORDER_CANCELLED", 6, ["p1"], order_id="O1")],
        id="rule4-held-order-cancelled-applies-after-the-release",
    ),
    pytest.param(
        [dispatch("d1", 1), release("r1", 2), pick("p1", 3, qty=2), pack("k1", 4)],
        [M("OrderAccepted", 2), M("OrderPicked", 3), M("OrderPacked", 4), M("ShipmentConfirmed", 1, ["d1"])],
        id="rule4-dispatch-held-before-release-then-waits-for-packed",
    ),
]

RULE5 = [
    pytest.param(
        [release("r1", lines=[L(1, "A", 3)]), pick("p1", 1), pick("p2", 2, qty=2)],
        [ACCEPTED_V1, M("OrderPicked", 2, ["p1", "p2"], lines=[picked_line(1, "A", 3, 3)], short=False)],
        id="rule5-picked-qty-is-summed-per-line",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=5)],
        [
            ACCEPTED_V1,
            X("OVER_PICK", 1, ["p1"], order_id="O1",
              detail="line 1: pick of 5 exceeds the open qty 2 (ordered 2); only the ordered qty counts"),
            M("OrderPicked", 1, ["p1"], lines=[picked_line(1, "A", 2, 2)], short=False),
        ],
        id="rule5-over-pick-counts-only-the-ordered-qty",
    ),
    pytest.param(
        [release("r1", lines=[L(1, "A", 2), L(2, "B", 1)]), pick("p1", 1), pick("p2", 2, qty=2)],
        [ACCEPTED_V1, X("OVER_PICK", 2, ["p2"])],
        id="rule5-over-pick-after-a-partial-pick",
    ),
    pytest.param(
        [release("r1", lines=[L(1, "A", 2), L(2, "B", 1)]), pick("p1", 1, qty=2), pick("p2", 2)],
        [ACCEPTED_V1, X("OVER_PICK", 2, ["p2"], order_id="O1",
                        detail="line 1: pick of 1 exceeds the open qty 0 (ordered 2); only the ordered qty counts")],
        id="rule5-over-pick-on-a-line-already-picked-in-full",
    ),
    pytest.param(
        [release("r1", lines=[L(1, "A", 2), L(2, "B", 3)]), pick("p1", 1, qty=2),
         pick("p2", 2, line=2, sku="B"), short("s1", 3, line=2)],
        [ACCEPTED_V1, M("OrderPicked", 3, ["p1", "p2", "s1"],
                        lines=[picked_line(1, "A", 2, 2), picked_line(2, "B", 3, 1)], short=True)],
        id="rule5-short-closed-line-completes-the-order-short",
    ),
    pytest.param(
        [release("r1", lines=[L(1, "A", 2), L(2, "B", 1)]), short("s1", 1), pick("p1", 2, qty=2),
         pick("p2", 3, line=2, sku="B")],
        [ACCEPTED_V1, M("OrderPicked", 3, ["s1", "p1", "p2"],
                        lines=[picked_line(1, "A", 2, 2), picked_line(2, "B", 1, 1)], short=False)],
        id="rule5-order-is-short-when-picked-is-below-ordered-not-when-a-line-was-short-closed",
    ),
]

RULE6 = [
    pytest.param(
        [stock("s1", 0, 5), stock("s2", 60, -2)],
        [M("InventoryAdjusted", 300, ["s1", "s2"], sku="A", location="L1", net_delta=3, event_count=2,
           window_start=ts(0), window_end=ts(300))],
        id="rule6-deltas-are-summed-in-a-tumbling-window",
    ),
    pytest.param([stock("s1", 0, 5), stock("s2", 60, -5)], [], id="rule6-window-netting-to-zero-is-silent"),
    pytest.param(
        [stock("s1", 10, 1, sku="B"), stock("s2", 20, 2, sku="A"), stock("s3", 310, 4, sku="A"),
         stock("s4", 20, 8, location="L2")],
        [
            M("InventoryAdjusted", 300, ["s1"], sku="B", net_delta=1),
            M("InventoryAdjusted", 300, ["s2"], sku="A", location="L1", net_delta=2, window_start=ts(0)),
            M("InventoryAdjusted", 300, ["s4"], sku="A", location="L2", net_delta=8),
            M("InventoryAdjusted", 600, ["s3"], sku="A", net_delta=4, window_start=ts(300)),
        ],
        id="rule6-windows-are-per-key-and-aligned-to-the-epoch-closing-in-opening-order",
    ),
    pytest.param(
        [stock("s1", 0, 5), scan("x", 360), stock("s2", 100, 1)],
        [M("InventoryAdjusted", 300, ["s1"], net_delta=5),
         X("INVALID_EVENT", 100, ["s2"], detail="late", order_id=None)],
        id="rule6-event-later-than-the-grace-is-late-and-not-counted",
    ),
    pytest.param(
        [stock("s1", 0, 5), scan("x", 359.999), stock("s2", 299, 1)],
        [M("InventoryAdjusted", 300, ["s1", "s2"], net_delta=6, event_count=2)],
        id="rule6-event-within-the-grace-counts",
    ),
]

RULE7 = [
    pytest.param(
        [*shipped_order(), ret("t1", 10)],
        [*SHIPPED, M("ReturnReceived", 10, ["t1"], rma_id="R1", order_id="O1", sku="A", qty=1,
                     disposition="restock")],
        id="rule7-return-for-a-shipped-order",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=2), pack("k1", 2), ret("t1", 3)],
        [ACCEPTED_V1, M("OrderPicked", 1), M("OrderPacked", 2),
         X("RETURN_NOT_SHIPPED", 3, ["t1"], order_id="O1", detail="order has no ShipmentConfirmed")],
        id="rule7-return-before-shipment-is-return-not-shipped",
    ),
    pytest.param(
        [ret("t1", 0, order="O9"), release("r9", 1, order="O9")],
        [X("RETURN_NOT_SHIPPED", 0, ["t1"], order_id="O9", detail="order is unknown"), M("OrderAccepted", 1, ["r9"])],
        id="rule7-return-for-an-unknown-order-at-once",
    ),
    pytest.param(
        [pick("p1", 0, order="O9"), ret("t1", 1, order="O9"), release("r9", 2, order="O9")],
        [X("RETURN_NOT_SHIPPED", 1, ["t1"], order_id="O9", detail="order is unknown"), M("OrderAccepted", 2, ["r9"])],
        id="rule7-return-for-an-unreleased-order-at-once",
    ),
]

RULE8 = [
    pytest.param(
        [b"not json"],
        [X("INVALID_EVENT", None, [], order_id=None, warehouse_id=None), DL("undecodable")],
        id="rule8-undecodable-bytes",
    ),
    pytest.param(
        [b"[1, 2]"],
        [X("INVALID_EVENT", None, []), DL("expected an object")],
        id="rule8-json-that-is-not-an-object",
    ),
    pytest.param(
        [pick("p1", 1, location=DROP)],
        [X("INVALID_EVENT", 1, ["p1"], order_id="O1", detail="missing field 'location'"),
         DL("missing field 'location'")],
        id="rule8-missing-field",
    ),
    pytest.param(
        [pick("p1", 1, qty="2")],
        [X("INVALID_EVENT", 1, ["p1"], detail="field 'qty' must be an integer, got str"), DL("qty")],
        id="rule8-wrong-type",
    ),
    pytest.param(
        [pick("p1", 1, qty=0)],
        [X("INVALID_EVENT", 1, ["p1"], detail="field 'qty' must be > 0, got 0"), DL("qty")],
        id="rule8-qty-not-positive-on-a-pick",
    ),
    pytest.param(
        [pick("p1", 1, qty=True)],
        [X("INVALID_EVENT", 1, ["p1"]), DL("must be an integer, got bool")],
        id="rule8-bool-is-not-an-integer",
    ),
    pytest.param(
        [ev("e1", "OrderShipped", 1)],
        [X("INVALID_EVENT", 1, ["e1"]), DL("field 'type' must be one of")],
        id="rule8-unknown-event-type",
    ),
    pytest.param(
        [*shipped_order(), ret("t1", 10, disposition="resell")],
        [*SHIPPED, X("INVALID_EVENT", 10, ["t1"]), DL("disposition")],
        id="rule8-bad-enum-value",
    ),
    pytest.param(
        [scan("s1", 0, occurred_at="2026-11-27T10:00:00")],
        [X("INVALID_EVENT", None, ["s1"]), DL("without UTC offset")],
        id="rule8-timestamp-without-offset",
    ),
    pytest.param(
        [release("r1", lines=[])],
        [X("INVALID_EVENT", 0, ["r1"], detail="field 'lines' must not be empty"), DL("lines")],
        id="rule8-empty-lines",
    ),
    pytest.param(
        [release("r1", lines=[L(1, "A", 1), L(1, "B", 1)])],
        [X("INVALID_EVENT", 0, ["r1"]), DL("duplicate line_no 1")],
        id="rule8-duplicate-line-numbers",
    ),
    pytest.param(
        [scan("s1", 0, barcode=DROP)],
        [X("INVALID_EVENT", 0, ["s1"], detail="missing field 'barcode'"), DL("barcode")],
        id="rule8-applies-to-telemetry",
    ),
    pytest.param(
        [scan("s1", 0, source=5)],
        [X("INVALID_EVENT", 0, [], detail="field 'source' must be a string"), DL("source")],
        id="rule8-source-of-wrong-type-is-bad-input-not-authority",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=0), pick("p1", 2, qty=2)],
        [ACCEPTED_V1, X("INVALID_EVENT", 1, ["p1"]), DL("qty"), M("OrderPicked", 2, ["p1"])],
        id="rule8-rejected-record-is-not-recorded-for-dedup",
    ),
    pytest.param(
        [pick("p1", 1, qty=0), pick("p1", 1, qty=0), b"garbage", b"garbage"],
        [X("INVALID_EVENT", 1, ["p1"]), DL("qty"), DL("qty"), X("INVALID_EVENT", None, []),
         DL("undecodable"), DL("undecodable")],
        id="rule8-redelivered-bad-record-gives-one-exception-and-a-dead-letter-each",
    ),
    pytest.param(
        [scan("s1", 100), b"{"],
        [X("INVALID_EVENT", 100, []), DL("undecodable")],
        id="rule8-undecodable-record-carries-the-watermark",
    ),
    pytest.param(
        [pick("p1", 0, qty=2), pick("p2", 2 * HOLD, qty=0), release("r1", 60)],
        [X("INVALID_EVENT", 2 * HOLD, ["p2"]), DL("qty"), M("OrderAccepted", 60), M("OrderPicked", 0, ["p1"])],
        id="rule8-bad-record-does-not-move-the-watermark",
    ),
]

RULE9 = [
    pytest.param([stock("s1", 0, 1)], [M("InventoryAdjusted", 300, ["s1"])], id="rule9-end-of-input-closes-open-windows"),
    pytest.param(
        [pick("p1", 0, order="O9")],
        [X("UNKNOWN_ORDER", 0, ["p1"], order_id="O9")],
        id="rule9-end-of-input-expires-held-orders",
    ),
    pytest.param(
        [release("r1"), pick("p1", 1, qty=2), dispatch("d1", 2)],
        [ACCEPTED_V1, M("OrderPicked", 1), X("NOT_PACKED", 2, ["d1"])],
        id="rule9-end-of-input-ends-waiting-dispatches",
    ),
    pytest.param(
        [stock("s1", 0, 1), pick("p1", 10, order="O9"), stock("s2", 20, 2, sku="B")],
        [X("UNKNOWN_ORDER", 10, ["p1"]), M("InventoryAdjusted", 300, ["s1"]), M("InventoryAdjusted", 300, ["s2"])],
        id="rule9-end-of-input-emits-holds-then-windows",
    ),
]


# The contract's authority column, written out here (not read from app.core.model) so that
# a change of the core's table fails a test.
CONTRACT_AUTHORITY = {
    "OrderReleased": {"erp"},
    "OrderChanged": {"erp"},
    "OrderCancelled": {"erp"},
    "ItemScanned": {"wms", "robotics", "conveyor"},
    "ToteConveyed": {"conveyor"},
    "PickConfirmed": {"wms", "robotics"},
    "LineShortClosed": {"wms"},
    "PackConfirmed": {"wms", "robotics"},
    "ShipmentDispatched": {"wms", "carrier"},
    "StockAdjusted": {"wms", "robotics"},
    "ReturnReceived": {"wms"},
}
VALID = {
    "OrderReleased": release("e1"),
    "OrderChanged": change("e1", 0, [L(1, "A", 1)]),
    "OrderCancelled": cancel("e1", 0),
    "ItemScanned": scan("e1", 0),
    "ToteConveyed": tote("e1", 0),
    "PickConfirmed": pick("e1", 0),
    "LineShortClosed": short("e1", 0),
    "PackConfirmed": pack("e1", 0),
    "ShipmentDispatched": dispatch("e1", 0),
    "StockAdjusted": stock("e1", 0, 1),
    "ReturnReceived": ret("e1", 0),
}


@pytest.mark.parametrize("source", ["erp", "wms", "robotics", "conveyor", "carrier", "mes"])
@pytest.mark.parametrize("kind", sorted(CONTRACT_AUTHORITY))
def test_rule2_every_type_and_source_against_the_contracts_authority_column(kind: str, source: str) -> None:
    allowed = CONTRACT_AUTHORITY[kind]
    out = run([{**VALID[kind], "source": source}])
    codes = [o.body.get("code") for o in out if isinstance(o, Milestone)]
    if source in allowed:
        assert "SOURCE_NOT_AUTHORIZED" not in codes
        return
    order_id = None if kind in ("ItemScanned", "ToteConveyed", "StockAdjusted") else "O1"
    detail = f"source {source!r} is not authorized for {kind} (allowed: {', '.join(sorted(allowed))})"
    assert [(o.type, o.event_ids, o.body) for o in out if isinstance(o, Milestone)] == [
        ("SyncException", ("e1",), {"code": "SOURCE_NOT_AUTHORIZED", "order_id": order_id, "detail": detail})
    ]
    assert len(out) == 1  # no dead letter, nothing else


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        pytest.param([pick("p1", 0, order="O9"), scan("s1", 59.999)], [END, X("UNKNOWN_ORDER", 0, ["p1"])],
                     id="rule4-held-for-the-configured-hold-window"),
        pytest.param([pick("p1", 0, order="O9"), scan("s1", 60)], [X("UNKNOWN_ORDER", 0, ["p1"]), END],
                     id="rule4-unknown-order-after-the-configured-hold-window"),
        pytest.param([scan("s1", 60), pick("p1", 0, order="O9")], [X("UNKNOWN_ORDER", 0, ["p1"]), END],
                     id="rule4-late-hold-expires-at-once-with-the-configured-hold-window"),
        pytest.param([release("r1"), pick("p1", 1, qty=2), dispatch("d1", 2), scan("s1", 62)],
                     [ACCEPTED_V1, M("OrderPicked", 1), X("NOT_PACKED", 2, ["d1"]), END],
                     id="rule4-dispatch-not-packed-after-the-configured-hold-window"),
    ],
)
def test_rule4_hold_window_is_a_setting(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected, settings=CoreSettings(hold_window_ms=60_000))


@pytest.mark.parametrize(("records", "expected"), RULE1)
def test_rule1_deduplication(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected)


@pytest.mark.parametrize(("records", "expected"), RULE2)
def test_rule2_authority_by_source(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected)


@pytest.mark.parametrize(("records", "expected"), RULE3)
def test_rule3_authority_by_stage(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected)


@pytest.mark.parametrize(("records", "expected"), RULE4)
def test_rule4_out_of_order(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected)


@pytest.mark.parametrize(("records", "expected"), RULE5)
def test_rule5_picking(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected)


@pytest.mark.parametrize(("records", "expected"), RULE6)
def test_rule6_inventory(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected)


@pytest.mark.parametrize(("records", "expected"), RULE7)
def test_rule7_returns(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected)


@pytest.mark.parametrize(("records", "expected"), RULE8)
def test_rule8_bad_input(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected)


@pytest.mark.parametrize(("records", "expected"), RULE9)
def test_rule9_end_of_input(records: list[Any], expected: list[dict[str, Any]]) -> None:
    check(records, expected)
