"""Avro (single-object and Confluent wire format) and JSON codecs for the sync contract
(schemas in ``avro/``).

Single-object records are ``C3 01`` + the writer schema's 8-byte little-endian CRC-64-AVRO
fingerprint + the schemaless body. The writer schema is looked up by fingerprint among
``avro/*.avsc`` and ``avro/history/*.avsc``; an old writer is resolved to the current
schema of the same full name. Decoded timestamps (``timestamp-millis``) are int ms.

Confluent wire-format records are ``00`` + the writer schema's 4-byte big-endian Schema
Registry id + the same schemaless body. They are decoded once a registry is configured
(:func:`use_registry`, done by ``app.kafka.schema_registry`` at start-up): each id's writer
schema is fetched once and kept, parsed, with its reader (the current schema of the same
full name), so the hot path never calls the registry for an id it has seen. With a
registry, :func:`encode` may also write that framing (the output format setting) through
the writers ``app.kafka.schema_registry`` gives it (confluent-kafka's ``AvroSerializer``).
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import orjson
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form
from fastavro.types import Schema

from app.core import parse  # the pure core imports nothing of app outside app.core
from app.kafka import avro_writer


def _avro_dir() -> Path:
    """The schemas: ``avro/`` of a source checkout, else the installed data files."""
    checkout = Path(__file__).resolve().parents[2] / "avro"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "syncgov" / "avro"


AVRO_DIR: Final = _avro_dir()
MAGIC: Final = b"\xc3\x01"
HEADER_LEN: Final = 10
EVENT_NAMESPACE: Final = "syncgov.event"
MILESTONE_NAMESPACE: Final = "syncgov.milestone"
DEAD_LETTER_SCHEMA: Final = "syncgov.ops.DeadLetter"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_CRC64_EMPTY: Final = 0xC15D213AA4D7A795


class DecodeError(ValueError):
    """A record is neither a decodable Avro single-object record nor a JSON object."""


class EncodeError(ValueError):
    """A record does not fit its schema (or names no known schema)."""


def _crc64_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        fp = byte
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_CRC64_TABLE: Final = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Avro spec's 64-bit Rabin fingerprint (CRC-64-AVRO) of ``data``, unsigned."""
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


def fingerprint(schema: Schema) -> int:
    """CRC-64-AVRO of the schema's Parsing Canonical Form (schema given as JSON value)."""
    return crc64_avro(to_parsing_canonical_form(schema).encode())


@dataclass(frozen=True, slots=True)
class _Schema:
    """One parsed schema file; ``parsed`` has timestamp-millis reduced to plain long."""

    name: str
    fingerprint: int
    parsed: dict[str, Any]
    timestamps: tuple[str, ...]
    header: bytes
    source: str  # the schema as JSON text, docs and defaults kept (what a registry is given)
    #: The schema's own encoder (``app.kafka.avro_writer``); None: fastavro writes it.
    writer: avro_writer.Writer | None = None


@dataclass(frozen=True, slots=True)
class _Registry:
    current: Mapping[str, _Schema]
    by_fingerprint: Mapping[int, tuple[_Schema, _Schema | None]]


def _is_timestamp(node: Any) -> bool:
    return isinstance(node, dict) and node.get("logicalType") == "timestamp-millis"


def _plain_longs(node: Any) -> Any:
    """The schema with every timestamp-millis replaced by its long (no datetime round trip)."""
    if _is_timestamp(node):
        return node["type"]
    if isinstance(node, dict):
        return {k: _plain_longs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain_longs(v) for v in node]
    return node


def _top_level_timestamps(raw: Mapping[str, Any]) -> tuple[str, ...]:
    names = []
    for field in raw["fields"]:
        branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
        if any(_is_timestamp(b) for b in branches):
            names.append(field["name"])
    return tuple(names)


def _load(path: Path) -> _Schema:
    try:
        return _parse(orjson.loads(path.read_bytes()), str(path), encodes=True)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc


def _parse(raw: Any, where: str, encodes: bool = False) -> _Schema:
    """One schema (as JSON value) parsed; ``where`` names it in the error. ``encodes``: the
    project's own schemas, which records are written with, get their generated writer; a
    registry's schemas only decode."""
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise ValueError(f"{where}: the top-level schema is not a record")
    parsed = parse_schema(_plain_longs(raw))
    if not isinstance(parsed, dict):
        raise ValueError(f"{where}: the top-level schema is not a named type")
    fp = fingerprint(raw)
    return _Schema(
        name=parsed["name"],
        fingerprint=fp,
        parsed=parsed,
        timestamps=_top_level_timestamps(raw),
        header=MAGIC + fp.to_bytes(8, "little"),
        source=orjson.dumps(raw).decode(),
        writer=_writer(parsed) if encodes else None,
    )


