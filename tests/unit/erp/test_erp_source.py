"""The order-release connector's logic against a scripted in-memory Tryton."""
from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from app.erp.source import SourceCursor, poll

T0 = dt.datetime(2026, 11, 27, 10, 0, 0, 123456)


class FakeTryton:
    """Answers ``search`` on stock.shipment.out like Tryton: keyset domain, order, limit."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}
        self.searches: list[list[Any]] = []

    def put(self, sid: int, state: str, at: dt.datetime, lines: list[tuple[int, str, float]],
            carrier: str | None = None) -> None:
        self.rows[sid] = {
            "id": sid, "number": f"OUT-{sid:06d}", "state": state, "write_date": at,
            "warehouse": {"id": 5, "code": "WH1"}, "carrier": {"rec_name": carrier} if carrier else None,
            "outgoing_moves": [{"id": mid, "product": {"code": sku}, "quantity": qty, "state": "draft"}
                               for mid, sku, qty in lines],
        }

    @staticmethod
    def _match(row: dict[str, Any], clause: Any) -> bool:
        if clause and clause[0] == "OR":
            return any(FakeTryton._match(row, c) for c in clause[1:])
        if clause and isinstance(clause[0], (list, tuple)) and not isinstance(clause[0], str):
            return all(FakeTryton._match(row, c) for c in clause)
        name, op, value = clause
        have = row[name]
        return {"=": lambda: have == value, "!=": lambda: have != value, ">": lambda: have > value,
                "in": lambda: have in value}[op]()

    async def search(self, model: str, domain: list[Any], fields: Any, *, limit: int | None = None,
                     order: Any = None) -> list[dict[str, Any]]:
        assert model == "stock.shipment.out"
        self.searches.append(domain)
        rows = sorted((r for r in self.rows.values() if all(self._match(r, c) for c in self._clauses(domain))),
                      key=lambda r: (r["write_date"], r["id"]))
        return [dict(r) for r in rows[:limit]]

    @staticmethod
    def _clauses(domain: list[Any]) -> list[Any]:
        return [domain] if domain and domain[0] == "OR" else domain


async def test_release_change_cancel_each_exactly_once() -> None:
    erp = FakeTryton()
    erp.put(1, "waiting", T0, [(11, "SKU-0001", 2.0), (12, "SKU-0002", 1.0)], carrier="DHL")
    erp.put(2, "draft", T0, [(21, "SKU-0003", 1.0)])
    events, cursor = await poll(erp, SourceCursor())
    assert [(e["type"], e["order_id"]) for e in events] == [("OrderReleased", "OUT-000001")]
    assert events[0] == {
        "event_id": f"tryton:stock.shipment.out:1:{T0.isoformat()}", "type": "OrderReleased",
        "occurred_at": "2026-11-27T10:00:00.123Z", "source": "erp", "warehouse_id": "WH1",
        "order_id": "OUT-000001", "carrier": "DHL",
        "lines": [{"line_no": 11, "sku": "SKU-0001", "qty": 2}, {"line_no": 12, "sku": "SKU-0002", "qty": 1}],
    }
    assert (await poll(erp, cursor))[0] == []

    # A write that does not change the lines (e.g. assignment) yields nothing.
    erp.put(1, "assigned", T0 + dt.timedelta(seconds=1), [(11, "SKU-0001", 2.0), (12, "SKU-0002", 1.0)])
    events, cursor = await poll(erp, cursor)
    assert events == []

    erp.put(1, "waiting", T0 + dt.timedelta(seconds=2), [(11, "SKU-0001", 5.0)])
    events, cursor = await poll(erp, cursor)
    assert [(e["type"], e["lines"]) for e in events] == [
        ("OrderChanged", [{"line_no": 11, "sku": "SKU-0001", "qty": 5}])]
    assert (await poll(erp, cursor))[0] == []

    erp.put(1, "cancelled", T0 + dt.timedelta(seconds=3), [(11, "SKU-0001", 5.0)])
    events, cursor = await poll(erp, cursor)
    assert [e["type"] for e in events] == ["OrderCancelled"]
    assert 1 not in cursor.open
    assert (await poll(erp, cursor))[0] == []


async def test_picked_shipments_leave_the_cursor_and_cancel_of_unreleased_is_silent() -> None:
    erp = FakeTryton()
    erp.put(1, "waiting", T0, [(11, "SKU-0001", 1.0)])
    _, cursor = await poll(erp, SourceCursor())
    erp.put(1, "picked", T0 + dt.timedelta(seconds=1), [(11, "SKU-0001", 1.0)])
    erp.put(3, "draft", T0 + dt.timedelta(seconds=1), [(31, "SKU-0001", 1.0)])
    events, cursor = await poll(erp, cursor)
    assert events == [] and dict(cursor.open) == {}
    erp.put(3, "cancelled", T0 + dt.timedelta(seconds=2), [(31, "SKU-0001", 1.0)])
    assert (await poll(erp, cursor))[0] == []


async def test_a_late_commit_inside_the_overlap_is_still_seen_once() -> None:
    erp = FakeTryton()
    erp.put(1, "waiting", T0, [(11, "SKU-0001", 1.0)])
    _, cursor = await poll(erp, SourceCursor())
    erp.put(2, "waiting", T0 - dt.timedelta(seconds=2), [(21, "SKU-0002", 1.0)])  # committed after the poll
    events, cursor = await poll(erp, cursor, overlap_s=5)
    assert [e["order_id"] for e in events] == ["OUT-000002"]
    assert (await poll(erp, cursor, overlap_s=5))[0] == []
    assert cursor.write_date == T0  # the cursor never moves back


async def test_pages_through_many_changes_with_a_keyset() -> None:
    erp = FakeTryton()
    for sid in range(1, 26):  # many shipments written in one transaction share a write_date
        erp.put(sid, "waiting", T0, [(sid * 10, "SKU-0001", 1.0)])
    events, cursor = await poll(erp, SourceCursor(), page_size=10)
    assert len(events) == 25 and len({e["event_id"] for e in events}) == 25
    assert len(erp.searches) == 3
    assert (cursor.write_date, cursor.last_id) == (T0, 25)


async def test_the_cursor_round_trips_through_json() -> None:
    erp = FakeTryton()
    erp.put(7, "waiting", T0, [(70, "SKU-0001", 1.5)])
    events, cursor = await poll(erp, SourceCursor())
    assert events[0]["lines"][0]["qty"] == 1.5
    assert SourceCursor.from_json(cursor.to_json()) == cursor
    assert (await poll(erp, SourceCursor.from_json(cursor.to_json())))[0] == []


def test_an_order_the_contract_cannot_carry_is_published_for_the_dead_letters_not_a_stopped_source() -> None:
    """ERP data that does not fit the contract (a fractional quantity, a product without a
    code) is published as JSON, which the worker dead-letters with the contract's reason;
    the other releases are published as Avro and the source goes on (it once raised, and the
    cursor never moved past that order again)."""
    from app.commands.source import encoded
    from app.core.engine import Engine
    from app.core.model import DeadLetter
    from app.kafka import codec

    good = {"event_id": "tryton:s1", "type": "OrderReleased", "occurred_at": "2026-11-27T08:00:00.000Z",
            "source": "erp", "warehouse_id": "WH1", "order_id": "O-1",
            "lines": [{"line_no": 1, "sku": "SKU-1", "qty": 2}]}
    assert encoded(good)[:2] == codec.MAGIC and codec.decode_input(encoded(good))["order_id"] == "O-1"
    for line, field in (({"line_no": 1, "sku": "SKU-1", "qty": 2.5}, "lines[0].qty"),
                        ({"line_no": 1, "sku": None, "qty": 2}, "lines[0].sku")):
        bad = {**good, "lines": [line]}
        raw = encoded(bad)
        assert orjson.loads(raw) == bad
        letters = [o for o in Engine().process(raw) if isinstance(o, DeadLetter)]
        assert len(letters) == 1 and f"'{field}'" in letters[0].reason and letters[0].raw == raw
