"""Sending what the stages produced: milestones (Avro) keyed so that one order's or one
stock key's milestones stay in order, dead letters with their origin, and forwards and
watermark marks to the inventory stage's repartition topic.

``OutputEncoder.produce`` is the one encoding of a batch's outputs; it hands each record to
a ``Send``: the process's ``OutputProducer`` without Kafka transactions, or a partition's
transaction (``app.runtime.transactions``). The ``OutputProducer`` is one confluent-kafka
producer per process (Faust's producer costs ~20 µs of Python per record), and a batch
waits until the broker has all its records before its state is stored. One request in
flight per connection, so retries never reorder a partition (a mark must stay behind the
forwards it covers).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import assert_never

from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import Counter

from app import metrics
from app.core import keys
from app.core.engine import Output
from app.core.model import M_ORDER_ACCEPTED, M_SYNC_EXCEPTION, DeadLetter, Milestone, StockForward
from app.core.stock import Mark, encode_forward, encode_mark
from app.kafka import codec
from app.kafka.clients import PRODUCER_DEFAULTS, client_config
from app.kafka.clients import send as kafka_send
from app.runtime.faust_adapter import Origin
from app.settings import Settings, TopicSettings

#: Send one record: (topic, key, value, partition: -1 for the key's).
Send = Callable[[str, bytes, bytes, int], None]


class OutputError(RuntimeError):
    """The broker did not take a batch's outputs (the batch is redone after a restart)."""


def reason_category(reason: str) -> str:
    """A bounded label for a dead letter's reason (the full reason is in the record)."""
    if reason.startswith("undecodable"):
        return "undecodable"
    if reason.startswith("too_large"):
        return "too_large"
    return reason if reason == "future" else "invalid_field"


class OutputEncoder:
    """Encodes a batch's outputs and marks to records of the worker's topics."""

    def __init__(self, topics: TopicSettings) -> None:
        self.topics = topics

    def produce(self, send: Send, outputs: Iterable[tuple[Output, Origin]], marks: Iterable[Mark] = ()) -> None:
        """Hand to ``send`` every output, in order, then the marks (each to every stock
        partition). The metrics of what was handed over (milestones, sync exceptions and
        dead letters by label, release-to-accepted samples) are updated once all of it was,
        once per label and call, not per record: a call that raises counts nothing, and its
        batch is redone."""
        t = self.topics
        counts: dict[tuple[Counter, str], int] = {}
        accepted: list[int] = []  # event times (ms) of first OrderAccepted milestones
        for out, origin in outputs:
            match out:
                case Milestone():
                    self._milestone(send, out, counts, accepted)
                case StockForward():
                    e = out.event
                    value = encode_forward(origin.partition, origin.offset, e, out.watermark)
                    send(t.stock, keys.stock_key(e.warehouse_id, e.data["sku"], e.data["location"]), value, -1)
                case DeadLetter():
                    value = codec.encode_dead_letter(
                        raw=out.raw,
                        reason=out.reason,
                        record_id=out.record_id,
                        topic=origin.topic,
                        partition=origin.partition,
                        offset=origin.offset,
                        failed_at=int(time.time() * 1000),
                    )
                    send(t.dead_letters, out.record_id.encode(), value, -1)
                    label = (metrics.DEAD_LETTERS, reason_category(out.reason))
                    counts[label] = counts.get(label, 0) + 1
                case _:
                    assert_never(out)
        for mark in marks:
            value = encode_mark(mark)
            for partition in range(t.partitions):
                send(t.stock, b"", value, partition)
        for (counter, name), n in counts.items():
            counter.labels(name).inc(n)
        if accepted:
            now = time.time()
            for occurred_at in accepted:
                metrics.SLA_RELEASE_TO_ACCEPTED.observe(max(0.0, now - occurred_at / 1000))

    def _milestone(self, send: Send, m: Milestone, counts: dict[tuple[Counter, str], int], accepted: list[int]) -> None:
        topic = self.topics.exceptions if m.type == M_SYNC_EXCEPTION else self.topics.milestones
        send(topic, keys.milestone_key(m), codec.encode_milestone(m.to_wire()), -1)
        label = (metrics.MILESTONES, m.type)
        counts[label] = counts.get(label, 0) + 1
        if m.type == M_ORDER_ACCEPTED and m.body["version"] == 1 and m.occurred_at is not None:
            accepted.append(m.occurred_at)
        elif m.type == M_SYNC_EXCEPTION:
            label = (metrics.SYNC_EXCEPTIONS, m.body["code"])
            counts[label] = counts.get(label, 0) + 1


class Deliveries:
    """What the broker answered for the records of one write (a batch's outputs and its
    state's changelog records): its errors, and per (topic, partition) the highest offset.
    One per write, so concurrent writers through the same producer (the stages) each see
    their own failures and nobody else's."""

    __slots__ = ("errors", "offsets")

    def __init__(self) -> None:
        self.errors: list[KafkaError] = []
        self.offsets: dict[tuple[str, int], int] = {}

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(err)
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is not None and partition is not None and offset is not None:
            key = (topic, partition)
            if offset > self.offsets.get(key, -1):
                self.offsets[key] = offset


class OutputProducer:
    """The process's producer (created on first use) and the thread that waits for its
    deliveries: ``queue`` is the at-least-once writer's ``Queue``; ``send``/``flush`` carry
    the state tables' changelog records (``app.runtime.statestore.commit_all``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.encoder = OutputEncoder(settings.topics)
        self._producer: Producer | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="outputs")

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer({
                **client_config(self.settings.kafka.bootstrap_servers, self.settings.kafka),
                **PRODUCER_DEFAULTS,
                "linger.ms": 2,
                "max.in.flight.requests.per.connection": 1,
            })
        return self._producer

    def send(self, topic: str, key: bytes, value: bytes | None, partition: int, deliveries: Deliveries) -> None:
        """Queue one record (``value`` None: a tombstone); the broker's answer goes to
        ``deliveries``."""
        kafka_send(self.producer, topic, value, key, partition, deliveries)

    async def flush(self, deliveries: Deliveries) -> None:
        """Wait until the broker has every record queued so far; ``OutputError`` if one of
        ``deliveries`` failed."""
        left = await asyncio.get_running_loop().run_in_executor(self.executor, self.producer.flush, 60.0)
        if left or deliveries.errors:
            raise OutputError(f"{left} records undelivered after 60 s; errors: {deliveries.errors[:3]}")

    def queue(self, outputs: Iterable[tuple[Output, Origin]], marks: Iterable[Mark] = ()) -> Deliveries:
        """Queue every output, then the marks (per partition the producer keeps this order:
        one request in flight); the broker's answers go to the returned ``Deliveries``,
        which ``flush`` (or the state's ``commit_all``) waits for."""
        deliveries = Deliveries()

        def send(topic: str, key: bytes, value: bytes, partition: int) -> None:
            kafka_send(self.producer, topic, value, key, partition, deliveries)

        self.encoder.produce(send, outputs, marks)
        return deliveries
