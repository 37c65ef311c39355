"""Deterministic (seeded) warehouse trace for the golden test: a few thousand events over
two warehouses covering every rule, with out-of-order arrival, redeliveries and faults.

Regenerate the checked-in files (after verifying the rules by the rule tables) with:
    python tests/unit/core/core_tracegen.py --write
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import orjson

T0 = 1795773600000  # 2026-11-27T10:00:00.000Z
GOLDEN = Path(__file__).resolve().parents[2] / "golden"
TRACE = GOLDEN / "trace.ndjson"
MILESTONES = GOLDEN / "expected_milestones.ndjson"
DEAD_LETTERS = GOLDEN / "expected_dead_letters.ndjson"
SKUS = [f"SKU-{i:03d}" for i in range(40)]
LOCATIONS = [f"A-{i:02d}" for i in range(6)]
SECOND = 1000
MINUTE = 60 * SECOND


def _iso(ms: int) -> str:
    from app.core.timeutil import format_ts

    return format_ts(ms)


class _Trace:
    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.items: list[tuple[int, int, bytes]] = []  # (arrival ms, seq, raw line)
        self.n = 0

    def emit(self, kind: str, source: str, wh: str, at: int, arrive: int | None = None, **fields: Any) -> dict:
        self.n += 1
        d = {"event_id": f"{source}-{self.n:06d}", "type": kind, "occurred_at": _iso(at), "source": source,
             "warehouse_id": wh, **fields}
        self.put(d, at if arrive is None else arrive)
        return d

    def put(self, d: dict[str, Any] | bytes, arrive: int) -> None:
        raw = d if isinstance(d, bytes) else orjson.dumps(d, option=orjson.OPT_SORT_KEYS)
        self.items.append((arrive, len(self.items), raw))

    def telemetry(self, wh: str, at: int, order_id: str) -> None:
        r = self.rnd
        for _ in range(r.randint(1, 4)):
            t = at + r.randint(0, 20 * SECOND)
            if r.random() < 0.5:
                self.emit("ItemScanned", r.choice(["wms", "robotics", "conveyor"]), wh, t,
                          barcode=f"{r.randrange(10**12):012d}", location=r.choice(LOCATIONS),
                          device_id=f"D{r.randint(1, 9)}", order_id=order_id)
            else:
                self.emit("ToteConveyed", "conveyor", wh, t, tote_id=f"T{r.randint(1, 99)}",
                          scanner_id=f"SC{r.randint(1, 5)}", lane=str(r.randint(1, 4)), order_id=order_id)

    def order(self, wh: str, order_id: str, start: int) -> None:
        r = self.rnd
        scenario = r.choices(
            ["normal", "change", "cancel", "cancel_late", "overpick", "short", "zero", "early_dispatch",
             "never_packed", "early_picks", "unknown", "second_release", "return_unshipped", "unauthorized"],
            weights=[30, 5, 4, 3, 5, 5, 2, 4, 2, 6, 3, 2, 2, 3],
        )[0]
        n_lines = r.randint(1, 3)
        lines = [{"line_no": i + 1, "sku": r.choice(SKUS), "qty": r.randint(1, 4)} for i in range(n_lines)]
        t = start
        if scenario != "unknown":
            rel_arrive = start + (r.randint(2, 9) * MINUTE if scenario == "early_picks" else 0)
            self.emit("OrderReleased", "erp", wh, start, rel_arrive, order_id=order_id, lines=lines,
                      wave_id=f"WV{r.randint(1, 9)}")
        if scenario == "second_release":
            self.emit("OrderReleased", "erp", wh, t + MINUTE, order_id=order_id, lines=lines)
        if scenario == "change":
            t += MINUTE
            lines = [{**ln, "qty": ln["qty"] + 1} for ln in lines]
            self.emit("OrderChanged", "erp", wh, t, order_id=order_id, lines=lines)
        if scenario == "cancel":
            self.emit("OrderCancelled", "erp", wh, t + MINUTE, order_id=order_id)
            self.emit("PickConfirmed", "wms", wh, t + 2 * MINUTE, order_id=order_id, line_no=1,
                      sku=lines[0]["sku"], qty=1, location=r.choice(LOCATIONS))
            return
        picks_src = r.choice(["wms", "robotics"])
        t += r.randint(1, 5) * MINUTE
        for ln in lines:
            qty = ln["qty"]
            if scenario == "zero" or (scenario == "short" and ln["line_no"] == n_lines):
                self.emit("LineShortClosed", "wms", wh, t, order_id=order_id, line_no=ln["line_no"])
                t += 10 * SECOND
                continue
            if scenario == "overpick" and ln["line_no"] == 1:
                qty += 2
            parts = [qty] if qty == 1 or r.random() < 0.5 else [1, qty - 1]
            for part in parts:
                d = self.emit("PickConfirmed", picks_src, wh, t, order_id=order_id, line_no=ln["line_no"],
                              sku=ln["sku"], qty=part, location=r.choice(LOCATIONS), tote_id=f"T{r.randint(1, 99)}")
                self.telemetry(wh, t, order_id)
                if r.random() < 0.05:  # redelivery
                    self.put(d, t + r.randint(1, 30) * SECOND)
                t += r.randint(5, 40) * SECOND
            if scenario == "unauthorized" and ln["line_no"] == 1:
                self.emit("PickConfirmed", "erp", wh, t, order_id=order_id, line_no=1, sku=ln["sku"], qty=1,
                          location="X")
        if scenario == "cancel_late":
            self.emit("OrderCancelled", "erp", wh, t, order_id=order_id)
        if scenario == "unknown":
            return
        t += r.randint(1, 4) * MINUTE
        dispatch = {"order_id": order_id, "shipment_id": f"S-{order_id}", "carrier": "UPS",
                    "tracking_no": f"1Z{r.randrange(10**8):08d}", "package_ids": [f"PK-{order_id}"]}
        if scenario == "early_dispatch":
            self.emit("ShipmentDispatched", "carrier", wh, t, **dispatch)
            t += 2 * MINUTE
        if scenario == "return_unshipped":
            self.emit("ReturnReceived", "wms", wh, t, rma_id=f"RMA-{order_id}", order_id=order_id,
                      sku=lines[0]["sku"], qty=1, disposition="inspect")
        if scenario != "never_packed":
            items = [{"line_no": ln["line_no"], "qty": ln["qty"]} for ln in lines]
            self.emit("PackConfirmed", r.choice(["wms", "robotics"]), wh, t, order_id=order_id,
                      package_id=f"PK-{order_id}", items=items, weight_kg=round(r.uniform(0.2, 9.0), 2))
        t += r.randint(1, 3) * MINUTE
        if scenario not in ("early_dispatch",):
            self.emit("ShipmentDispatched", r.choice(["wms", "carrier"]), wh, t, **dispatch)
        if r.random() < 0.15:
            t += r.randint(5, 30) * MINUTE
            self.emit("ReturnReceived", "wms", wh, t, rma_id=f"RMA-{order_id}", order_id=order_id,
                      sku=lines[0]["sku"], qty=1, disposition=r.choice(["restock", "scrap", "inspect"]))

    def stock(self, wh: str, at: int) -> None:
        r = self.rnd
        arrive = at + (r.randint(7, 12) * MINUTE if r.random() < 0.03 else r.randint(0, 20) * SECOND)
        self.emit("StockAdjusted", r.choice(["wms", "robotics"]), wh, at, arrive, sku=r.choice(SKUS[:8]),
                  location=r.choice(LOCATIONS[:3]), delta=r.choice([-3, -2, -1, 1, 2, 3]),
                  reason=r.choice(["count", "damage", "found"]))

    def faults(self, wh: str, at: int) -> None:
        r = self.rnd
        kind = r.choice(["garbage", "missing", "badqty", "unknown_type", "bad_source"])
        if kind == "garbage":
            self.put(b'{"event_id": "trunc', at)
        elif kind == "missing":
            d = {"event_id": f"wms-bad-{at}", "type": "PickConfirmed", "occurred_at": _iso(at), "source": "wms",
                 "warehouse_id": wh, "order_id": "X"}
            self.put(d, at)
            self.put(d, at + 5 * SECOND)  # redelivered bad record
        elif kind == "badqty":
            self.emit("StockAdjusted", "wms", wh, at, sku="SKU-000", location="A-00", delta="3", reason="count")
        elif kind == "unknown_type":
            self.emit("PalletMoved", "wms", wh, at, pallet="P1")
        else:
            self.emit("StockAdjusted", "mes", wh, at, sku="SKU-000", location="A-00", delta=1, reason="count")


def generate(seed: int = 20261127, orders: int = 160) -> list[bytes]:
    """The trace as NDJSON lines in arrival order."""
    tr = _Trace(seed)
    r = tr.rnd
    for i in range(orders):
        wh = "WH-EAST" if i % 3 else "WH-WEST"
        tr.order(wh, f"SO-{i:05d}", T0 + i * 45 * SECOND + r.randint(0, 30) * SECOND)
    horizon = orders * 45 * SECOND + 40 * MINUTE
    for _ in range(orders * 2):
        tr.stock(r.choice(["WH-EAST", "WH-WEST"]), T0 + r.randrange(horizon))
    for _ in range(orders // 8):
        tr.faults(r.choice(["WH-EAST", "WH-WEST"]), T0 + r.randrange(horizon))
    tr.items.sort()
    return [raw for _, _, raw in tr.items]


def write() -> None:
    """Regenerate the trace and the expected replay output."""
    from app.commands.replay import run_replay

    GOLDEN.mkdir(exist_ok=True)
    TRACE.write_bytes(b"".join(line + b"\n" for line in generate()))
    assert run_replay(str(TRACE), str(MILESTONES), str(DEAD_LETTERS)) == 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    write()
