"""Tryton adapter pieces that need no server: JSON codec, pick planning, dispatch."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from app.erp.port import PermanentErpError
from app.erp.tryton import TrytonAdapter, _decode, dumps

SHIP = {
    "id": 9, "number": "OUT-000009", "state": "waiting",
    "outgoing_moves": [{"id": 101, "state": "draft"}, {"id": 102, "state": "draft"}, {"id": 103, "state": "cancelled"}],
    "inventory_moves": [
        {"id": 201, "quantity": 3.0, "origin": "stock.move,101", "state": "draft"},
        {"id": 202, "quantity": 2.0, "origin": "stock.move,102", "state": "draft"},
        {"id": 203, "quantity": 1.0, "origin": "stock.move,102", "state": "draft"},
    ],
}


def test_the_codec_speaks_trytons_json() -> None:
    value = {"d": dt.date(2026, 11, 27), "t": dt.datetime(2026, 11, 27, 10, 1, 2, 345678), "n": Decimal("12.50")}
    encoded = json.loads(dumps(value))
    assert encoded["n"] == {"__class__": "Decimal", "decimal": "12.50"}
    assert encoded["d"] == {"__class__": "date", "year": 2026, "month": 11, "day": 27}
    assert json.loads(dumps(value), object_hook=_decode) == value
    with pytest.raises(TypeError):
        dumps({"x": object()})


def test_pick_changes_set_picked_quantities_and_zero_extra_moves() -> None:
    changes = TrytonAdapter._pick_changes(SHIP, {101: 3.0, 102: 1.0})
    assert changes == [(202, 1.0), (203, 0.0)]
    assert TrytonAdapter._pick_changes(SHIP, {101: 3.0, 102: 3.0}) == [(202, 3.0), (203, 0.0)]
    assert TrytonAdapter._pick_changes(SHIP, {101: 0.0}) == [(201, 0.0), (202, 0.0), (203, 0.0)]


def test_pick_of_a_line_the_shipment_does_not_have_is_permanent() -> None:
    with pytest.raises(PermanentErpError, match=r"line_no \[103, 999\] are not outgoing moves"):
        TrytonAdapter._pick_changes(SHIP, {101: 1.0, 103: 1.0, 999: 1.0})


class NoCalls:
    async def search(self, *args: object, **kwargs: object) -> list[object]:
        raise AssertionError("no ERP call expected")


async def test_dispatch_without_erp_calls() -> None:
    adapter = TrytonAdapter(NoCalls())  # type: ignore[arg-type]
    assert (await adapter.post({"type": "SyncException", "milestone_id": "m"})).outcome == "skipped"
    with pytest.raises(PermanentErpError, match="no Tryton mapping for milestone type 'Bogus'"):
        await adapter.post({"type": "Bogus", "milestone_id": "m"})
    with pytest.raises(PermanentErpError, match="OrderPacked milestone cannot be mapped: KeyError 'order_id'"):
        await adapter.post({"type": "OrderPacked", "milestone_id": "m"})
