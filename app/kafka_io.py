"""Plain confluent-kafka helpers for the demo, tests, benchmarks and the CLI tools:
create topics, produce many records, read a topic to its current end without a group."""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from app import kafka_settings
from app.settings import KafkaSettings

#: Producers use Kafka's (Java client's and Faust's) murmur2 partitioner, so a key lands in
#: the same partition whoever writes it (documents stay in order; trace routing works).
PRODUCER_DEFAULTS = {"partitioner": "murmur2_random"}
#: Tansu answers DescribeConfigs only for topics created with explicit retention.
TOPIC_CONFIG = {"retention.ms": str(7 * 24 * 3600 * 1000), "retention.bytes": "-1"}


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner picks for ``key``."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def client_config(bootstrap: str, kafka: KafkaSettings | None = None) -> dict[str, object]:
    """librdkafka settings for the bootstrap address, with SASL/TLS from settings."""
    conf: dict[str, object] = {"bootstrap.servers": bootstrap}
    if kafka is not None and kafka.security_protocol != "PLAINTEXT":
        conf["security.protocol"] = kafka.security_protocol.lower()
        if kafka.security_protocol.startswith("SASL"):
            conf["sasl.mechanism"] = kafka.sasl_mechanism
            conf["sasl.username"] = kafka.sasl_username
            conf["sasl.password"] = kafka.sasl_password.value
        if kafka.ssl_cafile:
            conf["ssl.ca.location"] = kafka.ssl_cafile
        if kafka.ssl_certfile:
            conf["ssl.certificate.location"] = kafka.ssl_certfile
            conf["ssl.key.location"] = kafka.ssl_keyfile
    return kafka_settings.librdkafka(conf, kafka)  # OAUTHBEARER, KAFKA_CLIENT_CONFIG


def create_topics(bootstrap: str, names: Iterable[str], partitions: int, kafka: KafkaSettings | None = None) -> None:
    """Create topics that do not exist yet (explicit retention, replication 1 on Tansu)."""
    admin = AdminClient(client_config(bootstrap, kafka))
    existing = set(admin.list_topics(timeout=10).topics)
    new = [NewTopic(n, partitions, 1, config=TOPIC_CONFIG) for n in names if n not in existing]
    if not new:
        return
    for future in admin.create_topics(new).values():
        try:
            future.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]], rate_per_s: float = 0) -> int:
    """Produce (key, value) records; ``rate_per_s`` > 0 paces them. Returns the count."""
    producer = Producer({**client_config(bootstrap), **PRODUCER_DEFAULTS, "linger.ms": 5, "batch.num.messages": 10000})
    n = 0
    started = time.perf_counter()
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
        if rate_per_s > 0:
            ahead = n / rate_per_s - (time.perf_counter() - started)
            if ahead > 0.002:
                producer.poll(0)
                time.sleep(ahead)
        elif n % 10000 == 0:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError(f"{topic}: records still undelivered after 60 s")
    return n


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


def end_offsets(bootstrap: str, topic: str, kafka: KafkaSettings | None = None) -> dict[int, int]:
    consumer = Consumer({**client_config(bootstrap, kafka), "group.id": "syncgov-tools"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions}
    finally:
        consumer.close()


def read_all(
    bootstrap: str,
    topic: str,
    timeout_s: float = 30.0,
    count: int | None = None,
    kafka: KafkaSettings | None = None,
) -> Iterator[Record]:
    """Every record of ``topic`` from the start to its current end, partition by partition.

    Tansu reports a partition's end as the base offset of its last producer batch + 1, so
    after the reported ends the reader drains until a poll comes back empty; with
    ``count`` it reads until that many records instead.
    """
    meta = end_offsets(bootstrap, topic, kafka)
    ends = {p: e for p, e in meta.items() if e > 0 or count is not None}
    if not ends:
        return
    consumer = Consumer({**client_config(bootstrap, kafka), "group.id": "syncgov-tools", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        done = dict.fromkeys(ends, 0)
        read = 0
        deadline = time.monotonic() + timeout_s

        caught_up = False  # at the reported ends: drain until a poll comes back empty
        while count is None or read < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: read {read} records ({done} of {ends}) within {timeout_s}s")
            batch = consumer.consume(10000, 0.3 if caught_up else 0.5)
            if caught_up and not batch:
                break
            for msg in batch:
                p = msg.partition()
                if msg.error() is not None or msg.offset() < done[p]:
                    continue
                done[p] = msg.offset() + 1
                read += 1
                yield Record(topic, p, msg.offset(), msg.key(), msg.value(), msg.timestamp()[1])
            caught_up = count is None and all(done[p] >= ends[p] for p in ends)
    finally:
        consumer.close()
