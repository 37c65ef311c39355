"""Every use of Faust's (and its aiokafka's) private internals, in one module.

The stages read and write their partitions' state outside Faust's streams (batches read
with confluent-kafka), and they fence themselves with a heartbeat lease. That needs a
handful of things Faust does not expose; each is wrapped here, named after what it does,
and pinned by ``tests/unit/runtime/test_faust_adapter.py`` against the versions in use
(faust-streaming 0.15.3, aiokafka 0.14). Nothing else in the project imports a private
Faust or aiokafka name.

- ``bind``: make a record's partition the current one, so table reads and writes go to
  that partition's store and changelog (Faust reads ``faust.streams._current_event``).
- ``partition_items``: one partition's records straight from its RocksDB database (the
  store's ``_db_for_partition``/``_visible_items``), not every partition's.
- ``send_writes``: what ``table[key] = value`` does, keeping the changelog send's future.
- ``changelog_records``/``apply_committed`` (exactly-once): the changelog records Faust
  would send for a table's writes, as raw bytes for a Kafka transaction; and, once the
  transaction is committed (or, without transactions, once the broker has acknowledged
  them), the same writes applied to the local store without sending them again, with the
  store's persisted offset, as Faust's own exactly-once mode does: on RocksDB one write
  batch per partition and batch (``write_batch``, the bulk restore's writer too).
- ``install_read_committed`` (exactly-once): Faust's worker consumer (table recovery and
  standbys) reads committed records only, without Faust's own ``exactly_once`` guarantee
  (which would make Faust's producer transactional).
- ``install_transactional_restore`` (exactly-once): before a changelog restore the
  previous owners are fenced (their open transactions aborted), and the restore ends at
  the last *committed record* of a transactional changelog, not at its end offset (a
  commit marker takes the last offset and is never delivered).
- ``FencedTable``: a table whose changelog restore skips records of a fenced epoch.
- ``install_bulk_restore``: before Faust's recovery reads the active changelog partitions
  record by record, they are read in bulk (``app.runtime.restore``) and written straight
  to the partitions' RocksDB databases, a write batch per batch of records with the
  store's persisted offset in it (``restore_batch``), through the same fence rule: Faust's
  recovery then finds them restored up to their highwater, as after a warm restart.
- ``install_heartbeat_probe``: aiokafka's group coordinator reports each successful
  heartbeat and join to a callback (the lease in ``app.runtime.ownership``).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, Protocol, TypeAlias

from faust.streams import _current_event
from faust.tables import Table
from faust.types import TP, EventT
from faust.types.tuples import FutureMessage

from tables.records import Write, record_epoch

_log = logging.getLogger(__name__)


class Origin(Protocol):
    """Where a record came from: its topic, partition and offset."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...

#: Faust's types, unparametrised where this module does not care.
AnyEvent: TypeAlias = "EventT[Any]"
AnyTable: TypeAlias = "Table[Any, Any]"


