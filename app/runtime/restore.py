"""Bulk changelog restore: the tables' changelog partitions read with confluent-kafka
consumers (one per partition, a few at once) in large batches, handed on per batch
(``faust_adapter.install_bulk_restore`` writes each batch as one RocksDB write batch, with
the store's persisted offset in it).

Faust's own recovery costs ~100 µs of Python per changelog record (its fetcher, the
conductor, ``_slurp_changelogs``: an event object, a queue put, a task per record): 1M
keys took minutes. Here a record costs its three accessor calls and a write-batch put.

What it reads is what Faust's recovery would apply, and where it stops:

- from ``start`` (the record after the store's persisted offset, or the partition's
  first) up to and including ``end``, the restore's highwater (Faust's end - 1, or with
  Kafka transactions the partition's last *committed* record: see
  ``faust_adapter.install_transactional_restore``, which runs first);
- committed records only (``isolation.level=read_committed``, as Faust's consumer with
  exactly-once): records of aborted transactions and commit markers are never delivered;
  on a non-transactional changelog (Tansu) that is every record;
- a partition is done at its ``end`` record, at a record past it, or at its end of
  partition (what the broker has now), whichever comes first;
- fenced-epoch records are skipped by the writer (``FencedTable``'s rule, the same one).

It stops early (``should_stop``, the time ``budget_s``) between batches; what it reached
is returned per partition, and Faust's own recovery reads the rest.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from faust.types import TP

log = logging.getLogger(__name__)

#: A changelog record: (offset, key, value; None a tombstone; a key-less record is skipped).
Record = tuple[int, "bytes | None", "bytes | None"]
#: Write one batch of a partition's records (in offset order); returns nothing.
Apply = Callable[[TP, Sequence[Record]], None]
#: Per changelog partition: (first offset to read, last offset to apply: the highwater).
Jobs = Mapping[TP, tuple[int, int]]

#: Records asked for per ``consume`` call.
BATCH = 20_000


def consumer_config(config: Mapping[str, object]) -> dict[str, object]:
    """The restore consumer's settings on top of the client config: manual assignment,
    no offsets committed, committed records only, large fetches."""
    return {
        **config,
        "group.id": "syncgov-bulk-restore",  # never joined (assign only), never committed
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "fetch.wait.max.ms": 10,
        "fetch.max.bytes": 32 * 1024 * 1024,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        "queued.max.messages.kbytes": 64 * 1024,  # per consumer (one per partition)
    }


def read_changelogs(
    consumer: Any,
    jobs: Jobs,
    apply: Apply,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    budget_s: float | None = None,
    batch: int = BATCH,
    poll_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
) -> dict[TP, int]:
    """Read ``jobs`` with ``consumer`` (confluent-kafka's, or a fake): ``apply`` gets each
    partition's records of a batch in order. Returns per partition the offset of the last
    record it has seen (applied or, for a record past ``end``, not), i.e. where the
    restore stands: ``end`` when done; ``start - 1`` when nothing was read."""
    todo = {tp: (start, end) for tp, (start, end) in jobs.items() if end >= start}
    reached = {tp: start - 1 for tp, (start, _) in jobs.items()}
    if not todo:
        return reached
    deadline = None if budget_s is None else clock() + budget_s
    consumer.assign([TopicPartition(tp.topic, tp.partition, start) for tp, (start, _) in sorted(todo.items())])
    by_name = {(tp.topic, tp.partition): tp for tp in todo}
    pending = set(todo)
    while pending:
        if should_stop() or (deadline is not None and clock() > deadline):
            log.info("bulk restore stopped early: %d partitions unfinished (Faust's recovery reads the rest)",
                     len(pending))
            break
        parts: dict[TP, list[Record]] = {}
        for msg in consumer.consume(batch, poll_s):
            tp = by_name.get((msg.topic(), msg.partition()))
            if tp is None or tp not in pending:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(tp)  # everything there is (below the end the restore saw)
                    continue
                raise KafkaException(err)
            offset = msg.offset()
            end = todo[tp][1]
            if offset > end:
                pending.discard(tp)  # past the highwater: not this restore's
                continue
            parts.setdefault(tp, []).append((offset, msg.key(), msg.value()))
            if offset == end:
                pending.discard(tp)
        for tp, records in parts.items():
            apply(tp, records)
            reached[tp] = records[-1][0]
        for tp in set(todo) - pending:
            reached[tp] = max(reached[tp], todo[tp][1])
    for tp in pending:
        log.info("bulk restore of %s[%d] stopped at offset %d of %d", tp.topic, tp.partition, reached[tp], todo[tp][1])
    return reached


def bulk_reader(config: Mapping[str, object], parallel: int = 4) -> Callable[[Jobs, Apply, Callable[[], bool], float],
                                                                           dict[TP, int]]:
    """For ``faust_adapter.install_bulk_restore``: read jobs within a budget in seconds, a
    consumer of ``config`` (the worker's client config) per changelog partition, up to
    ``parallel`` at once (a broker serves connections in parallel: on the embedded one four
    consumers read 1M records in 3 s, one in 6.5-8.8 s). ``apply`` is called from those
    threads, one partition's batches from one thread, in order. A failure stops the others
    and is raised."""

    def read(jobs: Jobs, apply: Apply, should_stop: Callable[[], bool], budget_s: float) -> dict[TP, int]:
        started = time.perf_counter()
        deadline = time.monotonic() + budget_s
        failed = threading.Event()

        def stop() -> bool:
            return failed.is_set() or should_stop()

        def one(tp: TP) -> dict[TP, int]:
            consumer = Consumer(consumer_config(config))
            try:
                return read_changelogs(consumer, {tp: jobs[tp]}, apply, should_stop=stop,
                                       budget_s=max(0.0, deadline - time.monotonic()))
            except BaseException:
                failed.set()
                raise
            finally:
                consumer.close()

        reached = {tp: start - 1 for tp, (start, _) in jobs.items()}
        todo = sorted(tp for tp, (start, end) in jobs.items() if end >= start)
        if todo:
            with ThreadPoolExecutor(min(parallel, len(todo)), thread_name_prefix="bulk-restore") as pool:
                for part in pool.map(one, todo):
                    reached.update(part)
        span = sum(max(0, reached[tp] - start + 1) for tp, (start, _) in jobs.items())
        log.info("bulk restore: %d changelog partitions, %d offsets read in %.1f s",
                 len(jobs), span, time.perf_counter() - started)
        return reached

    return read