def _writer(parsed: dict[str, Any]) -> avro_writer.Writer | None:
    try:
        return avro_writer.compile_writer(parsed)
    except avro_writer.Unsupported:
        return None


@cache
def _registry() -> _Registry:
    current: dict[str, _Schema] = {}
    for path in sorted(AVRO_DIR.glob("*.avsc")):
        schema = _load(path)
        if schema.name in current:
            raise RuntimeError(f"two current schemas named {schema.name} in {AVRO_DIR}")
        current[schema.name] = schema
    if not current:
        raise RuntimeError(f"no Avro schemas (*.avsc) in {AVRO_DIR}")
    by_fp: dict[int, tuple[_Schema, _Schema | None]] = {
        s.fingerprint: (s, None) for s in current.values()
    }
    for path in sorted((AVRO_DIR / "history").glob("*.avsc")):
        schema = _load(path)
        by_fp.setdefault(schema.fingerprint, (schema, current.get(schema.name)))
    return _Registry(MappingProxyType(current), MappingProxyType(by_fp))


def schema_names() -> tuple[str, ...]:
    """Full names of the current schemas, sorted."""
    return tuple(sorted(_registry().current))


def schema_fingerprint(name: str) -> int:
    """Fingerprint of the current schema ``name`` (KeyError if unknown)."""
    return _registry().current[name].fingerprint


def schema_source(name: str) -> str:
    """The current schema ``name`` as JSON text, docs and defaults kept (KeyError if unknown)."""
    return _registry().current[name].source


def known_fingerprints() -> Mapping[int, str]:
    """Every decodable fingerprint (current and history) -> schema full name."""
    return {fp: writer.name for fp, (writer, _) in _registry().by_fingerprint.items()}


