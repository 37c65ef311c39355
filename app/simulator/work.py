"""Warehouse work for orders the ERP released (the demo and the ERP tests).

Given OrderReleased events read from Kafka, emit what the warehouse does for each:
scans, picks (some split across robot and picker), tote conveying, one package,
dispatch with a carrier tracking number; plus a few stock adjustments per site
(a count correction and a relocation pair that nets to zero). Deterministic for a
seed; event time starts at ``start_ms`` and advances ``step_ms`` per event.

Optionally (the chaos load), named orders are **short-picked** (one line with 2 or more
ordered is picked short by at least one unit, at least one unit picked, then closed with
``LineShortClosed``; the package holds what was picked) and named orders are **returned**
(a ``ReturnReceived`` for part of one shipped line after the dispatch). Without them the
output is exactly what it always was.
"""
from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Iterator
from random import Random
from typing import Any

from app.core.keys import order_key
from app.core.timeutil import format_ts
from app.kafka.clients import partition_for

CARRIERS = ("DHL", "UPS", "DPD")
DISPOSITIONS = ("restock", "scrap", "inspect")


def _id(seed: int, *parts: object) -> str:
    return hashlib.sha256("|".join(map(str, (seed, *parts))).encode()).hexdigest()[:24]


class _Clock:
    def __init__(self, start_ms: int, step_ms: int) -> None:
        self.now, self.step = start_ms, step_ms

    def tick(self) -> str:
        self.now += self.step
        return format_ts(self.now)


def tracking_no(seed: int, order_id: str) -> str:
    """The carrier tracking number the simulated dispatch of ``order_id`` carries."""
    return "TRK" + str(int(_id(seed, "trk", order_id)[:12], 16))[:12]


def short_line(release: dict[str, Any], seed: int) -> tuple[int, int] | None:
    """(line_no, qty picked) of the line a short pick of this release leaves short, or None
    when no line has 2 or more ordered (a short pick always picks at least one unit)."""
    lines = [line for line in release["lines"] if int(line["qty"]) >= 2]
    if not lines:
        return None
    line = lines[int(_id(seed, "short", release["order_id"])[:4], 16) % len(lines)]
    qty = int(line["qty"])
    missing = 1 + int(_id(seed, "missing", release["order_id"])[:4], 16) % (qty - 1)
    return line["line_no"], qty - missing