class _EventStandIn:
    """Stands in for a Faust event: Faust looks up ``event.message.partition``."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, origin: Origin) -> None:
        self.message = origin


#: The event last bound in this context, held strongly: Faust keeps only a weak reference
#: (``_current_event``), and a stand-in that only its origin refers to (a cycle: origin ->
#: stand-in -> origin) could be collected by the cyclic GC between ``bind`` and the store
#: write, which then fails Faust's ``assert event is not None`` (seen once in a chaos run,
#: on a fence written for a temporary origin). A context variable, like Faust's own, so
#: concurrent tasks each keep their own.
_bound: ContextVar[object] = ContextVar("syncgov_bound_event")


def bind(origin: Origin | AnyEvent) -> None:
    """Make ``origin``'s partition current: table reads and writes go to its partition
    until the next ``bind`` in the same context. ``origin`` is a Faust event, or any
    (topic, partition, offset) record."""
    if hasattr(origin, "message"):  # a Faust event
        _bound.set(origin)
        _current_event.set(weakref.ref(origin))  # type: ignore[arg-type]
        return
    event = _EventStandIn(origin)  # not an event: Faust only reads its .message
    _bound.set(event)
    _current_event.set(weakref.ref(event))  # type: ignore[arg-type]


def partition_items(table: AnyTable, partition: int) -> Iterator[tuple[bytes, bytes]]:
    """The (recovered) records stored for one partition. Faust's RocksDB store keeps a
    database per partition: only that one is read; the memory store is filtered."""
    store = table.data
    if hasattr(store, "_db_for_partition"):
        items: Iterable[tuple[bytes, bytes]] = store._visible_items(store._db_for_partition(partition))  # type: ignore[attr-defined]
    else:  # memory://
        items = table.items()
    for key, value in items:
        if value is not None:
            yield key, value


def partition_get(table: AnyTable, partition: int, key: bytes) -> bytes | None:
    """One key of one partition's store (RocksDB: that partition's database only)."""
    return partition_reader(table, partition)(key)


def partition_reader(table: AnyTable, partition: int) -> Callable[[bytes], bytes | None]:
    """One partition's store as a function of the key (a flush's ``previous``):
    that partition's RocksDB database, or the memory store's dict, read directly. Faust's
    ``table.get`` reads the same bytes, but finds the partition through the bound event,
    decodes through its serialisers and indexes every key it reads (a few microseconds a
    key on the commit path)."""
    store = table.data
    # RocksDB: the partition's own database; memory://: one dict for every partition
    get = store._db_for_partition(partition).get if hasattr(store, "_db_for_partition") else store.data.get

    def read(key: bytes) -> bytes | None:
        value = get(key)
        return value if value is None else bytes(value)

    return read


def send_writes(table: AnyTable, writes: Sequence[Write]) -> list[FutureMessage]:
    """Apply writes to the table of the current partition (see ``bind``) and send them to
    its changelog; returns the sends' futures (Faust's ``producer.flush`` may return while
    records still sit in its buffer)."""
    futures = []
    for key, value in writes:
        partition = table.partition_for_key(key)  # the current event's
        if value is None:
            futures.append(table.send_changelog(partition, key, None, value_serializer="raw"))
            table.data.pop(key, None)
        else:
            futures.append(table.send_changelog(partition, key, value))
            table.data[key] = value
    return futures


def changelog_topic_name(table: AnyTable) -> str:
    """The name of ``table``'s changelog topic."""
    return str(table.changelog_topic.get_topic_name())


def raw_changelog(table: AnyTable) -> None:
    """Check that Faust writes ``table``'s keys and values as the bytes given (the raw
    codec of a ``bytes`` table): then a write's changelog record is ``(key, value)`` itself,
    ``value`` None being a tombstone. Raise ``TypeError`` otherwise."""
    probe = b"\x00syncgov\xff"
    topic = table.changelog_topic  # what ``send_changelog`` sends through, with the table's codecs
    key, _ = topic.prepare_key(probe, table.key_serializer)
    value, _ = topic.prepare_value(probe, table.value_serializer)
    if key != probe or value != probe or (table.key_serializer, table.value_serializer) != ("raw", "raw"):
        raise TypeError(f"table {table.name!r}: its changelog is not raw bytes (key {table.key_serializer!r}, "
                        f"value {table.value_serializer!r})")


def apply_committed(table: AnyTable, origin: Origin, writes: Sequence[Write], last_offset: int | None) -> None:
    """Apply writes whose changelog records the broker holds (acknowledged, or in a committed
    transaction) to the table of ``origin``'s partition, without sending them again;
    ``last_offset`` (the offset of the last of those records) becomes the store's persisted
    offset, as after Faust's own sends. On RocksDB (rocksdict) the writes and the offset go
    in one write batch (``write_batch``, as a bulk restore: key by key through Faust's store
    a write costs 5.6–8.0 µs, in a batch 1.4–1.9 µs); the memory store is written key by key."""
    if bulk_restorable(table):
        write_batch(table, origin.partition, writes, last_offset)
        return
    bind(origin)
    for key, value in writes:
        if value is None:
            table.data.pop(key, None)
        else:
            table.data[key] = value
    if last_offset is not None:
        table.data.set_persisted_offset(TP(changelog_topic_name(table), origin.partition), last_offset)


