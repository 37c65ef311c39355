"""The generic adapter's mapping: requests as templates, answers read with JSON Pointers.

Pure (no IO): ``app.erp.http`` sends what these objects render. Three kinds of entries:

- **Steps** (the object form of an ``ERP_HTTP_ROUTES`` entry): one or more requests per
  milestone type, each ``{"request": "METHOD /path", "body": ..., "headers": {...},
  "as": "name", "expect": {"/pointer": [values]}}``. Templates take ``{field}`` from the
  milestone, ``{milestone}`` is the whole milestone, ``{read/...}`` the answer of the type's
  read route, ``{name/...}`` the answer of an earlier step (``as``). In a path a value is
  URL-quoted; in a JSON body a string that is exactly one placeholder becomes that JSON
  value (a number stays a number, an object an object), other strings are formatted.
  ``expect``: the step's answer must hold one of those values there (an ERP that ignores a
  call it cannot apply, instead of refusing it, is caught here).
- **Read specs** (``"read:<type>"`` as an object): the request that finds the milestone's
  document and where its parts are in the answer: ``found`` (present and not null/empty:
  the document exists; default: the answer is not empty), ``state``, ``done`` (the states
  in which the milestone's effect is already there; default: found means done), ``ref``,
  ``quantity`` (what a stock document moved) and ``changed`` (when it last changed: epoch
  ms or ISO-8601).
- **The release feed** (``ERP_HTTP_FEED``): a request with ``{cursor}`` (and ``{limit}``)
  in it that answers the orders released since the cursor; ``items`` points to their list,
  ``order`` and ``lines`` map each item to an ``OrderReleased`` event, the next cursor is
  ``next_cursor`` (a pointer into the answer) or ``item_cursor`` (pointer(s) into the last
  item: a list of pointers gives a list, e.g. ``["/write_date", "/id"]`` for a keyset).

A JSON Pointer (RFC 6901) is ``""`` for the whole value or ``/a/0/b`` (``~1`` is ``/``).
"""
from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.core.timeutil import format_ts, parse_ts

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


def request_line(line: str) -> tuple[str, str]:
    """``"METHOD /path"`` -> (METHOD, /path); ValueError saying what is wrong otherwise."""
    try:
        method, path = line.split(None, 1)
    except ValueError:
        raise ValueError("must be 'METHOD /path'") from None
    method, path = method.upper(), path.strip()
    if method not in METHODS or not path.startswith("/"):
        raise ValueError(f"must be 'METHOD /path' with METHOD in {', '.join(sorted(METHODS))}")
    return method, path
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(/[^{}]*)?\}")
#: The body of a step that does not say: the milestone's contract JSON.
WHOLE_MILESTONE = "{milestone}"


class MappingError(ValueError):
    """A mapping that cannot be used (reported at start-up, naming the setting)."""


class Unresolved(LookupError):
    """A placeholder or pointer with nothing at that place."""


def pointer_get(doc: Any, pointer: str) -> Any:
    """The value at ``pointer`` in ``doc``; :class:`Unresolved` when there is none."""
    if pointer == "":
        return doc
    if not pointer.startswith("/"):
        raise Unresolved(f"{pointer!r} is not a JSON Pointer")
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, list):
            if not token.isdigit() or int(token) >= len(doc):
                raise Unresolved(pointer)
            doc = doc[int(token)]
        elif isinstance(doc, dict):
            if token not in doc:
                raise Unresolved(pointer)
            doc = doc[token]
        else:
            raise Unresolved(pointer)
    return doc


def _pointer(value: Any, where: str) -> str:
    if not isinstance(value, str) or (value and not value.startswith("/")):
        raise MappingError(f"{where}: {value!r} is not a JSON Pointer ('' or '/a/0/b')")
    return value


def _resolve(scope: Mapping[str, Any], match: re.Match[str]) -> Any:
    name, pointer = match.group(1), match.group(2) or ""
    if name not in scope:
        raise Unresolved(f"no {{{name}}}")
    try:
        return pointer_get(scope[name], pointer)
    except Unresolved:
        raise Unresolved(f"{{{name}{pointer}}}: nothing there") from None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def render_text(template: str, scope: Mapping[str, Any], *, quote: bool) -> str:
    """``template`` with each placeholder's value (URL-quoted with ``quote``; a path
    placeholder that is null or empty is unresolved: no path has an empty segment)."""

    def sub(match: re.Match[str]) -> str:
        value = _resolve(scope, match)
        if quote and value in (None, ""):
            raise Unresolved(f"{match.group(0)} is empty")
        text = _text(value)
        return urllib.parse.quote(text, safe="") if quote else text

    return PLACEHOLDER.sub(sub, template)


