"""Order lineage: the bounded, time-ordered trail of one order across events,
milestones, exceptions and ERP calls (pure; stored by the agents, read by the trace).

An entry is a dict: ``at`` (int ms), ``kind`` (event, milestone, exception, erp_call),
``id``, ``type`` and a few kind-specific fields. A trail keeps its first ``HEAD``
entries (the release and acceptance) and the latest ones, ``MAX_ENTRIES`` in all.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

from app.core import model
from app.core.model import M_SYNC_EXCEPTION, TELEMETRY, Milestone
from app.core.timeutil import parse_ts

MAX_ENTRIES: Final = 100
HEAD: Final = 20
Entry = dict[str, Any]


#: The event types kept in no order's trail: telemetry (scans, tote reads) is counted in
#: metrics. (The stage's per-record loop tests a string ``type`` against this before
#: calling ``decoded_entry``.)
UNTRAILED: Final = TELEMETRY


def decoded_entry(d: dict[str, Any]) -> tuple[tuple[str, str], Entry] | None:
    """(order key, entry) for a decoded business event that names an order, else None:
    for the ``UNTRAILED`` types, and for a record whose type, id, warehouse or order is not
    a string (the core dead-letters it; a list or an object is no set member, and an entry's
    (kind, id) is a set member in ``new_entries``)."""
    kind = d.get("type")
    if kind.__class__ is not str or kind in UNTRAILED:
        return None
    warehouse_id = d.get("warehouse_id")
    order_id = d.get("order_id")
    event_id = d.get("event_id")
    if (warehouse_id.__class__ is not str or order_id.__class__ is not str or event_id.__class__ is not str
            or not warehouse_id or not order_id):
        return None  # per event: class checks, not isinstance over a generator
    try:
        entry = {"at": parse_ts(d["occurred_at"]), "kind": "event", "id": event_id, "type": kind, "source": d["source"]}
    except (KeyError, TypeError, ValueError):
        return None
    return (warehouse_id, order_id), entry


def milestone_entry(m: Milestone) -> tuple[tuple[str, str], Entry] | None:
    order_id = m.body.get("order_id")
    if not order_id or not m.warehouse_id:
        return None
    entry: Entry = {"at": m.occurred_at, "kind": "milestone", "id": m.milestone_id, "type": m.type}
    if m.type == M_SYNC_EXCEPTION:
        entry.update(kind="exception", code=m.body["code"], detail=m.body.get("detail", ""))
    elif "version" in m.body:
        entry["version"] = m.body["version"]
    return (m.warehouse_id, order_id), entry


def new_entries(trail: list[Entry], new: list[Entry]) -> list[Entry]:
    """``new`` without entries the trail already has (same kind and id)."""
    known = {(e["kind"], e["id"]) for e in trail[-len(new) * 2 - HEAD :]} if trail else set()
    return [e for e in new if (e["kind"], e["id"]) not in known]


def extend(trail: list[Entry], new: Iterable[Entry]) -> list[Entry]:
    """The trail with ``new`` appended, capped: the first HEAD and the latest entries."""
    out = [*trail, *new]
    if len(out) > MAX_ENTRIES:
        out = out[:HEAD] + out[len(out) - (MAX_ENTRIES - HEAD) :]
    return out


def _first(trail: Iterable[Entry], mtype: str) -> Entry | None:
    return next((e for e in trail if e["kind"] == "milestone" and e["type"] == mtype), None)


def sla_samples(trail: list[Entry], new: list[Entry]) -> Iterator[tuple[str, float]]:
    """Event-time SLA samples (seconds) completed by ``new`` milestone entries:
    release -> picked (OrderAccepted v1 time to OrderPicked) and packed -> shipped."""
    both: list[Entry] | None = None  # built only for a batch that completes a sample (few do)
    for e in new:
        if e["kind"] != "milestone" or not isinstance(e.get("at"), int):
            continue
        if e["type"] == model.M_ORDER_PICKED:
            begins, name = model.M_ORDER_ACCEPTED, "release_to_picked"
        elif e["type"] == model.M_SHIPMENT_CONFIRMED:
            begins, name = model.M_ORDER_PACKED, "packed_to_shipped"
        else:
            continue
        if both is None:
            both = [*trail, *new]
        start = _first(both, begins)
        if start is not None and isinstance(start.get("at"), int):
            yield name, max(0.0, (e["at"] - start["at"]) / 1000)