def _order_work(release: dict[str, Any], seed: int, clock: _Clock, rng: Random, *, short: bool = False,
                returned: bool = False) -> Iterator[dict[str, Any]]:
    wh, order = release["warehouse_id"], release["order_id"]
    base = {"warehouse_id": wh, "order_id": order}
    tote = f"T-{_id(seed, 'tote', order)[:6]}"
    cut = short_line(release, seed) if short else None
    picked: dict[int, int] = {}
    for line in release["lines"]:
        loc = f"A-{int(_id(seed, 'loc', line['sku'])[:4], 16) % 40 + 1:02d}-01"
        yield {**base, "event_id": _id(seed, order, "scan", line["line_no"]), "type": "ItemScanned",
               "occurred_at": clock.tick(), "source": "wms", "barcode": line["sku"], "location": loc,
               "device_id": "RF-07", "tote_id": tote}
        qty = int(line["qty"])
        if cut is not None and cut[0] == line["line_no"]:
            qty = cut[1]
        picked[line["line_no"]] = qty
        parts = [qty] if qty < 2 or rng.random() < 0.6 else [qty // 2, qty - qty // 2]
        for n, part in enumerate(parts):
            yield {**base, "event_id": _id(seed, order, "pick", line["line_no"], n), "type": "PickConfirmed",
                   "occurred_at": clock.tick(), "source": "robotics" if n == 0 else "wms",
                   "line_no": line["line_no"], "sku": line["sku"], "qty": part, "location": loc, "tote_id": tote}
        if cut is not None and cut[0] == line["line_no"]:
            yield {**base, "event_id": _id(seed, order, "short", line["line_no"]), "type": "LineShortClosed",
                   "occurred_at": clock.tick(), "source": "wms", "line_no": line["line_no"]}
    yield {**base, "event_id": _id(seed, order, "convey"), "type": "ToteConveyed", "occurred_at": clock.tick(),
           "source": "conveyor", "tote_id": tote, "scanner_id": "SCN-M01", "lane": "PACK-1"}
    package = f"PKG-{_id(seed, 'pkg', order)[:8]}"
    yield {**base, "event_id": _id(seed, order, "pack"), "type": "PackConfirmed", "occurred_at": clock.tick(),
           "source": "wms", "package_id": package,
           "items": [{"line_no": line["line_no"], "qty": picked[line["line_no"]]} for line in release["lines"]],
           "weight_kg": round(0.4 * sum(picked.values()) + 0.2, 2)}
    carrier = release.get("carrier") or CARRIERS[int(_id(seed, "car", order)[:2], 16) % len(CARRIERS)]
    yield {**base, "event_id": _id(seed, order, "dispatch"), "type": "ShipmentDispatched", "occurred_at": clock.tick(),
           "source": "carrier", "shipment_id": f"SHP-{order}", "carrier": carrier,
           "tracking_no": tracking_no(seed, order), "package_ids": [package]}
    if returned:
        shipped = [line for line in release["lines"] if picked[line["line_no"]] > 0]
        line = shipped[int(_id(seed, "ret", order)[:4], 16) % len(shipped)]
        qty = 1 + int(_id(seed, "retqty", order)[:4], 16) % picked[line["line_no"]]
        yield {**base, "event_id": _id(seed, order, "return"), "type": "ReturnReceived", "occurred_at": clock.tick(),
               "source": "wms", "rma_id": f"RMA-{order}", "sku": line["sku"], "qty": qty,
               "disposition": DISPOSITIONS[int(_id(seed, "disp", order)[:2], 16) % len(DISPOSITIONS)]}


def _stock_work(wh: str, skus: list[str], seed: int, clock: _Clock) -> Iterator[dict[str, Any]]:
    """A count correction on the first SKU and a relocation (-n/+n, nets to 0) on the second."""
    base = {"warehouse_id": wh, "source": "wms"}
    if skus:
        yield {**base, "event_id": _id(seed, wh, "count", skus[0]), "type": "StockAdjusted", "occurred_at": clock.tick(),
               "sku": skus[0], "location": "A-01-01", "delta": -2, "reason": "cycle count"}
    if len(skus) > 1:
        for n, delta in enumerate((-3, 3)):
            yield {**base, "event_id": _id(seed, wh, "move", skus[1], n), "type": "StockAdjusted",
                   "occurred_at": clock.tick(), "sku": skus[1], "location": "A-02-01", "delta": delta,
                   "reason": "relocation"}


def warehouse_work(
    releases: Iterable[dict[str, Any]], *, seed: int, start_ms: int, step_ms: int = 200,
    short: Collection[str] = (), returned: Collection[str] = (),
) -> list[dict[str, Any]]:
    """Every event the warehouse emits for ``releases`` (OrderReleased dicts, or OrderChanged
    ones: the lines are the order's current lines), in time order. Orders in ``short`` are
    picked short (when a line allows it: ``short_line``), orders in ``returned`` partly
    come back after their dispatch."""
    rng = Random(seed)
    clock = _Clock(start_ms, step_ms)
    out: list[dict[str, Any]] = []
    skus: dict[str, list[str]] = {}
    for release in releases:
        order = release["order_id"]
        out.extend(_order_work(release, seed, clock, rng, short=order in short, returned=order in returned))
        site = skus.setdefault(release["warehouse_id"], [])
        site.extend(line["sku"] for line in release["lines"] if line["sku"] not in site)
    for wh, site_skus in skus.items():
        out.extend(_stock_work(wh, site_skus, seed, clock))
    return out


def watermark_flush(warehouse_id: str, at_ms: int, partitions: int, tag: str) -> list[tuple[bytes, dict[str, Any]]]:
    """One telemetry record at ``at_ms`` for every input partition, ``(key, event)``: it
    moves every partition's watermark, so every window and hold before it is decided
    (a worker has no end of input). Each names an order id chosen so that its key
    (``app.core.keys``) lands on the next partition not yet covered."""
    out: list[tuple[bytes, dict[str, Any]]] = []
    todo = set(range(partitions))
    n = 0
    while todo:
        order_id = f"FLUSH-{tag}-{n}"
        key = order_key(warehouse_id, order_id)
        partition = partition_for(key, partitions)
        n += 1
        if partition in todo:
            todo.discard(partition)
            out.append((key, {"event_id": f"flush-{tag}-{partition}", "type": "ItemScanned",
                              "occurred_at": format_ts(at_ms), "source": "wms", "warehouse_id": warehouse_id,
                              "order_id": order_id, "barcode": "FLUSH", "location": "DOCK", "device_id": "flush"}))
    return out
