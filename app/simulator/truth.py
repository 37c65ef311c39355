"""Ground truth: the milestones the contract requires for what the simulator meant to send.

The generator calls the builders below from its own plan (an order's lines,
picks, packs, dispatch) and from the faults it injects; nothing here runs the
governance engine. Milestones are dicts in the contract JSON form
(``Milestone.to_dict()`` shape) with ids from :mod:`app.core.ids`.

:func:`compare` matches expected and actual milestones on ``milestone_id`` and
compares ``type``, ``warehouse_id``, ``occurred_at`` and every business field
(lists of lines by ``line_no``, ``package_ids`` as a set). ``event_ids`` are only
compared on request, and ``SyncException.detail`` only where the contract fixes
it (``late``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from app.core import ids
from app.core.timeutil import format_ts, parse_ts

MAX_EVIDENCE: Final = 50
WINDOW_MS: Final = 300_000
GRACE_MS: Final = 60_000

Milestone = dict[str, Any]

_DATES: dict[int, str] = {}
_SECONDS: dict[int, str] = {}


def second(s: int) -> str:
    """Epoch second -> ``2026-11-27T10:00:00`` (the date part cached)."""
    day, rest = divmod(s, 86_400)
    date = _DATES.get(day)
    if date is None:
        date = _DATES[day] = format_ts(day * 86_400_000)[:10]
    hour, rest = divmod(rest, 3600)
    return "%sT%02d:%02d:%02d" % (date, hour, rest // 60, rest % 60)


def iso(ms: int) -> str:
    """int ms -> ``2026-11-27T10:00:00.000Z``: ``format_ts`` with a per-second cache."""
    prefix = _SECONDS.get(ms // 1000)
    if prefix is None:
        if len(_SECONDS) > 200_000:
            _SECONDS.clear()
        prefix = _SECONDS[ms // 1000] = second(ms // 1000)
    return "%s.%03dZ" % (prefix, ms % 1000)


def _milestone(mid: str, mtype: str, wh: str | None, occ: int | None, event_ids: Iterable[str]) -> Milestone:
    return {
        "milestone_id": mid,
        "type": mtype,
        "warehouse_id": wh,
        "occurred_at": None if occ is None else iso(occ),
        "event_ids": list(event_ids)[:MAX_EVIDENCE],
    }


def order_accepted(
    wh: str, order_id: str, version: int, lines: Sequence[Mapping[str, Any]], occ: int, eid: str
) -> Milestone:
    m = _milestone(ids.order_accepted_id(wh, order_id, version), "OrderAccepted", wh, occ, [eid])
    m.update(order_id=order_id, version=version, lines=lines)
    return m


def order_picked(
    wh: str, order_id: str, lines: list[dict[str, Any]], short: bool, occ: int, event_ids: list[str]
) -> Milestone:
    m = _milestone(ids.order_picked_id(wh, order_id), "OrderPicked", wh, occ, event_ids)
    m.update(order_id=order_id, lines=lines, short=short)
    return m


def order_packed(wh: str, order_id: str, package_ids: list[str], occ: int, event_ids: list[str]) -> Milestone:
    m = _milestone(ids.order_packed_id(wh, order_id), "OrderPacked", wh, occ, event_ids)
    m.update(order_id=order_id, package_ids=package_ids)
    return m


def shipment_confirmed(dispatch: Mapping[str, Any], lines: list[dict[str, int]], occ: int) -> Milestone:
    wh, order_id = dispatch["warehouse_id"], dispatch["order_id"]
    m = _milestone(ids.shipment_confirmed_id(wh, order_id), "ShipmentConfirmed", wh, occ, [dispatch["event_id"]])
    m.update(
        order_id=order_id,
        shipment_id=dispatch["shipment_id"],
        carrier=dispatch["carrier"],
        tracking_no=dispatch["tracking_no"],
        lines=lines,
    )
    return m


def return_received(ev: Mapping[str, Any], occ: int) -> Milestone:
    wh = ev["warehouse_id"]
    m = _milestone(ids.return_received_id(wh, ev["rma_id"], ev["sku"]), "ReturnReceived", wh, occ, [ev["event_id"]])
    m.update(rma_id=ev["rma_id"], order_id=ev["order_id"], sku=ev["sku"], qty=ev["qty"], disposition=ev["disposition"])
    return m


def record_exception(ev: Mapping[str, Any], occ: int, code: str, detail: str) -> Milestone:
    """A SyncException about one record with a usable (source, event_id)."""
    mid = ids.record_exception_id(ev["source"], ev["event_id"])
    m = _milestone(mid, "SyncException", ev["warehouse_id"], occ, [ev["event_id"]])
    m.update(code=code, order_id=ev.get("order_id"), detail=detail)
    return m


def raw_exception(raw: bytes, watermark: int | None, detail: str) -> Milestone:
    """INVALID_EVENT for an undecodable record: no warehouse, time = the watermark."""
    m = _milestone(ids.raw_exception_id(raw), "SyncException", None, watermark, [])
    m.update(code="INVALID_EVENT", order_id=None, detail=detail)
    return m


def unknown_order(wh: str, order_id: str, occ: int, event_ids: list[str]) -> Milestone:
    """The single UNKNOWN_ORDER of an order whose release never came."""
    m = _milestone(ids.unknown_order_id(wh, order_id), "SyncException", wh, occ, event_ids)
    m.update(code="UNKNOWN_ORDER", order_id=order_id, detail="order was never released")
    return m


class Windows:
    """Sums on-time ``StockAdjusted`` per (warehouse, sku, location, 5-min window).

    Events must be added in non-decreasing event time (the generator's arrival
    order for on-time events); :meth:`close` yields the windows the watermark
    has passed (end + grace) that net to non-zero.
    """

    def __init__(self) -> None:
        self._open: dict[tuple[str, str, str, int], list[Any]] = {}

    def add(self, ev: Mapping[str, Any], occ: int) -> None:
        start = occ - occ % WINDOW_MS
        acc = self._open.get((ev["warehouse_id"], ev["sku"], ev["location"], start))
        if acc is None:
            self._open[(ev["warehouse_id"], ev["sku"], ev["location"], start)] = [ev["delta"], [ev["event_id"]]]
        else:
            acc[0] += ev["delta"]
            acc[1].append(ev["event_id"])

    def close(self, watermark: float) -> list[Milestone]:
        """Milestones of every window with ``end + grace <= watermark`` (``inf`` closes all)."""
        out: list[Milestone] = []
        while self._open:
            key = next(iter(self._open))  # keys were inserted in window order
            wh, sku, location, start = key
            if start + WINDOW_MS + GRACE_MS > watermark:
                break
            net, event_ids = self._open.pop(key)
            if net:
                out.append(_inventory_adjusted(wh, sku, location, start, net, event_ids))
        return out


def _inventory_adjusted(wh: str, sku: str, location: str, start: int, net: int, event_ids: list[str]) -> Milestone:
    end = start + WINDOW_MS
    m = _milestone(ids.inventory_adjusted_id(wh, sku, location, start), "InventoryAdjusted", wh, end, event_ids)
    m.update(
        sku=sku,
        location=location,
        net_delta=net,
        event_count=len(event_ids),
        window_start=iso(start),
        window_end=iso(end),
    )
    return m


# -- comparison -------------------------------------------------------------------

_NOT_COMPARED: Final = frozenset({"milestone_id", "event_ids", "detail"})
_TIMES: Final = frozenset({"occurred_at", "window_start", "window_end"})


@dataclass(frozen=True)
class Mismatch:
    """One field that differs between the expected and the actual milestone."""

    milestone_id: str
    type: str
    field: str
    expected: Any
    actual: Any


@dataclass(frozen=True)
class Report:
    """Outcome of :func:`compare`; ``ok`` when nothing is missing, extra, different or doubled."""

    matched: int
    missing: tuple[Milestone, ...]
    unexpected: tuple[Milestone, ...]
    mismatched: tuple[Mismatch, ...]
    duplicated: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.duplicated)

    def summary(self, limit: int = 10) -> str:
        """A human-readable account, at most ``limit`` examples per kind."""
        lines = [
            f"matched {self.matched}, missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
            f"mismatched fields {len(self.mismatched)}, duplicated ids {len(self.duplicated)}"
        ]
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            for m in items[:limit]:
                lines.append(f"  {title}: {_describe(m)}")
        for mm in self.mismatched[:limit]:
            lines.append(
                f"  mismatch {mm.type} {mm.milestone_id} {mm.field}: expected {mm.expected!r}, got {mm.actual!r}"
            )
        for mid in self.duplicated[:limit]:
            lines.append(f"  duplicated: {mid}")
        return "\n".join(lines)


def _describe(m: Milestone) -> str:
    keys = ("code", "order_id", "sku", "location", "rma_id", "version", "window_start")
    extra = " ".join(f"{k}={m[k]}" for k in keys if m.get(k) is not None)
    return f"{m.get('type')} {m.get('milestone_id')} wh={m.get('warehouse_id')} at={m.get('occurred_at')} {extra}"


def _as_dict(m: Any) -> Milestone:
    return m if isinstance(m, dict) else m.to_dict()


def _norm(field: str, value: Any) -> Any:
    """Comparable form: times as int ms, line lists by line_no, package ids as a set."""
    if value is None:
        return None
    if field in _TIMES:
        return parse_ts(value)
    if field == "lines" or field == "items":
        return sorted(tuple(sorted(line.items())) for line in value)
    if field == "package_ids":
        return sorted(value)
    return value


def compare(
    expected: Iterable[Any],
    actual: Iterable[Any],
    *,
    check_occurred_at: bool = True,
    check_event_ids: bool = False,
) -> Report:
    """Compare milestones (dicts or objects with ``to_dict()``) keyed on ``milestone_id``.

    Compared: ``type``, ``warehouse_id``, ``occurred_at`` (unless
    ``check_occurred_at=False``) and every other field except ``event_ids``
    (unless ``check_event_ids``) and ``detail`` (compared only when the expected
    detail is ``late``, which the contract prescribes). A missing field equals
    ``None``.
    """
    want: dict[str, Milestone] = {}
    for m in expected:
        d = _as_dict(m)
        want[d["milestone_id"]] = d
    got: dict[str, Milestone] = {}
    duplicated: list[str] = []
    for m in actual:
        d = _as_dict(m)
        if d["milestone_id"] in got:
            duplicated.append(d["milestone_id"])
        got[d["milestone_id"]] = d
    mismatched: list[Mismatch] = []
    matched = 0
    for mid, exp in want.items():
        act = got.get(mid)
        if act is None:
            continue
        matched += 1
        skip = set(_NOT_COMPARED)
        if check_event_ids:
            skip.discard("event_ids")
        if not check_occurred_at:
            skip.add("occurred_at")
        if exp.get("detail") == "late":
            skip.discard("detail")
        for key in sorted((exp.keys() | act.keys()) - skip):
            e, a = _norm(key, exp.get(key)), _norm(key, act.get(key))
            if e != a:
                mismatched.append(Mismatch(mid, str(exp.get("type")), key, exp.get(key), act.get(key)))
    return Report(
        matched=matched,
        missing=tuple(m for mid, m in want.items() if mid not in got),
        unexpected=tuple(m for mid, m in got.items() if mid not in want),
        mismatched=tuple(mismatched),
        duplicated=tuple(duplicated),
    )
