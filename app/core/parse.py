"""Rule 8 (bad input): raw JSON bytes or a decoded dict -> a validated ``Event``, or the
reason the record is rejected. The reason names the offending field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from app.core.model import (
    AUTHORITY,
    DISPOSITIONS,
    ITEM_SCANNED,
    LINE_SHORT_CLOSED,
    ORDER_CANCELLED,
    ORDER_CHANGED,
    ORDER_RELEASED,
    PACK_CONFIRMED,
    PICK_CONFIRMED,
    RETURN_RECEIVED,
    SHIPMENT_DISPATCHED,
    STOCK_ADJUSTED,
    TELEMETRY,
    TOTE_CONVEYED,
    Event,
)
from app.core.timeutil import parse_ts

INT32_MAX: Final = 2**31 - 1
INT64_MAX: Final = 2**63 - 1
#: Input limits (security): a bigger record, a longer string or list is rule 8.
#: JSON nesting is bounded by orjson (depth 1024) and, in practice, by the record size.
MAX_RECORD_BYTES: Final = 64 * 1024
MAX_STRING: Final = 256
MAX_LIST: Final = 1000


class Invalid(Exception):
    """Raised by field validators: the field's path and what is wrong (None: missing)."""

    def __init__(self, field: str, problem: str | None = None) -> None:
        super().__init__(field, problem)
        self.field = field
        self.problem = problem

    @property
    def reason(self) -> str:
        """The dead-letter reason, e.g. ``field 'qty' must be > 0, got 0``."""
        if self.problem is None:
            return f"missing field '{self.field}'"
        return f"field '{self.field}' {self.problem}"

    def inside(self, prefix: str) -> Invalid:
        """The same problem for a field nested under ``prefix`` (e.g. ``lines[2].``)."""
        return Invalid(prefix + self.field, self.problem)


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """How to validate one input type."""

    name: str
    authority: frozenset[str]
    strings: tuple[str, ...]  # required non-empty strings besides the common fields
    optional: tuple[str, ...]  # optional strings (null counts as absent)
    extra: Callable[[dict[str, Any]], dict[str, Any]] | None  # other fields, normalised
    telemetry: bool
    data_strings: tuple[str, ...]  # ``strings`` kept in ``Event.data`` (all but order_id)

    @property
    def has_order_id(self) -> bool:
        """Does this type carry an ``order_id`` (required or optional)?"""
        return "order_id" in self.strings or "order_id" in self.optional


def _int(d: dict[str, Any], name: str, positive: bool, limit: int = INT32_MAX) -> int:
    v = d.get(name)
    if v is None:
        raise Invalid(name)
    if type(v) is not int:
        raise Invalid(name, f"must be an integer, got {type(v).__name__}")
    if positive and v <= 0:
        raise Invalid(name, f"must be > 0, got {v}")
    if v > limit or v < -limit - 1:
        raise Invalid(name, f"is out of range: {v}")
    return v


def _str(d: dict[str, Any], name: str) -> str:
    v = d.get(name)
    if v is None:
        raise Invalid(name)
    if type(v) is not str or not v:
        raise Invalid(name, "must be a non-empty string")
    if len(v) > MAX_STRING:
        raise Invalid(name, f"is longer than {MAX_STRING} characters")
    return v


def _list(d: dict[str, Any], name: str) -> list[Any] | tuple[Any, ...]:
    v = d.get(name)
    if v is None:
        raise Invalid(name)
    if not isinstance(v, (list, tuple)):
        raise Invalid(name, f"must be a list, got {type(v).__name__}")
    if len(v) > MAX_LIST:
        raise Invalid(name, f"has more than {MAX_LIST} entries")
    return v