def render_json(template: Any, scope: Mapping[str, Any]) -> Any:
    """A JSON template rendered: a string that is one placeholder becomes its JSON value."""
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template)
        return _resolve(scope, whole) if whole else render_text(template, scope, quote=False)
    if isinstance(template, list):
        return [render_json(item, scope) for item in template]
    if isinstance(template, dict):
        return {key: render_json(value, scope) for key, value in template.items()}
    return template


def _keys(spec: Mapping[str, Any], allowed: set[str], required: set[str], where: str) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise MappingError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(spec))
    if missing:
        raise MappingError(f"{where}: missing {', '.join(missing)}")


@dataclass(frozen=True)
class Request:
    """One templated request: method, path (may hold a query string), JSON body, headers."""

    method: str
    path: str
    body: Any = None  # a JSON template; None: no body
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: Any, where: str, *, default_body: Any = None) -> Request:
        """``"METHOD /path"`` or ``{"request": "METHOD /path", "body": ..., "headers": {...}}``
        (the object's other keys are the caller's)."""
        line = spec if isinstance(spec, str) else spec.get("request") if isinstance(spec, dict) else None
        if not isinstance(line, str):
            raise MappingError(f"{where}: expected \"METHOD /path\" or an object with \"request\"")
        try:
            method, path = request_line(line)
        except ValueError as exc:
            raise MappingError(f"{where}: {line!r} {exc}") from None
        if "{" in PLACEHOLDER.sub("", path) or "}" in PLACEHOLDER.sub("", path):
            raise MappingError(f"{where}: {line!r}: a placeholder is {{field}} or {{name/json/pointer}}")
        body, headers = default_body, dict[str, str]()
        if isinstance(spec, dict):
            body = spec.get("body", default_body)
            headers = spec.get("headers") or {}
            if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
                raise MappingError(f"{where}: headers must be an object of strings")
        return cls(method, path, body, tuple(sorted(headers.items())))

    def render(self, scope: Mapping[str, Any]) -> tuple[str, str, bytes | None, dict[str, str]]:
        """(method, path, body bytes or None, headers); :class:`Unresolved` if a value is missing."""
        path = render_text(self.path, scope, quote=True)
        body = None if self.body is None else json.dumps(render_json(self.body, scope), separators=(",", ":")).encode()
        headers = {name: render_text(value, scope, quote=False) for name, value in self.headers}
        return self.method, path, body, headers

    @property
    def where(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class Step:
    request: Request
    name: str | None = None  # its answer's name for the next steps
    expect: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @classmethod
    def parse(cls, spec: Any, where: str) -> Step:
        if isinstance(spec, dict):
            _keys(spec, {"request", "body", "headers", "as", "expect"}, {"request"}, where)
        request = Request.parse(spec, where, default_body=WHOLE_MILESTONE)
        if not isinstance(spec, dict):
            return cls(request)
        name = spec.get("as")
        if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)
                                 or name in ("read", "milestone")):
            raise MappingError(f"{where}: \"as\" must be a name (not read or milestone)")
        expect = spec.get("expect") or {}
        if not isinstance(expect, dict) or not all(isinstance(v, list) and v for v in expect.values()):
            raise MappingError(f"{where}: expect must map JSON Pointers to non-empty lists of values")
        return cls(request, name, tuple((_pointer(p, where), tuple(v)) for p, v in expect.items()))

    def unmet(self, answer: Any) -> str | None:
        """Why the answer does not meet ``expect``, or None."""
        for pointer, values in self.expect:
            try:
                found = pointer_get(answer, pointer)
            except Unresolved:
                return f"expected one of {list(values)} at {pointer!r}, the answer has nothing there"
            if found not in values:
                return f"expected one of {list(values)} at {pointer!r}, the ERP answered {_text(found)[:200]}"
        return None


@dataclass(frozen=True)
class StepsRoute:
    """A milestone type posted as one or more requests (the object form of a route)."""

    steps: tuple[Step, ...]
    ref: str | None = None  # pointer into the last answer: the document reference

    @classmethod
    def parse(cls, spec: Any, where: str) -> StepsRoute:
        ref = None
        if isinstance(spec, dict) and "steps" in spec:
            _keys(spec, {"steps", "ref"}, {"steps"}, where)
            ref = _pointer(spec["ref"], where) if "ref" in spec else None
            spec = spec["steps"]
        items = spec if isinstance(spec, list) else [spec]
        if not items:
            raise MappingError(f"{where}: no steps")
        return cls(tuple(Step.parse(item, f"{where} step {i + 1}") for i, item in enumerate(items)), ref)