def install_read_committed() -> None:
    """Make Faust's worker consumer read committed records only (``isolation_level``),
    which Faust does only with its own ``exactly_once`` guarantee. Its changelog restores
    then skip aborted transactions, and its end offsets are the last stable offsets."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = getattr(AIOKafkaConsumerThread._create_worker_consumer, "__wrapped__",
                       AIOKafkaConsumerThread._create_worker_consumer)

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._isolation_level = "read_committed"  # read by AIOKafkaConsumer.start for its Fetcher
        return consumer

    _create_worker_consumer.__wrapped__ = original  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]


def install_transactional_restore(
    fence: Callable[[set[TP]], None],
    last_committed: Callable[[dict[TP, int]], dict[TP, int]],
) -> None:
    """Hook Faust's changelog restore (recovery of active partitions, and standbys):

    - ``fence(tps)`` runs before the restore reads the active changelog partitions' ends:
      it fences their previous writers (``init_transactions`` with the partition's
      transactional id aborts an open transaction of a stalled or dead old owner), so no
      transaction of theirs commits behind the restore's back;
    - ``last_committed({tp: end})`` gives, per changelog partition, the offset of the last
      record a read-committed consumer gets below ``end`` (-1: none), or leaves ``tp`` out
      when it is no transactional changelog. Faust waits until it has applied the record at
      "end - 1"; on a transactional changelog that offset is a commit marker (or an aborted
      record), never delivered, and the restore would never end.

    Both run in a thread (they are blocking Kafka calls)."""
    from faust.tables.recovery import Recovery

    original = getattr(Recovery._build_highwaters, "__wrapped__", Recovery._build_highwaters)

    async def _build_highwaters(self: Any, consumer: Any, tps: set[TP], destination: Any, title: str) -> None:
        loop = asyncio.get_running_loop()
        if tps and destination is self.active_highwaters:
            await loop.run_in_executor(None, fence, set(tps))
        await original(self, consumer, tps, destination, title)
        ends = {tp: destination[tp] + 1 for tp in tps if destination.get(tp) is not None and destination[tp] >= 0}
        if ends:
            for tp, last in (await loop.run_in_executor(None, last_committed, ends)).items():
                destination[tp] = last  # (a Counter: update() would add)

    _build_highwaters.__wrapped__ = original  # type: ignore[attr-defined]
    Recovery._build_highwaters = _build_highwaters  # type: ignore[method-assign]


class FencedTable(Table):  # type: ignore[type-arg]
    """A table whose changelog restore (recovery and standbys) skips fenced writes.

    Every state record carries the epoch of the worker that wrote it (``"e"``), and a
    worker that takes a partition over first writes a *fence* record (``fence_key(p)``)
    with its own, higher epoch. A record of a lower epoch that follows a fence in the
    changelog was written by a worker that had already lost the partition (a stalled
    *zombie*): it is not applied, so the state is exactly the new owner's."""

    #: The key of a partition's fence record (set by ``fenced_table``).
    fence_key: Callable[[int], bytes]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fences: dict[int, int] = {}
        self._fence_keys: dict[int, bytes] = {}
        self._count_lock = threading.Lock()
        self.fenced_records = 0

    def fence_of(self, partition: int) -> int:
        """The highest fence epoch applied to this partition's store (-1: none)."""
        if partition not in self._fences:
            epoch = record_epoch(partition_get(self, partition, self.fence_key(partition)))
            self._fences[partition] = -1 if epoch is None else epoch
        return self._fences[partition]

    def note_fence(self, partition: int, epoch: int) -> None:
        """This worker wrote a fence (its live writes do not pass through the restore)."""
        self._fences[partition] = max(self.fence_of(partition), epoch)

    def forget(self, partition: int) -> None:
        self._fences.pop(partition, None)

    def keep(self, partition: int, key: bytes | None, value: bytes | None) -> bool:
        """The restore rule, record by record in changelog order (Faust's recovery and
        the bulk restore): whether to apply the record; a fence raises the partition's."""
        epoch = record_epoch(value)
        if epoch is None:
            return True
        fence = self.fence_of(partition)
        fkey = self._fence_keys.get(partition)
        if fkey is None:
            fkey = self._fence_keys[partition] = self.fence_key(partition)
        if key == fkey:
            self._fences[partition] = max(fence, epoch)
            return True
        if epoch < fence:
            with self._count_lock:  # the bulk restore applies partitions from several threads
                self.fenced_records += 1
            return False
        return True

    def apply_changelog_batch(self, batch: Iterable[AnyEvent]) -> None:
        keep = self.keep
        super().apply_changelog_batch(
            [event for event in batch if keep(event.message.partition, event.message.key, event.message.value)])


