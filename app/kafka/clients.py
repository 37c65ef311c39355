"""Plain confluent-kafka helpers for the worker's start-up, the demo, tests, benchmarks and
the CLI tools: create and check topics, produce many records, read a topic to its current
end without a group.

Every topic the app creates is created here (``ensure_topics``), with the configs below:
the one source (``app/kafka/topics.py`` declares the same configs to Faust)."""
from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # documented path; stubs lack the re-export

from app.kafka import security as kafka_settings
from app.settings import KafkaSettings, Settings

#: Producers use Kafka's (Java client's and Faust's) murmur2 partitioner, so a key lands in
#: the same partition whoever writes it (documents stay in order; trace routing works).
PRODUCER_DEFAULTS = {"partitioner": "murmur2_random"}
#: The data topics' configs, explicit so a cluster's defaults do not decide how long the
#: data lives (and Tansu answers DescribeConfigs only for topics created with retention).
TOPIC_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(7 * 24 * 3600 * 1000), "retention.bytes": "-1"}
#: Table changelogs: compacted, the latest record per key is the state (Faust's own choice
#: for a changelog, made explicit because the worker creates them before Faust starts).
CHANGELOG_CONFIG = {"cleanup.policy": "compact"}
#: The Faust tables (``tables/*.py``); each has the changelog ``<app_id>-<table>-changelog``.
TABLES = ("governance-state", "inventory-state", "erp-ledger")
#: How long `syncgov worker` waits for an unreachable broker at start-up before it exits.
STARTUP_WAIT_S = 60.0


class TopicLayoutError(RuntimeError):
    """A topic the worker reads or co-partitions has the wrong number of partitions."""


class KafkaUnavailable(RuntimeError):
    """The brokers did not answer within the start-up bound."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic the worker uses: its configs, and whether its partition count must equal
    ``TOPIC_PARTITIONS`` (read by a stage, or co-partitioned with what a stage reads)."""

    name: str
    config: dict[str, str]
    copartitioned: bool


def changelog_topic(app_id: str, table: str) -> str:
    """Faust's name for a table's changelog topic."""
    return f"{app_id}-{table}-changelog"


def worker_topics(s: Settings) -> list[TopicSpec]:
    """Every topic `syncgov worker` uses. The governance stage reads events partition P
    while Faust assigns it stock partition P, the ERP sink reads milestones next to the
    ledger's changelog, and each table's changelog partition P is state of input partition
    P: all of those must have exactly TOPIC_PARTITIONS partitions. Exceptions and dead
    letters are only written."""
    t = s.topics
    return [
        TopicSpec(t.events, TOPIC_CONFIG, True),
        TopicSpec(t.stock, TOPIC_CONFIG, True),
        TopicSpec(t.milestones, TOPIC_CONFIG, True),
        TopicSpec(t.exceptions, TOPIC_CONFIG, False),
        TopicSpec(t.dead_letters, TOPIC_CONFIG, False),
        TopicSpec(t.erp_dead_letters, TOPIC_CONFIG, False),
        *(TopicSpec(changelog_topic(s.worker.app_id, table), CHANGELOG_CONFIG, True) for table in TABLES),
    ]


def _stderr(line: str) -> None:
    print(f"syncgov: {line}", file=sys.stderr, flush=True)


def _partition_counts(admin: AdminClient, bootstrap: str, wait_s: float, say: Callable[[str], None]) -> dict[str, int]:
    """{topic: partitions} of the cluster, retrying an unreachable broker for ``wait_s``."""
    deadline = time.monotonic() + wait_s
    attempt = 0
    while True:
        attempt += 1
        try:
            meta = admin.list_topics(timeout=max(0.5, min(5.0, deadline - time.monotonic())))
            return {name: len(t.partitions) for name, t in meta.topics.items() if t.error is None}
        except KafkaException as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KafkaUnavailable(
                    f"Kafka at {bootstrap} did not answer a metadata request within {wait_s:.0f} s "
                    f"({attempt} attempts; last: {exc.args[0] if exc.args else exc})"
                ) from None
            say(f"Kafka at {bootstrap} is not answering ({exc.args[0] if exc.args else exc}); "
                f"retrying for up to {left:.0f} s")
            time.sleep(min(2.0, max(0.1, left)))