def _entries(d: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The non-empty list of objects in ``d[name]``, each as a dict."""
    entries = _list(d, name)
    if not entries:
        raise Invalid(name, "must not be empty")
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        if type(entry) is dict:
            out.append(entry)
        elif isinstance(entry, Mapping):
            out.append(dict(entry))
        else:
            raise Invalid(f"{name}[{i}]", "must be an object")
    return out


def _lines(d: dict[str, Any]) -> dict[str, Any]:
    lines = []
    seen: set[int] = set()
    for i, entry in enumerate(_entries(d, "lines")):
        try:
            line_no = _int(entry, "line_no", False)
            sku = _str(entry, "sku")
            qty = _int(entry, "qty", True)
        except Invalid as exc:
            raise exc.inside(f"lines[{i}].") from None
        if line_no in seen:
            raise Invalid("lines", f"has a duplicate line_no {line_no}")
        seen.add(line_no)
        lines.append((line_no, sku, qty))
    return {"lines": tuple(lines)}


def _pick(d: dict[str, Any]) -> dict[str, Any]:
    return {"line_no": _int(d, "line_no", False), "qty": _int(d, "qty", True)}


def _short_close(d: dict[str, Any]) -> dict[str, Any]:
    return {"line_no": _int(d, "line_no", False)}


def _pack(d: dict[str, Any]) -> dict[str, Any]:
    items = []
    for i, entry in enumerate(_entries(d, "items")):
        try:
            items.append((_int(entry, "line_no", False), _int(entry, "qty", True)))
        except Invalid as exc:
            raise exc.inside(f"items[{i}].") from None
    out: dict[str, Any] = {"items": tuple(items)}
    weight = d.get("weight_kg")
    if weight is not None:
        if type(weight) not in (int, float) or not weight >= 0:
            raise Invalid("weight_kg", "must be a number >= 0")
        out["weight_kg"] = weight
    return out


def _dispatch(d: dict[str, Any]) -> dict[str, Any]:
    ids = _list(d, "package_ids")
    for i, v in enumerate(ids):
        if type(v) is not str or not v or len(v) > MAX_STRING:
            raise Invalid(f"package_ids[{i}]", f"must be a non-empty string of at most {MAX_STRING} characters")
    return {"package_ids": tuple(ids)}


def _stock(d: dict[str, Any]) -> dict[str, Any]:
    return {"delta": _int(d, "delta", False, INT64_MAX)}


def _return(d: dict[str, Any]) -> dict[str, Any]:
    qty = _int(d, "qty", True)
    disposition = d.get("disposition")
    if disposition is None:
        raise Invalid("disposition")
    if type(disposition) is not str or disposition not in DISPOSITIONS:
        raise Invalid("disposition", "must be one of inspect, restock, scrap")
    return {"qty": qty, "disposition": disposition}


def _spec(
    name: str,
    strings: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
    extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> TypeSpec:
    data_strings = tuple(n for n in strings if n != "order_id")
    telemetry = name in TELEMETRY
    return TypeSpec(name, AUTHORITY[name], strings, optional, extra, telemetry, data_strings)


SPECS: Final[dict[str, TypeSpec]] = {
    s.name: s
    for s in (
        _spec(ORDER_RELEASED, ("order_id",), ("wave_id", "carrier"), _lines),
        _spec(ORDER_CHANGED, ("order_id",), (), _lines),
        _spec(ORDER_CANCELLED, ("order_id",)),
        _spec(ITEM_SCANNED, ("barcode", "location", "device_id"), ("order_id", "tote_id")),
        _spec(TOTE_CONVEYED, ("tote_id", "scanner_id", "lane"), ("order_id",)),
        _spec(PICK_CONFIRMED, ("order_id", "sku", "location"), ("tote_id", "wave_id"), _pick),
        _spec(LINE_SHORT_CLOSED, ("order_id",), (), _short_close),
        _spec(PACK_CONFIRMED, ("order_id", "package_id"), (), _pack),
        _spec(SHIPMENT_DISPATCHED, ("order_id", "shipment_id", "carrier", "tracking_no"),
              extra=_dispatch),
        _spec(STOCK_ADJUSTED, ("sku", "location", "reason"), (), _stock),
        _spec(RETURN_RECEIVED, ("rma_id", "order_id", "sku"), (), _return),
    )
}
_TYPE_NAMES: Final = ", ".join(sorted(SPECS))


def _bad_string(d: dict[str, Any], name: str) -> str:
    v = d.get(name)
    if v is None:
        return f"missing field '{name}'"
    if type(v) is str and len(v) > MAX_STRING:
        return f"field '{name}' is longer than {MAX_STRING} characters"
    return f"field '{name}' must be a non-empty string"


def _common_reason(d: dict[str, Any]) -> str:
    """Why the common fields are bad (checked in contract order); "" if they are not."""
    event_id = d.get("event_id")
    if type(event_id) is not str or not event_id or len(event_id) > MAX_STRING:
        return _bad_string(d, "event_id")
    kind = d.get("type")
    if kind is None:
        return "missing field 'type'"
    if type(kind) is not str or kind not in SPECS:
        return f"field 'type' must be one of {_TYPE_NAMES}, got {str(kind)[:40]!r}"
    occurred_at = d.get("occurred_at")
    if occurred_at is None:
        return "missing field 'occurred_at'"
    try:
        parse_ts(occurred_at)
    except ValueError as exc:
        return f"field 'occurred_at' is not a valid timestamp: {exc}"
    source = d.get("source")
    if source is None:
        return "missing field 'source'"
    if type(source) is not str:
        return "field 'source' must be a string"
    warehouse_id = d.get("warehouse_id")
    if type(warehouse_id) is not str or not warehouse_id or len(warehouse_id) > MAX_STRING:
        return _bad_string(d, "warehouse_id")
    return ""


Checked = tuple[TypeSpec, str, str, int, dict[str, Any] | None]


def check(d: dict[str, Any]) -> Checked | str:
    """Validate ``d``; return ``(spec, event_id, source, occurred_at_ms, data)`` or the
    rejection reason.

    ``data`` (the normalised type-specific fields) is None for telemetry, which needs none.
    This is the per-record hot path: the common case builds nothing but the result.
    """
    try:
        event_id = d["event_id"]
        kind = d["type"]
        source = d["source"]
        warehouse_id = d["warehouse_id"]
        spec = SPECS[kind] if type(kind) is str else None
        occurred_at = parse_ts(d["occurred_at"])
        if (
            spec is None
            or type(event_id) is not str
            or not event_id
            or len(event_id) > MAX_STRING
            or type(source) is not str
            or type(warehouse_id) is not str
            or not warehouse_id
            or len(warehouse_id) > MAX_STRING
        ):
            return _common_reason(d)
        for name in spec.strings:
            v = d[name]
            if type(v) is not str or not v or len(v) > MAX_STRING:
                return _bad_string(d, name)
    except (KeyError, ValueError):
        # A common field is missing or bad, or else (reason "") the type string ``name``.
        return _common_reason(d) or _bad_string(d, name)
    if spec.telemetry:
        for name in spec.optional:
            v = d.get(name)
            if v is not None and (type(v) is not str or len(v) > MAX_STRING):
                return f"field '{name}' must be a string of at most {MAX_STRING} characters, or null"
        return spec, event_id, source, occurred_at, None
    try:
        data = spec.extra(d) if spec.extra is not None else {}
    except Invalid as exc:
        return exc.reason
    for name in spec.data_strings:
        data[name] = d[name]
    for name in spec.optional:
        v = d.get(name)
        if v is not None:
            if type(v) is not str or len(v) > MAX_STRING:
                return f"field '{name}' must be a string of at most {MAX_STRING} characters, or null"
            data[name] = v
    return spec, event_id, source, occurred_at, data


def validate(d: Mapping[str, Any]) -> Event | str:
    """A validated ``Event`` (telemetry included) or the rejection reason."""
    plain = d if isinstance(d, dict) else dict(d)
    checked = check(plain)
    if isinstance(checked, str):  # the rejection reason
        return checked
    spec, event_id, source, occurred_at, data = checked
    if data is None:
        data = {n: plain[n] for n in spec.strings}
        data.update((n, plain[n]) for n in spec.optional if plain.get(n) is not None)
    order_id = plain.get("order_id") if spec.has_order_id else None
    data.pop("order_id", None)
    return Event(event_id, spec.name, source, occurred_at, plain["warehouse_id"], order_id, data)


def too_large(size: int) -> str:
    """The rule-8 reason of a record over the size limit."""
    return f"too_large: the record is {size} bytes, the limit is {MAX_RECORD_BYTES}"


def decode(raw: bytes) -> dict[str, Any] | str:
    """JSON bytes -> dict, or the reason they are not a JSON object."""
    if len(raw) > MAX_RECORD_BYTES:
        return too_large(len(raw))
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"undecodable: invalid JSON: {exc}"
    if type(value) is not dict:
        return f"undecodable: JSON value is {type(value).__name__}, expected an object"
    return value


def identity(d: object) -> tuple[str, str] | None:
    """The record identity (source, event_id) when both are usable strings, else None."""
    if not isinstance(d, Mapping):
        return None
    source = d.get("source")
    event_id = d.get("event_id")
    if type(source) is str and type(event_id) is str and event_id:
        return source, event_id
    return None
