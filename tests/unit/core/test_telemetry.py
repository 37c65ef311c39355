"""Telemetry's fast read (``app.core.telemetry``, ``Engine.process_telemetry``) changes the
cost, never the outcome: whatever it accepts, the ordinary read (orjson, then rule 8's
``check``) accepts with the same type, source and time; and an engine that takes the fast
read first ends every stream exactly as one that never takes it."""
from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core import Engine, telemetry
from app.core.model import CoreSettings
from app.core.parse import MAX_RECORD_BYTES, MAX_STRING, check, decode

NOW = 1_796_656_862_635  # 2026-12-07T15:21:02.635Z
SCAN = {
    "event_id": "e-1", "type": "ItemScanned", "occurred_at": "2026-12-07T15:21:02.635Z", "source": "robotics",
    "warehouse_id": "WH3", "barcode": "4012345001990", "location": "C-12-02", "device_id": "RBT-29",
    "order_id": "MO0000211", "tote_id": "T27050",
}
TOTE = {
    "event_id": "e-2", "type": "ToteConveyed", "occurred_at": "2026-12-07T15:21:03Z", "source": "conveyor",
    "warehouse_id": "WH1", "tote_id": "T1", "scanner_id": "S1", "lane": "L2",
}


def _ordinary(raw: bytes) -> tuple[str, str, int] | str:
    """The ordinary read's verdict: (type, source, time) of accepted telemetry, or why not."""
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "undecodable"
    if type(d) is not dict or len(raw) > MAX_RECORD_BYTES:
        return "undecodable"
    checked = check(d)
    if isinstance(checked, str):
        return checked
    spec, _, source, occurred_at, data = checked
    return (spec.name, source, occurred_at) if data is None else "not telemetry"


def _fast(raw: bytes) -> tuple[str, str, int] | None:
    read = telemetry.read(raw)
    return None if read is None else (*read[0], read[1])


def _agree(raw: bytes) -> None:
    fast = _fast(raw)
    if fast is not None:
        assert fast == _ordinary(raw), raw


def test_a_usual_telemetry_record_takes_the_fast_read() -> None:
    assert _fast(orjson.dumps(SCAN)) == ("ItemScanned", "robotics", NOW)
    assert _fast(orjson.dumps(TOTE)) == ("ToteConveyed", "conveyor", NOW + 365)
    first, second = (telemetry.read(orjson.dumps({**SCAN, "event_id": e})) for e in ("a", "b"))
    assert first is not None and second is not None and first[0] is second[0]  # one count key per (type, source)
    assert _fast(orjson.dumps({**SCAN, "order_id": None, "occurred_at": NOW})) == ("ItemScanned", "robotics", NOW)
    spaced = orjson.dumps(SCAN, option=orjson.OPT_INDENT_2)  # any JSON layout
    assert _fast(spaced) == ("ItemScanned", "robotics", NOW)


@pytest.mark.parametrize("raw", [
    orjson.dumps({**SCAN, "type": "PickConfirmed"}),                # another type
    orjson.dumps({**SCAN, "type": "Nope"}),                         # no type of the contract
    orjson.dumps({**SCAN, "extra": 1}),                             # a field the type does not have
    orjson.dumps({**SCAN, "barcode": ""}),
    orjson.dumps({**SCAN, "barcode": "x" * (MAX_STRING + 1)}),
    orjson.dumps({**SCAN, "tote_id": 7}),
    orjson.dumps({**SCAN, "occurred_at": 1.5}),
    orjson.dumps({**SCAN, "occurred_at": True}),
    orjson.dumps({**SCAN, "occurred_at": "2026-12-07T15:21:02"}),   # no offset
    orjson.dumps({**SCAN, "occurred_at": 0}).replace(b'"occurred_at":0', b'"occurred_at":' + b"9" * 20),
    orjson.dumps({**SCAN, "source": None}),
    orjson.dumps({**SCAN, "source": "erp"}),                        # no authority over the type (rule 2)
    orjson.dumps({**TOTE, "source": "robotics"}),
    orjson.dumps({**SCAN, "source": ""}),
    orjson.dumps([SCAN]),
    orjson.dumps(SCAN) + b"x",
    orjson.dumps(SCAN)[:-1] + b',"z":"\xff"}',                      # invalid UTF-8 in a field it would skip
    orjson.dumps(SCAN)[:-1] + b',"z":1e999}',                       # infinity, likewise
    orjson.dumps(SCAN)[:-1] + b',"type":"PickConfirmed"}',          # two types
    orjson.dumps(SCAN).replace(b'"T27050"', b'"\\ud800"'),          # a lone surrogate
    orjson.dumps({**SCAN, "tote_id": " " * MAX_RECORD_BYTES}),      # too large
    b"\x00\x01",
    b"",
])
def test_what_the_fast_read_leaves_to_the_ordinary_one(raw: bytes) -> None:
    assert _fast(raw) is None


