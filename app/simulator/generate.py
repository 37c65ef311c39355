"""Seeded warehouse processes merged into one event-time ordered stream, plus faults.

A process is a generator of ``(key_ms, item)`` in non-decreasing key: per
warehouse a wave scheduler spawns order, orphan, stray-return and stock
adjustment processes; when a pick starts, its telemetry (nine records in ten)
is built at once and put into the calendar. A calendar queue (one list per
second of event time, sorted when its turn comes) merges everything in
``(key, sequence)`` order; :class:`Simulation` turns items into records,
injects the faults and reports the ground truth (:mod:`app.simulator.truth`).

Determinism: every order, orphan, return and adjustment draws from its own
``Random`` seeded from its warehouse scheduler's, faults draw from a separate
stream, so the same config gives the same bytes and changing fault rates
leaves the business content alone.
"""

from __future__ import annotations

import math
from bisect import insort
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from heapq import heappop, heappush
from itertools import count
from operator import itemgetter
from random import Random
from types import GeneratorType
from typing import Any, Final, TypedDict

from orjson import dumps, loads

from app.core.keys import event_key
from app.core.timeutil import parse_ts
from app.simulator import truth
from app.simulator.model import AUTHORITY, CARRIERS, DISPOSITIONS, REQUIRED, SOURCES, Model, SimConfig

SECOND: Final = 1000
MINUTE: Final = 60_000
LATE_MARGIN_MS: Final = 2 * MINUTE  # a late adjustment arrives at least this long after its window closed
HOLD_SAFE_MS: Final = 5 * MINUTE  # an out-of-order release arrives at most this long after its first event

Item = Any  # dict event | (warehouse, record) | generator to spawn | special (with .emit)
Event = dict[str, Any]  # an input event in the contract's JSON form


class OrderLine(TypedDict):
    """One line of an ERP order, as ``OrderReleased``/``OrderChanged`` carry it."""

    line_no: int
    sku: str
    qty: int


Process = Iterator[tuple[int, Item]]
_key = itemgetter(0)


# -- small helpers ------------------------------------------------------------------


def _make_sec() -> tuple[dict[int, bytes], Callable[[int], bytes]]:
    """A cache epoch second -> ``b"2026-11-27T10:00:00"`` and the function that fills it."""
    cache: dict[int, bytes] = {}

    def sec(s: int) -> bytes:
        if len(cache) > 200_000:
            cache.clear()
        prefix = cache[s] = truth.second(s).encode()
        return prefix

    return cache, sec


def _make_ids(rng: Random) -> Callable[[], str]:
    """uuid-like ids: a random 8-4-4-4 prefix per process, 48 random bits per event."""
    bits = rng.getrandbits
    prefix = "%08x-%04x-4%03x-%04x-" % (bits(32), bits(16), bits(12), 0x8000 | bits(14))
    return lambda: prefix + "%012x" % bits(48)


def _weighted(rnd: Callable[[], float], weights: tuple[int, ...]) -> int:
    """Index drawn with the given integer weights."""
    x = rnd() * sum(weights)
    for i, w in enumerate(weights):
        x -= w
        if x < 0:
            return i
    return len(weights) - 1


def _between(rnd: Callable[[], float], span: tuple[float, float]) -> int:
    """Uniform ms in a (low, high) span given in seconds."""
    return int((span[0] + rnd() * (span[1] - span[0])) * SECOND)


def _qty(rnd: Callable[[], float]) -> int:
    u = rnd()
    if u < 0.55:
        return 1
    if u < 0.75:
        return 2
    if u < 0.95:
        return 3 + int(rnd() * 4)
    return 7 + int(rnd() * 18)


def _split(rng: Random, total: int, weights: tuple[int, ...]) -> list[int]:
    """``total`` cut into 1..len(weights) positive parts ([] for 0)."""
    if total <= 0:
        return []
    k = min(_weighted(rng.random, weights) + 1, total)
    cuts = sorted(rng.sample(range(1, total), k - 1)) if k > 1 else []
    bounds = [0, *cuts, total]
    return [bounds[i + 1] - bounds[i] for i in range(k)]


def _gs1(digits: str) -> str:
    """``digits`` + the GS1 check digit (EAN-13, SSCC-18)."""
    rev = digits[::-1]
    total = 3 * sum(map(int, rev[0::2])) + sum(map(int, rev[1::2]))
    return digits + str((10 - total % 10) % 10)


def _digits(rnd: Callable[[], float], n: int) -> str:
    """``n`` random decimal digits (n <= 15)."""
    return "%0*d" % (n, int(rnd() * 10**n))


def _tracking_no(rnd: Callable[[], float], carrier: str) -> str:
    if carrier == "UPS":
        shipper = "".join("0123456789ABCDEFGHJKLMNPRSTUVWXYZ"[int(rnd() * 33)] for _ in range(6))
        return "1Z" + shipper + "03" + _digits(rnd, 8)
    length = {"DHL": 10, "FEDEX": 12, "DPD": 14, "GLS": 11}[carrier]
    return _digits(rnd, length)