def _to_ms(value: Any) -> int | None:
    """Timestamp as int ms: accepts int ms, an aware datetime or an ISO-8601 string."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise EncodeError(f"bad ISO-8601 timestamp {value!r}") from exc
    if isinstance(value, datetime) and value.tzinfo is not None:
        return (value - _EPOCH) // _MS
    raise EncodeError(f"timestamp must be int ms, aware datetime or ISO string: {value!r}")


def encode(record: Mapping[str, Any], schema_name: str) -> bytes:
    """Avro encoding of a contract-shaped record with the current schema: single-object, or
    the Confluent wire format when the output format is Confluent (:func:`use_registry`)."""
    schema = _registry().current.get(schema_name)
    if schema is None:
        raise EncodeError(f"no schema named {schema_name!r}")
    if schema.timestamps:
        fixed = {f: _to_ms(v) for f in schema.timestamps if (v := record.get(f)).__class__ is not int}
        if fixed:
            record = {**record, **fixed}
    confluent = _output_writers.get(schema_name)
    try:
        if confluent is not None:
            return confluent(record)
        if schema.writer is not None:
            buf = bytearray(schema.header)
            schema.writer(buf, record)
            return bytes(buf)
        out = io.BytesIO()
        out.write(schema.header)
        schemaless_writer(out, schema.parsed, record)
    except Exception as exc:  # fastavro and the serializer raise many types; the boundary normalises them
        raise EncodeError(f"cannot encode {schema_name}: {type(exc).__name__}: {exc}") from exc
    return out.getvalue()


def _encode_typed(record: Mapping[str, Any], namespace: str) -> bytes:
    kind = record.get("type")
    if not isinstance(kind, str):
        raise EncodeError(f"record has no string 'type': {kind!r}")
    return encode(record, f"{namespace}.{kind}")


def encode_event(record: Mapping[str, Any]) -> bytes:
    """Encode an input event; the schema is ``syncgov.event.<type>``."""
    return _encode_typed(record, EVENT_NAMESPACE)


def encode_milestone(record: Mapping[str, Any]) -> bytes:
    """Encode a milestone (``Milestone.to_wire()``, or ``to_dict()``: ISO times are parsed);
    the schema is ``syncgov.milestone.<type>``."""
    return _encode_typed(record, MILESTONE_NAMESPACE)


def encode_dead_letter(
    *,
    raw: bytes,
    reason: str,
    record_id: str,
    topic: str,
    partition: int,
    offset: int,
    failed_at: int | str | datetime,
) -> bytes:
    """Encode a dead letter (``syncgov.ops.DeadLetter``)."""
    record = {
        "raw": raw,
        "reason": reason,
        "record_id": record_id,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "failed_at": failed_at,
    }
    return encode(record, DEAD_LETTER_SCHEMA)


def _decode_avro(data: bytes) -> tuple[str, dict[str, Any]]:
    if data[:2] != MAGIC:
        raise DecodeError(f"not Avro single-object: starts with {data[:2].hex() or 'nothing'}")
    if len(data) < HEADER_LEN:
        raise DecodeError(f"truncated Avro header: {len(data)} bytes, need {HEADER_LEN}")
    fp = int.from_bytes(data[2:HEADER_LEN], "little")
    entry = _registry().by_fingerprint.get(fp)
    if entry is None:
        raise DecodeError(f"unknown schema fingerprint 0x{fp:016x}")
    writer, reader = entry
    return writer.name, _read_body(data, HEADER_LEN, writer, reader)


def _read_body(data: bytes, start: int, writer: _Schema, reader: _Schema | None) -> dict[str, Any]:
    """The schemaless body at ``data[start:]``, written with ``writer``, read as ``reader``."""
    body = io.BytesIO(data)
    body.seek(start)
    try:
        record = schemaless_reader(body, writer.parsed, None if reader is None else reader.parsed)
    except Exception as exc:  # fastavro raises many types; the boundary normalises them
        raise DecodeError(
            f"corrupt or truncated {writer.name} body: {type(exc).__name__}: {exc}"
        ) from exc
    if body.tell() != len(data):
        raise DecodeError(f"{len(data) - body.tell()} trailing bytes after {writer.name} body")
    if not isinstance(record, dict):  # every schema file is a record: its body decodes to a dict
        raise DecodeError(f"{writer.name} body is a {type(record).__name__}, not a record")
    return record


def _unrecognised(data: bytes) -> DecodeError:
    if not data.strip():
        return DecodeError("empty record")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return DecodeError(
            f"neither Avro single-object (C3 01) nor a JSON object; starts with {data[:8]!r}"
        )
    return DecodeError(f"JSON top-level value is {type(value).__name__}, expected an object")


def decode(raw: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Decode Avro single-object (by magic), the Confluent wire format (magic byte 0; needs a
    registry: :func:`use_registry`) or a JSON object (first non-space byte ``{``)."""
    data = bytes(raw)
    if data[:2] == MAGIC:
        return _decode_avro(data)[1]
    if data[:1] == CONFLUENT_MAGIC:
        return _decode_confluent(data)[1]
    if data.lstrip()[:1] != b"{":
        raise _unrecognised(data)
    try:
        value: dict[str, Any] = orjson.loads(data)  # valid JSON that starts with "{" is an object
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from exc
    return value