def fenced_table(app: Any, name: str, fence_key: Callable[[int], bytes], **options: Any) -> FencedTable:
    """Declare a ``FencedTable`` on ``app`` (what ``app.Table`` does for its own class)."""
    table = FencedTable(app, name=name, beacon=app.tables.beacon, **options)
    table.fence_key = fence_key
    app.tables.add(table)
    return table


#: A changelog record of the bulk restore: (offset, key, value; None a tombstone).
Restored = tuple[int, "bytes | None", "bytes | None"]
#: The bulk reader (``app.runtime.restore.bulk_reader``): (jobs {tp: (first offset, last
#: offset)}, apply(tp, records), should_stop(), budget in seconds) -> {tp: offset reached}.
BulkRead = Callable[[dict[TP, tuple[int, int]], Callable[[TP, Sequence[Restored]], None], Callable[[], bool], float],
                    dict[TP, int]]


def bulk_restorable(table: Any) -> bool:
    """Whether ``table``'s store takes RocksDB write batches (a bulk restore, committed
    writes): Faust's RocksDB store on rocksdict (the memory store, or python-rocksdb, is
    written the Faust way)."""
    store = getattr(table, "data", None)
    return (hasattr(store, "_db_for_partition") and hasattr(store, "offset_key")
            and bool(getattr(store, "use_rocksdict", False)))


def restore_batch(table: Any, tp: TP, records: Sequence[Restored]) -> None:
    """Write a batch of ``tp``'s changelog records (offset order) to its partition's
    RocksDB database as Faust's recovery would (``Store.apply_changelog_batch``: a put
    per record, a delete per tombstone, a ``FencedTable``'s fenced records skipped), in
    one write batch that also sets the store's persisted offset to the last record's
    (``Store.set_persisted_offset``), so records and offset land together."""
    if not records:
        return
    keep = table.keep if isinstance(table, FencedTable) else None
    write_batch(table, tp.partition, ((key, value) for _, key, value in records), records[-1][0], keep)


def write_batch(table: Any, partition: int, writes: Iterable[tuple[bytes | None, bytes | None]], offset: int | None,
                keep: Callable[[int, bytes, bytes | None], bool] | None = None) -> None:
    """Put (or, for a None value, delete) every key of ``writes`` in ``partition``'s RocksDB
    database, and ``offset`` as the store's persisted offset (``Store.set_persisted_offset``'s
    key), all in one write batch; a key-less write, or one ``keep`` refuses, is skipped."""
    import rocksdict

    store = table.data
    batch = rocksdict.WriteBatch(raw_mode=True)
    put, delete = batch.put, batch.delete
    for key, value in writes:
        if key is None or (keep is not None and not keep(partition, key, value)):
            continue
        if value is None:
            delete(key)
        else:
            put(key, value)
    if offset is not None:
        put(store.offset_key, str(offset).encode())
    store._db_for_partition(partition).write(batch)


