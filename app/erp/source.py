"""Order-release source: poll Tryton for customer shipments waiting for the warehouse.

The ERP owns orders. Each poll reads ``stock.shipment.out`` changed since the
cursor (keyset on ``(write_date, id)``, re-reading the last ``overlap_s``
seconds to catch transactions that committed late) through the same
rate-limited client as the milestone sink, and turns changes into contract
events with ``source: erp``:

- a shipment in ``waiting``/``assigned`` not released yet -> ``OrderReleased``;
- a released one whose lines changed (the ERP resets it to draft, edits the
  moves and waits it again) -> ``OrderChanged`` with the full lines;
- a released one now ``cancelled`` -> ``OrderCancelled``.

The cursor remembers a fingerprint of the lines of every released shipment
still open, so a re-poll never yields a change twice; a shipment leaves the
cursor once the warehouse has picked it or it is cancelled. ``event_id`` is
derived from (shipment id, write_date): a poll from an older cursor repeats
the same ids, which the governance deduplicates.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.core.timeutil import format_ts
from app.erp.port import PermanentErpError
from app.erp.tryton import SHIPMENT, TrytonRest

OPEN_STATES = ("waiting", "assigned")
_FIELDS = (
    "number", "state", "write_date", "warehouse.code", "carrier.rec_name",
    "outgoing_moves.product.code", "outgoing_moves.quantity", "outgoing_moves.state",
)
_EPOCH = dt.datetime(1970, 1, 1)


@dataclass(frozen=True)
class SourceCursor:
    """Where the last poll stopped; JSON-serialisable for a table or a file."""

    write_date: dt.datetime | None = None  # naive UTC, as Tryton stores it
    last_id: int = 0
    open: Mapping[int, str] = field(default_factory=dict)  # released shipment id -> lines fingerprint

    def to_json(self) -> dict[str, Any]:
        return {
            "write_date": self.write_date.isoformat() if self.write_date else None,
            "last_id": self.last_id,
            "open": {str(k): v for k, v in sorted(self.open.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SourceCursor:
        stamp = data.get("write_date")
        return cls(
            write_date=dt.datetime.fromisoformat(stamp) if stamp else None,
            last_id=int(data.get("last_id", 0)),
            open={int(k): str(v) for k, v in (data.get("open") or {}).items()},
        )


def _ms(stamp: dt.datetime) -> int:
    return (stamp - _EPOCH) // dt.timedelta(milliseconds=1)


def _qty(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _lines(row: dict[str, Any]) -> list[dict[str, Any]]:
    lines = [
        {"line_no": mv["id"], "sku": (mv.get("product") or {}).get("code"), "qty": _qty(mv["quantity"])}
        for mv in row.get("outgoing_moves") or []
        if mv.get("state") != "cancelled" and mv.get("quantity")
    ]
    return sorted(lines, key=lambda line: line["line_no"])


def fingerprint(lines: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(lines, sort_keys=True).encode()).hexdigest()[:16]


def _event(kind: str, row: dict[str, Any], stamp: dt.datetime, **body: Any) -> dict[str, Any]:
    return {
        "event_id": f"tryton:{SHIPMENT}:{row['id']}:{stamp.isoformat()}",
        "type": kind,
        "occurred_at": format_ts(_ms(stamp)),
        "source": "erp",
        "warehouse_id": (row.get("warehouse") or {}).get("code"),
        "order_id": row["number"],
        **body,
    }


def _change(row: dict[str, Any], stamp: dt.datetime, open_: dict[int, str]) -> dict[str, Any] | None:
    """The event for this shipment version (updating ``open_``), or None."""
    sid, state, seen = row["id"], row["state"], open_.get(row["id"])
    if state in OPEN_STATES:
        lines = _lines(row)
        mark = fingerprint(lines)
        if seen == mark:
            return None
        open_[sid] = mark
        if seen is not None:
            return _event("OrderChanged", row, stamp, lines=lines)
        carrier = (row.get("carrier") or {}).get("rec_name")
        return _event("OrderReleased", row, stamp, lines=lines, **({"carrier": carrier} if carrier else {}))
    if state == "draft":  # the ERP is editing it; its next wait tells what changed
        return None
    open_.pop(sid, None)
    if state == "cancelled" and seen is not None:
        return _event("OrderCancelled", row, stamp)
    return None


async def poll(
    rest: TrytonRest,
    cursor: SourceCursor,
    *,
    page_size: int = 100,
    max_pages: int = 10,
    overlap_s: float = 5.0,
) -> tuple[list[dict[str, Any]], SourceCursor]:
    """Read the shipments changed since ``cursor``; return the events and the next cursor."""
    open_ = dict(cursor.open)
    events: list[dict[str, Any]] = []
    first = cursor.write_date is None
    key = None if cursor.write_date is None else (cursor.write_date - dt.timedelta(seconds=overlap_s), 0)
    best = None if first else (cursor.write_date, cursor.last_id)
    for _ in range(max_pages):
        if key is None:
            domain: list[Any] = [("state", "in", list(OPEN_STATES)), ("write_date", "!=", None)]
        else:
            domain = ["OR", [("write_date", ">", key[0])], [("write_date", "=", key[0]), ("id", ">", key[1])]]
            if first:
                domain = [domain, ("state", "in", list(OPEN_STATES))]
        rows = await rest.search(SHIPMENT, domain, _FIELDS, limit=page_size,
                                 order=[("write_date", "ASC"), ("id", "ASC")])
        for row in rows:
            stamp = row.get("write_date")
            if not isinstance(stamp, dt.datetime) or "id" not in row or "number" not in row:
                raise PermanentErpError(200, f"unexpected {SHIPMENT} row from Tryton: {str(row)[:300]}")
            event = _change(row, stamp, open_)
            if event is not None:
                events.append(event)
            key = (stamp, row["id"])
            best = key if best is None or key > best else best
        if len(rows) < page_size:
            break
    if best is None:  # first poll, nothing open yet: start from now on the next one
        return events, SourceCursor(None, 0, open_)
    return events, SourceCursor(best[0], best[1], open_)