def decode_dead_letter(raw: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Decode a ``syncgov.ops.DeadLetter`` record (Avro only, either framing)."""
    data = bytes(raw)
    name, record = _decode_confluent(data) if data[:1] == CONFLUENT_MAGIC else _decode_avro(data)
    if name != DEAD_LETTER_SCHEMA:
        raise DecodeError(f"expected {DEAD_LETTER_SCHEMA}, got {name}")
    return record


#: The Confluent wire format's first byte (+ a 4-byte big-endian schema registry id).
CONFLUENT_MAGIC: Final = b"\x00"
_AVRO_FIRST: Final = MAGIC[:1]  # the first byte of an Avro single-object record
CONFLUENT_HEADER_LEN: Final = 5
#: How long an id the registry did not know stays unknown before it is asked again.
UNKNOWN_ID_RETRY_S: Final = 60.0


class UnknownSchemaId(LookupError):
    """The registry has no schema with this id (or not an Avro record schema); the message says why."""


#: A registry lookup: schema id -> the writer schema's JSON text. Raises
#: :class:`UnknownSchemaId` when the registry has none; anything else (registry unreachable)
#: propagates: a record is never dead-lettered because the registry did not answer.
FetchSchema = Callable[[int], str]


@dataclass(slots=True)
class _Confluent:
    """The configured registry: its lookup and what it answered so far."""

    fetch: FetchSchema
    by_id: dict[int, tuple[_Schema, _Schema | None]] = dataclass_field(default_factory=dict)
    unknown: dict[int, tuple[float, str]] = dataclass_field(default_factory=dict)  # id -> (monotonic time, why)


_confluent: _Confluent | None = None
#: A Confluent-framing writer of one schema: record (timestamps as int ms) -> bytes.
WriteRecord = Callable[[Mapping[str, Any]], bytes]
#: schema name -> its Confluent writer, when the output format is Confluent.
_output_writers: dict[str, WriteRecord] = {}


def use_registry(fetch: FetchSchema | None, output: Mapping[str, WriteRecord] | None = None) -> None:
    """Decode Confluent-framed records through ``fetch`` (None: no registry, they are dead
    letters); with ``output`` (schema name -> writer: ``app.kafka.schema_registry`` gives
    confluent-kafka ``AvroSerializer`` s), :func:`encode` writes the Confluent framing for
    those schemas instead of single-object."""
    global _confluent
    _confluent = None if fetch is None else _Confluent(fetch)
    _output_writers.clear()
    _output_writers.update(output or {})


def confluent_header(schema_id: int) -> bytes:
    """Magic byte 0 + the 4-byte big-endian schema id."""
    return CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")


def registry_configured() -> bool:
    """True when Confluent-framed records are decoded (a registry is configured)."""
    return _confluent is not None


def _confluent_writer(schema_id: int) -> tuple[_Schema, _Schema | None]:
    """The writer (and reader) of ``schema_id``: from the cache, else asked once."""
    assert _confluent is not None
    entry = _confluent.by_id.get(schema_id)
    if entry is not None:
        return entry
    known = _confluent.unknown.get(schema_id)
    if known is not None and time.monotonic() - known[0] < UNKNOWN_ID_RETRY_S:
        raise DecodeError(known[1])
    try:
        writer = _parse(orjson.loads(_confluent.fetch(schema_id)), f"schema id {schema_id}")
    except UnknownSchemaId as exc:
        why = f"Confluent wire format (magic byte 0), schema id {schema_id}: {exc}"
    except (ValueError, TypeError, KeyError) as exc:  # not JSON, not a record, not a valid schema
        why = f"Confluent wire format (magic byte 0), schema id {schema_id}: not a usable Avro record schema ({exc})"
    except Exception as exc:  # fastavro's SchemaParseException and kin
        if exc.__class__.__module__.startswith("fastavro"):
            why = f"Confluent wire format (magic byte 0), schema id {schema_id}: not a usable Avro schema ({exc})"
        else:
            raise
    else:
        current = _registry().current.get(writer.name)
        entry = (writer, None if current is None or current.fingerprint == writer.fingerprint else current)
        _confluent.by_id[schema_id] = entry
        _confluent.unknown.pop(schema_id, None)
        return entry
    _confluent.unknown[schema_id] = (time.monotonic(), why)
    raise DecodeError(why)


def _decode_confluent(data: bytes) -> tuple[str, dict[str, Any]]:
    if _confluent is None:
        raise DecodeError(confluent_reason(data).removeprefix("undecodable: "))
    if len(data) < CONFLUENT_HEADER_LEN:
        raise DecodeError("Confluent wire format (magic byte 0) cut short before its 4-byte schema id")
    writer, reader = _confluent_writer(int.from_bytes(data[1:CONFLUENT_HEADER_LEN], "big"))
    return writer.name, _read_body(data, CONFLUENT_HEADER_LEN, writer, reader)


def confluent_reason(record: bytes) -> str:
    """The dead-letter reason of a Confluent-framed record when no schema registry is configured."""
    if len(record) < CONFLUENT_HEADER_LEN:
        return "undecodable: Confluent wire format (magic byte 0) cut short before its 4-byte schema id"
    schema_id = int.from_bytes(record[1:CONFLUENT_HEADER_LEN], "big")
    return (f"undecodable: Confluent wire format (magic byte 0), schema id {schema_id}: unknown schema "
            "(no schema registry is configured: set SCHEMA_REGISTRY_URL, or send Avro single-object records or JSON)")


def decode_input(raw: bytes) -> dict[str, Any] | str:
    """One record of the events topic, decoded once for the worker and ``replay``: Avro
    single-object or Confluent wire format by their magic byte, JSON otherwise; the reason
    (rule 8) when it is too large or cannot be decoded (a Confluent-framed record with an
    id the registry does not know, or with no registry configured, names its schema id)."""
    first = raw[:1]
    if first == CONFLUENT_MAGIC:
        if _confluent is None:
            return confluent_reason(raw[: parse.MAX_RECORD_BYTES])
    elif first != _AVRO_FIRST:
        return parse.decode(raw)
    if len(raw) > parse.MAX_RECORD_BYTES:
        return parse.too_large(len(raw))
    try:
        return decode(raw)
    except DecodeError as exc:
        return f"undecodable: {exc}"
