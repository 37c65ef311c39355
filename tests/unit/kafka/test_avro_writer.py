"""The generated Avro encoders write fastavro's bytes, for every schema of ``avro/``."""
from __future__ import annotations

import io
import struct
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.kafka import avro_writer, codec
from app.kafka.codec import EncodeError

SCHEMAS = {path.name: codec._parse(orjson.loads(path.read_bytes()), str(path), encodes=True)
           for path in sorted([*codec.AVRO_DIR.glob("*.avsc"), *codec.AVRO_DIR.glob("history/*.avsc")])}

TEXT = st.text(max_size=90)  # past 63 UTF-8 bytes the length takes two varint bytes
PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "string": TEXT,
    "bytes": st.binary(max_size=90),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "boolean": st.booleans(),
    "double": st.floats(allow_nan=False),
    "float": st.floats(allow_nan=False, width=32),
}


def values(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that fit ``schema`` (a parsed schema node)."""
    if isinstance(schema, str):
        return values(named[schema], named) if schema in named else PRIMITIVES[schema]
    if isinstance(schema, list):
        return st.one_of([st.none() if b == "null" else values(b, named) for b in schema])
    kind = schema["type"]
    if kind == "array":
        return st.lists(values(schema["items"], named), max_size=4)
    if kind == "record":
        named[schema["name"]] = schema
        required, optional = {}, {}
        for field in schema["fields"]:
            nullable = isinstance(field["type"], list) and "null" in field["type"]
            # a field with a default or a null branch may be left out (fastavro's non-strict rule)
            (optional if "default" in field or nullable else required)[field["name"]] = values(field["type"], named)
        return st.fixed_dictionaries(required, optional=optional)
    return values(kind, named)


def fastavro_body(parsed: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record)
    return out.getvalue()


def body(parsed: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = bytearray()
    avro_writer.compile_writer(parsed)(buf, record)
    return bytes(buf)


def test_every_schema_has_a_generated_writer() -> None:
    assert SCHEMAS and all(s.writer is not None for s in SCHEMAS.values())


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bytes_are_fastavros(name: str, data: st.DataObject) -> None:
    parsed = SCHEMAS[name].parsed
    record = data.draw(values(parsed, dict(parsed.get("__named_schemas") or {})))
    assert body(parsed, record) == fastavro_body(parsed, record)


@pytest.mark.parametrize("name", sorted(codec._registry().current))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_codec_encodes_with_it_and_reads_its_bytes_back(name: str, data: st.DataObject) -> None:
    schema = codec._registry().current[name]
    record = data.draw(values(schema.parsed, dict(schema.parsed.get("__named_schemas") or {})))
    encoded = codec.encode(record, name)
    assert encoded == schema.header + fastavro_body(schema.parsed, record)
    decoded = codec.decode(encoded)
    assert {k: v for k, v in decoded.items() if k in record} == record


@pytest.mark.parametrize("n", [0, 1, -1, 63, -64, 64, -65, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)])
def test_long_edges(n: int) -> None:
    parsed = fastavro.parse_schema({"type": "record", "name": "L", "fields": [{"name": "n", "type": "long"}]})
    assert body(parsed, {"n": n}) == fastavro_body(parsed, {"n": n})


LONGS = {"type": "record", "name": "W", "fields": [
    {"name": "s", "type": "string"}, {"name": "n", "type": "long"}, {"name": "b", "type": "boolean"},
    {"name": "d", "type": ["null", "double"]}, {"name": "k", "type": "long", "default": 7},
    {"name": "a", "type": {"type": "array", "items": "string"}}]}


def test_missing_fields_take_the_default_or_null_and_a_required_one_is_an_error() -> None:
    parsed = fastavro.parse_schema(LONGS)
    record = {"s": "x", "n": 1, "b": True, "a": []}
    assert body(parsed, record) == fastavro_body(parsed, {**record, "d": None, "k": 7})
    with pytest.raises(KeyError):
        body(parsed, {"n": 1, "b": True, "a": []})


@pytest.mark.parametrize(("field", "value", "error"), [
    ("s", 5, AttributeError), ("s", None, AttributeError), ("s", b"x", AttributeError),
    ("n", "5", TypeError), ("n", None, TypeError), ("n", 2**63, OverflowError), ("n", 1.5, TypeError),
    ("b", "yes", TypeError), ("b", 1, TypeError), ("d", "1.0", struct.error), ("a", None, TypeError),
])
def test_a_value_of_the_wrong_type_raises(field: str, value: Any, error: type[Exception]) -> None:
    parsed = fastavro.parse_schema(LONGS)
    with pytest.raises(error):
        body(parsed, {"s": "x", "n": 1, "b": True, "a": [], field: value})


UNIONS = {"type": "record", "name": "U", "fields": [
    {"name": "i", "type": ["null", "int"]}, {"name": "l", "type": ["long", "null"]},
    {"name": "f", "type": ["null", "float"]}, {"name": "y", "type": "bytes"}]}


@pytest.mark.parametrize(("field", "value", "error"), [
    # fastavro picks a union's branch by type: a bool matches no number, an int branch only 32 bits
    ("i", True, TypeError), ("l", False, TypeError), ("f", True, TypeError),
    ("i", 2**31, OverflowError), ("i", -(2**31) - 1, OverflowError),
    ("y", [1, 2], TypeError), ("y", "ab", TypeError), ("y", 5, TypeError),
])
def test_union_branches_and_bytes_take_only_their_types_as_fastavro_does(field: str, value: Any,
                                                                       error: type[Exception]) -> None:
    parsed = fastavro.parse_schema(UNIONS)
    record = {"i": 1, "l": 2, "f": 0.5, "y": b"ab", field: value}
    with pytest.raises(error):
        body(parsed, record)
    with pytest.raises(Exception):  # noqa: B017 - fastavro's own error types vary by case
        fastavro_body(parsed, record)


def test_union_edges_and_byte_likes_encode_as_fastavro() -> None:
    parsed = fastavro.parse_schema(UNIONS)
    for record in ({"i": 2**31 - 1, "l": None, "f": None, "y": bytearray(b"x")},
                   {"i": -(2**31), "l": -(2**63), "f": 1, "y": memoryview(b"")}):
        assert body(parsed, record) == fastavro_body(parsed, {**record, "y": bytes(record["y"])})


def test_the_codec_reports_a_wrong_value_as_an_encode_error() -> None:
    picked = {"milestone_id": "m", "type": "OrderPicked", "warehouse_id": "WH1", "occurred_at": 1, "event_ids": ["e"],
              "order_id": "SO1", "lines": [{"line_no": 1, "sku": "S", "ordered": 1, "picked": "1"}], "short": False}
    with pytest.raises(EncodeError, match=r"cannot encode syncgov\.milestone\.OrderPicked: TypeError"):
        codec.encode(picked, "syncgov.milestone.OrderPicked")


@pytest.mark.parametrize("field_type", [
    {"type": "enum", "name": "E", "symbols": ["A"]},
    {"type": "map", "values": "string"},
    ["string", "long"],
    ["null", "string", "long"],
    {"type": "fixed", "name": "F", "size": 2},
    # fastavro converts the values of logical types (a uuid, a date, a Decimal...): left to it
    {"type": "string", "logicalType": "uuid"},
    {"type": "int", "logicalType": "date"},
    {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2},
    {"type": "long", "logicalType": "timestamp-micros"},
    # recursion: the record itself, or a record nested in it
    ["null", "U"],
    {"type": "array", "items": {"type": "record", "name": "N", "fields": [{"name": "n", "type": ["null", "N"]}]}},
])
def test_other_types_are_left_to_fastavro(field_type: Any) -> None:
    schema = {"type": "record", "name": "U", "fields": [{"name": "x", "type": field_type}]}
    with pytest.raises(avro_writer.Unsupported):
        avro_writer.compile_writer(fastavro.parse_schema(schema))
    assert codec._writer(fastavro.parse_schema(schema)) is None


def test_a_registry_schema_only_decodes_and_may_be_recursive() -> None:
    """Schemas fetched from a registry are never written with: no writer is generated for
    them, so one the generator could not handle (here a recursive one) decodes as before."""
    node = {"type": "record", "name": "Node", "namespace": "x",
            "fields": [{"name": "v", "type": "long"}, {"name": "next", "type": ["null", "Node"]}]}
    record = {"v": 1, "next": {"v": 2, "next": None}}
    raw = fastavro_body(fastavro.parse_schema(node), record)
    assert codec._parse(node, "registry").writer is None
    codec.use_registry(lambda schema_id: orjson.dumps(node).decode())
    try:
        assert codec.decode(b"\x00" + (7).to_bytes(4, "big") + raw) == record
    finally:
        codec.use_registry(None)
