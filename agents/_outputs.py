"""Sending what the core produced: milestones (Avro) keyed so that one order's or one
stock key's milestones stay in order, dead letters with their origin, and forwards and
watermark marks to the inventory stage's repartition topic.

Without Kafka transactions (``WORKER_EXACTLY_ONCE`` off) they go through one confluent-kafka
producer per process (Faust's producer costs ~20 µs of Python per record; it keeps the
table changelogs), and a batch waits until the broker has all of them before its state is
stored. One request in flight per connection, so retries never reorder a partition (a
mark must stay behind the forwards it covers). With transactions, ``produce_outputs``
encodes them into each input partition's transaction (``app.runtime.transactions``).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka import KafkaError, Message, Producer

from app import codec, metrics
from app.core import keys
from app.core.engine import Output
from app.core.model import M_ORDER_ACCEPTED, M_SYNC_EXCEPTION, DeadLetter, Milestone, StockForward
from app.core.stock import Mark, encode_forward, encode_mark
from app.faust_app import SETTINGS
from app.kafka_io import PRODUCER_DEFAULTS, client_config
from app.kafka_io import send as kafka_send
from app.runtime.faust_adapter import Origin

_T = SETTINGS.topics


class OutputError(RuntimeError):
    """The broker did not take a batch's outputs (the batch is redone after a restart)."""


class _Sender:
    """The process's output producer and the thread that waits for its deliveries."""

    def __init__(self) -> None:
        self.producer = Producer(
            {
                **client_config(SETTINGS.kafka.bootstrap_servers, SETTINGS.kafka),
                **PRODUCER_DEFAULTS,
                "linger.ms": 2,
                "max.in.flight.requests.per.connection": 1,
            }
        )
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="outputs")
        self.errors: list[KafkaError] = []

    def send(self, topic: str, key: bytes, value: bytes, partition: int = -1) -> None:
        kafka_send(self.producer, topic, value, key, partition, self._delivered)

    def _delivered(self, err: KafkaError | None, _: Message) -> None:
        if err is not None:
            self.errors.append(err)

    async def wait(self) -> None:
        left = await asyncio.get_running_loop().run_in_executor(self.executor, self.producer.flush, 60.0)
        errors, self.errors = self.errors, []
        if left or errors:
            raise OutputError(f"{left} outputs undelivered after 60 s; errors: {errors[:3]}")


_sender: _Sender | None = None


def _get() -> _Sender:
    global _sender
    if _sender is None:
        _sender = _Sender()
    return _sender


#: ``_Sender.send``: (topic, key, value, partition: -1 for the key's).
Send = Callable[[str, bytes, bytes, int], None]


milestone_key = keys.milestone_key


def reason_category(reason: str) -> str:
    """A bounded label for a dead letter's reason (the full reason is in the record)."""
    if reason.startswith("undecodable"):
        return "undecodable"
    if reason.startswith("too_large"):
        return "too_large"
    return reason if reason == "future" else "invalid_field"


def produce_outputs(send: Send, outputs: Iterable[tuple[Output, Origin]], marks: Iterable[Mark] = ()) -> None:
    """Encode and hand to ``send`` every output, then the marks (each to every stock
    partition): the one encoding of a batch's outputs, for the process's producer
    (``emit``) and for a partition's transaction (``app.runtime.transactions``)."""
    for out, msg in outputs:
        if out.__class__ is Milestone:
            _milestone(send, out)
        elif out.__class__ is StockForward:
            e = out.event
            value = encode_forward(msg.partition, msg.offset, e, out.watermark)
            send(_T.stock, keys.stock_key(e.warehouse_id, e.data["sku"], e.data["location"]), value, -1)
        elif out.__class__ is DeadLetter:
            value = codec.encode_dead_letter(
                raw=out.raw,
                reason=out.reason,
                record_id=out.record_id,
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                failed_at=int(time.time() * 1000),
            )
            send(_T.dead_letters, out.record_id.encode(), value, -1)
            metrics.DEAD_LETTERS.labels(reason_category(out.reason)).inc()
    for mark in marks:
        value = encode_mark(mark)
        for partition in range(_T.partitions):
            send(_T.stock, b"", value, partition)


async def emit(outputs: Iterable[tuple[Output, Origin]], marks: Iterable[Mark] = ()) -> None:
    """Send every output, then the marks, with the process's producer, and wait until the
    broker has them all. Per partition the producer keeps this order."""
    sender = _get()
    produce_outputs(sender.send, outputs, marks)
    await sender.wait()


def _milestone(send: Send, m: Milestone) -> None:
    topic = _T.exceptions if m.type == M_SYNC_EXCEPTION else _T.milestones
    send(topic, milestone_key(m), codec.encode_milestone(m.to_dict()), -1)
    metrics.MILESTONES.labels(m.type).inc()
    if m.type == M_ORDER_ACCEPTED and m.body["version"] == 1 and m.occurred_at is not None:
        metrics.SLA_RELEASE_TO_ACCEPTED.observe(max(0.0, time.time() - m.occurred_at / 1000))
    if m.type == M_SYNC_EXCEPTION:
        metrics.SYNC_EXCEPTIONS.labels(m.body["code"]).inc()
