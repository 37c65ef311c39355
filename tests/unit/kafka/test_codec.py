"""app.kafka.codec: every schema round-trips in Avro and JSON; fingerprints follow the Avro spec."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.kafka import codec
from app.kafka.codec import DecodeError, EncodeError

T0 = "2026-11-27T10:00:00.000Z"
T1 = "2026-11-27T10:05:00.000Z"


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def event(kind: str, **fields: Any) -> dict[str, Any]:
    base = {"event_id": f"{kind}-1", "type": kind, "occurred_at": T0, "source": "wms"}
    base["warehouse_id"] = "W1"
    return {**base, **fields}


def milestone(kind: str, **fields: Any) -> dict[str, Any]:
    base = {"milestone_id": f"m-{kind}", "type": kind, "warehouse_id": "W1", "occurred_at": T0}
    base["event_ids"] = ["e1", "e2"]
    return {**base, **fields}


LINES = [{"line_no": 1, "sku": "SKU-1", "qty": 3}, {"line_no": 2, "sku": "SKU-2", "qty": 1}]

#: One representative record per current schema (every optional field set), contract JSON form.
SAMPLES: dict[str, dict[str, Any]] = {
    "syncgov.event.OrderReleased": event(
        "OrderReleased", source="erp", order_id="O1", lines=LINES, wave_id="WV1", carrier="DHL"
    ),
    "syncgov.event.OrderChanged": event("OrderChanged", source="erp", order_id="O1", lines=LINES[:1]),
    "syncgov.event.OrderCancelled": event("OrderCancelled", source="erp", order_id="O1"),
    "syncgov.event.ItemScanned": event(
        "ItemScanned", source="robotics", barcode="0123", location="A-01", device_id="D9", order_id="O1", tote_id="T7"
    ),
    "syncgov.event.ToteConveyed": event(
        "ToteConveyed", source="conveyor", tote_id="T7", scanner_id="S1", lane="L3", order_id="O1"
    ),
    "syncgov.event.PickConfirmed": event(
        "PickConfirmed", order_id="O1", line_no=1, sku="SKU-1", qty=3, location="A-01", tote_id="T7", wave_id="WV1"
    ),
    "syncgov.event.LineShortClosed": event("LineShortClosed", order_id="O1", line_no=2),
    "syncgov.event.PackConfirmed": event(
        "PackConfirmed", order_id="O1", package_id="P1", items=[{"line_no": 1, "qty": 3}], weight_kg=1.25
    ),
    "syncgov.event.ShipmentDispatched": event(
        "ShipmentDispatched",
        source="carrier",
        order_id="O1",
        shipment_id="SH1",
        carrier="DHL",
        tracking_no="TR1",
        package_ids=["P1", "P2"],
    ),
    "syncgov.event.StockAdjusted": event("StockAdjusted", sku="SKU-1", location="A-01", delta=-7, reason="cycle count"),
    "syncgov.event.ReturnReceived": event(
        "ReturnReceived", rma_id="R1", order_id="O1", sku="SKU-1", qty=1, disposition="restock"
    ),
    "syncgov.milestone.OrderAccepted": milestone("OrderAccepted", order_id="O1", version=2, lines=LINES),
    "syncgov.milestone.OrderPicked": milestone(
        "OrderPicked",
        order_id="O1",
        lines=[
            {"line_no": 1, "sku": "SKU-1", "ordered": 3, "picked": 3},
            {"line_no": 2, "sku": "SKU-2", "ordered": 1, "picked": 0},
        ],
        short=True,
    ),
    "syncgov.milestone.OrderPacked": milestone("OrderPacked", order_id="O1", package_ids=["P1"]),
    "syncgov.milestone.ShipmentConfirmed": milestone(
        "ShipmentConfirmed",
        order_id="O1",
        shipment_id="SH1",
        carrier="DHL",
        tracking_no="TR1",
        lines=[{"line_no": 1, "qty": 3}],
    ),
    "syncgov.milestone.InventoryAdjusted": milestone(
        "InventoryAdjusted",
        occurred_at=T1,
        sku="SKU-1",
        location="A-01",
        net_delta=-7,
        event_count=2,
        window_start=T0,
        window_end=T1,
    ),
    "syncgov.milestone.ReturnReceived": milestone(
        "ReturnReceived", rma_id="R1", order_id="O1", sku="SKU-1", qty=1, disposition="scrap"
    ),
    "syncgov.milestone.SyncException": milestone(
        "SyncException", code="OVER_PICK", order_id="O1", detail="line 1: 4 > 3"
    ),
    "syncgov.ops.DeadLetter": {
        "raw": b"\x00\xffnot avro",
        "reason": "neither Avro nor JSON",
        "record_id": "sha256:abc",
        "topic": "sgov.events",
        "partition": 3,
        "offset": 123456789012,
        "failed_at": T1,
    },
}

TIMESTAMP_FIELDS = ("occurred_at", "window_start", "window_end", "failed_at")


def as_avro_decoded(record: dict[str, Any]) -> dict[str, Any]:
    """What decode() returns for an Avro record: the same with timestamps as int ms."""
    out = copy.deepcopy(record)
    for f in TIMESTAMP_FIELDS:
        if isinstance(out.get(f), str):
            out[f] = ms(out[f])
    return out


def test_every_contract_type_has_exactly_one_schema() -> None:
    events = ["OrderReleased", "OrderChanged", "OrderCancelled", "ItemScanned", "ToteConveyed", "PickConfirmed", "LineShortClosed", "PackConfirmed", "ShipmentDispatched", "StockAdjusted", "ReturnReceived"]
    milestones = ["OrderAccepted", "OrderPicked", "OrderPacked", "ShipmentConfirmed", "InventoryAdjusted", "ReturnReceived", "SyncException"]
    expected = {f"syncgov.event.{t}" for t in events} | {f"syncgov.milestone.{t}" for t in milestones}
    expected.add("syncgov.ops.DeadLetter")
    assert set(codec.schema_names()) == expected == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_avro_round_trip(name: str) -> None:
    raw = codec.encode(SAMPLES[name], name)
    assert raw[:2] == b"\xc3\x01"
    assert int.from_bytes(raw[2:10], "little") == codec.schema_fingerprint(name)
    assert codec.decode(raw) == as_avro_decoded(SAMPLES[name])


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_json_round_trip(name: str) -> None:
    record = {k: v for k, v in SAMPLES[name].items() if not isinstance(v, bytes)}
    assert codec.decode(orjson.dumps(record)) == record


@pytest.mark.parametrize("name", sorted(n for n in SAMPLES if n.startswith("syncgov.event.")))
def test_encode_event_picks_schema_from_type(name: str) -> None:
    assert codec.encode_event(SAMPLES[name]) == codec.encode(SAMPLES[name], name)


@pytest.mark.parametrize("name", sorted(n for n in SAMPLES if n.startswith("syncgov.milestone.")))
def test_encode_milestone_picks_schema_from_type(name: str) -> None:
    assert codec.encode_milestone(SAMPLES[name]) == codec.encode(SAMPLES[name], name)


def test_return_received_event_and_milestone_are_distinct_schemas() -> None:
    event_fp = codec.schema_fingerprint("syncgov.event.ReturnReceived")
    assert event_fp != codec.schema_fingerprint("syncgov.milestone.ReturnReceived")
    assert codec.encode_event(SAMPLES["syncgov.event.ReturnReceived"])[2:10] == event_fp.to_bytes(8, "little")


def test_optional_fields_default_to_null() -> None:
    record = event("PickConfirmed", order_id="O1", line_no=1, sku="SKU-1", qty=3, location="A-01")
    decoded = codec.decode(codec.encode_event(record))
    assert decoded["tote_id"] is None and decoded["wave_id"] is None


def test_sync_exception_for_undecodable_record_has_nulls() -> None:
    record = milestone(
        "SyncException", warehouse_id=None, occurred_at=None, event_ids=[], code="INVALID_EVENT", detail="undecodable"
    )
    decoded = codec.decode(codec.encode_milestone(record))
    assert decoded == {**record, "order_id": None}


def test_unknown_source_still_decodes() -> None:
    record = event("OrderReleased", source="mainframe", order_id="O1", lines=LINES)
    assert codec.decode(codec.encode_event(record))["source"] == "mainframe"


def test_extra_fields_are_ignored_on_encode() -> None:
    record = {**SAMPLES["syncgov.event.OrderCancelled"], "note": "extra"}
    assert codec.decode(codec.encode_event(record)) == as_avro_decoded(SAMPLES["syncgov.event.OrderCancelled"])


@pytest.mark.parametrize(
    "stamp",
    [
        T0,
        "2026-11-27T10:00:00+00:00",
        "2026-11-27T11:00:00.000+01:00",
        ms(T0),
        datetime(2026, 11, 27, 10, tzinfo=UTC),
    ],
)
def test_timestamps_accept_iso_int_and_aware_datetime(stamp: Any) -> None:
    raw = codec.encode_event({**SAMPLES["syncgov.event.OrderCancelled"], "occurred_at": stamp})
    assert codec.decode(raw)["occurred_at"] == ms(T0) == 1795773600000


def test_pre_epoch_and_sub_ms_timestamps_floor_to_ms() -> None:
    stamp = datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=UTC)
    raw = codec.encode_event({**SAMPLES["syncgov.event.OrderCancelled"], "occurred_at": stamp})
    assert codec.decode(raw)["occurred_at"] == -1


CANCELLED = SAMPLES["syncgov.event.OrderCancelled"]
PICK = SAMPLES["syncgov.event.PickConfirmed"]


@pytest.mark.parametrize(
    ("record", "schema", "message"),
    [
        ({"type": "Nope"}, "syncgov.event.Nope", "no schema named"),
        ({**CANCELLED, "occurred_at": "yesterday"}, "syncgov.event.OrderCancelled", "bad ISO-8601"),
        ({**CANCELLED, "occurred_at": datetime(2026, 1, 1)}, "syncgov.event.OrderCancelled", "aware"),
        ({**CANCELLED, "occurred_at": True}, "syncgov.event.OrderCancelled", "timestamp"),
        ({**CANCELLED, "occurred_at": None}, "syncgov.event.OrderCancelled", "cannot encode"),
        ({k: v for k, v in CANCELLED.items() if k != "order_id"}, "syncgov.event.OrderCancelled", "cannot encode"),
        ({**PICK, "qty": "3"}, "syncgov.event.PickConfirmed", "cannot encode"),
    ],
)
def test_encode_errors(record: dict[str, Any], schema: str, message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        codec.encode(record, schema)


def test_encode_event_needs_a_string_type() -> None:
    with pytest.raises(EncodeError, match="no string 'type'"):
        codec.encode_event({"event_id": "e"})


# --- fingerprints: test vectors from the Avro spec (share/test/data/schema-tests.txt) ---

#: (input schema, Parsing Canonical Form, fingerprint as the spec's signed 64-bit value).
#: Vector 026's default is written ``true`` here, not the spec's ``"true"``: fastavro's canonical
#: form validates defaults; defaults are not part of the canonical form, so nothing else changes.
AVRO_SPEC_VECTORS = [
    ('"null"', '"null"', 7195948357588979594),
    ('{"type":"null"}', '"null"', 7195948357588979594),
    ('"boolean"', '"boolean"', -6970731678124411036),
    ('"int"', '"int"', 8247732601305521295),
    ('{"type":"int"}', '"int"', 8247732601305521295),
    ('"long"', '"long"', -3434872931120570953),
    ('"float"', '"float"', 5583340709985441680),
    ('"double"', '"double"', -8181574048448539266),
    ('"bytes"', '"bytes"', 5746618253357095269),
    ('"string"', '"string"', -8142146995180207161),
    ("[  ]", "[]", -1241056759729112623),
    ('[ "int"  ]', '["int"]', -5232228896498058493),
    ('[ "int" , {"type":"boolean"} ]', '["int","boolean"]', 5392556393470105090),
    (
        '{"fields":[], "type":"record", "name":"foo"}',
        '{"name":"foo","type":"record","fields":[]}',
        -4824392279771201922,
    ),
    (
        '{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}',
        '{"name":"x.y.foo","type":"record","fields":[]}',
        5916914534497305771,
    ),
    (
        '{"fields":[], "type":"record", "name":"a.b.foo", "namespace":"x.y"}',
        '{"name":"a.b.foo","type":"record","fields":[]}',
        -4616218487480524110,
    ),
    (
        '{"fields":[], "type":"record", "name":"foo", "doc":"foo", "aliases":["foo","bar"]}',
        '{"name":"foo","type":"record","fields":[]}',
        -4824392279771201922,
    ),
    (
        '{"fields":[{"type":{"type":"boolean"}, "name":"f1"}], "type":"record", "name":"foo"}',
        '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}',
        7843277075252814651,
    ),
    (
        '{"fields":[{"type":"boolean", "aliases":[], "name":"f1", "default":true},'
        ' {"order":"descending","name":"f2","doc":"Hello","type":"int"}], "type":"record", "name":"foo"}',
        '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},{"name":"f2","type":"int"}]}',
        -4860222112080293046,
    ),
    (
        '{"type":"enum", "name":"foo", "symbols":["A1"]}',
        '{"name":"foo","type":"enum","symbols":["A1"]}',
        -6342190197741309591,
    ),
    (
        '{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", "symbols":["A1", "A2"]}',
        '{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}',
        -4448647247586288245,
    ),
    ('{"name":"foo","type":"fixed","size":15}', '{"name":"foo","type":"fixed","size":15}', 1756455273707447556),
    (
        '{"namespace":"x.y.z", "type":"fixed", "name":"foo", "doc":"foo bar", "size":32}',
        '{"name":"x.y.z.foo","type":"fixed","size":32}',
        -3064184465700546786,
    ),
    ('{ "items":{"type":"null"}, "type":"array"}', '{"type":"array","items":"null"}', -589620603366471059),
    ('{ "values":"string", "type":"map"}', '{"type":"map","values":"string"}', -8732877298790414990),
    (
        '{"name":"PigValue","type":"record","fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}',
        '{"name":"PigValue","type":"record","fields":[{"name":"value","type":["null","int","long","PigValue"]}]}',
        -1759257747318642341,
    ),
]


def test_int_fingerprint_matches_spec_hex() -> None:
    assert codec.crc64_avro(b'"int"') == 0x7275D51A3F395C8F
    assert codec.fingerprint("int") == 0x7275D51A3F395C8F


@pytest.mark.parametrize(("schema", "canonical", "signed"), AVRO_SPEC_VECTORS)
def test_fingerprint_spec_vectors(schema: str, canonical: str, signed: int) -> None:
    unsigned = signed & 0xFFFF_FFFF_FFFF_FFFF
    assert codec.crc64_avro(canonical.encode()) == unsigned
    assert codec.fingerprint(json.loads(schema)) == unsigned


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_fingerprint_agrees_with_fastavro(name: str) -> None:
    path = codec.AVRO_DIR / f"{name}.avsc"
    pcf = fastavro.schema.to_parsing_canonical_form(json.loads(path.read_text()))
    theirs = fastavro.schema.fingerprint(pcf, "CRC-64-AVRO")  # hex of the little-endian bytes
    assert bytes.fromhex(theirs) == codec.schema_fingerprint(name).to_bytes(8, "little")


# --- decode errors ---


def test_unknown_fingerprint_names_it() -> None:
    raw = b"\xc3\x01" + (0x0123456789ABCDEF).to_bytes(8, "little") + b"\x00"
    with pytest.raises(DecodeError, match="unknown schema fingerprint 0x0123456789abcdef"):
        codec.decode(raw)


def test_every_truncation_is_a_decode_error() -> None:
    raw = codec.encode_event(SAMPLES["syncgov.event.PackConfirmed"])
    for cut in range(len(raw)):
        with pytest.raises(DecodeError):
            codec.decode(raw[:cut])


def test_truncated_header_and_body_messages() -> None:
    raw = codec.encode_event(SAMPLES["syncgov.event.OrderCancelled"])
    with pytest.raises(DecodeError, match="truncated Avro header"):
        codec.decode(raw[:6])
    with pytest.raises(DecodeError, match=r"corrupt or truncated syncgov\.event\.OrderCancelled body"):
        codec.decode(raw[:-1])


def test_trailing_bytes_are_a_decode_error() -> None:
    raw = codec.encode_event(SAMPLES["syncgov.event.OrderCancelled"])
    with pytest.raises(DecodeError, match="1 trailing bytes"):
        codec.decode(raw + b"\x00")


def test_bad_union_index_is_a_decode_error() -> None:
    record = event("ToteConveyed", source="conveyor", tote_id="T7", scanner_id="S1", lane="L3")
    raw = codec.encode_event(record)
    assert raw[-1:] == b"\x00"  # order_id: union branch 0 (null)
    with pytest.raises(DecodeError, match="corrupt"):
        codec.decode(raw[:-1] + b"\x08")


def test_invalid_utf8_is_a_decode_error() -> None:
    raw = codec.encode_event(SAMPLES["syncgov.event.OrderCancelled"])
    index = raw.index(b"O1")
    with pytest.raises(DecodeError, match="UnicodeDecodeError"):
        codec.decode(raw[:index] + b"\xff\xfe" + raw[index + 2 :])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[1, 2]", "JSON top-level value is list"),
        (b'"text"', "JSON top-level value is str"),
        (b"42", "JSON top-level value is int"),
        (b"null", "JSON top-level value is NoneType"),
        (b"", "empty record"),
        (b"  \n", "empty record"),
        (b'{"event_id": ', "invalid JSON"),
        (b"\x01binary", "neither Avro single-object"),
        (b"\x00\x01binary", r"Confluent wire format \(magic byte 0\), schema id 23226734: unknown schema \(no schema registry"),
    ],
)
def test_non_object_or_garbage_is_a_decode_error(raw: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        codec.decode(raw)


def test_json_may_start_with_whitespace_and_keeps_values_as_given() -> None:
    assert codec.decode(b' \n\t{"occurred_at": "2026-11-27T10:00:00.000Z", "qty": 0}') == {"occurred_at": T0, "qty": 0}


def test_decode_accepts_bytearray_and_memoryview() -> None:
    raw = codec.encode_event(SAMPLES["syncgov.event.OrderCancelled"])
    assert codec.decode(bytearray(raw)) == codec.decode(memoryview(raw)) == codec.decode(raw)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError) and issubclass(EncodeError, ValueError)


# --- dead letters ---


def test_dead_letter_round_trip() -> None:
    sample = SAMPLES["syncgov.ops.DeadLetter"]
    raw = codec.encode_dead_letter(**sample)
    assert codec.decode_dead_letter(raw) == as_avro_decoded(sample)
    assert codec.decode_dead_letter(raw)["raw"] == b"\x00\xffnot avro"


def test_decode_dead_letter_rejects_other_records() -> None:
    with pytest.raises(DecodeError, match=r"expected syncgov\.ops\.DeadLetter, got syncgov\.event\.OrderCancelled"):
        codec.decode_dead_letter(codec.encode_event(SAMPLES["syncgov.event.OrderCancelled"]))
    with pytest.raises(DecodeError, match="not Avro single-object"):
        codec.decode_dead_letter(b'{"raw": ""}')


# --- robustness: nothing but DecodeError, ever ---


def _decode_or_decode_error(raw: bytes) -> None:
    try:
        assert isinstance(codec.decode(raw), dict)
    except DecodeError:
        pass


@settings(max_examples=500)
@given(st.binary(max_size=256))
def test_random_bytes_raise_only_decode_error(raw: bytes) -> None:
    _decode_or_decode_error(raw)


@settings(max_examples=1000)
@given(st.sampled_from(sorted(codec.known_fingerprints())), st.binary(max_size=256))
def test_random_bodies_under_known_fingerprints_raise_only_decode_error(fp: int, body: bytes) -> None:
    _decode_or_decode_error(b"\xc3\x01" + fp.to_bytes(8, "little") + body)


@settings(max_examples=300)
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_mutated_valid_records_raise_only_decode_error(name: str, data: st.DataObject) -> None:
    raw = bytearray(codec.encode(SAMPLES[name], name))
    index = data.draw(st.integers(min_value=2, max_value=len(raw) - 1))
    raw[index] = data.draw(st.integers(min_value=0, max_value=255))
    _decode_or_decode_error(bytes(raw))


@settings(max_examples=200)
@given(st.binary(max_size=128))
def test_decode_dead_letter_raises_only_decode_error(raw: bytes) -> None:
    try:
        codec.decode_dead_letter(raw)
    except DecodeError:
        pass


# --- Faust codecs ---


class _MilestoneLike:
    def to_dict(self) -> dict[str, Any]:
        return SAMPLES["syncgov.milestone.OrderPacked"]


def test_faust_codecs_are_registered_and_round_trip() -> None:
    from faust.serializers import codecs

    from app.kafka import faust_codecs

    event_codec = codecs.get_codec(faust_codecs.EVENT_CODEC)
    milestone_codec = codecs.get_codec(faust_codecs.MILESTONE_CODEC)
    dead_letter_codec = codecs.get_codec(faust_codecs.DEAD_LETTER_CODEC)
    cancelled = SAMPLES["syncgov.event.OrderCancelled"]
    assert event_codec.loads(event_codec.dumps(cancelled)) == as_avro_decoded(cancelled)
    assert milestone_codec.loads(milestone_codec.dumps(_MilestoneLike())) == as_avro_decoded(_MilestoneLike().to_dict())
    dead = SAMPLES["syncgov.ops.DeadLetter"]
    assert dead_letter_codec.loads(dead_letter_codec.dumps(dead)) == as_avro_decoded(dead)


def test_the_one_input_decoder_names_a_confluent_framed_records_schema_id() -> None:
    from app.kafka.codec import decode_input, encode_event

    framed = b"\x00" + (4711).to_bytes(4, "big") + b"\x02avro body"
    reason = decode_input(framed)
    assert isinstance(reason, str) and reason.startswith("undecodable: Confluent wire format")
    assert "schema id 4711" in reason
    assert decode_input(b"\x00\x01") == "undecodable: Confluent wire format (magic byte 0) cut short before its 4-byte schema id"
    event = {"event_id": "e1", "type": "OrderCancelled", "occurred_at": "2026-11-27T10:00:00.000Z", "source": "erp",
             "warehouse_id": "WH1", "order_id": "O-1"}
    assert decode_input(encode_event(event))["order_id"] == "O-1"  # type: ignore[index]
    assert decode_input(b'{"a": 1}') == {"a": 1}
    assert str(decode_input(b"{nope")).startswith("undecodable: invalid JSON")
