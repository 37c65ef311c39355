"""Schema evolution: every published version stays decodable and fully transitively compatible."""

from __future__ import annotations

import io
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form
from fastavro.utils import generate_many

from app.kafka import codec

HISTORY = codec.AVRO_DIR / "history"

#: Every fingerprint ever published, by schema. Changing a schema changes its fingerprint: add the
#: new one here and copy the old file to avro/history/ (the test below then keeps it decodable).
PUBLISHED: dict[str, set[int]] = {
    "syncgov.event.ItemScanned": {0xD31CC7D486C8E1A3},
    "syncgov.event.LineShortClosed": {0x1573BCD0CD39EDFF},
    "syncgov.event.OrderCancelled": {0xA6C9C3958C4B6666},
    "syncgov.event.OrderChanged": {0x2C7B6729420008F9},
    "syncgov.event.OrderReleased": {0x9078C9F4C9CE5950},
    "syncgov.event.PackConfirmed": {0xD49B8E980EA1AC65},
    "syncgov.event.PickConfirmed": {0x9E7F294BCE4B9D12, 0xD13DF336832B564B},
    "syncgov.event.ReturnReceived": {0x11D166726C18B2C3},
    "syncgov.event.ShipmentDispatched": {0x742868450AD3CDCE},
    "syncgov.event.StockAdjusted": {0xBEA37911DC20183C},
    "syncgov.event.ToteConveyed": {0xDEC10DCD4B90F441},
    "syncgov.milestone.InventoryAdjusted": {0x68F80262E85BAFC4},
    "syncgov.milestone.OrderAccepted": {0xF59D108DE6ADB1AD},
    "syncgov.milestone.OrderPacked": {0x0787CA046C9D5883},
    "syncgov.milestone.OrderPicked": {0x4C00C51AFED70902},
    "syncgov.milestone.ReturnReceived": {0x143323D07AD77649},
    "syncgov.milestone.ShipmentConfirmed": {0x44500E0F0C8115ED},
    "syncgov.milestone.SyncException": {0x6BFF5CC9ADFD7C66},
    "syncgov.ops.DeadLetter": {0x6DFC8BBD564AE12B},
}

#: Avro's type promotions (writer -> reader).
PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def full_name(schema: dict[str, Any]) -> str:
    return f"{schema['namespace']}.{schema['name']}" if "." not in schema["name"] else schema["name"]


def versions() -> dict[str, list[Path]]:
    """Every schema file (history and current) grouped by full name."""
    grouped: dict[str, list[Path]] = {}
    for path in sorted(HISTORY.glob("*.avsc")) + sorted(codec.AVRO_DIR.glob("*.avsc")):
        grouped.setdefault(full_name(load(path)), []).append(path)
    return grouped


def test_file_names_match_schema_names() -> None:
    for path in codec.AVRO_DIR.glob("*.avsc"):
        assert path.name == f"{full_name(load(path))}.avsc"
    for path in HISTORY.glob("*.avsc"):
        assert re.fullmatch(re.escape(full_name(load(path))) + r"\.v\d+\.avsc", path.name), path.name


def test_history_has_at_least_one_superseded_version() -> None:
    assert (HISTORY / "syncgov.event.PickConfirmed.v1.avsc").exists()
    assert len(versions()["syncgov.event.PickConfirmed"]) >= 2


def test_every_published_fingerprint_is_decodable_and_every_current_one_is_published() -> None:
    known = codec.known_fingerprints()
    for name, fingerprints in PUBLISHED.items():
        for fp in fingerprints:
            assert known.get(fp) == name, f"{name} 0x{fp:016x} is no longer decodable: keep it in avro/history/"
    for name in codec.schema_names():
        assert codec.schema_fingerprint(name) in PUBLISHED.get(name, set()), f"new fingerprint for {name}: publish it"


def test_old_writer_is_resolved_to_the_current_reader() -> None:
    v1 = load(HISTORY / "syncgov.event.PickConfirmed.v1.avsc")
    record = {
        "event_id": "e-old",
        "type": "PickConfirmed",
        "occurred_at": 1795773600000,
        "source": "robotics",
        "warehouse_id": "W1",
        "order_id": "O1",
        "line_no": 1,
        "sku": "SKU-1",
        "qty": 2,
        "location": "A-01",
    }
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(v1), record)
    raw = b"\xc3\x01" + codec.fingerprint(v1).to_bytes(8, "little") + body.getvalue()
    assert codec.fingerprint(v1) != codec.schema_fingerprint("syncgov.event.PickConfirmed")
    assert codec.decode(raw) == {**record, "tote_id": None, "wave_id": None}


def _field_type_name(type_: Any) -> str:
    return to_parsing_canonical_form(type_).strip('"')


def compat_problems(writer: dict[str, Any], reader: dict[str, Any]) -> list[str]:
    """Static Avro resolution rules for top-level fields (writer data read with reader)."""
    written = {f["name"]: f for f in writer["fields"]}
    problems = []
    for field in reader["fields"]:
        names = {field["name"], *field.get("aliases", ())}
        source = next((written[n] for n in names if n in written), None)
        if source is None:
            if "default" not in field:
                problems.append(f"{field['name']}: added without a default")
            continue
        w, r = _field_type_name(source["type"]), _field_type_name(field["type"])
        if w != r and (w, r) not in PROMOTIONS:
            problems.append(f"{field['name']}: type {w} -> {r} is not an Avro promotion")
    return problems


PAIRS = [
    pytest.param(w, r, id=f"{w.name}->{r.name}")
    for paths in versions().values()
    for w, r in itertools.permutations(paths, 2)
]


@pytest.mark.parametrize(("writer_path", "reader_path"), PAIRS)
def test_full_transitive_compatibility(writer_path: Path, reader_path: Path) -> None:
    writer, reader = load(writer_path), load(reader_path)
    assert compat_problems(writer, reader) == []
    parsed_writer, parsed_reader = parse_schema(writer), parse_schema(reader)
    defaults = {f["name"]: f.get("default") for f in reader["fields"]}
    for record in generate_many(parsed_writer, 25):
        buf = io.BytesIO()
        schemaless_writer(buf, parsed_writer, record)
        raw = buf.getvalue()
        as_written = schemaless_reader(io.BytesIO(raw), parsed_writer, None)
        resolved = schemaless_reader(io.BytesIO(raw), parsed_writer, parsed_reader)
        assert resolved == {name: as_written.get(name, default) for name, default in defaults.items()}


def test_compat_checker_flags_breaking_changes() -> None:
    old = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "string"}]}
    new = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "a", "type": "long"},
            {"name": "b", "type": "int"},
            {"name": "c", "type": "string"},
            {"name": "d", "type": ["null", "string"], "default": None},
        ],
    }
    assert compat_problems(old, new) == [
        "b: type string -> int is not an Avro promotion",
        "c: added without a default",
    ]
    assert compat_problems(new, old) == [
        "a: type long -> int is not an Avro promotion",
        "b: type int -> string is not an Avro promotion",
    ]
