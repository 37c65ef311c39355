"""Tiny builders for contract events and a projection of engine output for exact asserts.

Times are seconds after T0 (2026-11-27T10:00:00.000Z, aligned to the 5-minute windows).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from app.core.engine import Engine
from app.core.model import CoreSettings, DeadLetter, Milestone
from app.core.timeutil import format_ts, parse_ts

T0 = parse_ts("2026-11-27T10:00:00.000Z")
MIN = 60
HOLD = 15 * MIN
DROP = object()  # field value meaning "leave the field out"


def ts(t: float) -> str:
    return format_ts(T0 + round(t * 1000))


def ms(t: float) -> int:
    return T0 + round(t * 1000)


_SOURCE = {
    "OrderReleased": "erp",
    "OrderChanged": "erp",
    "OrderCancelled": "erp",
    "ItemScanned": "wms",
    "ToteConveyed": "conveyor",
    "PickConfirmed": "wms",
    "LineShortClosed": "wms",
    "PackConfirmed": "wms",
    "ShipmentDispatched": "carrier",
    "StockAdjusted": "wms",
    "ReturnReceived": "wms",
}


def ev(eid: str, kind: str, t: float = 0, **fields: Any) -> dict[str, Any]:
    """An event; any field may be overridden, or left out with ``DROP``."""
    d: dict[str, Any] = {
        "event_id": eid,
        "type": kind,
        "occurred_at": ts(t),
        "source": _SOURCE.get(kind, "wms"),
        "warehouse_id": "W1",
    }
    d.update(fields)
    return {k: v for k, v in d.items() if v is not DROP}


def L(line_no: int, sku: str, qty: int) -> dict[str, Any]:
    return {"line_no": line_no, "sku": sku, "qty": qty}


def _with(defaults: dict[str, Any], kw: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **kw}


def release(eid: str, t: float = 0, order: str = "O1", lines: Any = None, **kw: Any) -> dict[str, Any]:
    return ev(eid, "OrderReleased", t, **_with({"order_id": order, "lines": [L(1, "A", 2)] if lines is None else lines}, kw))


def change(eid: str, t: float, lines: Any, order: str = "O1", **kw: Any) -> dict[str, Any]:
    return ev(eid, "OrderChanged", t, **_with({"order_id": order, "lines": lines}, kw))


def cancel(eid: str, t: float, order: str = "O1", **kw: Any) -> dict[str, Any]:
    return ev(eid, "OrderCancelled", t, **_with({"order_id": order}, kw))


def pick(
    eid: str, t: float, line: int = 1, qty: int = 1, sku: str = "A", order: str = "O1", **kw: Any
) -> dict[str, Any]:
    base = {"order_id": order, "line_no": line, "sku": sku, "qty": qty, "location": "L1"}
    return ev(eid, "PickConfirmed", t, **_with(base, kw))


def short(eid: str, t: float, line: int = 1, order: str = "O1", **kw: Any) -> dict[str, Any]:
    return ev(eid, "LineShortClosed", t, **_with({"order_id": order, "line_no": line}, kw))


def pack(
    eid: str, t: float, items: Iterable[tuple[int, int]] = ((1, 2),), package: str = "P1",
    order: str = "O1", **kw: Any,
) -> dict[str, Any]:
    base = {
        "order_id": order,
        "package_id": package,
        "items": [{"line_no": n, "qty": q} for n, q in items],
    }
    return ev(eid, "PackConfirmed", t, **_with(base, kw))


def dispatch(eid: str, t: float, order: str = "O1", shipment: str = "S1", **kw: Any) -> dict[str, Any]:
    base = {
        "order_id": order,
        "shipment_id": shipment,
        "carrier": "UPS",
        "tracking_no": "1Z1",
        "package_ids": ["P1"],
    }
    return ev(eid, "ShipmentDispatched", t, **_with(base, kw))


def stock(eid: str, t: float, delta: int, sku: str = "A", location: str = "L1", **kw: Any) -> dict[str, Any]:
    base = {"sku": sku, "location": location, "delta": delta, "reason": "count"}
    return ev(eid, "StockAdjusted", t, **_with(base, kw))


def ret(
    eid: str, t: float, order: str = "O1", rma: str = "R1", sku: str = "A", qty: int = 1,
    disposition: str = "restock", **kw: Any,
) -> dict[str, Any]:
    base = {"order_id": order, "rma_id": rma, "sku": sku, "qty": qty, "disposition": disposition}
    return ev(eid, "ReturnReceived", t, **_with(base, kw))


def scan(eid: str, t: float, **kw: Any) -> dict[str, Any]:
    return ev(eid, "ItemScanned", t, **_with({"barcode": "0001", "location": "L1", "device_id": "D1"}, kw))


def tote(eid: str, t: float, **kw: Any) -> dict[str, Any]:
    return ev(eid, "ToteConveyed", t, **_with({"tote_id": "T1", "scanner_id": "SC1", "lane": "3"}, kw))


def shipped_order(t: float = 0, order: str = "O1") -> list[dict[str, Any]]:
    """A released, picked, packed and shipped order (line 1: A x2)."""
    return [
        release(f"{order}-r", t, order=order),
        pick(f"{order}-p", t + 1, qty=2, order=order),
        pack(f"{order}-k", t + 2, order=order),
        dispatch(f"{order}-d", t + 3, order=order),
    ]


# -- running and projecting ----------------------------------------------------------

Record = dict[str, Any] | bytes


def run(
    records: Iterable[Record], finish: bool = True, engine: Engine | None = None,
    settings: CoreSettings = CoreSettings(),
) -> list[Milestone | DeadLetter]:
    eng = engine or Engine(settings)
    out: list[Milestone | DeadLetter] = []
    for r in records:
        out.extend(eng.process(r if isinstance(r, bytes) else orjson.dumps(r)))
    if finish:
        out.extend(eng.finish())
    return out


def M(kind: str, t: float | None, ids: Iterable[str] | None = None, **fields: Any) -> dict[str, Any]:
    """Expected milestone: type, occurred_at (s after T0), event_ids and chosen body fields."""
    d: dict[str, Any] = {"type": kind, "t": t}
    if ids is not None:
        d["event_ids"] = list(ids)
    d.update(fields)
    return d


def X(code: str, t: float | None, ids: Iterable[str] | None = None, **fields: Any) -> dict[str, Any]:
    """Expected SyncException."""
    return M("SyncException", t, ids, code=code, **fields)


END: dict[str, Any] = {"type": "end of input"}
"""In an expected list: where the end of input (``Engine.finish``, rule 9) comes. What is
listed before it was emitted by the records themselves (the watermark they moved), what
is listed after it only by the end-of-input flush. Cases named after a timing need it:
without it a hold that never expired in time would still pass, flushed at the end."""


def DL(contains: str = "") -> dict[str, Any]:
    """Expected dead letter whose reason contains ``contains``."""
    return {"type": "DeadLetter", "contains": contains}


def project(actual: Milestone | DeadLetter | dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """``actual`` reduced to the keys ``expected`` names (for a readable exact compare)."""
    if actual is END:
        return END
    if isinstance(actual, dict):
        raise TypeError(f"not an engine output: {actual!r}")
    if isinstance(actual, DeadLetter):
        c = expected.get("contains", "")
        return {"type": "DeadLetter", "contains": c if c in actual.reason else actual.reason}
    full = actual.to_dict()
    got: dict[str, Any] = {
        "type": actual.type,
        "t": None if actual.occurred_at is None else (actual.occurred_at - T0) / 1000,
    }
    for key in expected:
        if key == "event_ids":
            got[key] = list(actual.event_ids)
        elif key not in ("type", "t"):
            got[key] = full.get(key, "<absent>")
    return got


def check(records: Iterable[Record], expected: list[dict[str, Any]], **kw: Any) -> list[Milestone | DeadLetter]:
    """Run ``records`` and compare the output with ``expected`` exactly (in order, every
    output). With ``END`` in ``expected`` the end of input is marked in the output too."""
    if END in expected:
        engine = kw.pop("engine", None) or Engine(kw.pop("settings", CoreSettings()))
        out: list[Any] = run(records, finish=False, engine=engine, **kw)
        out = [*out, END, *engine.finish()]
    else:
        out = run(records, **kw)
    got = [project(a, e) for a, e in zip(out, expected, strict=False)]
    got += [project(a, {}) for a in out[len(expected):]]
    assert got == expected
    return out
