"""Exactly-once stages on Apache Kafka: one Kafka transaction per batch and input partition.

A stage's batch is written, per input partition *P* it touched, as one transaction of
*P*'s own transactional producer (``transactional.id = <app id>-<stage>-<P>``):

1. ``begin_transaction``;
2. *P*'s outputs: milestones, exceptions, dead letters, stock forwards (each output goes
   to the transaction of the input partition it came from, its ``Origin``) and *P*'s
   watermark marks (to every stock partition);
3. *P*'s state changes as records of the table's changelog, partition *P*, exactly the
   bytes Faust would write (raw keys and values, ``None`` a tombstone), the meta record
   with the input offset last;
4. ``commit_transaction``; only then are the writes applied to the local store
   (``faust_adapter.apply_committed``: not sent again).

Outputs, state and input offset of *P* become visible together or not at all (consumers
and restores read committed only). The records are encoded on the event loop's thread;
the partitions of one batch are then produced and committed concurrently, each in a thread
of its own: the round trips overlap.

**Fencing by the broker.** A worker that takes *P* over calls ``init_transactions`` with
*P*'s transactional id before it restores *P*'s state
(``faust_adapter.install_transactional_restore``): the broker aborts the old owner's open
transaction and refuses any later commit of it (``Fenced``). That is Kafka Streams'
first exactly-once design ("eos-alpha": one producer per input partition). Its second
(KIP-447: one producer per thread, fenced by the consumer group generation sent with the
offsets) needs the input offsets committed to the consumer group in the transaction; the
stages here are assigned partitions by hand and keep their offsets in the state, so the
fence has to be per input partition.

**Failures.** A fenced producer -> ``Fenced`` (the runner drops the stage's state and
re-syncs; its producer is discarded). Any other failure aborts that partition's
transaction -> ``BatchAborted``: nothing of it is visible, the batch is redone from the
stored offset. Partitions of the same batch that did commit are applied first.

**One batch's commit overlaps the next batch's work.** ``write`` starts the batch's
transactions and returns; the runner reads and the core processes the next batch while they
commit (the broker's round trips, not this process's CPU, are most of a commit). The next
``write`` (and every lifecycle step: ``fence``, the runner before it drops or re-seeks
partitions, and at stop) first waits for that commit (``settle``) and raises its failure
there, before anything of the next batch is flushed or produced: a partition's transactions
stay strictly one after the other, in input order, and the next batch's state writes are
computed from a store that has the previous batch applied. A batch's bookkeeping (the
processed count, metrics, ``syncgov_last_commit_timestamp_seconds``) runs when it has
committed (``on_committed``); a wait for a commit that is cancelled does not cancel the
commit (``settle``). If the commit fails, the in-memory state is a batch or two
ahead of what is stored: the runner drops it and re-reads from the stored offsets, as for any
failed batch. Kafka Streams decouples its commits from processing the same way (it commits
on an interval).

The lease (``Ownership.check``) is still checked before each batch: the ERP sink, which
is not transactional, relies on the same ownership, and a worker that knows it lost the
partition should not even try. No wipe after a late commit is needed: a commit the broker
accepted was not fenced, so the new owner (which fences before it restores) restores it.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from faust.types import TP

from app import metrics
from app.core.stock import Mark
from app.kafka.clients import PRODUCER_DEFAULTS
from app.runtime import faust_adapter
from app.runtime.faust_adapter import AnyTable
from app.runtime.ownership import BatchAborted, Fenced, Ownership
from app.runtime.statestore import Commits, Flush, Origin, Outputs, records
from tables.records import Write, fence_write

log = logging.getLogger(__name__)

#: Bound on one transactional call (init, commit, abort).
CALL_TIMEOUT_S = 30.0
#: The broker aborts a transaction left open longer (a producer that died mid-batch and
#: whose partition nobody took over).
TRANSACTION_TIMEOUT_MS = 60_000

#: Send one record: (topic, key, value, partition: -1 for the key's).
Send = Callable[[str, bytes, "bytes | None", int], None]
#: Encode a batch's outputs and marks into ``Send`` (``agents._outputs.produce_outputs``).
ProduceOutputs = Callable[[Send, Outputs, list[Mark]], None]

_FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
                     KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED})


class TxProducer(Protocol):
    """What a partition's transaction needs of a producer (confluent-kafka's, or a fake)."""

    def init_transactions(self, timeout: float) -> None: ...
    def begin_transaction(self) -> None: ...
    def produce(self, topic: str, value: str | bytes | None = ..., key: str | bytes | None = ..., partition: int = ...,
                callback: Callable[[KafkaError | None, Message], None] | None = ...,
                on_delivery: Callable[[KafkaError | None, Message], None] | None = ..., timestamp: int = ...,
                headers: Any = ...) -> None: ...
    def poll(self, timeout: float) -> int: ...
    def commit_transaction(self, timeout: float) -> None: ...
    def abort_transaction(self, timeout: float) -> None: ...


def confluent_transactional(config: Mapping[str, object], linger_ms: float = 5) -> Callable[[str], TxProducer]:
    """A factory of transactional confluent-kafka producers, by transactional id."""

    def make(transactional_id: str) -> TxProducer:
        return Producer({
            **config,
            **PRODUCER_DEFAULTS,
            "transactional.id": transactional_id,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            "linger.ms": linger_ms,
        })

    return make


def is_fenced(error: KafkaError) -> bool:
    """The broker refused this producer: another one took its transactional id over."""
    return error.code() in _FENCED


class PartitionProducers:
    """One transactional producer per owned input partition of a stage, by transactional id
    ``<prefix>-<partition>``. Thread-safe (renewed from Faust's restore, used from the
    stage's commit threads)."""

    def __init__(self, prefix: str, make: Callable[[str], TxProducer]) -> None:
        self.prefix = prefix
        self.make = make
        self._producers: dict[int, TxProducer] = {}
        self._lock = threading.Lock()

    def transactional_id(self, partition: int) -> str:
        return f"{self.prefix}-{partition}"

    def _new(self, partition: int) -> TxProducer:
        producer = self.make(self.transactional_id(partition))
        producer.init_transactions(CALL_TIMEOUT_S)  # fences the previous owner, aborts its open transaction
        return producer

    def renew(self, partitions: Iterable[int]) -> None:
        """Fence the previous owners of ``partitions``: a new producer each, initialised
        (concurrently). Called before a restore reads their changelogs."""
        wanted = sorted(set(partitions))
        self.discard(wanted)
        if not wanted:
            return
        with ThreadPoolExecutor(len(wanted), thread_name_prefix=f"{self.prefix}-init") as pool:
            made = dict(zip(wanted, pool.map(self._new, wanted), strict=True))
        with self._lock:
            self._producers.update(made)
        log.info("%s: transactional producers for partitions %s initialised (previous owners fenced)",
                 self.prefix, wanted)

    def get(self, partition: int, create: bool = True) -> TxProducer:
        """The partition's producer; a new, initialised one if it has none and ``create``
        (only when taking the partition over, after the lease check: an initialisation
        fences whoever has the partition now)."""
        with self._lock:
            producer = self._producers.get(partition)
        if producer is None:
            if not create:
                raise BatchAborted(f"{self.transactional_id(partition)}: no producer (the partition was let go)")
            producer = self._new(partition)
            with self._lock:
                self._producers[partition] = producer
        return producer

    def discard(self, partitions: Iterable[int]) -> None:
        with self._lock:
            for partition in partitions:
                self._producers.pop(partition, None)

    def held(self) -> set[int]:
        with self._lock:
            return set(self._producers)


@dataclass
class PartitionBatch:
    """What one input partition's transaction of a batch holds."""

    outputs: Outputs = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    commit: tuple[int, Flush] | None = None  # (last input offset, flush of its state)


def route(outputs: Outputs, marks: Sequence[Mark], commits: Commits) -> dict[int, PartitionBatch]:
    """Split a batch by input partition: each output by the partition of the record it came
    from, each mark by its source partition, each state commit by its partition."""
    plan: dict[int, PartitionBatch] = {}
    for out, origin in outputs:
        plan.setdefault(origin.partition, PartitionBatch()).outputs.append((out, origin))
    for mark in marks:
        plan.setdefault(mark.source, PartitionBatch()).marks.append(mark)
    for partition, last, flush in commits:
        plan.setdefault(partition, PartitionBatch()).commit = (last, flush)
    return plan


#: An encoded record: (topic, key, value, partition: -1 for the key's).
Record = tuple[str, bytes, "bytes | None", int]


@dataclass
class _Transaction:
    """One partition's part of a batch, encoded and ready to be produced."""

    partition: int
    outputs: list[Record]
    writes: list[Write]
    origin: Origin
    take_over: bool = False  # may initialise the partition's producer (a fence)
    last_changelog_offset: int | None = None
    error: BaseException | None = None


class TransactionalWriter:
    """A stage's ``BatchWriter`` with Kafka transactions (see the module docstring)."""

    def __init__(
        self,
        *,
        table: AnyTable,
        topic: str,
        ownership: Ownership,
        producers: PartitionProducers,
        produce_outputs: ProduceOutputs,
        threads: int,
    ) -> None:
        faust_adapter.raw_changelog(table)  # a write's changelog record is its (key, value) bytes
        self.table = table
        self.topic = topic
        self.changelog = faust_adapter.changelog_topic_name(table)
        self.ownership = ownership
        self.producers = producers
        self.produce_outputs = produce_outputs
        self.executor = ThreadPoolExecutor(max(1, threads), thread_name_prefix=f"{producers.prefix}-tx")
        #: The last batch's commit, while it may still be under way (``settle``).
        self._pending: asyncio.Task[None] | None = None

    def records(self, partition: int) -> Iterable[tuple[bytes, bytes]]:
        return records(self.table, partition)

    def get(self, partition: int, key: bytes) -> bytes | None:
        return faust_adapter.partition_get(self.table, partition, key)

    async def fence(self, partitions: set[int], epoch: int) -> None:
        """Take partitions over: their producers (normally initialised before the restore),
        then each partition's fence record in a transaction of its own."""
        await self.settle()
        if not partitions:
            return
        self.ownership.check()
        await self._run([
            _Transaction(p, [], [fence_write(p, epoch)], Origin(self.topic, p, -1), take_over=True)
            for p in sorted(partitions)
        ])
        if isinstance(self.table, faust_adapter.FencedTable):
            for partition in partitions:
                self.table.note_fence(partition, epoch)

    def forget(self, partitions: set[int]) -> None:
        if self._pending is not None and not self._pending.done():
            # The runner settles before it drops partitions; a commit still under way here
            # would be producing with the producers about to be discarded.
            raise RuntimeError(f"{self.producers.prefix}: partitions {sorted(partitions)} dropped during a commit")
        self.producers.discard(partitions)

    async def settle(self) -> None:
        """Wait for the last batch's commit if it is still under way; raise its failure.
        Shielded: a caller cancelled while it waits (a stop, a rebalance) leaves the commit
        running and pending, so the next ``settle`` (the runner's at stop) still waits for it
        and applies it; the task is forgotten only once it is done."""
        pending = self._pending
        if pending is None:
            return
        try:
            await asyncio.shield(pending)
        finally:
            if pending.done() and self._pending is pending:
                self._pending = None

    async def write(self, outputs: Outputs, marks: list[Mark], commits: Commits,
                    on_committed: Callable[[], None] | None = None) -> None:
        """Start the batch's transactions, once the previous batch's have committed (its
        failure is raised here); they commit while the caller goes on. ``on_committed`` runs
        when they have."""
        await self.settle()
        if not (outputs or marks or commits):
            if on_committed is not None:
                on_committed()
            return
        self.ownership.check()  # a worker that knows it lost its partitions does not even try
        txs = []
        for partition, part in sorted(route(outputs, marks, commits).items()):
            writes: list[Write] = []
            offset = -1
            if part.commit is not None:
                offset, flush = part.commit
                writes = flush(faust_adapter.partition_reader(self.table, partition))
            # Encoded here, on the event loop's thread: the encoders' caches are not thread-safe
            txs.append(_Transaction(partition, self._encode(part), writes, Origin(self.topic, partition, offset)))
        self._pending = asyncio.get_running_loop().create_task(self._run(txs, on_committed))

    def _encode(self, part: PartitionBatch) -> list[Record]:
        encoded: list[Record] = []

        def keep(topic: str, key: bytes, value: bytes | None, partition: int) -> None:
            encoded.append((topic, key, value, partition))

        self.produce_outputs(keep, part.outputs, part.marks)
        return encoded

    async def _run(self, txs: list[_Transaction], on_committed: Callable[[], None] | None = None) -> None:
        """Run the transactions concurrently; apply what committed; raise for the rest."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.executor, self._transaction, tx) for tx in txs))
        for tx in txs:
            if tx.error is None and tx.writes:
                faust_adapter.apply_committed(self.table, tx.origin, tx.writes, tx.last_changelog_offset)
        failed = [tx for tx in txs if tx.error is not None]
        if not failed:
            metrics.LAST_COMMIT.set(time.time())
            if on_committed is not None:
                on_committed()
            return
        fenced = [tx.partition for tx in failed if isinstance(tx.error, Fenced)]
        self.producers.discard(tx.partition for tx in failed if isinstance(tx.error, Fenced))
        detail = "; ".join(f"partition {tx.partition}: {tx.error}" for tx in failed)
        if fenced:
            raise Fenced(f"{self.producers.prefix}: fenced by the broker ({detail})")
        raise BatchAborted(f"{self.producers.prefix}: transaction aborted ({detail})")

    def _transaction(self, tx: _Transaction) -> None:
        """One partition's transaction, in a thread; the outcome is left in ``tx``."""
        try:
            producer = self.producers.get(tx.partition, create=tx.take_over)
        except KafkaException as exc:
            tx.error = _failure(exc)
            return
        except BatchAborted as exc:
            tx.error = exc
            return
        errors: list[KafkaError] = []
        changelog = self.changelog

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(err)
            elif msg.topic() == changelog:
                offset = msg.offset()
                if offset is not None and (tx.last_changelog_offset is None or offset > tx.last_changelog_offset):
                    tx.last_changelog_offset = offset

        def send(topic: str, key: bytes, value: bytes | None, partition: int,
                 report: Callable[[KafkaError | None, Message], None] | None) -> None:
            while True:
                try:
                    producer.produce(topic, value, key, partition, on_delivery=report)
                    return
                except BufferError:
                    producer.poll(0.05)

        # A delivery report (a Python call per record, under the GIL) only for the last
        # changelog record: the meta record, written last to this partition's changelog, has
        # the highest offset of the transaction's changelog records. Any record that fails
        # fails the commit (a transaction is all or nothing), so the others need none.
        last = len(tx.writes) - 1
        try:
            producer.begin_transaction()
            for topic, key, value, partition in tx.outputs:
                send(topic, key, value, partition, None)
            for i, (key, value) in enumerate(tx.writes):  # the meta record last
                send(changelog, key, value, tx.partition, delivered if i == last else None)
            producer.commit_transaction(CALL_TIMEOUT_S)  # flushes; fails if a record failed
        except KafkaException as exc:
            tx.error = _failure(exc)
            if not isinstance(tx.error, Fenced):
                self._abort(producer, tx)
            return
        if errors:  # a commit fails when a record of it failed: not expected here
            log.warning("%s: committed, yet delivery errors were reported: %s",
                        self.producers.transactional_id(tx.partition), errors[:3])

    def _abort(self, producer: TxProducer, tx: _Transaction) -> None:
        try:
            producer.abort_transaction(CALL_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("%s: abort failed (%s): the producer is replaced", self.producers.transactional_id(tx.partition), exc)
            self.producers.discard([tx.partition])
            if isinstance(_failure(exc), Fenced):
                tx.error = Fenced(str(exc))


def _failure(exc: KafkaException) -> Exception:
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError) and is_fenced(error):
        return Fenced(f"{error.name()}: {error.str()}")
    return BatchAborted(str(error or exc))


def last_committed_offsets(config: Mapping[str, object], topics: Iterable[str],
                           timeout_s: float = 60.0) -> Callable[[dict[TP, int]], dict[TP, int]]:
    """For the restore (``faust_adapter.install_transactional_restore``): per partition of
    a transactional changelog in ``topics`` and its end, the offset of the last record a
    read-committed consumer gets below that end (-1: none). It reads each partition's tail
    backwards in growing windows until it finds a committed record (normally the meta
    record right before the end's commit marker: one short read)."""
    wanted = frozenset(topics)

    def scan(ends: dict[TP, int]) -> dict[TP, int]:
        todo = {tp: end for tp, end in ends.items() if tp.topic in wanted and end > 0}
        found = {tp: -1 for tp, end in ends.items() if tp.topic in wanted and end <= 0}
        if not todo:
            return found
        consumer = Consumer({
            **config, "group.id": "syncgov-restore", "enable.auto.commit": False, "enable.partition.eof": True,
            "isolation.level": "read_committed", "fetch.wait.max.ms": 10,
        })
        try:
            lows = {tp: consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)[0]
                    for tp in todo}
            window = 64
            deadline = time.monotonic() + timeout_s
            while todo:
                starts = {tp: max(lows[tp], end - window) for tp, end in todo.items()}
                last = _read_tails(consumer, todo, starts, deadline)
                for tp in list(todo):
                    if last[tp] >= 0 or starts[tp] <= lows[tp]:
                        found[tp] = last[tp]
                        del todo[tp]
                window *= 16
        finally:
            consumer.close()
        return found

    return scan


