"""Throughput of the pure governance core and of `syncgov replay`, on one core.

Generates a seeded warehouse stream as NDJSON -- about 72 % telemetry (ItemScanned,
ToteConveyed), 13 % picks, 9 % other order events with 300 orders in flight, 6 % stock
adjustments, and faults: 0.4 % redeliveries, 1 % out-of-order times, 0.1 % invalid
records, 0.05 % unauthorized sources -- then measures
  (a) events/s through ``Engine.process_event`` with events already decoded,
  (b) events/s of ``run_replay`` end to end (NDJSON file -> milestones file),
  (c) peak RSS.
Rates are given by wall clock and by process CPU time (steadier on a shared machine).
Prints a JSON summary.  Usage: python benchmarks/bench_core.py [--events N] [--json-out F]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.commands.replay import run_replay
from app.core import _native
from app.core.engine import Engine
from app.core.model import Milestone
from app.core.timeutil import format_ts
from app.runtime import heap

T0 = 1795773600000  # 2026-11-27T10:00:00.000Z
WAREHOUSES = ("WH-1", "WH-2")
SKUS = [f"SKU-{i:05d}" for i in range(2000)]
LOCATIONS = [f"{a}-{b:02d}-{c:02d}" for a in "ABCD" for b in range(20) for c in range(5)]
ORDERS_IN_FLIGHT = 300
BATCH = 20_000


class _Order:
    __slots__ = ("lines", "order_id", "released", "todo", "wh")

    def __init__(self, wh: str, order_id: str, lines: list[tuple[int, str, int]]) -> None:
        self.wh = wh
        self.order_id = order_id
        self.lines = lines
        self.todo: list[tuple[str, Any]] = []
        self.released = False


def generate(n: int, seed: int = 7) -> Iterator[bytes]:
    """``n`` NDJSON lines (without newline) in arrival order."""
    r = random.Random(seed)
    t = T0
    seq = 0
    orders: list[_Order] = []
    recent: list[bytes] = []
    produced = 0

    def line(kind: str, source: str, wh: str, at: int, **fields: Any) -> bytes:
        nonlocal seq
        seq += 1
        d = {"event_id": f"{source}-{seq:09d}", "type": kind, "occurred_at": format_ts(at), "source": source,
             "warehouse_id": wh, **fields}
        return orjson.dumps(d)

    def new_order() -> _Order:
        wh = r.choice(WAREHOUSES)
        lines = [(i + 1, r.choice(SKUS), r.randint(1, 5)) for i in range(r.randint(1, 5))]
        o = _Order(wh, f"SO-{seq:09d}", lines)
        for no, sku, qty in lines:
            if qty > 1 and r.random() < 0.5:
                o.todo += [("pick", (no, sku, 1)), ("pick", (no, sku, qty - 1))]
            elif r.random() < 0.03:
                o.todo.append(("short", no))
            else:
                o.todo.append(("pick", (no, sku, qty)))
        o.todo += [("pack", None), ("dispatch", None)]
        if r.random() < 0.05:
            o.todo.append(("return", None))
        return o

    while produced < n:
        t += r.randint(1, 8)
        x = r.random()
        at = t - r.randint(0, 30_000) if r.random() < 0.01 else t  # out of order
        wh = r.choice(WAREHOUSES)
        if x < 0.004 and recent:
            raw = r.choice(recent)  # redelivery
        elif x < 0.005:
            raw = line("PickConfirmed", "wms", wh, at, order_id="SO-x", line_no=1, sku="S", qty=0, location="L")
        elif x < 0.0055:
            raw = line("ItemScanned", "erp", wh, at, barcode="1", location="L", device_id="D")
        elif x < 0.40:
            raw = line("ItemScanned", r.choice(("wms", "robotics", "conveyor")), wh, at,
                       barcode=f"{r.randrange(10**12):012d}", location=r.choice(LOCATIONS),
                       device_id=f"DEV-{r.randint(1, 200)}", tote_id=f"T-{r.randint(1, 5000)}")
        elif x < 0.72:
            raw = line("ToteConveyed", "conveyor", wh, at, tote_id=f"T-{r.randint(1, 5000)}",
                       scanner_id=f"SC-{r.randint(1, 50)}", lane=str(r.randint(1, 12)))
        elif x < 0.78:
            raw = line("StockAdjusted", r.choice(("wms", "robotics")), wh, at, sku=r.choice(SKUS[:300]),
                       location=r.choice(LOCATIONS[:100]), delta=r.choice((-3, -2, -1, 1, 2, 5)), reason="count")
        else:
            if len(orders) < ORDERS_IN_FLIGHT:
                o = new_order()
                orders.append(o)
            else:
                o = orders[r.randrange(len(orders))]
            if not o.released:
                o.released = True
                raw = line("OrderReleased", "erp", o.wh, at, order_id=o.order_id,
                           lines=[{"line_no": a, "sku": b, "qty": c} for a, b, c in o.lines])
            else:
                step, arg = o.todo.pop(0)
                if step == "pick":
                    no, sku, qty = arg
                    raw = line("PickConfirmed", r.choice(("wms", "robotics")), o.wh, at, order_id=o.order_id,
                               line_no=no, sku=sku, qty=qty, location=r.choice(LOCATIONS), tote_id="T-1")
                elif step == "short":
                    raw = line("LineShortClosed", "wms", o.wh, at, order_id=o.order_id, line_no=arg)
                elif step == "pack":
                    raw = line("PackConfirmed", "wms", o.wh, at, order_id=o.order_id, package_id=f"PK-{seq}",
                               items=[{"line_no": a, "qty": c} for a, _, c in o.lines], weight_kg=1.5)
                elif step == "dispatch":
                    raw = line("ShipmentDispatched", "carrier", o.wh, at, order_id=o.order_id,
                               shipment_id=f"SH-{seq}", carrier="UPS", tracking_no=f"1Z{seq}",
                               package_ids=["PK-1"])
                else:
                    raw = line("ReturnReceived", "wms", o.wh, at, order_id=o.order_id, rma_id=f"R-{seq}",
                               sku=o.lines[0][1], qty=1, disposition="restock")
                if not o.todo:
                    orders.remove(o)
        recent.append(raw)
        if len(recent) > 500:
            del recent[:250]
        produced += 1
        yield raw


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rates(count: int, wall: float, cpu: float) -> dict[str, Any]:
    """Rates by wall clock and by this process's CPU time (robust on a shared machine)."""
    return {"seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
            "events_per_s": round(count / wall), "events_per_cpu_s": round(count / cpu)}


