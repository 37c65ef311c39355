"""Input limits (security): oversized records, strings and lists are rule-8 rejections
with a clear reason, never a crash, and processing goes on."""
from __future__ import annotations

import orjson
import pytest

from app.core import Engine
from app.core.model import DeadLetter, Milestone
from app.core.parse import MAX_LIST, MAX_RECORD_BYTES, MAX_STRING


def pick(**over: object) -> dict:
    return {"event_id": "e1", "type": "PickConfirmed", "occurred_at": "2026-11-27T10:00:00.000Z",
            "source": "wms", "warehouse_id": "WH1", "order_id": "O1", "line_no": 1, "sku": "S",
            "qty": 1, "location": "L", **over}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        pytest.param(pick(pad="x" * MAX_RECORD_BYTES), "too_large: the record is", id="record-too-large"),
        pytest.param(pick(sku="S" * (MAX_STRING + 1)), f"field 'sku' is longer than {MAX_STRING}", id="long-sku"),
        pytest.param(pick(event_id="e" * (MAX_STRING + 1)), "field 'event_id' is longer", id="long-event-id"),
        pytest.param(pick(tote_id="t" * (MAX_STRING + 1)), "field 'tote_id' must be a string of at most", id="long-optional"),
        pytest.param(
            {**pick(), "type": "OrderReleased", "source": "erp",
             "lines": [{"line_no": n, "sku": "S", "qty": 1} for n in range(MAX_LIST + 1)]},
            f"field 'lines' has more than {MAX_LIST} entries", id="too-many-lines"),
        pytest.param(b"[" * 2000 + b"]" * 2000, "undecodable", id="deeply-nested-json"),
    ],
)
def test_limits_are_dead_letters_with_a_reason(record: dict | bytes, reason: str) -> None:
    engine = Engine()
    raw = record if isinstance(record, bytes) else orjson.dumps(record)
    out = engine.process(raw)
    letters = [o for o in out if isinstance(o, DeadLetter)]
    assert len(letters) == 1 and letters[0].reason.startswith(reason) and letters[0].raw == raw
    assert [o.body["code"] for o in out if isinstance(o, Milestone)] == ["INVALID_EVENT"]
    # processing goes on
    ok = {**pick(event_id="e2"), "type": "OrderReleased", "source": "erp", "lines": [{"line_no": 1, "sku": "S", "qty": 1}]}
    assert [o.type for o in engine.process(orjson.dumps(ok))] == ["OrderAccepted"]


def test_engine_counts_records_that_passed_rule_8_by_type_and_source() -> None:
    engine = Engine()
    engine.process(orjson.dumps(pick()))
    engine.process(orjson.dumps(pick(event_id="e2", source="carrier")))  # not authorized, still counted
    engine.process(b"{broken")
    assert engine.counts == {("PickConfirmed", "wms"): 1, ("PickConfirmed", "carrier"): 1}