def _read_tails(consumer: Any, ends: dict[TP, int], starts: dict[TP, int], deadline: float) -> dict[TP, int]:
    """Read each partition from its start to its end (or its end of partition): the offset
    of the last record below the end (-1: none)."""
    consumer.assign([TopicPartition(tp.topic, tp.partition, starts[tp]) for tp in ends])
    last = dict.fromkeys(ends, -1)
    pending = set(ends)
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"reading the changelogs' committed tails: {sorted(pending)} unfinished")
        for msg in consumer.consume(1000, 0.5):
            tp = TP(msg.topic() or "", msg.partition() or 0)
            if tp not in pending:
                continue
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(err)
                pending.discard(tp)
            elif (msg.offset() or 0) < ends[tp]:
                last[tp] = max(last[tp], msg.offset() or 0)
            else:
                pending.discard(tp)  # past the end the restore saw
    return last


def fence_before_restore(writers: Mapping[str, PartitionProducers]) -> Callable[[set[TP]], None]:
    """For the restore: renew the producers of the stages whose changelog partitions are
    about to be restored (``writers``: changelog topic -> the stage's producers), every
    stage at once."""

    def renew(producers: PartitionProducers, partitions: set[int]) -> None:
        try:
            producers.renew(partitions)
        except KafkaException as exc:  # the stage initialises them again when it takes them over
            log.warning("%s: fencing the previous owners of %s before the restore failed: %s",
                        producers.prefix, sorted(partitions), exc)

    def fence(tps: set[TP]) -> None:
        jobs = [(producers, {tp.partition for tp in tps if tp.topic == topic}) for topic, producers in writers.items()]
        jobs = [(producers, partitions) for producers, partitions in jobs if partitions]
        if jobs:
            with ThreadPoolExecutor(len(jobs), thread_name_prefix="fence") as pool:
                list(pool.map(lambda job: renew(*job), jobs))

    return fence