def mean_events_per_order(model: Model) -> float:
    """Approximate records per order (telemetry included) the model produces; sets the order rate."""
    lines = sum((i + 1) * w for i, w in enumerate(model.line_weights)) / sum(model.line_weights)
    splits = sum((i + 1) * w for i, w in enumerate(model.split_weights)) / sum(model.split_weights)
    picks = lines * (1 + 0.5 * (splits - 1))  # single-unit lines (about half) are never split
    nodes = sum(model.route_nodes) / 2
    per_pick = (1.6 + nodes * (1 + model.scan_tunnel_rate)) * (1 + model.dup_read_rate)
    live = 1 - model.cancel_rate
    packs = sum((i + 1) * w for i, w in enumerate(model.package_weights)) / sum(model.package_weights)
    business = (
        1
        + model.change_rate * 1.2
        + model.cancel_rate
        + live * (picks + lines * model.short_line_rate + packs * 0.9 + 1 + model.second_dispatch_rate)
        + live * model.return_rate * 1.3
        + model.adjustments_per_order * 1.4
    )
    return business + live * picks * per_pick


# -- catalog --------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    """SKUs with their barcode and home pick location; robotic aisles are A-D."""

    skus: tuple[str, ...]
    gtins: tuple[str, ...]
    homes: tuple[str, ...]
    robotic: tuple[bool, ...]
    reserves: tuple[str, ...]
    index: dict[str, int]

    @classmethod
    def build(cls, seed: int, n: int) -> Catalog:
        if not 1 <= n <= 2000:
            raise ValueError("skus must be in 1..2000")
        rng = Random(f"{seed}:catalog")
        aisles = "ABCDEFGHJKLMNPQRSTUVWXYZ"[: max(8, -(-n // 100))]
        slots = [f"{a}-{bay:02d}-{level:02d}" for a in aisles for bay in range(1, 21) for level in range(1, 6)]
        homes = tuple(rng.sample(slots, n))
        return cls(
            skus=tuple(f"SKU-{i + 1:04d}" for i in range(n)),
            gtins=tuple(_gs1(f"4012345{i + 1:05d}") for i in range(n)),
            homes=homes,
            robotic=tuple(h[0] in "ABCD" for h in homes),
            reserves=tuple(f"R{a}-{bay:02d}-{lvl:02d}" for a in "ABC" for bay in range(1, 21) for lvl in range(1, 4)),
            index={f"SKU-{i + 1:04d}": i for i in range(n)},
        )


# -- special items --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Repeat:
    """A duplicate telemetry read: the same record (same event_id) reported again."""

    rec: tuple[bytes, bytes]

    def emit(self, sim: Simulation, key: int, out: list[tuple[bytes, bytes]]) -> None:
        sim.counts["dup_reads"] += 1
        out.append(self.rec)


@dataclass(frozen=True, slots=True)
class _Redelivery:
    """A duplicate-fault copy of an earlier record, byte for byte."""

    raw: bytes
    wh: bytes

    def emit(self, sim: Simulation, key: int, out: list[tuple[bytes, bytes]]) -> None:
        out.append((self.wh, self.raw))


@dataclass(frozen=True, slots=True)
class _Deferred:
    """An event that arrives later (``key``) than it occurred (``occ``)."""

    occ: int
    ev: dict[str, Any]

    def emit(self, sim: Simulation, key: int, out: list[tuple[bytes, bytes]]) -> None:
        sim.emit_event(self.ev, self.occ, key, out)


@dataclass(frozen=True, slots=True)
class _Adjust:
    """A StockAdjusted: counted in its window, or sent late (late fault)."""

    ev: dict[str, Any]

    def emit(self, sim: Simulation, key: int, out: list[tuple[bytes, bytes]]) -> None:
        sim.adjust(self.ev, key, out)


# -- processes --------------------------------------------------------------------------


class _Ctx:
    """What every process shares: config, catalog, clock formatting, truth and fault hooks."""

    def __init__(self, sim: Simulation) -> None:
        self.config = sim.config
        self.model = sim.config.model
        self.incidents = sim.config.incidents
        self.catalog = Catalog.build(sim.config.seed, sim.config.model.skus)
        self.ts = truth.iso
        self.secs, self.sec = _make_sec()
        self.wh_bytes = sim.wh_bytes
        self.truth = sim.record_truth
        self.fault_rnd = sim.fault_rnd
        self.exception_ids = sim.exception_ids
        self.counts = sim.counts


@dataclass(frozen=True, slots=True)
class _Pick:
    """A pick's telemetry, built when it starts (from its order's random stream) and merged record by record."""

    rng: Random
    wh: str
    order_id: str
    tote: str
    gtin: str
    location: str
    source: str
    device: str
    qty: int

    def emit(self, sim: Simulation, key: int, out: list[tuple[bytes, bytes]]) -> None:
        sim.schedule_all(_telemetry(sim.ctx, self, key))


def _telemetry(ctx: _Ctx, p: _Pick, t: int) -> list[tuple[int, Item]]:
    """Scans at the pick face, then the tote's reads at every merge and divert.

    Telemetry is 9 records in 10, so it is encoded here from byte templates
    (the compact JSON ``orjson.dumps`` writes, same key order) with the pick's
    constant fields filled in once, as ``(key, record)`` items (key: ``app.core.keys``).
    """
    rnd, bits = p.rng.random, p.rng.getrandbits
    secs, sec = ctx.secs, ctx.sec
    m = ctx.model
    dup, noread, tunnel = m.dup_read_rate, m.no_read_rate, m.scan_tunnel_rate
    whb = ctx.wh_bytes[p.wh]
    order, tote, gtin = p.order_id.encode(), p.tote.encode(), p.gtin.encode()
    head = b'{"event_id":"%08x-%04x-4%03x-%04x-' % (bits(32), bits(16), bits(12), 0x8000 | bits(14))
    where = b'","warehouse_id":"' + whb
    okey = whb + b"|" + order  # app.core.keys.order_key: telemetry naming the order goes with it
    tail = b'","order_id":"' + order + b'","tote_id":"' + tote + b'"}'
    face = (
        head + b'%012x","type":"ItemScanned","occurred_at":"%s.%03dZ","source":"' + p.source.encode() + where
        + b'","barcode":"' + gtin + b'","location":"' + p.location.encode()
        + b'","device_id":"' + p.device.encode() + tail
    )
    tunnel_scan = (
        head + b'%012x","type":"ItemScanned","occurred_at":"%s.%03dZ","source":"conveyor' + where
        + b'","barcode":"%s","location":"CV-%s","device_id":"TUN-%s' + tail
    )
    no_read = (
        head + b'%012x","type":"ItemScanned","occurred_at":"%s.%03dZ","source":"conveyor' + where
        + b'","barcode":"NOREAD","location":"CV-%s","device_id":"SCN-%s"}'
    )
    tote_head = (
        head + b'%012x","type":"ToteConveyed","occurred_at":"%s.%03dZ","source":"conveyor' + where
        + b'","tote_id":"' + tote
    )
    conveyed = tote_head + b'","scanner_id":"SCN-%s","lane":"%s","order_id":"' + order + b'"}'
    conveyed_anon = tote_head + b'","scanner_id":"SCN-%s","lane":"%s"}'
    out: list[tuple[int, Item]] = []
    add = out.append
    scans = totes = 0
    for _ in range(min(p.qty, 3)):
        rec = (okey, face % (bits(48), secs.get(t // 1000) or sec(t // 1000), t % 1000))
        add((t, rec))
        if rnd() < dup:
            add((t, _Repeat(rec)))
        scans += 1
        t += 300 + bits(10) % 900
    t += 3000 + bits(14) % 12_000
    lo, hi = m.route_nodes
    merge = bits(4)
    for hop in range(lo + bits(8) % (hi - lo + 1)):
        t += 4000 + bits(14) % 11_000
        if hop % 2 == 0:
            node = _MERGES[(merge + hop) % 16]
            lane = node + (b"-IN1", b"-IN2")[bits(1)]
        else:
            node = _DIVERTS[bits(5)]
            lane = node + _DIVERT_LANES[bits(3) % 5]
        sp = secs.get(t // 1000) or sec(t // 1000)
        u = rnd()
        if u < noread:
            rec = (whb, no_read % (bits(48), sp, t % 1000, node, node))
            scans += 1
        elif u < 0.9:
            rec = (okey, conveyed % (bits(48), sp, t % 1000, node, lane))
            totes += 1
        else:
            rec = (whb, conveyed_anon % (bits(48), sp, t % 1000, node, lane))
            totes += 1
        add((t, rec))
        if rnd() < dup:
            add((t, _Repeat(rec)))
        if rnd() < tunnel:
            t += 200 + bits(10) % 600
            barcode = b"NOREAD" if rnd() < noread else gtin
            rec = (okey, tunnel_scan % (bits(48), secs.get(t // 1000) or sec(t // 1000), t % 1000, barcode, node, node))
            add((t, rec))
            if rnd() < dup:
                add((t, _Repeat(rec)))
            scans += 1
    counts = ctx.counts
    counts["ItemScanned"] = counts.get("ItemScanned", 0) + scans
    counts["ToteConveyed"] = counts.get("ToteConveyed", 0) + totes
    return out


_MERGES: Final = tuple(b"M%02d" % (i + 1) for i in range(16))
_DIVERTS: Final = tuple(b"D%02d" % (i + 1) for i in range(32))
_DIVERT_LANES: Final = (b"-L1", b"-L2", b"-L3", b"-L4", b"-STRAIGHT")


def _change_lines(rng: Random, lines: list[OrderLine], cat: Catalog) -> list[OrderLine]:
    """A full replacement of the lines: one qty changed, a line added or a line removed."""
    rnd = rng.random
    new = [line.copy() for line in lines]
    u = rnd()
    if u < 0.5 or (u >= 0.8 and len(new) == 1):
        line = new[int(rnd() * len(new))]
        line["qty"] = line["qty"] + 1 + int(rnd() * 3) if rnd() < 0.6 or line["qty"] == 1 else line["qty"] - 1
    elif u < 0.8:
        used = {line["sku"] for line in new}
        free = [s for s in cat.skus if s not in used]
        if free:
            new.append({"line_no": new[-1]["line_no"] + 1, "sku": free[int(rnd() * len(free))], "qty": _qty(rnd)})
    else:
        del new[int(rnd() * len(new))]
    return new


def _play(plan: Callable[[], list[tuple[int, Item]]]) -> Process:
    """Run ``plan`` when the process starts, then hand out its items, forgetting each one sent."""
    items = plan()
    items.reverse()
    while items:
        yield items.pop()


def _order(ctx: _Ctx, seed: int, idx: int, wh: str, t_rel: int, wave_id: str) -> list[tuple[int, Item]]:
    """One ERP order from release to shipment (and maybe a return), in time order; reports its truth."""
    rng = Random(seed)
    rnd = rng.random
    eid = _make_ids(rng)
    ts = ctx.ts
    m, cat, inc = ctx.model, ctx.catalog, ctx.incidents
    report = ctx.truth
    order_id = f"SO{idx + 1:07d}"
    base = {"warehouse_id": wh, "order_id": order_id}

    def event(etype: str, t: int, source: str, **fields: Any) -> dict[str, Any]:
        return {"event_id": eid(), "type": etype, "occurred_at": ts(t), "source": source, **base, **fields}

    n_lines = min(_weighted(rnd, m.line_weights) + 1, m.skus)
    skus = rng.sample(range(m.skus), n_lines)
    lines: list[OrderLine] = [{"line_no": i + 1, "sku": cat.skus[s], "qty": _qty(rnd)} for i, s in enumerate(skus)]
    carrier = CARRIERS[int(rnd() * len(CARRIERS))]
    release = event("OrderReleased", t_rel, "erp", lines=lines, wave_id=wave_id)
    if rnd() < 0.9:
        release["carrier"] = carrier
    report(truth.order_accepted(wh, order_id, 1, lines, t_rel, release["event_id"]))
    items: list[tuple[int, Item]] = []
    t = t_rel
    n_changes = (2 if rnd() < 0.2 else 1) if rnd() < m.change_rate else 0
    for version in range(2, 2 + n_changes):
        t += 10_000 + int(rnd() * 110_000)
        lines = _change_lines(rng, lines, cat)
        ev = event("OrderChanged", t, "erp", lines=lines)
        items.append((t, ev))
        report(truth.order_accepted(wh, order_id, version, lines, t, ev["event_id"]))
    out_of_order = ctx.fault_rnd() < ctx.config.faults.out_of_order and n_changes == 0
    if rnd() < m.cancel_rate:
        t += 20_000 + int(rnd() * 160_000)
        items.append((t, event("OrderCancelled", t, "erp")))
        return [(t_rel, release), *items]

    # picking, in pick-path (location) order
    t = max(t + 5000, t_rel + _between(rnd, m.pick_start))
    tote = f"T{int(rnd() * 100_000):05d}"
    over_pick = rnd() < inc.over_pick
    conflict = rnd() < inc.conflict
    counted: list[str] = []
    picked: dict[int, int] = {}
    short = False
    first_exec = first_pick = t_done = over_pick_at = 0
    for line in sorted(lines, key=lambda ln: cat.homes[cat.index[ln["sku"]]]):
        s = cat.index[line["sku"]]
        loc = cat.homes[s]
        src, dev = ("robotics", "RBT") if cat.robotic[s] else ("wms", "HHT")
        line_of = {"line_no": line["line_no"], "sku": line["sku"]}
        line_short = rnd() < m.short_line_rate
        target = int(rnd() * line["qty"]) if line_short else line["qty"]
        for q in _split(rng, target, m.split_weights):
            t += _between(rnd, m.pick_gap)
            device = f"{dev}-{int(rnd() * 40) + 1:02d}"
            items.append((t - 2000, _Pick(rng, wh, order_id, tote, cat.gtins[s], loc, src, device, q)))
            ev = event("PickConfirmed", t, src, **line_of, qty=q, location=loc, tote_id=tote, wave_id=wave_id)
            items.append((t, ev))
            counted.append(ev["event_id"])
            first_pick = first_pick or t
            first_exec = first_exec or t
            t_done = t
        if line_short:
            t += 3000 + int(rnd() * 17_000)
            ev = event("LineShortClosed", t, "wms", line_no=line["line_no"])
            items.append((t, ev))
            counted.append(ev["event_id"])
            first_exec = first_exec or t
            t_done = t
            short = True
        elif over_pick:
            over_pick = False
            t += 2000 + int(rnd() * 13_000)
            device = f"{dev}-{int(rnd() * 40) + 1:02d}"
            items.append((t - 2000, _Pick(rng, wh, order_id, tote, cat.gtins[s], loc, src, device, 1)))
            ev = event("PickConfirmed", t, src, **line_of, qty=1, location=loc, tote_id=tote, wave_id=wave_id)
            items.append((t, ev))
            counted.append(ev["event_id"])  # evidence of OrderPicked when it comes before completion
            over_pick_at = t
            ctx.exception_ids.add(ev["event_id"])
            report(truth.record_exception(ev, t, "OVER_PICK", f"line {line['line_no']} is already picked in full"))
        picked[line["line_no"]] = target
    if over_pick_at > t_done:
        counted.pop()  # after OrderPicked: not its evidence
    if conflict and first_pick:
        tc = first_pick + 1000 + int(rnd() * 59_000)
        if rnd() < 0.5:
            ev = event("OrderChanged", tc, "erp", lines=_change_lines(rng, lines, cat))
        else:
            ev = event("OrderCancelled", tc, "erp")
        items.append((tc, ev))
        ctx.exception_ids.add(ev["event_id"])
        report(truth.record_exception(ev, tc, "AUTHORITY_CONFLICT", "picking has started"))
    outcome = [
        {"line_no": n["line_no"], "sku": n["sku"], "ordered": n["qty"], "picked": picked[n["line_no"]]} for n in lines
    ]
    report(truth.order_picked(wh, order_id, outcome, short, t_done, counted))
    if out_of_order:
        ctx.counts["out_of_order_orders"] += 1
        key = first_exec + 1000 + int(ctx.fault_rnd() * (HOLD_SAFE_MS - 1000))
        items.append((key, _Deferred(t_rel, release)))
    else:
        items.append((t_rel, release))

    units = [ln["line_no"] for ln in lines for _ in range(picked[ln["line_no"]])]
    if units:
        t = t_done + _between(rnd, m.pack_start)
        packages: list[str] = []
        pack_ids: list[str] = []
        for k, size in enumerate(_split(rng, len(units), m.package_weights)):
            chunk, units = units[:size], units[size:]
            if k:
                t += 20_000 + int(rnd() * 70_000)
            package_id = _gs1(f"34012345{idx * 4 + k:09d}")
            per_line = {n: chunk.count(n) for n in dict.fromkeys(chunk)}
            ev = event(
                "PackConfirmed",
                t,
                "robotics" if rnd() < 0.3 else "wms",
                package_id=package_id,
                items=[{"line_no": n, "qty": q} for n, q in per_line.items()],
                weight_kg=round(size * (0.2 + rnd() * 1.8), 2),
            )
            items.append((t, ev))
            packages.append(package_id)
            pack_ids.append(ev["event_id"])
        report(truth.order_packed(wh, order_id, packages, t, pack_ids))

        t += _between(rnd, m.dispatch_after)
        first_src = "wms" if rnd() < 0.8 else "carrier"
        shipment = {
            "shipment_id": f"SH{idx + 1:07d}",
            "carrier": carrier,
            "tracking_no": _tracking_no(rnd, carrier),
            "package_ids": packages,
        }
        ev = event("ShipmentDispatched", t, first_src, **shipment)
        items.append((t, ev))
        shipped = [{"line_no": n, "qty": q} for n, q in sorted(picked.items()) if q > 0]
        report(truth.shipment_confirmed(ev, shipped, t))
        if rnd() < m.second_dispatch_rate:
            t2 = t + 600_000 + int(rnd() * 3_000_000)
            items.append((t2, event("ShipmentDispatched", t2, "carrier" if first_src == "wms" else "wms", **shipment)))
        if rnd() < m.return_rate:
            tr = t + _between(rnd, m.return_after)
            rma = f"RMA{idx + 1:07d}"
            by_line = {ln["line_no"]: ln["sku"] for ln in lines}
            for returned in rng.sample(shipped, min(len(shipped), 1 + (rnd() < 0.25))):
                ev = event(
                    "ReturnReceived",
                    tr,
                    "wms",
                    rma_id=rma,
                    sku=by_line[returned["line_no"]],
                    qty=1 + int(rnd() * returned["qty"]),
                    disposition=DISPOSITIONS[_weighted(rnd, (70, 10, 20))],
                )
                items.append((tr, ev))
                report(truth.return_received(ev, tr))
                tr += 5000 + int(rnd() * 60_000)
    items.sort(key=_key)
    return items


def _orphan(ctx: _Ctx, seed: int, n: int, wh: str, t: int) -> Process:
    """Picks for a manual order the ERP never released: one UNKNOWN_ORDER."""
    rng = Random(seed)
    rnd = rng.random
    eid = _make_ids(rng)
    cat = ctx.catalog
    order_id = f"MO{n:07d}"
    tote = f"T{int(rnd() * 100_000):05d}"
    items: list[tuple[int, Item]] = []
    pick_ids: list[str] = []
    for line_no in range(1, 2 + (rnd() < 0.5)):
        s = int(rnd() * len(cat.skus))
        src, dev = ("robotics", "RBT") if cat.robotic[s] else ("wms", "HHT")
        device = f"{dev}-{int(rnd() * 40) + 1:02d}"
        qty = 1 + int(rnd() * 2)
        items.append((t, _Pick(rng, wh, order_id, tote, cat.gtins[s], cat.homes[s], src, device, qty)))
        t += 2000
        ev: Event = {
            "event_id": eid(),
            "type": "PickConfirmed",
            "occurred_at": ctx.ts(t),
            "source": src,
            "warehouse_id": wh,
            "order_id": order_id,
            "line_no": line_no,
            "sku": cat.skus[s],
            "qty": qty,
            "location": cat.homes[s],
            "tote_id": tote,
        }
        items.append((t, ev))
        pick_ids.append(ev["event_id"])
        t += 10_000 + int(rnd() * 30_000)
    ctx.truth(truth.unknown_order(wh, order_id, items[-1][0], pick_ids))
    yield from items


def _stray_return(ctx: _Ctx, seed: int, n: int, wh: str, t: int) -> Process:
    """A return for an order shipped before this warehouse's records began."""
    rng = Random(seed)
    rnd = rng.random
    ev: Event = {
        "event_id": _make_ids(rng)(),
        "type": "ReturnReceived",
        "occurred_at": ctx.ts(t),
        "source": "wms",
        "warehouse_id": wh,
        "rma_id": f"RML{n:07d}",
        "order_id": f"LO{n:07d}",
        "sku": ctx.catalog.skus[int(rnd() * len(ctx.catalog.skus))],
        "qty": 1,
        "disposition": DISPOSITIONS[_weighted(rnd, (70, 10, 20))],
    }
    ctx.exception_ids.add(ev["event_id"])
    ctx.truth(truth.record_exception(ev, t, "RETURN_NOT_SHIPPED", "order has no ShipmentConfirmed"))
    yield t, ev


def _adjustment(ctx: _Ctx, seed: int, wh: str, t: int) -> Process:
    """A cycle count, damage, relocation (two locations) or reversed relocation (nets to 0)."""
    rng = Random(seed)
    rnd = rng.random
    eid = _make_ids(rng)
    cat = ctx.catalog
    s = int(rnd() * len(cat.skus))
    src = "robotics" if cat.robotic[s] else "wms"

    def adjusted(at: int, location: str, delta: int, reason: str) -> _Adjust:
        return _Adjust(
            {
                "event_id": eid(),
                "type": "StockAdjusted",
                "occurred_at": ctx.ts(at),
                "source": src,
                "warehouse_id": wh,
                "sku": cat.skus[s],
                "location": location,
                "delta": delta,
                "reason": reason,
            }
        )

    u = rnd()
    if u < 0.45:
        delta = 1 + int(rnd() * 3)
        yield t, adjusted(t, cat.homes[s], delta if rnd() < 0.4 else -delta, "cycle_count")
    elif u < 0.6:
        yield t, adjusted(t, cat.homes[s], -1 - int(rnd() * 2), "damage")
    elif u < 0.8:
        n = 1 + int(rnd() * 10)
        yield t, adjusted(t, cat.homes[s], -n, "relocation")
        t2 = t + 20_000 + int(rnd() * 160_000)
        yield t2, adjusted(t2, cat.reserves[int(rnd() * len(cat.reserves))], n, "relocation")
    else:
        n = 1 + int(rnd() * 10)
        yield t, adjusted(t, cat.homes[s], -n, "relocation")
        t2 = min(t + 5000 + int(rnd() * 55_000), t - t % truth.WINDOW_MS + truth.WINDOW_MS - 1)
        yield t2, adjusted(t2, cat.homes[s], n, "relocation_reversed")


def _warehouse(ctx: _Ctx, w: int, indices: range, t0: int, orders_per_ms: float) -> Process:
    """Releases this warehouse's orders in waves and spawns the side processes of each wave."""
    cfg = ctx.config
    inc, m = cfg.incidents, cfg.model
    rng = Random(f"{cfg.seed}:warehouse:{w}")
    rnd, bits = rng.random, rng.getrandbits
    wh = f"WH{w + 1}"
    t = t0
    for wave_no, start in enumerate(range(0, len(indices), m.wave_size)):
        chunk = indices[start : start + m.wave_size]
        interval = max(1, int(len(chunk) / orders_per_ms))
        burst = min(30_000, interval // 2)
        wave_id = f"{wh}-W{wave_no + 1:05d}"
        spawns: list[tuple[int, Process]] = []
        for idx in chunk:
            t_rel = t + int(rnd() * burst)
            spawns.append((t_rel, _play(partial(_order, ctx, bits(64), idx, wh, t_rel, wave_id))))
            # always draw, so one rate does not shift the others' draws
            u_adj, t_adj, s_adj = rnd(), t + int(rnd() * interval), bits(64)
            u_orph, t_orph, s_orph = rnd(), t + int(rnd() * interval), bits(64)
            u_stray, t_stray, s_stray = rnd(), t + int(rnd() * interval), bits(64)
            n_adj = int(m.adjustments_per_order) + (u_adj < m.adjustments_per_order % 1)
            for k in range(n_adj):
                spawns.append((t_adj, _adjustment(ctx, s_adj + k, wh, t_adj)))
            if u_orph < inc.orphan:
                spawns.append((t_orph, _orphan(ctx, s_orph, idx + 1, wh, t_orph)))
            if u_stray < inc.stray_return:
                spawns.append((t_stray, _stray_return(ctx, s_stray, idx + 1, wh, t_stray)))
        spawns.sort(key=_key)
        yield from spawns
        t += interval


# -- the merged stream ----------------------------------------------------------------------


class Simulation:
    """One seeded run. Iterate :meth:`batches` for ``(key, record)`` pairs in arrival order (keys: ``app.core.keys``).

    Truth milestones go to ``on_truth`` as they become known (default: the
    ``truth`` list); ``counts`` tallies what was sent. Records are JSON bytes,
    except the undecodable ones the malformed fault makes.
    """

    def __init__(self, config: SimConfig, on_truth: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.config = config
        self.truth: list[dict[str, Any]] = []
        self._on_truth = on_truth or self.truth.append
        self.counts: dict[str, int] = dict.fromkeys(
            ("dup_reads", "duplicates", "malformed", "wrong_source", "late", "late_dropped", "out_of_order_orders"), 0
        )
        self.truth_counts: dict[str, int] = {}
        self.exception_ids: set[str] = set()
        rng = Random(f"{config.seed}:faults")
        self.fault_rnd = rng.random
        self.wh_bytes = {f"WH{w + 1}": f"WH{w + 1}".encode() for w in range(config.warehouses)}
        self.watermark = -1
        f = config.faults
        self._p_fault = f.duplicate + f.malformed + f.wrong_source
        self._gap = self._next_gap()
        self._fault_ids = _make_ids(Random(f"{config.seed}:fault-ids"))
        self._windows = truth.Windows()
        self._raw_seen: set[str] = set()
        self._late: list[tuple[int, int, dict[str, Any]]] = []
        self._seq = count()
        # calendar queue: entries (key, seq, process, item) in one list per second of key;
        # a second's list is sorted when its turn comes, far-future entries stay untouched
        self._buckets: dict[int, list[tuple[int, int, Any, Item]]] = {}
        self._seconds: list[int] = []
        self._now: list[tuple[int, int, Any, Item]] = []
        self._current = -1
        self.ctx = ctx = _Ctx(self)
        t0 = parse_ts(config.start)
        orders_per_ms = config.events_per_s / mean_events_per_order(config.model) / 1000 / config.warehouses
        for w in range(config.warehouses):
            self._push(_warehouse(ctx, w, range(w, config.orders, config.warehouses), t0, orders_per_ms))

    def record_truth(self, milestone: dict[str, Any]) -> None:
        name = milestone.get("code") or milestone["type"]
        self.truth_counts[name] = self.truth_counts.get(name, 0) + 1
        self._on_truth(milestone)

    def _push(self, proc: Process) -> None:
        first = next(proc, None)
        if first is not None:
            self._schedule(first[0], proc, first[1])

    def _schedule(self, key: int, proc: Process | None, item: Item) -> None:
        entry = (key, next(self._seq), proc, item)
        sec = key // 1000
        if sec <= self._current:
            insort(self._now, entry)  # sorts after every entry already there: seq is larger
        elif sec in self._buckets:
            self._buckets[sec].append(entry)
        else:
            self._buckets[sec] = [entry]
            heappush(self._seconds, sec)

    def schedule_all(self, items: list[tuple[int, Item]]) -> None:
        """Put every item of a burst (a pick's telemetry) straight into the calendar."""
        seq, buckets, current = self._seq, self._buckets, self._current
        for key, item in items:
            entry = (key, next(seq), None, item)
            sec = key // 1000
            bucket = buckets.get(sec)
            if bucket is not None:
                bucket.append(entry)
            elif sec <= current:
                insort(self._now, entry)
            else:
                buckets[sec] = [entry]
                heappush(self._seconds, sec)

    def _next_gap(self) -> int:
        """Records until the next fault: geometric with the summed per-record fault rate."""
        p = self._p_fault
        if p <= 0:
            return -1  # never reaches 0
        if p >= 1:
            return 1
        return 1 + int(math.log(1.0 - self.fault_rnd()) / math.log(1.0 - p))

    def batches(self, size: int = 8192) -> Iterator[list[tuple[bytes, bytes]]]:
        """The whole stream in lists of about ``size`` ``(key, record)`` pairs."""
        seq, late, counts = self._seq, self._late, self.counts
        buckets, seconds = self._buckets, self._seconds
        out: list[tuple[bytes, bytes]] = []
        append = out.append
        wm, gap = self.watermark, self._gap
        now, current, i = self._now, self._current, 0
        while True:
            if len(out) >= size:
                yield out
                out = []
                append = out.append
            if i == len(now):
                if not seconds:
                    break
                self._current = current = heappop(seconds)
                self._now = now = buckets.pop(current)
                now.sort()
                i = 0
            key, _, proc, item = now[i]
            i += 1
            if proc is not None:
                nxt = next(proc, None)
                if nxt is not None:
                    nkey = nxt[0]
                    entry = (nkey, next(seq), proc, nxt[1])
                    sec = nkey // 1000
                    if sec == current:
                        insort(now, entry, i)
                    else:
                        bucket = buckets.get(sec)
                        if bucket is None:
                            buckets[sec] = [entry]
                            heappush(seconds, sec)
                        else:
                            bucket.append(entry)
            cls = item.__class__
            if cls is tuple:  # encoded telemetry
                rec = item
            elif cls is dict:
                rec = (event_key(item), dumps(item))
                counts[item["type"]] = counts.get(item["type"], 0) + 1
            elif cls is GeneratorType:
                self._push(item)
                continue
            else:
                self.watermark, self._gap = wm, gap
                item.emit(self, key, out)
                wm, gap = self.watermark, self._gap
                continue
            gap -= 1
            if gap:
                append(rec)
            else:
                self.watermark = wm
                gap = self._next_gap()
                self._fault(rec, key, key, out)
            if key > wm:
                wm = key
                if late and late[0][0] <= wm:
                    self.watermark = wm
                    self._flush_late(out)
        self.watermark, self._gap = wm, gap
        counts["late_dropped"] = len(late)
        for m in self._windows.close(math.inf):
            self.record_truth(m)
        if out:
            yield out

    def emit_event(self, ev: dict[str, Any], occ: int, key: int, out: list[tuple[bytes, bytes]]) -> None:
        """Send one valid event that arrives at ``key`` (with its fault, if one is due)."""
        rec = (event_key(ev), dumps(ev))
        self.counts[ev["type"]] = self.counts.get(ev["type"], 0) + 1
        self._gap -= 1
        if self._gap:
            out.append(rec)
        else:
            self._gap = self._next_gap()
            self._fault(rec, occ, key, out)
        if occ > self.watermark:
            self.watermark = occ
            if self._late and self._late[0][0] <= occ:
                self._flush_late(out)

    def adjust(self, ev: dict[str, Any], occ: int, out: list[tuple[bytes, bytes]]) -> None:
        """A StockAdjusted on time (counted in its window) or, by the late fault, long after."""
        if self.config.faults.late and self.fault_rnd() < self.config.faults.late:
            window_end = occ - occ % truth.WINDOW_MS + truth.WINDOW_MS
            due = window_end + truth.GRACE_MS + LATE_MARGIN_MS + int(self.fault_rnd() * 10 * MINUTE)
            heappush(self._late, (due, next(self._seq), ev))
            return
        self._windows.add(ev, occ)
        self.emit_event(ev, occ, occ, out)
        for m in self._windows.close(self.watermark):
            self.record_truth(m)

    def _flush_late(self, out: list[tuple[bytes, bytes]]) -> None:
        late = self._late
        while late and late[0][0] <= self.watermark:
            ev = heappop(late)[2]
            self.counts["late"] += 1
            self.counts["StockAdjusted"] = self.counts.get("StockAdjusted", 0) + 1
            out.append((event_key(ev), dumps(ev)))
            self.record_truth(truth.record_exception(ev, parse_ts(ev["occurred_at"]), "INVALID_EVENT", "late"))

    def _fault(self, rec: tuple[bytes, bytes], occ: int, key: int, out: list[tuple[bytes, bytes]]) -> None:
        """Send ``rec`` with one fault: a malformed copy before it, a wrong-source copy after it,
        or a byte-identical redelivery later. The first record of the stream is left alone."""
        wh, raw = rec
        ev = loads(raw)
        f = self.config.faults
        u = self.fault_rnd() * self._p_fault
        if self.watermark < 0:
            out.append(rec)
        elif u < f.malformed:
            if ev["event_id"] not in self.exception_ids:  # one SyncException per record identity
                self.counts["malformed"] += 1
                out.append((wh, self._malformed(ev, occ, raw)))
            out.append(rec)
        elif u < f.malformed + f.wrong_source:
            out.append(rec)
            wrong = sorted(set(SOURCES) - AUTHORITY[ev["type"]])
            ghost = dict(ev, event_id=self._fault_ids(), source=wrong[int(self.fault_rnd() * len(wrong))])
            self.counts["wrong_source"] += 1
            out.append((wh, dumps(ghost)))
            detail = f"{ghost['source']} may not send {ev['type']}"
            self.record_truth(truth.record_exception(ghost, occ, "SOURCE_NOT_AUTHORIZED", detail))
        else:
            out.append(rec)
            self.counts["duplicates"] += 1
            later = key + SECOND + int(self.fault_rnd() * 10 * MINUTE)
            self._schedule(later, None, _Redelivery(raw, wh))

    def _malformed(self, ev: dict[str, Any], occ: int, raw: bytes) -> bytes:
        """A broken copy of ``ev`` (same event_id) to send just before it; reports its INVALID_EVENT."""
        rnd = self.fault_rnd
        names = [n for n in REQUIRED[ev["type"]] if n != "order_id"]
        if not names or rnd() < 0.4:
            if rnd() < 0.5:  # cut short, after the event_id so that every cut is unique
                low = len('{"event_id":"",') + len(ev["event_id"])
                bad = raw[: low + int(rnd() * (len(raw) - low))]
            else:  # line noise
                bad = bytes(0x80 + int(rnd() * 128) for _ in range(16 + int(rnd() * 48)))
            m = truth.raw_exception(bad, self.watermark, "undecodable")
            if m["milestone_id"] not in self._raw_seen:
                self._raw_seen.add(m["milestone_id"])
                self.record_truth(m)
            return bad
        name = names[int(rnd() * len(names))]
        broken = dict(ev)
        if rnd() < 0.4:
            del broken[name]
            detail = f"missing {name}"
        elif name == "qty" and ev["type"] == "PickConfirmed" and rnd() < 0.5:
            broken[name] = -int(rnd() * 3)
            detail = "qty must be > 0"
        else:
            broken[name] = {"int": str(ev[name]), "str": 404, "list": "n/a"}[REQUIRED[ev["type"]][name]]
            detail = f"{name} has a wrong type"
        self.record_truth(truth.record_exception(ev, occ, "INVALID_EVENT", detail))
        return dumps(broken)