def _ms(value: Any) -> int | None:
    """Epoch ms or an ISO-8601 time; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        try:
            return parse_ts(value)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class ReadSpec:
    """Where the document a milestone touches is, and what in the answer tells its state."""

    request: Request
    found: str = ""
    state: str | None = None
    done: tuple[Any, ...] | None = None
    ref: str | None = None
    quantity: str | None = None
    changed: str | None = None

    @classmethod
    def parse(cls, spec: Any, where: str) -> ReadSpec:
        if not isinstance(spec, dict):
            raise MappingError(f"{where}: expected an object")
        _keys(spec, {"request", "body", "headers", "found", "state", "done", "ref", "quantity", "changed"},
              {"request"}, where)
        done = spec.get("done")
        if done is not None and (not isinstance(done, list) or not done):
            raise MappingError(f"{where}: done must be a non-empty list of states")
        if done is not None and "state" not in spec:
            raise MappingError(f"{where}: done needs state (where the state is in the answer)")
        pointers = {key: _pointer(spec[key], where) if key in spec else None
                    for key in ("state", "ref", "quantity", "changed")}
        return cls(Request.parse(spec, where), _pointer(spec.get("found", ""), where),
                   done=tuple(done) if done is not None else None, **pointers)

    def document(self, answer: Any, where: str) -> tuple[str, str, bool, float | None, int | None] | None:
        """(ref, state, done, quantity, changed ms) of the answer's document, or None if absent."""
        try:
            found = pointer_get(answer, self.found)
        except Unresolved:
            return None
        if found in (None, [], {}, ""):
            return None

        def get(pointer: str | None) -> Any:
            if pointer is None:
                return None
            try:
                return pointer_get(answer, pointer)
            except Unresolved:
                return None

        state = get(self.state)
        state_text = "exists" if state is None else _text(state)
        done = True if self.done is None else state in self.done
        ref = get(self.ref)
        qty = get(self.quantity)
        quantity = float(qty) if isinstance(qty, (int, float)) and not isinstance(qty, bool) else None
        return (where if ref is None else _text(ref)), state_text, done, quantity, _ms(get(self.changed))


def _qty(value: Any) -> int | float:
    number = float(value)
    return int(number) if number.is_integer() else number


