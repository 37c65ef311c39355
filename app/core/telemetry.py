"""Telemetry's fast read: raw JSON bytes -> ``((type, source), occurred_at)`` of a record
that rule 8 accepts as telemetry (``ItemScanned``, ``ToteConveyed``: most of a warehouse's
events) from a source with authority over it (rule 2), without building the record's dict;
``None`` for any other record. ``(type, source)`` is the engine's count key, one tuple per
pair (the decoder returns the source as the interned string of its type's authority).

``None`` is not a verdict: the caller decodes such a record the ordinary way
(``parse.decode`` then ``parse.check``), which gives every reason. What this module
accepts, that path accepts too, with the same type, source and time, so the read changes
only the cost, never an outcome. It holds because every field is read by a typed decoder
(msgspec) built from the same ``SPECS`` as ``parse.check``:

- each field of the type, with the rule's limits: the required strings non-empty and at
  most ``MAX_STRING`` characters (``source`` one of the type's authority: a record from
  any other source, which rule 2 reports, is read the ordinary way), the optional ones a string of
  at most ``MAX_STRING`` or null, ``occurred_at`` a string or an integer that
  ``parse_ts`` then takes (a float or a bool is refused, as ``parse_ts`` refuses it);
- *no other field*: msgspec skips an unknown field's value without the checks orjson
  makes (UTF-8, infinity), so a record with one is read the ordinary way;
- the record's JSON as strictly as orjson reads it (trailing data, control characters,
  lone surrogates, invalid UTF-8 and escapes are errors in both), at most
  ``MAX_RECORD_BYTES`` (a larger record is rule 8's ``too_large``).

A duplicated key is read as orjson reads it (the last one), and a duplicated ``type``
with another value is refused. ``tests/unit/core/test_telemetry.py`` runs both ways over
generated records, the awkward ones included, and asserts the same outcome.

The compiled build (``ops/build_core.py``) compiles this module too: the decoder's classes
are made at import from ``SPECS`` either way, and compiled, the call around msgspec's own C
costs 5 % fewer instructions per event on the stage's path.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from app.core.parse import MAX_RECORD_BYTES, MAX_STRING, SPECS, TypeSpec
from app.core.timeutil import parse_ts

_REQUIRED: Any = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STRING)]
_OPTIONAL: Any = Annotated[str, msgspec.Meta(max_length=MAX_STRING)] | None
_COMMON: Final = ("event_id", "occurred_at", "source", "warehouse_id")


def _struct(spec: TypeSpec) -> type[msgspec.Struct]:
    """The typed reading of one telemetry type: its fields and nothing else."""
    # In the contract's order (``type``, the tag, is second there): msgspec looks a key up at
    # the position it expects first, so records written in that order find each field at once.
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
        ("event_id", _REQUIRED), ("occurred_at", str | int), ("source", Literal[tuple(sorted(spec.authority))]),
        ("warehouse_id", _REQUIRED)]
    fields += [(name, _REQUIRED) for name in spec.strings]
    fields += [(name, _OPTIONAL, None) for name in spec.optional]
    assert not set(_COMMON) & {*spec.strings, *spec.optional}, spec.name
    return msgspec.defstruct(spec.name, fields, tag_field="type", tag=spec.name,
                             forbid_unknown_fields=True, gc=False)


_STRUCTS: Final = {spec.name: _struct(spec) for spec in SPECS.values() if spec.telemetry}
#: The other types, by their tag only: their record's fields are passed over, unchecked
#: (the ordinary read checks them), which costs less than the error of an unknown tag.
_OTHERS: Final = tuple(msgspec.defstruct(spec.name, [], tag_field="type", tag=spec.name, gc=False)
                       for spec in SPECS.values() if not spec.telemetry)


def _decoder() -> Any:
    union: Any = None
    for struct in (*_STRUCTS.values(), *_OTHERS):
        union = struct if union is None else union | struct
    return msgspec.json.Decoder(union)


_READ: Final = _decoder().decode
#: ``(type, source)``, the engine's count key: one tuple object for every record of the pair
#: (typed ``Any`` because compiled code would unpack a ``tuple[str, str]`` and build a new one).
CountKey = Any
#: Per telemetry type's class, its sources' count keys.
_KEYS: Final[dict[type, dict[str, CountKey]]] = {
    struct: {source: (name, source) for source in SPECS[name].authority} for name, struct in _STRUCTS.items()}
_ERRORS: Final = (msgspec.DecodeError, ValueError)  # msgspec.ValidationError is a DecodeError


def read(raw: bytes) -> tuple[CountKey, int] | None:
    """``((type, source), occurred_at)`` of a telemetry record that rule 8 accepts, from a
    source with authority over its type; None otherwise (the record is read the ordinary way)."""
    if len(raw) > MAX_RECORD_BYTES:
        return None
    try:
        record = _READ(raw)
        keys = _KEYS.get(type(record))
        if keys is None:
            return None  # another type
        return keys[record.source], parse_ts(record.occurred_at)
    except _ERRORS:
        return None
