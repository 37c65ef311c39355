"""Avro binary encoding of the contract's records, one straight-line Python function per schema.

fastavro's ``schemaless_writer`` walks the parsed schema for every record: for each field it
compares the type's name against the type names in turn and calls a writer for it, which
made it ~64,000 instructions per milestone (11 % of the governance stage, for outputs that
are 8 % of the records). :func:`compile_writer` does that walk once per schema and writes
the Python source of a function that encodes one record of it field by field (``exec``, as
``dataclasses`` does), so a record costs what its values cost.

It covers the types ``avro/`` uses: record, array, string, bytes, int, long, boolean, double,
float and unions of ``null`` and one other type. Any other schema (enum, map, fixed, wider
unions, a logical type, whose values fastavro converts, a recursive record) raises
:class:`Unsupported` and the caller keeps fastavro for it; the codec generates writers only
for the project's own schemas, which records are written with, not for a registry's. For a
record that fits its schema the bytes are fastavro's (``tests/unit/kafka/test_avro_writer.py``
compares both over every schema and generated records); missing fields follow fastavro's
non-strict rule (the field's default, else null for a nullable field, else an error); a
union's branch takes what fastavro's would (no bool for a number, 32 bits for an int). A value
of the wrong type raises (``AttributeError``, ``TypeError``, ``KeyError``, ``OverflowError``,
``struct.error``), also where fastavro coerces it (a float in a long, any value in a boolean,
a str in a double): the codec turns that into its ``EncodeError``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, Final

Writer = Callable[[bytearray, Mapping[str, Any]], None]

_LONG_MIN: Final = -(1 << 63)
_LONG_MAX: Final = (1 << 63) - 1


class Unsupported(ValueError):
    """The schema uses a type this writer does not generate code for."""


def write_long(buf: bytearray, n: int) -> None:
    """Zig-zag varint of a long (also int), as the Avro spec writes it."""
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise OverflowError(f"{n} does not fit an Avro long")
    z = (n << 1) ^ (n >> 63)
    while z >= 0x80:
        buf.append((z & 0x7F) | 0x80)
        z >>= 7
    buf.append(z)


def _require_int(n: Any) -> int:
    if type(n) is not int and not isinstance(n, int):
        raise TypeError(f"expected an int, got {type(n).__name__}")
    return n


def _require_bytes(v: Any) -> bytes | bytearray | memoryview:
    if type(v) is bytes or isinstance(v, (bytes, bytearray, memoryview)):
        return v
    raise TypeError(f"expected bytes, got {type(v).__name__}")


def _require_bool(v: Any) -> bool:
    if type(v) is not bool:
        raise TypeError(f"expected a bool, got {type(v).__name__}")
    return v


_DOUBLE: Final = struct.Struct("<d").pack
_FLOAT: Final = struct.Struct("<f").pack


class _Source:
    """The lines of one generated function and its constants."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        #: Names of the records being generated (a reference to one of them is recursion).
        self.expanding: set[str] = set()
        self._n = 0

    def var(self, stem: str) -> str:
        self._n += 1
        return f"{stem}{self._n}"

    def const(self, value: Any) -> str:
        name = self.var("_c")
        self.consts[name] = value
        return name

    def add(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def _type_name(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema.get("type"))
    raise Unsupported(f"schema node {schema!r}")


def _emit(src: _Source, schema: Any, value: str, indent: int, named: dict[str, Any]) -> None:
    """Code that appends the encoding of the expression ``value`` (a local name) to ``buf``."""
    kind = _type_name(schema)
    if isinstance(schema, str) and schema in named:
        if schema in src.expanding:
            raise Unsupported(f"recursive schema: {schema} refers to itself")
        _emit(src, named[schema], value, indent, named)
        return
    if isinstance(schema, dict) and "logicalType" in schema:
        raise Unsupported(f"logical type {schema['logicalType']!r}: fastavro converts its values")
    if kind == "string":
        b = src.var("b")
        src.add(indent, f"{b} = {value}.encode()")
        src.add(indent, f"if len({b}) < 64:")
        src.add(indent + 1, f"buf.append(len({b}) << 1)")
        src.add(indent, "else:")
        src.add(indent + 1, f"write_long(buf, len({b}))")
        src.add(indent, f"buf += {b}")
    elif kind == "bytes":
        b = src.var("b")
        src.add(indent, f"{b} = require_bytes({value})")
        src.add(indent, f"write_long(buf, len({b}))")
        src.add(indent, f"buf += {b}")
    elif kind in ("int", "long"):
        src.add(indent, f"if type({value}) is int and -64 <= {value} < 64:")
        src.add(indent + 1, f"buf.append(({value} << 1) ^ ({value} >> 63))")
        src.add(indent, "else:")
        src.add(indent + 1, f"write_long(buf, require_int({value}))")
    elif kind == "boolean":
        src.add(indent, f"buf.append(1 if require_bool({value}) else 0)")
    elif kind == "double":
        src.add(indent, f"buf += pack_double({value})")
    elif kind == "float":
        src.add(indent, f"buf += pack_float({value})")
    elif kind == "null":
        src.add(indent, f"if {value} is not None:")
        src.add(indent + 1, f"raise TypeError('expected null, got ' + type({value}).__name__)")
    elif kind == "union":
        branches = list(schema)
        names = [_type_name(b) for b in branches]
        if len(branches) != 2 or "null" not in names:
            raise Unsupported(f"union {names}: only unions of null and one type are generated")
        null_at = names.index("null")
        other = branches[1 - null_at]
        src.add(indent, f"if {value} is None:")
        src.add(indent + 1, f"buf.append({null_at << 1})")
        src.add(indent, "else:")
        # fastavro picks a union's branch by the value's type: a bool is no number there,
        # and an int branch takes only 32-bit values.
        other_kind = _type_name(named.get(other, other) if isinstance(other, str) else other)
        if other_kind in ("int", "long", "float", "double"):
            src.add(indent + 1, f"if type({value}) is bool:")
            src.add(indent + 2, f"raise TypeError('a bool is not a {other_kind}')")
        if other_kind == "int":
            src.add(indent + 1, f"if not -2147483648 <= {value} <= 2147483647:")
            src.add(indent + 2, f"raise OverflowError('{{}} does not fit an Avro int'.format({value}))")
        src.add(indent + 1, f"buf.append({(1 - null_at) << 1})")
        _emit(src, other, value, indent + 1, named)
    elif kind == "array":
        items, item = src.var("items"), src.var("item")
        src.add(indent, f"{items} = {value}")
        src.add(indent, f"if len({items}):")
        src.add(indent + 1, f"write_long(buf, len({items}))")
        src.add(indent + 1, f"for {item} in {items}:")
        _emit(src, schema["items"], item, indent + 2, named)
        src.add(indent, "buf.append(0)")
    elif kind == "record":
        name = schema["name"]
        if name in src.expanding:
            raise Unsupported(f"recursive schema: {name} contains itself")
        named[name] = schema
        src.expanding.add(name)
        _record(src, schema, value, indent, named)
        src.expanding.discard(name)
    else:
        raise Unsupported(f"Avro type {kind!r}")


def _nullable(schema: Any) -> bool:
    return schema == "null" or (isinstance(schema, list) and "null" in schema)


def _record(src: _Source, schema: Mapping[str, Any], value: str, indent: int, named: dict[str, Any]) -> None:
    for field in schema["fields"]:
        name = field["name"]
        v = src.var("v")
        if "default" in field:
            src.add(indent, f"{v} = {value}.get({name!r}, {src.const(field['default'])})")
        elif _nullable(field["type"]):
            src.add(indent, f"{v} = {value}.get({name!r})")
        else:
            src.add(indent, f"{v} = {value}[{name!r}]")
        _emit(src, field["type"], v, indent, named)


def compile_writer(schema: Mapping[str, Any]) -> Writer:
    """The encoder of records of ``schema`` (a parsed record schema, timestamps as long):
    ``writer(buf, record)`` appends the record's Avro binary body to ``buf``."""
    if _type_name(schema) != "record":
        raise Unsupported("the top-level schema is not a record")
    src = _Source()
    src.add(0, "def write(buf, record):")
    src.expanding.add(schema["name"])
    _record(src, schema, "record", 1, dict(schema.get("__named_schemas") or {}))
    namespace: dict[str, Any] = {
        "write_long": write_long, "require_int": _require_int, "require_bool": _require_bool,
        "require_bytes": _require_bytes,
        "pack_double": _DOUBLE, "pack_float": _FLOAT, **src.consts,
    }
    exec(compile("\n".join(src.lines), f"<avro writer {schema.get('name')}>", "exec"), namespace)
    writer: Writer = namespace["write"]
    return writer