@dataclass(frozen=True)
class FeedSpec:
    """``ERP_HTTP_FEED``: the released orders since a cursor, mapped to ``OrderReleased``."""

    request: Request
    items: str
    order: Mapping[str, str]  # order_id, warehouse_id (required), carrier, occurred_at, event_id
    lines: Mapping[str, str]  # items (pointer to the item's lines), line_no, sku, qty
    next_cursor: str | None = None
    item_cursor: tuple[str, ...] | str | None = None
    start: Any = None
    source: str = "erp"

    ORDER_KEYS = frozenset({"order_id", "warehouse_id", "carrier", "occurred_at", "event_id"})
    LINE_KEYS = frozenset({"items", "line_no", "sku", "qty"})

    @classmethod
    def parse(cls, raw: str, where: str = "ERP_HTTP_FEED") -> FeedSpec:
        try:
            spec = json.loads(raw)
        except ValueError as exc:
            raise MappingError(f"not JSON ({exc})") from None
        if not isinstance(spec, dict):
            raise MappingError("must be a JSON object (see the README: \"Another ERP\")")
        _keys(spec, {"request", "body", "headers", "items", "order", "lines", "next_cursor", "item_cursor", "start"},
              {"request", "order", "lines"}, where)
        if ("next_cursor" in spec) == ("item_cursor" in spec):
            raise MappingError(f"{where}: give exactly one of next_cursor (in the answer) or item_cursor "
                               "(in the last item)")
        order, lines = spec["order"], spec["lines"]
        if not isinstance(order, dict) or not isinstance(lines, dict):
            raise MappingError(f"{where}: order and lines must be objects of JSON Pointers")
        _keys(order, set(cls.ORDER_KEYS), {"order_id", "warehouse_id"}, f"{where} order")
        _keys(lines, set(cls.LINE_KEYS), set(cls.LINE_KEYS), f"{where} lines")
        for key, value in (*order.items(), *lines.items()):
            _pointer(value, f"{where} {key}")
        item_cursor = spec.get("item_cursor")
        if isinstance(item_cursor, list):
            item_cursor = tuple(_pointer(p, f"{where} item_cursor") for p in item_cursor)
        elif item_cursor is not None:
            item_cursor = _pointer(item_cursor, f"{where} item_cursor")
        return cls(Request.parse(spec, where), _pointer(spec.get("items", ""), f"{where} items"), dict(order),
                   dict(lines), _pointer(spec["next_cursor"], where) if "next_cursor" in spec else None,
                   item_cursor, spec.get("start"))

    def page(self, answer: Any) -> list[Any]:
        try:
            items = pointer_get(answer, self.items)
        except Unresolved:
            raise Unresolved(f"the feed's answer has no item list at {self.items!r}") from None
        if not isinstance(items, list):
            raise Unresolved(f"the feed's answer has no item list at {self.items!r}: {_text(items)[:200]}")
        return items

    def next_cursor_of(self, answer: Any, items: Sequence[Any], cursor: Any) -> Any:
        """The cursor after this page (unchanged when the page says nothing)."""
        try:
            if self.next_cursor is not None:
                found = pointer_get(answer, self.next_cursor)
                return cursor if found is None else found
            if not items:
                return cursor
            if isinstance(self.item_cursor, tuple):
                return [pointer_get(items[-1], p) for p in self.item_cursor]
            return pointer_get(items[-1], self.item_cursor or "")
        except Unresolved as exc:
            raise Unresolved(f"the feed's cursor is missing: {exc}") from None

    def event(self, item: Any, now_ms: int) -> dict[str, Any]:
        """The ``OrderReleased`` event of one feed item; :class:`Unresolved` names what is missing."""

        def get(doc: Any, pointer: str, what: str) -> Any:
            try:
                value = pointer_get(doc, pointer)
            except Unresolved:
                value = None
            if value in (None, ""):
                raise Unresolved(f"feed item has no {what} at {pointer!r}: {_text(item)[:300]}")
            return value

        order_id = _text(get(item, self.order["order_id"], "order_id"))
        warehouse = _text(get(item, self.order["warehouse_id"], "warehouse_id"))
        rows = get(item, self.lines["items"], "lines")
        if not isinstance(rows, list):
            raise Unresolved(f"feed item's lines at {self.lines['items']!r} are not a list")
        lines = []
        for row in rows:
            try:
                lines.append({"line_no": int(get(row, self.lines["line_no"], "line_no")),
                              "sku": _text(get(row, self.lines["sku"], "sku")),
                              "qty": _qty(get(row, self.lines["qty"], "qty"))})
            except (TypeError, ValueError) as exc:
                raise Unresolved(f"feed item line {_text(row)[:200]}: {exc}") from None
        occurred = now_ms
        if "occurred_at" in self.order:
            occurred = _ms(get(item, self.order["occurred_at"], "occurred_at")) or now_ms
        event_id = (_text(get(item, self.order["event_id"], "event_id")) if "event_id" in self.order
                    else f"{warehouse}:{order_id}")
        event: dict[str, Any] = {
            "event_id": f"feed:{event_id}", "type": "OrderReleased", "occurred_at": format_ts(occurred),
            "source": self.source, "warehouse_id": warehouse, "order_id": order_id,
            "lines": sorted((line for line in lines if line["qty"]), key=lambda line: line["line_no"]),
        }
        if "carrier" in self.order:
            try:
                carrier = pointer_get(item, self.order["carrier"])
            except Unresolved:
                carrier = None
            if carrier not in (None, ""):
                event["carrier"] = _text(carrier)
        return event


def parse_mapped_routes(table: Mapping[str, Any]) -> tuple[dict[str, StepsRoute], dict[str, ReadSpec]]:
    """The object-form entries of ``ERP_HTTP_ROUTES``: (step routes, read specs) by type."""
    posts: dict[str, StepsRoute] = {}
    reads: dict[str, ReadSpec] = {}
    for key, spec in table.items():
        if isinstance(spec, str):
            continue
        if key.startswith("bulk:"):
            raise MappingError(f"{key}: a bulk route is \"METHOD /path\"")
        if key.startswith("read:"):
            reads[key[len("read:"):]] = ReadSpec.parse(spec, key)
        else:
            posts[key] = StepsRoute.parse(spec, key)
    return posts, reads
