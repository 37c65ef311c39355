"""The one stage skeleton: read a topic's owned partitions in batches, under the stage's
own control, and hand them to the stage; follow ownership with an explicit lifecycle.

Per partition *P*, in this order and in this one place:

1. **assigned**: ``Ownership.owned()`` lists *P* (Faust has assigned it and recovered
   its state);
2. **state loaded**: ``stage.assign({P}, epoch)`` loads *P*'s state from its recovered
   table, writes *P*'s fence record with the epoch and returns the offset to resume at
   (the offset stored with the state: state and input offset are one commit);
3. **processing**: batches of *P*'s records go to ``stage.process``; the stage writes its
   outputs and its state through its ``BatchWriter`` (lease checked before, after:
   ``Ownership``; with Kafka transactions, one transaction per partition and batch, whose
   commit overlaps the next batch's reading and processing);
4. **revoked**: when Faust revokes *P*, or the assignment changes, or the lease fails,
   the batch in flight ends first (the lock) and every batch written has committed
   (``stage.settle()``), then ``stage.revoke({P})`` drops *P*'s in-memory state.
   Anything not committed is redone by the next owner from the stored offset; nothing of
   *P* is skipped, since the consumer is re-seeked on every change.

Consumer offsets are also committed to ``<group>`` for lag monitoring only; they are
never read back.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol, cast

from confluent_kafka import Consumer, Message, TopicPartition

from app import metrics
from app.runtime.ownership import BatchAborted, Fenced, Ownership

log = logging.getLogger(__name__)

#: How long a stage waits for the broker's watermarks of its empty partitions (all of them).
END_OFFSETS_TIMEOUT_S = 5.0


class InputRecord(Protocol):
    """What a stage reads of a record (a confluent-kafka ``Message`` without error)."""

    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def value(self) -> bytes | None: ...


Batch = Mapping[int, Sequence[InputRecord]]


class Stage(Protocol):
    """A stage with a per-partition lifecycle (see the module docstring)."""

    name: str
    topic: str

    async def assign(self, partitions: set[int], epoch: int) -> dict[int, int]:
        """Load the partitions' state, fence them; the offset to resume each at."""

    def revoke(self, partitions: set[int]) -> None:
        """Drop the partitions' in-memory state (what is committed stays in the table)."""

    async def settle(self) -> None:
        """Wait until every batch written so far has committed (raises ``Fenced`` or
        ``BatchAborted`` for one that did not)."""

    async def process(self, batch: Batch, highs: Mapping[int, int]) -> None:
        """Process one batch (possibly empty: timers such as idle marks run then)."""

    def committed(self) -> dict[int, int]:
        """Per owned partition, the next offset after its committed state."""


class Reader(Protocol):
    """What the runner needs of a consumer (confluent-kafka's, or a fake in tests)."""

    def assign(self, partitions: list[TopicPartition]) -> None: ...
    def consume(self, num_messages: int, timeout: float) -> list[Message]: ...
    def get_watermark_offsets(self, partition: TopicPartition, timeout: float = ..., cached: bool = ...) -> tuple[int, int]: ...
    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[True] = ...) -> object: ...
    def close(self) -> None: ...


