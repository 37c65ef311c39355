"""Exactly-once on Apache Kafka (``WORKER_EXACTLY_ONCE``; app/runtime/transactions.py): what
only a broker with transactions can show.

- a zombie with the same transactional id is fenced *by the broker*: a new owner's
  ``init_transactions`` aborts its open transaction, its commit fails as ``Fenced``, and
  none of its records (outputs or changelog) reaches a read-committed consumer, though
  they were written to the log;
- a worker killed -9 in the middle of a transaction: a new worker fences it before its
  restore, restores committed records only (the dead transaction's changelog records,
  which would move the state's offset past unread events, are not applied), the ERP sink's
  milestones consumer never sees the dead transaction's milestone, and after recovery the
  milestones equal the replay of the whole stream.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from app.core.stock import Mark
from app.harness.processes import ROOT
from app.kafka.clients import changelog_topic, create_topics, produce, read_all
from app.runtime import faust_adapter
from app.runtime.ownership import Fenced, Lease, Ownership
from app.runtime.runner import confluent_reader
from app.runtime.statestore import Origin
from app.runtime.transactions import PartitionProducers, TransactionalWriter, TxProducer, confluent_transactional
from tables import records as rec
from tests.conftest import worker_env
from tests.integration.conftest import make_worker_factory, wait_for
from tests.integration.streams import by_id, replay, simulate
from tests.integration.test_apache_kafka import PARTITIONS, _effective, _store
from tests.integration.test_worker_parity import recorded, settle

pytestmark = [pytest.mark.kafka, pytest.mark.apache_kafka]


def _all(bootstrap: str, topic: str, committed: bool) -> list[tuple[int, bytes | None, bytes | None]]:
    """(partition, key, value) of every record of ``topic``, committed only or not."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "eos-test", "enable.auto.commit": False,
                         "enable.partition.eof": True,
                         "isolation.level": "read_committed" if committed else "read_uncommitted"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        pending, out = set(parts), []
        while pending:
            for msg in consumer.consume(1000, 5.0) or [None]:
                assert msg is not None, f"{topic}: no end of partition for {sorted(pending)}"
                if msg.error() is not None:
                    pending.discard(msg.partition())
                else:
                    out.append((msg.partition(), msg.key(), msg.value()))
        return out
    finally:
        consumer.close()


def _encode(send: Any, outputs: list[tuple[Any, Origin]], marks: list[Mark]) -> None:
    for out, _ in outputs:
        send(OUTPUTS, out.encode(), out.encode(), -1)


OUTPUTS = "eos.outputs"