def test_a_duplicated_key_is_read_as_orjson_reads_it() -> None:
    raw = orjson.dumps(SCAN)[:-1] + b',"barcode":"second"}'
    assert _fast(raw) == ("ItemScanned", "robotics", NOW) == _ordinary(raw)
    bad = orjson.dumps(SCAN)[:-1] + b',"barcode":""}'  # the last one is read: refused
    assert _fast(bad) is None and isinstance(_ordinary(bad), str)


_text = st.one_of(
    st.sampled_from(["", "a", "x" * MAX_STRING, "x" * (MAX_STRING + 1), "\U0001F600" * MAX_STRING,
                     "\U0001F600" * (MAX_STRING + 1), "\x00", "\\", '"', "\u2028"]),
    st.text(max_size=8),
)
_value = st.one_of(_text, st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
_time = st.one_of(
    st.sampled_from(["2026-12-07T15:21:02.635Z", "2026-12-07T15:21:02Z", "2026-12-07T16:21:02.635+01:00",
                     "2026-12-07T15:21:02.6351Z", "2026-12-07T15:21:02", "2026-13-07T15:21:02Z", "", "now"]),
    st.integers(min_value=-(2**64), max_value=2**64), st.floats(allow_nan=False), st.booleans(), st.none(),
)
_fields = ["event_id", "type", "occurred_at", "source", "warehouse_id", "barcode", "location", "device_id",
           "order_id", "tote_id", "scanner_id", "lane", "sku", "extra"]


@st.composite
def _records(draw: st.DrawFn) -> bytes:
    record: dict[str, object] = dict(draw(st.sampled_from([SCAN, TOTE])))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(_fields))
        roll = draw(st.integers(0, 3))
        if roll == 0:
            record.pop(name, None)
        elif name == "occurred_at":
            record[name] = draw(_time)
        elif name == "type":
            record[name] = draw(st.sampled_from(["ItemScanned", "ToteConveyed", "PickConfirmed", "itemscanned", 3]))
        elif name == "source":
            record[name] = draw(st.sampled_from(["robotics", "conveyor", "wms", "erp", "", "other", 1]))
        else:
            record[name] = draw(_value)
    ascii_only = draw(st.booleans())  # \u escapes, or the characters (a lone surrogate: bytes that are not UTF-8)
    raw = json.dumps(record, ensure_ascii=ascii_only, separators=(",", ":")).encode("utf-8", "surrogatepass")
    tail = draw(st.sampled_from([b"", b" ", b"\n", b"x", b"}", b',"barcode":"b"', b',"type":"ToteConveyed"',
                                 b',"zz":"\xff"', b',"zz":1e400', b',"barcode":"\\udc00"']))
    if tail.startswith(b","):
        raw = raw[:-1] + tail + b"}"
    else:
        raw += tail
    return raw


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_records())
def test_whatever_the_fast_read_accepts_the_ordinary_read_accepts_alike(raw: bytes) -> None:
    _agree(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_records(), min_size=1, max_size=30), st.integers(min_value=-3_600_000, max_value=3_600_000))
def test_an_engine_taking_the_fast_read_ends_as_one_that_never_does(raws: list[bytes], skew: int) -> None:
    """``Engine.process`` (the fast read first) against decode + ``process_event``: same outputs, record by record, and the same state: the clock puts some records in
    the future (the ``future`` rule), the sources make some unauthorized."""
    config = CoreSettings()
    fast, ordinary = Engine(config, clock=lambda: NOW + skew), Engine(config, clock=lambda: NOW + skew)
    for raw in raws:
        d = decode(raw)
        expected = ordinary.reject(raw, d) if isinstance(d, str) else ordinary.process_event(d, raw)
        assert fast.process(raw) == expected, raw
    assert (fast.watermark, fast.counts, dict(fast.seen.store)) == (ordinary.watermark, ordinary.counts,
                                                                   dict(ordinary.seen.store))
    assert fast.rejected == ordinary.rejected


def test_accepted_telemetry_moves_the_watermark_and_counts_as_the_ordinary_read() -> None:
    engine = Engine(CoreSettings(), clock=lambda: NOW)
    assert engine.process_telemetry(orjson.dumps(SCAN)) == []
    assert engine.watermark == NOW and engine.counts == {("ItemScanned", "robotics"): 1}
    future = orjson.dumps({**SCAN, "occurred_at": NOW + 3_600_000})
    unauthorized = orjson.dumps({**SCAN, "source": "erp"})
    assert engine.process_telemetry(future) is None and engine.process_telemetry(unauthorized) is None
    assert engine.counts == {("ItemScanned", "robotics"): 1}, "a record left to process_event is counted there"
