"""The direct Avro writer (``app.kafka.avro_writer``) writes exactly fastavro's bytes, for
every record of the simulator's default mix and the milestones replay makes of it, for the
edge cases of each type, and for random records of every schema; what it does not take, it
leaves to fastavro (the same bytes or the same error as before)."""
from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from fastavro import schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from app.commands.replay import replay_partitions
from app.core.model import DeadLetter, Milestone
from app.kafka import avro_writer, codec
from tests.integration.streams import simulate


def fastavro_bytes(record: Mapping[str, Any], name: str) -> bytes:
    """What ``codec.encode`` wrote before the direct writer: fastavro over the same record."""
    schema = codec._registry().current[name]
    if schema.timestamps:
        record = {**record, **{f: codec._to_ms(record.get(f)) for f in schema.timestamps}}
    out = io.BytesIO()
    out.write(schema.header)
    schemaless_writer(out, schema.parsed, record)
    return out.getvalue()


def direct_bytes(record: Mapping[str, Any], name: str) -> bytes:
    """The direct writer alone (no fallback): raises ``Unhandled`` if it does not take it."""
    schema = codec._registry().current[name]
    assert schema.direct is not None
    if schema.timestamps:
        record = {**record, **{f: codec._to_ms(record.get(f)) for f in schema.timestamps}}
    out = bytearray(schema.header)
    schema.direct(out, record)
    return bytes(out)


def test_every_schema_in_avro_has_a_direct_writer() -> None:
    assert [name for name, s in codec._registry().current.items() if s.direct is None] == []


@pytest.fixture(scope="module")
def stream() -> list[bytes]:
    return [value for _, value in simulate(orders=400, warehouses=2, seed=5)]


def test_the_default_mix_and_its_milestones_and_dead_letters_encode_to_fastavros_bytes(stream: list[bytes]) -> None:
    events = []
    for v in stream:
        try:
            e = orjson.loads(v)
        except orjson.JSONDecodeError:
            continue  # the mix's poison records
        if isinstance(e, dict) and f"{codec.EVENT_NAMESPACE}.{e.get('type')}" in SCHEMAS:
            events.append(e)
    assert len({e["type"] for e in events}) == 11  # every event type of the contract
    direct = 0
    for e in events:
        name = f"{codec.EVENT_NAMESPACE}.{e['type']}"
        try:
            expected = fastavro_bytes(e, name)
        except Exception:  # a malformed event of the mix: fastavro's own error path
            continue
        assert codec.encode_event(e) == expected
        try:
            assert direct_bytes(e, name) == expected
            direct += 1
        except avro_writer.Unhandled:
            pass  # e.g. an optional field left out: fastavro writes its default
    assert direct >= 0.9 * len(events)
    outs = replay_partitions([stream])
    milestones = [o.to_dict() for o in outs if isinstance(o, Milestone)]
    assert len({m["type"] for m in milestones}) == 7  # every milestone type, SyncException included
    for m in milestones:
        name = f"{codec.MILESTONE_NAMESPACE}.{m['type']}"
        assert direct_bytes(m, name) == fastavro_bytes(m, name) == codec.encode_milestone(m)
    letters = [o for o in outs if isinstance(o, DeadLetter)]
    assert letters
    for d in letters:
        record = {"raw": d.raw, "reason": d.reason, "record_id": d.record_id, "topic": "t", "partition": 3,
                  "offset": 2**40, "failed_at": 1_796_000_000_000}
        assert direct_bytes(record, codec.DEAD_LETTER_SCHEMA) == fastavro_bytes(record, codec.DEAD_LETTER_SCHEMA)


def pack(**over: Any) -> dict[str, Any]:
    base = {"event_id": "e-1", "type": "PackConfirmed", "occurred_at": 1_796_000_000_000, "source": "wms",
            "warehouse_id": "WH1", "order_id": "SO1", "package_id": "P1", "weight_kg": 1.25,
            "items": [{"line_no": 1, "qty": 2}]}
    base.update(over)
    return base


