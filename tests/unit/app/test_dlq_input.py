"""Input dead letters in `syncgov dlq`: which are open, and what a re-drive sends (the key
and the bytes), without a broker."""
from __future__ import annotations

import orjson
import pytest

from app.commands import dlq
from app.core import keys
from app.kafka import codec


def letter(rid: str, raw: bytes, offset: int = 5, partition: int = 1, topic: str = "syncgov.events") -> bytes:
    return codec.encode_dead_letter(raw=raw, reason="undecodable: invalid JSON", record_id=rid,
                                    topic=topic, partition=partition, offset=offset,
                                    failed_at=1_800_000_000_000)


def marker(rid: str, upto: int) -> bytes:
    return orjson.dumps({"redriven": rid, "upto": upto})


def test_a_marker_closes_what_it_covers_and_a_later_failure_reopens() -> None:
    records = [(0, b"r1", letter("r1", b"{bad")), (1, b"r2", letter("r2", b"\xff\xfe")), (2, b"r1", marker("r1", 0))]
    open_ = dlq.input_entries_from(records)
    assert [e.record_id for e in open_] == ["r2"]
    assert open_[0].to_json()["raw_encoding"] == "base64" and open_[0].to_json()["kind"] == "input"
    records.append((3, b"r1", letter("r1", b"{bad")))  # re-driven, failed again
    assert [e.record_id for e in dlq.input_entries_from(records)] == ["r2", "r1"]
    records.append((4, b"r1", marker("r1", 2)))  # a stale marker (written before the new failure)
    assert [e.record_id for e in dlq.input_entries_from(records)] == ["r2", "r1"]


def test_an_unreadable_record_on_the_topic_is_skipped_not_fatal() -> None:
    entries = dlq.input_entries_from([(0, None, b"\xc3\x01garbage"), (1, b"r", letter("r", b"x"))])
    assert [e.record_id for e in entries] == ["r"]


def entry(rid: str, raw: bytes) -> dlq.InputEntry:
    e, = dlq.input_entries_from([(9, rid.encode(), letter(rid, raw))])
    return e


GOOD = orjson.dumps({"event_id": "e-1", "type": "OrderCancelled", "occurred_at": "2026-11-27T08:00:00.000Z",
                     "source": "erp", "warehouse_id": "WH1", "order_id": "O-7", "reason": "customer"})


def test_the_original_key_is_used_when_the_original_record_is_still_in_kafka() -> None:
    e = entry("r", b'{"broken')
    (_, key, value), = dlq.plan_input_redrive([e], {"r": b"WH1|O-7"})
    assert key == b"WH1|O-7" and value == b'{"broken'  # as it was: the cause was fixed elsewhere
    (_, key, value), = dlq.plan_input_redrive([e], {"r": b"WH1|O-7"}, fixed=GOOD)
    assert key == b"WH1|O-7" and value == GOOD


def test_without_the_original_the_key_is_the_contracts_key_of_the_record_sent() -> None:
    e = entry("r", b'{"broken')
    (_, key, _), = dlq.plan_input_redrive([e], {}, fixed=GOOD)
    assert key == keys.order_key("WH1", "O-7")
    with pytest.raises(dlq.RedriveError, match=r"no longer in Kafka .* supply a fixed record"):
        dlq.plan_input_redrive([e], {})


def test_a_fixed_record_that_would_fail_again_is_refused() -> None:
    with pytest.raises(dlq.RedriveError, match="would be dead-lettered again"):
        dlq.plan_input_redrive([entry("r", b"{")], {"r": b"k"}, fixed=b"{still broken")
    with pytest.raises(dlq.RedriveError, match="exactly one"):
        dlq.plan_input_redrive([entry("a", b"{"), entry("b", b"{")], {}, fixed=GOOD)


def test_a_refused_record_of_the_internal_stock_topic_is_not_re_driven_to_the_events_topic() -> None:
    """The inventory stage dead-letters a stock-topic record it cannot apply; re-driving it
    would put an internal record on the events topic: refused by name, nothing planned."""
    stock, = dlq.input_entries_from([(9, b"s", letter("s", b"[]", topic="syncgov.stock"))])
    events = entry("r", GOOD)
    with pytest.raises(dlq.RedriveError, match=r"s: a record of syncgov\.stock, not of the events topic"):
        dlq.plan_input_redrive([events, stock], {"r": b"k"}, events_topic="syncgov.events")
    (_, key, value), = dlq.plan_input_redrive([events], {"r": b"k"}, events_topic="syncgov.events")
    assert (key, value) == (b"k", GOOD)


def test_the_erp_dead_letter_list_skips_what_is_no_dead_letter_and_shows_odd_fields() -> None:
    """`dlq list` (and the ops page) over the ERP dead-letter topic: a record that is not
    JSON, or not an object, is skipped, not fatal; a dead letter whose milestone holds odd
    types is listed (it once raised formatting a list order id)."""
    odd = orjson.dumps({"milestone_id": "m1", "type": "OrderPicked", "status": 422, "detail": "cannot be mapped",
                        "milestone": {"order_id": [1]}})
    entries = dlq.entries_from([(0, b"k", b"\xc3\x01junk"), (1, b"k", b"[1]"), (2, b"k", odd)])
    assert [e.milestone_id for e in entries] == ["m1"]
    lines = dlq.list_lines(entries)
    assert lines[0].startswith("m1  OrderPicked") and "[1]" in lines[0]
    assert lines[-1] == "1 open ERP dead letter(s), 0 milestone(s) held behind them"
