"""The bulk changelog reader (app/runtime/restore.py): what it applies and where it stops."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from faust.types import TP

from app.runtime.restore import consumer_config, read_changelogs

TOPIC = "s-changelog"


@dataclass
class Msg:
    topic_: str
    partition_: int
    offset_: int
    key_: bytes | None = None
    value_: bytes | None = None
    error_: KafkaError | None = None

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def error(self) -> KafkaError | None:
        return self.error_


@dataclass
class FakeConsumer:
    """Delivers each assigned partition's log from its start offset, ``per_call`` records a
    call (interleaving partitions), then end of partition, as a read-committed consumer
    would: ``logs`` hold the committed records only (offsets with gaps where aborted
    records and commit markers were)."""

    logs: dict[int, list[tuple[int, bytes | None]]]
    per_call: int = 3
    eof: bool = True
    assigned: list[TopicPartition] = field(default_factory=list)
    calls: int = 0

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions
        self.topics = {tp.partition: tp.topic for tp in partitions}
        self.queues = {tp.partition: [o for o in self.logs.get(tp.partition, []) if o[0] >= tp.offset] for tp in partitions}
        self.ended: set[int] = set()

    def consume(self, num: int, timeout: float) -> list[Msg]:
        self.calls += 1
        out: list[Msg] = []
        for p, queue in self.queues.items():
            take, self.queues[p] = queue[: self.per_call], queue[self.per_call :]
            out += [Msg(self.topics[p], p, o, b"k%d" % o, v) for o, v in take]
            if not take and self.eof and p not in self.ended:
                self.ended.add(p)
                out.append(Msg(self.topics[p], p, -1, error_=KafkaError(KafkaError._PARTITION_EOF)))
        return out[:num]


def _log(offsets: range | list[int]) -> list[tuple[int, bytes | None]]:
    return [(o, b"v%d" % o) for o in offsets]


def test_it_reads_from_the_start_up_to_the_highwater_record_in_order_and_no_further() -> None:
    consumer = FakeConsumer({0: _log(range(0, 20)), 1: _log(range(0, 20))})
    applied: dict[TP, list[int]] = {}
    jobs = {TP(TOPIC, 0): (5, 12), TP(TOPIC, 1): (0, 19)}
    reached = read_changelogs(consumer, jobs, lambda tp, recs: applied.setdefault(tp, []).extend(o for o, _, _ in recs))
    assert applied == {TP(TOPIC, 0): list(range(5, 13)), TP(TOPIC, 1): list(range(0, 20))}
    assert reached == {TP(TOPIC, 0): 12, TP(TOPIC, 1): 19}
    assert [(tp.partition, tp.offset) for tp in consumer.assigned] == [(0, 5), (1, 0)]


def test_records_keys_and_tombstones_reach_the_writer_as_read() -> None:
    consumer = FakeConsumer({0: [(0, b"a"), (1, None), (2, b"c")]})
    got: list[tuple[int, bytes | None, bytes | None]] = []
    read_changelogs(consumer, {TP(TOPIC, 0): (0, 2)}, lambda tp, recs: got.extend(recs))
    assert got == [(0, b"k0", b"a"), (1, b"k1", None), (2, b"k2", b"c")]


def test_a_transactional_changelog_ends_at_its_last_committed_record() -> None:
    # committed records 0-3 and 6-8 (4: aborted, 5: its marker, 9: the last commit marker);
    # the restore's highwater is 8, the last committed record (not end - 1 = 9)
    consumer = FakeConsumer({0: _log([0, 1, 2, 3, 6, 7, 8])})
    applied: list[int] = []
    reached = read_changelogs(consumer, {TP(TOPIC, 0): (0, 8)}, lambda tp, recs: applied.extend(o for o, _, _ in recs))
    assert applied == [0, 1, 2, 3, 6, 7, 8] and reached == {TP(TOPIC, 0): 8}


def test_the_end_of_a_partition_or_a_record_past_the_highwater_ends_its_read() -> None:
    consumer = FakeConsumer({0: _log([0, 1, 2]), 1: _log([0, 1, 5, 6])})
    applied: dict[int, list[int]] = {}
    reached = read_changelogs(consumer, {TP(TOPIC, 0): (0, 4), TP(TOPIC, 1): (0, 3)},
                              lambda tp, recs: applied.setdefault(tp.partition, []).extend(o for o, _, _ in recs))
    assert applied == {0: [0, 1, 2], 1: [0, 1]}
    assert reached == {TP(TOPIC, 0): 4, TP(TOPIC, 1): 3}, "done: Faust's recovery has nothing left"


def test_nothing_to_read_assigns_nothing() -> None:
    consumer = FakeConsumer({0: _log(range(3))})
    reached = read_changelogs(consumer, {TP(TOPIC, 0): (3, 2)}, lambda tp, recs: pytest.fail("applied"))
    assert reached == {TP(TOPIC, 0): 2} and consumer.assigned == [] and consumer.calls == 0


def test_a_stop_or_the_budget_ends_it_between_batches_where_it_stands() -> None:
    consumer = FakeConsumer({0: _log(range(100))}, per_call=10)
    applied: list[int] = []
    turns = iter([False, False, True])
    reached = read_changelogs(consumer, {TP(TOPIC, 0): (0, 99)}, lambda tp, recs: applied.extend(o for o, _, _ in recs),
                              should_stop=lambda: next(turns))
    assert applied == list(range(20)) and reached == {TP(TOPIC, 0): 19}
    times = iter([0.0, 1.0, 2.0, 99.0])
    consumer = FakeConsumer({0: _log(range(100))}, per_call=10)
    applied.clear()
    reached = read_changelogs(consumer, {TP(TOPIC, 0): (0, 99)}, lambda tp, recs: applied.extend(o for o, _, _ in recs),
                              budget_s=10, clock=lambda: next(times))
    assert applied == list(range(20)) and reached == {TP(TOPIC, 0): 19}


def test_a_broker_error_fails_the_read() -> None:
    class Failing(FakeConsumer):
        def consume(self, num: int, timeout: float) -> list[Msg]:
            return [Msg(TOPIC, 0, -1, error_=KafkaError(KafkaError._TRANSPORT))]

    with pytest.raises(KafkaException):
        read_changelogs(Failing({0: _log(range(3))}), {TP(TOPIC, 0): (0, 2)}, lambda tp, recs: None)


def test_the_consumer_reads_committed_records_only_and_commits_nothing() -> None:
    conf = consumer_config({"bootstrap.servers": "x:1"})
    assert conf["isolation.level"] == "read_committed" and conf["enable.auto.commit"] is False
    assert conf["enable.partition.eof"] is True and conf["bootstrap.servers"] == "x:1"


def test_the_reader_takes_a_consumer_per_partition_and_merges_where_each_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from app.runtime import restore

    made: list[FakeConsumer] = []
    lock = threading.Lock()

    def consumer(conf: dict[str, object]) -> FakeConsumer:
        assert conf["isolation.level"] == "read_committed"
        with lock:
            made.append(FakeConsumer({p: _log(range(50)) for p in range(4)}, per_call=7))
            made[-1].closed = False  # type: ignore[attr-defined]
            return made[-1]

    monkeypatch.setattr(FakeConsumer, "close", lambda self: setattr(self, "closed", True), raising=False)
    monkeypatch.setattr(restore, "Consumer", consumer)
    applied: dict[TP, list[int]] = {}

    def apply(tp: TP, recs: list[tuple[int, bytes | None, bytes | None]]) -> None:
        with lock:
            applied.setdefault(tp, []).extend(o for o, _, _ in recs)

    jobs = {TP(TOPIC, 0): (0, 49), TP(TOPIC, 1): (10, 20), TP(TOPIC, 2): (5, 4), TP("other", 3): (0, 30)}
    reached = restore.bulk_reader({"bootstrap.servers": "x:1"}, parallel=2)(jobs, apply, lambda: False, 60.0)
    assert reached == {TP(TOPIC, 0): 49, TP(TOPIC, 1): 20, TP(TOPIC, 2): 4, TP("other", 3): 30}
    assert applied[TP(TOPIC, 0)] == list(range(50)) and applied[TP(TOPIC, 1)] == list(range(10, 21))
    assert len(made) == 3 and all(c.closed for c in made)  # type: ignore[attr-defined]
    assert sorted((tp.topic, tp.partition, tp.offset) for c in made for tp in c.assigned) == [
        ("other", 3, 0), (TOPIC, 0, 0), (TOPIC, 1, 10)]  # one partition each; nothing to read on 2


def test_one_partitions_failure_stops_the_others_and_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.runtime import restore

    class Failing(FakeConsumer):
        def consume(self, num: int, timeout: float) -> list[Msg]:
            if any(tp.partition == 1 for tp in self.assigned):
                return [Msg(TOPIC, 1, -1, error_=KafkaError(KafkaError._TRANSPORT))]
            return super().consume(num, timeout)

    monkeypatch.setattr(Failing, "close", lambda self: None, raising=False)
    monkeypatch.setattr(restore, "Consumer", lambda conf: Failing({0: _log(range(10**6))}, per_call=10))
    jobs = {TP(TOPIC, 0): (0, 10**6 - 1), TP(TOPIC, 1): (0, 10)}
    with pytest.raises(KafkaException):
        restore.bulk_reader({}, parallel=2)(jobs, lambda tp, recs: None, lambda: False, 60.0)
