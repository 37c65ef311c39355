"""The ERP port's typed boundary: what reaches an adapter is a ``MilestoneRecord`` whose head
is complete and whose type the port knows; anything else is refused by name. (On the
milestones topic an unknown type cannot occur: each type has its own Avro schema, and a
record no schema decodes is the sink's dead letter, ``test_erp_sink_ordered``.)"""
from __future__ import annotations

import pytest

from app.core import model
from app.erp.port import MilestoneRecord, as_record, milestone_record
from app.erp.sink import decode_milestone_default
from app.kafka import codec
from tests.unit.erp.sinkfakes import milestone


def test_a_core_milestone_becomes_the_ports_record_with_its_contract_fields() -> None:
    m = model.Milestone("m1", model.M_ORDER_PACKED, "WH1", 1_800_000_000_000, ("e1", "e2"),
                        {"order_id": "OUT-1", "package_ids": ["P1"]})
    record: MilestoneRecord = as_record(m)
    assert record == {"milestone_id": "m1", "type": "OrderPacked", "warehouse_id": "WH1",
                      "occurred_at": "2027-01-15T08:00:00.000Z", "event_ids": ["e1", "e2"],
                      "order_id": "OUT-1", "package_ids": ["P1"]}
    assert milestone_record(record) == record
    assert decode_milestone_default(codec.encode_milestone(record)) == record  # what the sink reads


@pytest.mark.parametrize("key", ["milestone_id", "type", "warehouse_id", "occurred_at", "event_ids"])
def test_a_record_without_a_head_field_is_refused_naming_it(key: str) -> None:
    m = milestone("m1")
    del m[key]
    with pytest.raises(ValueError, match=f"milestone without {key}"):
        milestone_record(m)


def test_a_record_of_a_type_the_port_does_not_know_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="unknown milestone type 'OrderTeleported'"):
        milestone_record(milestone("m1", "OrderTeleported"))


def test_every_core_milestone_type_is_a_port_type() -> None:
    for kind in model.MILESTONE_TYPES:
        assert milestone_record(milestone("m1", kind))["type"] == kind


@pytest.mark.parametrize(("field", "value", "message"), [
    ("milestone_id", 7, "milestone_id must be a non-empty string, got int"),
    ("milestone_id", "", "milestone_id must be a non-empty string, got str"),
    ("type", ["OrderPicked"], "unknown milestone type"),
    ("warehouse_id", 3, "warehouse_id must be a string or null, got int"),
    ("occurred_at", 1_800_000_000_000, "occurred_at must be a string or null, got int"),
    ("order_id", ["OUT-1"], "order_id must be a string or null, got list"),
    ("event_ids", "e1", "event_ids must be a list of strings"),
    ("event_ids", [1], "event_ids must be a list of strings"),
    ("note", b"\x01", "milestone is not JSON"),
])
def test_a_record_with_a_field_of_another_type_is_refused_naming_it(field: str, value: object, message: str) -> None:
    """What another producer's schema may decode to (an int id, bytes, a list) is refused by
    name: the sink makes it a dead letter instead of failing on it later."""
    m = {**milestone("m1"), field: value}
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        milestone_record(m)