def ensure_topics(
    bootstrap: str,
    specs: Sequence[TopicSpec],
    partitions: int,
    replication_factor: int = 1,
    kafka: KafkaSettings | None = None,
    wait_s: float = 10.0,
    say: Callable[[str], None] = _stderr,
) -> list[str]:
    """Create the topics of ``specs`` that do not exist (``partitions``, ``replication_factor``,
    each spec's configs), then check that every co-partitioned one has exactly ``partitions``
    partitions: :class:`TopicLayoutError` naming each topic and both counts otherwise. An
    unreachable broker is retried for ``wait_s`` (a line per attempt through ``say``), then
    :class:`KafkaUnavailable`. Returns the names created."""
    # log_level 0: our own lines, not librdkafka's
    admin = AdminClient({**client_config(bootstrap, kafka), "log_level": 0})  # type: ignore[dict-item]  # stub omits the logger
    counts = _partition_counts(admin, bootstrap, wait_s, say)
    new = [NewTopic(x.name, partitions, replication_factor, config=dict(x.config)) for x in specs if x.name not in counts]
    created = []
    if new:
        for name, future in admin.create_topics(new, operation_timeout=30, request_timeout=30).items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):  # a peer worker created it meanwhile
                    raise
        # CreateTopics answers once the controller has the topics; the brokers' metadata
        # follows shortly after (KRaft): wait until every topic is visible.
        deadline = time.monotonic() + 30
        while True:
            counts = _partition_counts(admin, bootstrap, wait_s, say)
            if all(x.name in counts for x in specs) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    wrong = [f"{x.name!r} has {counts[x.name]} partitions" for x in specs
             if x.copartitioned and x.name in counts and counts[x.name] != partitions]
    missing = [x.name for x in specs if x.name not in counts]
    if wrong:
        raise TopicLayoutError(
            f"{'; '.join(wrong)}, TOPIC_PARTITIONS is {partitions}: every topic the worker reads or "
            f"co-partitions (events, stock, milestones, table changelogs) must have exactly TOPIC_PARTITIONS "
            f"partitions (a worker reads events partition P with stock and state partition P). Set "
            f"TOPIC_PARTITIONS to the topics' count, or re-create the topics"
        )
    if missing:
        raise TopicLayoutError(f"topics {missing} still missing after creating them on {bootstrap}")
    return created