class StageRunner:
    """Runs one stage over the partitions this worker owns."""

    def __init__(
        self,
        stage: Stage,
        ownership: Ownership,
        reader: Callable[[], Reader],
        batch_size: int,
        batch_within_s: float,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.stage = stage
        self.ownership = ownership
        self._make_reader = reader
        self.batch_size = batch_size
        self.batch_within_s = batch_within_s
        self._sleep = sleep
        self.lock = asyncio.Lock()
        #: The partitions the consumer reads now (None: re-sync and re-seek first).
        self.assigned: set[int] | None = None
        #: The partitions whose state the stage holds.
        self.loaded: set[int] = set()
        self.reader: Reader | None = None
        #: Log the first records read after the last (re-)assignment (once per assignment).
        self.first_read_pending = False
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"{stage.name}-reader")

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def on_revoked(self, partitions: set[int]) -> None:
        """Faust revokes partitions: let the batch in flight finish and commit, then drop them."""
        async with self.lock:
            if await self._settled():
                self._drop(partitions & self.loaded)
            self.assigned = None  # re-sync (and re-seek) before the next batch

    async def _settled(self) -> bool:
        """Every batch written has committed (True); else the stage's state is ahead of what
        is stored: all of it is dropped, to be re-read from the stored offsets (False)."""
        try:
            await self.stage.settle()
            return True
        except (Fenced, BatchAborted) as exc:
            log.warning("%s: batch abandoned: %s", self.stage.name, exc)
            self._drop(set(self.loaded))
            self.assigned = None
            return False

    def _drop(self, partitions: set[int]) -> None:
        if partitions:
            self.stage.revoke(partitions)
            self.loaded -= partitions
            log.info("%s: partitions %s dropped", self.stage.name, sorted(partitions))

    async def sync(self, owned: set[int]) -> None:
        """Read exactly ``owned``: drop the others, load and fence the new ones, and seek
        every partition to the offset after its stored state."""
        assert self.reader is not None
        await self.stage.settle()  # raises as the next write would: the caller drops and retries
        self._drop(self.loaded - owned)
        new = owned - self.loaded
        if new:
            self.ownership.check()
            await self.stage.assign(new, self.ownership.epoch())
            self.loaded |= new
        offsets = self.stage.committed()
        starts = [TopicPartition(self.stage.topic, p, offsets.get(p, 0)) for p in sorted(owned)]
        await self._call(self.reader.assign, starts)
        self.assigned = set(owned)
        self.first_read_pending = bool(owned)
        log.info("%s: reading %s partitions %s", self.stage.name, self.stage.topic, sorted(owned))

    def _highs(self) -> dict[int, int]:
        out = {}
        assert self.reader is not None
        for partition in self.assigned or ():
            _, high = self.reader.get_watermark_offsets(TopicPartition(self.stage.topic, partition), cached=True)
            if high >= 0:
                out[partition] = high
        return out

    async def end_offsets(self, partitions: list[int]) -> dict[int, tuple[int, int]]:
        """The broker's (low, high) watermarks of ``partitions`` of the stage's topic, asked
        now (not the consumer's cached ones, which a stalled process may hold from before),
        within ``END_OFFSETS_TIMEOUT_S`` for all of them (else it raises)."""
        reader = self.reader
        assert reader is not None

        def ask() -> dict[int, tuple[int, int]]:
            deadline = time.monotonic() + END_OFFSETS_TIMEOUT_S
            out = {}
            for p in partitions:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no end offsets within {END_OFFSETS_TIMEOUT_S} s")
                low, high = reader.get_watermark_offsets(TopicPartition(self.stage.topic, p), left, False)
                out[p] = (low, high)
            return out

        ends: dict[int, tuple[int, int]] = await self._call(ask)
        return ends

    def _commit_lag(self) -> None:
        assert self.reader is not None
        offsets = [TopicPartition(self.stage.topic, p, o) for p, o in self.stage.committed().items() if o > 0]
        if offsets:
            self.reader.commit(offsets=offsets, asynchronous=True)

    async def step(self) -> None:
        """One turn: follow ownership, read a batch, process it."""
        owned = self.ownership.owned()
        if owned is None:
            await self._sleep(0.1)
            return
        if owned != self.assigned:
            async with self.lock:
                try:
                    await self.sync(owned)
                except (Fenced, BatchAborted) as exc:
                    log.warning("%s: not taking partitions over: %s", self.stage.name, exc)
                    self._drop(set(self.loaded))
                    self.assigned = None
                    await self._sleep(0.5)
                    return
        if not owned:
            await self._sleep(0.2)
            return
        assert self.reader is not None
        msgs: list[Message] = await self._call(read_batch, self.reader, self.batch_size, self.batch_within_s)
        started = time.perf_counter()
        if msgs and self.first_read_pending:
            self.first_read_pending = False
            log.info("%s: first records from %s since the assignment: %d", self.stage.name, self.stage.topic, len(msgs))
        async with self.lock:
            if self.assigned is None or self.ownership.owned() != self.assigned:
                self.assigned = None  # the assignment changed meanwhile: re-sync and re-seek first
                return
            batch = by_partition(msgs, self.stage.name)
            try:
                await self.stage.process(batch, self._highs())
            except (Fenced, BatchAborted) as exc:
                log.warning("%s: batch abandoned: %s", self.stage.name, exc)
                self._drop(set(self.loaded))  # in-memory state is ahead of the committed state
                self.assigned = None
                return
            if batch:
                self._commit_lag()
        if msgs:
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    async def run(self) -> None:
        self.reader = self._make_reader()
        try:
            while True:
                await self.step()
        finally:
            try:  # a stop lets the last batch's commit finish (a crash leaves it to the next owner)
                await asyncio.shield(self.stage.settle())
            except (Fenced, BatchAborted, asyncio.CancelledError) as exc:
                log.warning("%s: the last batch did not commit at stop (%s); its records are redone", self.stage.name,
                            exc or type(exc).__name__)
            reader, self.reader = self.reader, None
            await self._call(reader.close)
            self.executor.shutdown(wait=False)


def by_partition(msgs: list[Message], stage: str) -> dict[int, list[InputRecord]]:
    """The records of ``msgs`` by partition, in order; an error event is logged and
    skipped. (Per record: a consumer's batch comes in runs of one partition, so the list
    is looked up once a run.)"""
    batch: dict[int, list[InputRecord]] = {}
    partition = -1
    records: list[InputRecord] = []
    for msg in msgs:
        if msg.error() is None:
            record = cast(InputRecord, msg)  # without an error it has its partition and offset
            p = record.partition()
            if p != partition:
                partition = p
                records = batch.setdefault(p, [])
            records.append(record)
        else:
            log.warning("%s consumer: %s", stage, msg.error())
    return batch


def read_batch(reader: Reader, batch_size: int, within_s: float) -> list[Message]:
    """The next batch, batched by the load itself: what the consumer has fetched already, at
    once (up to ``batch_size``); when nothing is there, the first record within ``within_s``
    and what came with it. Under load the records that arrive while a batch is processed make
    the next batch (full batches at saturation); at low rates no record waits for others to
    fill a batch. (A single ``consume(batch_size, within_s)`` holds every record for the whole
    window unless the batch fills: ~``within_s`` of added latency at any rate below saturation.)"""
    msgs = reader.consume(batch_size, 0)
    if msgs or within_s <= 0:
        return msgs
    msgs = reader.consume(1, within_s)
    if msgs and batch_size > 1:
        msgs += reader.consume(batch_size - 1, 0)
    return msgs


def confluent_reader(config: dict[str, object], group_id: str) -> Callable[[], Consumer]:
    """A factory of batching consumers with manual assignment (offsets from the state)."""

    def make() -> Consumer:
        return Consumer(
            {
                **config,
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "auto.offset.reset": "earliest",
                # librdkafka's default, made explicit: a stage never reads the outputs of an
                # aborted transaction, and the ERP sink never posts an aborted milestone
                "isolation.level": "read_committed",
                # How long the broker may hold a fetch with nothing new. Apache Kafka answers as
                # soon as a record arrives; Tansu holds every empty fetch for the whole wait, so
                # on it this is added to a record's latency when the stage is idle. 10 ms costs
                # an idle consumer ~100 small fetches a second.
                "fetch.wait.max.ms": 10,
            }
        )

    return make