class _Writers:
    """Transactional writers of one stage on the test broker, as two workers would have."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap, self.prefix = bootstrap, prefix
        self.apps = iter(range(100))
        self.on_commit: list[Any] = []  # hooks run inside the zombie's commit, before it

    def make(self, hooked: bool = False) -> TransactionalWriter:
        app = faust.App(f"{self.prefix}", store="memory://")
        table = faust_adapter.fenced_table(app, f"s{next(self.apps)}", rec.fence_key, default=None, key_type=bytes,
                                           value_type=bytes, partitions=PARTITIONS)
        table.changelog_topic  # noqa: B018 - built now; its name is the test's changelog
        lease = Lease(60.0, 1.0)
        lease.renew(lease.clock())
        own = Ownership(lambda: {0}, lambda: 1, lease, exit=lambda code: None)
        make = confluent_transactional({"bootstrap.servers": self.bootstrap})

        def producer(txid: str) -> TxProducer:
            real = make(txid)
            if not hooked:
                return real
            return _Hooked(real, self.on_commit)

        return TransactionalWriter(table=table, topic="eos.events", ownership=own,
                                   producers=PartitionProducers(f"{self.prefix}-governance", producer), threads=2,
                                   produce_outputs=_encode)


class _Hooked:
    """A producer that runs hooks right before it commits (records written, not committed)."""

    def __init__(self, real: Any, hooks: list[Any]) -> None:
        self.real, self.hooks = real, hooks

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def commit_transaction(self, timeout: float) -> None:
        assert self.real.flush(10) == 0  # the batch's records are in the log, uncommitted
        while self.hooks:
            self.hooks.pop(0)()
        self.real.commit_transaction(timeout)


def _flush_of(offset: int, order: str) -> Any:
    def flush(previous: Any) -> list[tuple[bytes, bytes | None]]:
        return [(rec.table_key(0, rec.ORDERS, ["WH1", order]), orjson.dumps({"o": offset, "v": order, "p": None})),
                (rec.table_key(0, rec.META), orjson.dumps({"o": offset, "watermark": None, "seq": 0}))]

    return flush


@pytest.fixture
def writers(apache_kafka: Any) -> Iterator[_Writers]:
    prefix = f"eos{os.getpid()}{threading.get_ident() % 1000}{next(_count)}"
    w = _Writers(apache_kafka.bootstrap, prefix)
    create_topics(apache_kafka.bootstrap, [OUTPUTS, f"{prefix}-s0-changelog", f"{prefix}-s1-changelog"], PARTITIONS)
    yield w


_count = iter(range(10**6))


def test_a_zombie_is_fenced_by_the_broker_and_none_of_its_records_is_ever_committed(writers: _Writers) -> None:
    bootstrap = writers.bootstrap
    zombie = writers.make(hooked=True)
    new_owner = writers.make()

    async def run() -> None:
        await zombie.fence({0}, epoch=1)
        await zombie.write([("before", Origin("eos.events", 0, 0))], [], [(0, 0, _flush_of(0, "O-1"))])
        await zombie.settle()  # committed (a write returns while its commit is under way)
        # The zombie stalls mid-batch: its records are in the log when the new owner takes the
        # partition over (before its restore: init_transactions with the same id).
        writers.on_commit.append(lambda: new_owner.producers.renew({0}))
        with pytest.raises(Fenced, match="fenced by the broker"):
            await zombie.write([("zombie", Origin("eos.events", 0, 1))], [], [(0, 1, _flush_of(1, "O-ZOMBIE"))])
            await zombie.settle()
        await new_owner.write([("owner", Origin("eos.events", 0, 1))], [], [(0, 1, _flush_of(1, "O-2"))])
        await new_owner.settle()

    asyncio.run(run())
    changelog = zombie.changelog
    committed = _all(bootstrap, OUTPUTS, committed=True)
    assert sorted(v for _, _, v in committed) == [b"before", b"owner"]
    assert b"zombie" in [v for _, _, v in _all(bootstrap, OUTPUTS, committed=False)], "it was written, then aborted"
    state = [v for _, _, v in _all(bootstrap, changelog, committed=True)]
    assert not any(b"O-ZOMBIE" in (v or b"") for v in state), "no changelog record of the zombie's batch"
    assert any(b"O-ZOMBIE" in (v or b"") for _, _, v in _all(bootstrap, changelog, committed=False))
    # The zombie's store never had its batch either (applied only after a commit).
    faust_adapter.bind(Origin("eos.events", 0, 1))
    assert orjson.loads(zombie.table.data[rec.table_key(0, rec.META)])["o"] == 0
    # The ERP sink's and the stages' consumer (one factory) reads committed records only.
    reader = confluent_reader({"bootstrap.servers": bootstrap}, "eos-sink")()
    try:
        reader.assign([TopicPartition(OUTPUTS, p, 0) for p in range(PARTITIONS)])
        seen = [m.value() for m in reader.consume(100, 5.0) if m.error() is None]
    finally:
        reader.close()
    assert sorted(seen) == [b"before", b"owner"]


_DYING = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    from confluent_kafka import Producer
    p = Producer({{"bootstrap.servers": {bootstrap!r}, "transactional.id": {txid!r},
                  "transaction.timeout.ms": 600000}})
    p.init_transactions(30)
    p.begin_transaction()
    for topic, partition, key, value in {records!r}:
        p.produce(topic, value, key, partition)
    assert p.flush(30) == 0
    print("written", flush=True)
    time.sleep(600)
""")