def bench_core(path: Path) -> dict[str, Any]:
    """Decode in batches (not timed), then time ``process_event`` over each batch."""
    engine = Engine()
    process = engine.process_event
    loads = orjson.loads
    wall = cpu = 0.0
    count = outputs = 0
    with path.open("rb") as f:
        while True:
            batch = [loads(raw) for raw in (f.readline() for _ in range(BATCH)) if raw]
            if not batch:
                break
            w, c = time.perf_counter(), time.process_time()
            for d in batch:
                outputs += len(process(d))
            wall += time.perf_counter() - w
            cpu += time.process_time() - c
            count += len(batch)
    w, c = time.perf_counter(), time.process_time()
    outputs += len(engine.finish())
    wall += time.perf_counter() - w
    cpu += time.process_time() - c
    return {"events": count, **_rates(count, wall, cpu), "outputs": outputs,
            "dedup_keys": len(engine.seen), "orders": len(engine.orders)}


def bench_replay(path: Path, workdir: Path) -> dict[str, Any]:
    out, dead = workdir / "milestones.ndjson", workdir / "dead.ndjson"
    w, c = time.perf_counter(), time.process_time()
    code = run_replay(str(path), str(out), str(dead))
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    count = sum(1 for _ in path.open("rb"))
    kinds: dict[str, int] = {}
    with out.open("rb") as f:
        for raw in f:
            m = Milestone.from_dict(orjson.loads(raw))
            key = m.type if m.type != "SyncException" else f"SyncException/{m.body['code']}"
            kinds[key] = kinds.get(key, 0) + 1
    return {"exit_code": code, "events": count, **_rates(count, wall, cpu),
            "milestones": dict(sorted(kinds.items())), "dead_letters": sum(1 for _ in dead.open("rb"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json-out", help="also write the summary here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-core-") as tmp:
        workdir = Path(tmp)
        path = workdir / "events.ndjson"
        start = time.perf_counter()
        with path.open("wb") as f:
            for raw in generate(args.events, args.seed):
                f.write(raw + b"\n")
        generated = time.perf_counter() - start
        rss_before = _rss_mb()
        # The core as the worker and replay run it: under the process's GC policy
        # (app/runtime/heap.py); the first pass under Python's defaults, for comparison.
        thresholds = gc.get_threshold()
        core_default_gc = bench_core(path)
        gc.collect()
        tuned = heap.tune()
        core = bench_core(path)
        rss_core = _rss_mb()
        replay = bench_replay(path, workdir)
        summary = {
            "events": args.events,
            "seed": args.seed,
            "input_bytes": path.stat().st_size,
            "generate_seconds": round(generated, 2),
            "core": core,
            "gc": {"thresholds": list(tuned), "core_events_per_s_with_python_defaults": core_default_gc["events_per_s"],
                   "python_defaults": list(thresholds)},
            "replay": replay,
            "peak_rss_mb": {"before_core": round(rss_before, 1), "after_core": round(rss_core, 1),
                            "after_replay": round(_rss_mb(), 1)},
            "targets": {"core_events_per_s": 250_000, "replay_events_per_s": 100_000},
            "python": sys.version.split()[0],
            "core_build": _native.active or "python",
            "cpu_count": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