def install_bulk_restore(read: BulkRead | None, budget_share: float = 0.5) -> None:
    """Restore the active changelog partitions in bulk before Faust's recovery reads them
    (``read`` None: Faust's recovery alone, the original method back).

    Hooks ``Recovery._build_offsets`` for the actives: Faust has built their highwaters
    (after the fence and the last committed record of ``install_transactional_restore``)
    and, in that call, their start offsets (the store's persisted offset, or the
    partition's earliest - 1). ``read`` then gets every partition with records in
    between, in a thread (it may use more, one partition's batches in one, in order); each
    batch goes to ``restore_batch``; the offsets reached
    become Faust's start offsets, so its own recovery only reads what is left (nothing,
    when the bulk restore finished). Faust bounds the call by ``broker_request_timeout``:
    the reader gets ``budget_share`` of it and stops in time, and a cancelled call (a
    rebalance) stops the thread and waits for it before it returns."""
    from faust.tables.recovery import Recovery
    from mode.utils.times import want_seconds

    original = getattr(Recovery._build_offsets, "__wrapped__", Recovery._build_offsets)
    if read is None:
        Recovery._build_offsets = original  # type: ignore[method-assign]
        return

    async def _build_offsets(self: Any, consumer: Any, tps: set[TP], destination: Any, title: str) -> None:
        await original(self, consumer, tps, destination, title)
        if destination is not self.active_offsets:
            return
        jobs: dict[TP, tuple[int, int]] = {}
        tables: dict[TP, Any] = {}
        for tp in tps:
            table = self.tp_to_table.get(tp)
            high = self.active_highwaters.get(tp)
            if table is None or high is None or high < 0 or not bulk_restorable(table):
                continue
            start = max(-1, destination[tp] if destination.get(tp) is not None else -1) + 1
            if high >= start:
                jobs[tp] = (start, high)
                tables[tp] = table
        if not jobs:
            return
        budget = want_seconds(self.app.conf.broker_request_timeout) * budget_share
        stop = threading.Event()
        future = asyncio.get_running_loop().run_in_executor(
            None, read, jobs, lambda tp, records: restore_batch(tables[tp], tp, records), stop.is_set, budget)
        try:
            reached = await asyncio.shield(future)
        except asyncio.CancelledError:
            stop.set()  # a rebalance: let the thread stop between two batches, then go
            await asyncio.wait([future])
            raise
        except Exception as exc:  # the broker, the store: Faust's recovery reads what is left
            _log.warning("bulk restore failed (%s: %s): Faust's recovery reads the rest", type(exc).__name__, exc)
            reached = {}
            for tp, table in tables.items():
                try:
                    persisted = table.persisted_offset(tp)  # each write batch carries its offset
                except Exception:  # the store itself failed: Faust reads the partition again
                    continue
                if persisted is not None:
                    reached[tp] = persisted
        for tp, offset in reached.items():
            if tp in jobs and offset > destination[tp]:
                destination[tp] = offset  # (a Counter: update() would add)

    _build_offsets.__wrapped__ = original  # type: ignore[attr-defined]
    Recovery._build_offsets = _build_offsets  # type: ignore[method-assign]


def install_heartbeat_probe(on_alive: Callable[[float], None]) -> None:
    """Call ``on_alive(sent_at)`` (time.monotonic) after every successful group heartbeat
    and group join: the coordinator had heard from this member no earlier than
    ``sent_at``, so it cannot have evicted it before ``sent_at + session timeout``."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    original_heartbeat = getattr(GroupCoordinator._do_heartbeat, "__wrapped__", GroupCoordinator._do_heartbeat)
    original_join = getattr(GroupCoordinator._on_join_complete, "__wrapped__", GroupCoordinator._on_join_complete)

    async def _do_heartbeat(self: Any) -> bool:
        sent_at = time.monotonic()
        ok = await original_heartbeat(self)
        if ok:
            on_alive(sent_at)
        return bool(ok)

    async def _on_join_complete(self: Any, *args: Any, **kwargs: Any) -> Any:
        on_alive(time.monotonic())
        return await original_join(self, *args, **kwargs)

    _do_heartbeat.__wrapped__ = original_heartbeat  # type: ignore[attr-defined]
    _on_join_complete.__wrapped__ = original_join  # type: ignore[attr-defined]
    GroupCoordinator._do_heartbeat = _do_heartbeat
    GroupCoordinator._on_join_complete = _on_join_complete