@pytest.mark.parametrize("over", [
    {},
    {"weight_kg": None},
    {"items": []},
    {"items": [{"line_no": i, "qty": i * 1000} for i in range(200)]},  # multi-byte counts and values
    {"order_id": "SO-ÄÖÜ-注文-🙂"},
    {"order_id": "x" * 5000},
    {"occurred_at": -1},
    {"occurred_at": 2**63 - 1},
    {"occurred_at": -(2**63)},
    {"items": [{"line_no": 2**31 - 1, "qty": -(2**31)}]},
    {"weight_kg": float("inf")},
    {"weight_kg": -0.0},
])
def test_edge_values_are_fastavros_bytes(over: dict[str, Any]) -> None:
    record = pack(**over)
    name = f"{codec.EVENT_NAMESPACE}.PackConfirmed"
    assert direct_bytes(record, name) == fastavro_bytes(record, name)


@pytest.mark.parametrize("over", [
    {"weight_kg": 2},            # an int where a double is: fastavro converts it
    {"items": [{"line_no": True, "qty": 1}]},  # a bool where an int is
    {"items": ({"line_no": 1, "qty": 1},)},  # a tuple is an array to both
    {"items": [{"line_no": 1, "qty": 2**31}]},  # out of the int range
    {"occurred_at": 2**64},      # out of the long range
    {"package_id": 7},           # a number where a string is
    {"package_id": "\ud800"},    # a lone surrogate: no UTF-8 for it
])
def test_what_the_direct_writer_does_not_take_goes_to_fastavro_unchanged(over: dict[str, Any]) -> None:
    record = pack(**over)
    name = f"{codec.EVENT_NAMESPACE}.PackConfirmed"
    try:
        expected: bytes | type[Exception] = fastavro_bytes(record, name)
    except Exception as exc:  # fastavro's verdict, whatever its type
        expected = type(exc)
    if isinstance(expected, bytes):
        assert codec.encode_event(record) == expected
    else:
        with pytest.raises(codec.EncodeError):
            codec.encode_event(record)


def test_a_missing_field_with_a_default_is_written_by_fastavro_with_its_default() -> None:
    record = pack()
    del record["weight_kg"]
    name = f"{codec.EVENT_NAMESPACE}.PackConfirmed"
    with pytest.raises(avro_writer.Unhandled):
        direct_bytes(record, name)
    assert codec.encode_event(record) == fastavro_bytes(record, name) == fastavro_bytes(pack(weight_kg=None), name)


def test_schemas_outside_what_it_writes_compile_to_none() -> None:
    assert avro_writer.compile_writer({"type": "record", "name": "X", "fields": [{"name": "m", "type": {"type": "map", "values": "int"}}]}) is None
    assert avro_writer.compile_writer({"type": "record", "name": "X", "fields": [{"name": "u", "type": ["int", "string"]}]}) is None
    assert avro_writer.compile_writer({"type": "record", "name": "X", "fields": [{"name": "f", "type": "float"}]}) is None
    assert avro_writer.compile_writer({"type": "record", "name": "X", "fields": [{"name": "r", "type": "Other"}]}) is None


def datum(node: Any) -> st.SearchStrategy[Any]:
    """Random values of a parsed schema node."""
    if isinstance(node, list):
        return st.one_of(*(datum(b) for b in node))
    kind = node if isinstance(node, str) else node["type"]
    if kind == "record":
        return st.fixed_dictionaries({f["name"]: datum(f["type"]) for f in node["fields"]})
    if kind == "array":
        return st.lists(datum(node["items"]), max_size=70)
    return {
        "null": st.none(), "boolean": st.booleans(), "string": st.text(max_size=80), "bytes": st.binary(max_size=80),
        "int": st.integers(-(2**31), 2**31 - 1), "long": st.integers(-(2**63), 2**63 - 1),
        "double": st.floats(allow_nan=False),
    }[kind]


SCHEMAS = sorted(codec._registry().current)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SCHEMAS).flatmap(lambda n: st.tuples(st.just(n), datum(codec._registry().current[n].parsed))))
def test_random_records_of_every_schema_are_fastavros_bytes(case: tuple[str, dict[str, Any]]) -> None:
    name, record = case
    schema = codec._registry().current[name]
    assert schema.direct is not None
    out = bytearray()
    schema.direct(out, record)
    reference = io.BytesIO()
    schemaless_writer(reference, schema.parsed, record)
    assert bytes(out) == reference.getvalue()