@pytest.mark.timeout(600)
def test_a_worker_killed_mid_transaction_is_fenced_and_its_records_never_restored_nor_seen(
        apache_kafka: Any, tmp_path: Path) -> None:
    bootstrap = apache_kafka.bootstrap
    factory = make_worker_factory(bootstrap, tmp_path, worker_env("apache"))
    knobs = {"WORKER_IDLE_PARTITION_S": "3600"}  # no idle marks: a restarted worker writes nothing unasked
    first = factory("w1", **knobs)
    prefix = factory.prefix
    events = f"{prefix}.events"
    stream = simulate(orders=150, warehouses=2, seed=21)
    cut = int(len(stream) * 0.6)
    produce(bootstrap, events, stream[:cut])
    wait_for(lambda: sum(1 for _ in read_all(bootstrap, f"{prefix}.milestones")) > 50, 120, "first milestones")
    first.stop()
    before = _effective(tmp_path / "w1")
    p = max(range(PARTITIONS), key=lambda q: len(before[f"governance/{q}"]["o"]))
    meta_offset = before[f"governance/{p}"]["offset"]
    assert meta_offset > 10

    # A worker dies (kill -9) in the middle of partition p's transaction: its changelog records
    # (a meta far ahead, which would skip unread events, of a high epoch the epoch filter
    # keeps) and a milestone are in the log, uncommitted, the transaction left open.
    gov_log = changelog_topic(prefix, "governance-state")
    bogus_meta = orjson.dumps({"o": meta_offset + 10_000, "watermark": None, "seq": 0, "e": 10**6})
    bogus_order = orjson.dumps({"o": meta_offset + 10_000, "v": None, "p": None, "e": 10**6})
    victim = next(k for k in _raw(tmp_path / "w1", p) if k.startswith(rec.prefix(p) + rec.ORDERS.encode()))
    records = [(gov_log, p, victim, bogus_order), (gov_log, p, rec.table_key(p, rec.META), bogus_meta),
               (f"{prefix}.milestones", p, b"WH1|O-DEAD", b"not-a-milestone-from-a-dead-transaction")]
    dying = subprocess.Popen(
        [sys.executable, "-c", _DYING.format(root=str(ROOT), bootstrap=bootstrap, txid=f"{prefix}-governance-{p}",
                                             records=records)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert dying.stdout is not None and dying.stdout.readline().strip() == "written"
    finally:
        dying.send_signal(signal.SIGKILL)
        dying.wait()
    assert any(v == bogus_meta for _, _, v in _all_partition(bootstrap, gov_log, p, committed=False))

    # A new node, empty data dir: it fences the dead producer before its restore (its open
    # transaction aborted at once, not after the transaction timeout) and restores committed
    # records only: exactly the state the first worker had.
    second = factory("w2", **knobs)
    second.stop()
    assert _effective(tmp_path / "w2") == before
    committed = _all_partition(bootstrap, gov_log, p, committed=True)
    assert not any(v == bogus_meta for _, _, v in committed)
    # The dead transaction was aborted, not left open until its timeout: a read-committed
    # consumer gets past it, to the fence record the new worker wrote after it.
    fences = [orjson.loads(v)["e"] for _, k, v in committed if k == rec.fence_key(p) and v]
    first_epoch = orjson.loads(_store(tmp_path / "w1", "governance-state", p)[rec.fence_key(p)])["e"]
    assert max(fences) > first_epoch

    # The ERP sink's consumer never sees the dead transaction's milestone; and after the rest
    # of the stream the milestones equal the replay of everything.
    second.start()
    produce(bootstrap, events, stream[cut:])
    expected = by_id(replay(recorded(bootstrap, events, len(stream))))
    assert settle(bootstrap, prefix, expected) == expected
    reader = confluent_reader({"bootstrap.servers": bootstrap}, f"{prefix}-erp-sink-probe")()
    try:
        reader.assign([TopicPartition(f"{prefix}.milestones", q, 0) for q in range(PARTITIONS)])
        values = _drain(reader)
    finally:
        reader.close()
    assert values and b"not-a-milestone-from-a-dead-transaction" not in values


def _raw(data_dir: Path, partition: int) -> list[bytes]:
    return sorted(_store(data_dir, "governance-state", partition))


def _all_partition(bootstrap: str, topic: str, partition: int, committed: bool) -> list[tuple[int, bytes | None, bytes | None]]:
    return [r for r in _all(bootstrap, topic, committed) if r[0] == partition]


def _drain(reader: Any) -> list[bytes]:
    values: list[bytes] = []
    while True:
        msgs = reader.consume(1000, 3.0)
        if not msgs:
            return values
        values += [m.value() for m in msgs if m.error() is None]
