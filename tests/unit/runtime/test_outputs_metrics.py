"""What the output encoder counts in the metrics: everything a call handed over, once it
has handed all of it; nothing when a send fails midway (its batch is redone)."""
from __future__ import annotations

from typing import Any

import pytest

from app import metrics
from app.core.model import DeadLetter, Milestone
from app.runtime.outputs import OutputEncoder
from app.runtime.statestore import Origin
from app.settings import TopicSettings, load_section

TOPICS = load_section(TopicSettings, {})
AT = Origin("events", 0, 1)


def accepted(n: int) -> Milestone:
    return Milestone(f"a-{n}", "OrderAccepted", "WH1", 1_000, (), {"order_id": f"O{n}", "version": 1,
                                                                   "lines": [{"line_no": 1, "sku": "S1", "qty": 2}]})


def exception(n: int, code: str) -> Milestone:
    return Milestone(f"x-{n}", "SyncException", "WH1", 1_000, (), {"code": code, "detail": "d", "order_id": f"O{n}"})


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def values() -> dict[str, float]:
    return {
        "accepted": sample("syncgov_milestones_total", type="OrderAccepted"),
        "exceptions": sample("syncgov_milestones_total", type="SyncException"),
        "late": sample("syncgov_sync_exceptions_total", code="LATE_EVENT"),
        "invalid": sample("syncgov_sync_exceptions_total", code="INVALID_EVENT"),
        "undecodable": sample("syncgov_dead_letters_total", reason="undecodable"),
        "samples": sample("syncgov_order_release_to_accepted_seconds_count"),
    }


def test_a_call_counts_what_it_handed_over_by_label() -> None:
    sent: list[tuple[str, bytes]] = []
    outputs: list[tuple[Any, Origin]] = [
        (accepted(1), AT), (accepted(2), AT), (exception(3, "LATE_EVENT"), AT), (exception(4, "INVALID_EVENT"), AT),
        (DeadLetter(raw=b"x", reason="undecodable: bad", record_id="r"), AT),
    ]
    before = values()
    OutputEncoder(TOPICS).produce(lambda topic, key, value, partition: sent.append((topic, key)), outputs)
    after = values()
    assert {k: after[k] - before[k] for k in after} == {
        "accepted": 2, "exceptions": 2, "late": 1, "invalid": 1, "undecodable": 1, "samples": 2}
    assert [t for t, _ in sent] == [TOPICS.milestones] * 2 + [TOPICS.exceptions] * 2 + [TOPICS.dead_letters]


def test_a_call_whose_send_fails_counts_nothing() -> None:
    calls = 0

    def send(topic: str, key: bytes, value: bytes, partition: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise BufferError("queue full")

    before = values()
    with pytest.raises(BufferError):
        OutputEncoder(TOPICS).produce(send, [(accepted(1), AT), (exception(2, "LATE_EVENT"), AT), (accepted(3), AT)])
    assert values() == before and calls == 3