#: Worker settings per broker implementation (the test lanes, the chaos run, the benchmarks).
#: Tansu needs a ~6 s session timeout (joins take 20 s otherwise) and under-reports a
#: changelog's end after a crash mid-batch, so Faust's recovery consistency check trips
#: falsely there; on Apache Kafka the check is on, with a usual session timeout and a
#: producer that lingers a few ms to fill its batches. Tansu has no transactional isolation:
#: a worker given its address (not ``embedded``) must be told so (``WORKER_EXACTLY_ONCE``).
BROKER_WORKER_ENV: dict[str, dict[str, str]] = {
    "embedded": {
        "KAFKA_SESSION_TIMEOUT_S": "6",
        "WORKER_RECOVERY_CONSISTENCY_CHECK": "false",
        "KAFKA_PRODUCER_LINGER_MS": "0",
        "WORKER_EXACTLY_ONCE": "off",
    },
    "apache": {
        "KAFKA_SESSION_TIMEOUT_S": "10",
        "WORKER_RECOVERY_CONSISTENCY_CHECK": "true",
        "KAFKA_PRODUCER_LINGER_MS": "5",
        "WORKER_EXACTLY_ONCE": "on",
    },
}


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner picks for ``key``."""
    from aiokafka.partitioner import murmur2

    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


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


def create_topics(bootstrap: str, names: Iterable[str], partitions: int, kafka: KafkaSettings | None = None,
                  *, replication_factor: int = 1) -> None:
    """Create data topics that do not exist yet (``TOPIC_CONFIG``); existing ones are left as
    they are (the worker checks the layout it depends on at start-up: ``worker_topics``)."""
    ensure_topics(bootstrap, [TopicSpec(n, TOPIC_CONFIG, False) for n in names], partitions, replication_factor, kafka)


def send(producer: Producer, topic: str, value: bytes | None, key: bytes | None = None, partition: int = -1,
         on_delivery: Callable[[KafkaError | None, Message], None] | None = None, poll_s: float = 0.05) -> None:
    """``producer.produce`` that waits (serving delivery callbacks) while the producer's
    local queue is full instead of raising ``BufferError``: the one place for that loop."""
    while True:
        try:
            if on_delivery is None:
                producer.produce(topic, value, key, partition)
            else:
                producer.produce(topic, value, key, partition, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(poll_s)


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]], rate_per_s: float = 0) -> int:
    """Produce (key, value) records; ``rate_per_s`` > 0 paces them. Returns the count."""
    producer = Producer({**client_config(bootstrap), **PRODUCER_DEFAULTS, "linger.ms": 5, "batch.num.messages": 10000})
    n = 0
    started = time.perf_counter()
    for key, value in records:
        send(producer, topic, value, key)
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
    value: bytes  # b"" for a tombstone (as ``app.harness.chaos.verify`` and the ERP sink read them)
    timestamp_ms: int
    #: ``timestamp_ms`` is the broker's append time (a topic with ``message.timestamp.type``
    #: LogAppendTime), not the producer's create time.
    appended: bool = False


_T = TypeVar("_T")

#: Broker answers that only mean "not yet": a partition whose leader is being elected or
#: whose metadata has not reached this broker (right after a topic is created, or while a
#: broker restarts). librdkafka flags most as retriable; these three it does not always.
_TRANSIENT = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART,
})


def is_transient(exc: KafkaException) -> bool:
    """Whether ``exc`` is worth asking again (a leader election, metadata still spreading)."""
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and (err.retriable() or err.code() in _TRANSIENT)


def retry_transient(call: Callable[[], _T], timeout_s: float = 30.0,
                    sleep: Callable[[float], None] = time.sleep) -> _T:
    """``call()``, asked again while it raises a transient :class:`KafkaException` (backing
    off 0.1 s doubling to 2 s) for up to ``timeout_s``; any other error, or the last
    transient one after the timeout, is raised."""
    deadline = time.monotonic() + timeout_s
    pause = 0.1
    while True:
        try:
            return call()
        except KafkaException as exc:
            if not is_transient(exc) or time.monotonic() + pause > deadline:
                raise
        sleep(pause)
        pause = min(2.0, pause * 2)


def watermarks(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    """(low, high) offsets of a partition from the broker; a partition without a leader yet
    (a topic just created, a broker restarting) is asked again for up to 30 s."""
    tp = TopicPartition(topic, partition)
    low, high = retry_transient(functools.partial(consumer.get_watermark_offsets, tp, timeout=10))
    return int(low), int(high)


def end_offsets(bootstrap: str, topic: str, kafka: KafkaSettings | None = None) -> dict[int, int]:
    """{partition: end offset} of ``topic`` ({} if it does not exist)."""
    consumer = Consumer({**client_config(bootstrap, kafka), "group.id": "syncgov-tools"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        return {p: watermarks(consumer, topic, p)[1] for p in meta.partitions}
    finally:
        consumer.close()


def read_all(
    bootstrap: str,
    topic: str,
    timeout_s: float = 30.0,
    count: int | None = None,
    kafka: KafkaSettings | None = None,
    starts: Mapping[int, int] | None = None,
) -> Iterator[Record]:
    """Every record of ``topic`` from the start (or from ``starts[partition]``, a partition
    not in it from 0) to its current end, partition by partition.

    Tansu reports a partition's end as the base offset of its last producer batch + 1, so
    after the reported ends the reader drains until a poll comes back empty; with
    ``count`` it reads until that many records instead. Committed records only (the
    consumer's default): a partition is read to its end once the consumer's position (past
    transaction markers and aborted records) reaches it.
    """
    starts = starts or {}
    meta = end_offsets(bootstrap, topic, kafka)
    ends = {p: e for p, e in meta.items() if e > 0 or count is not None}  # (a reported end may be below a start)
    if not ends:
        return
    consumer = Consumer({**client_config(bootstrap, kafka), "group.id": "syncgov-tools", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, starts.get(p, 0)) for p in ends])
        done = {p: starts.get(p, 0) for p in ends}
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
                p, offset = msg.partition(), msg.offset()
                if msg.error() is not None or p is None or offset is None or offset < done[p]:
                    continue  # (a message without an error has its partition and offset)
                done[p] = offset + 1
                read += 1
                kind, stamp = msg.timestamp()
                yield Record(topic, p, offset, msg.key(), msg.value() or b"", stamp, kind == TIMESTAMP_LOG_APPEND_TIME)
            # Past what no record shows: transaction markers and aborted records (a
            # transactional topic's end is a commit marker, never delivered)
            for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                if tp.offset > done[tp.partition]:
                    done[tp.partition] = tp.offset
            caught_up = count is None and all(done[p] >= ends[p] for p in ends)
    finally:
        consumer.close()
