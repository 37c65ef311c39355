"""``syncgov export``: a topic's partitions, from an offset or a time, to files that
``syncgov replay`` reads.

One file per partition of the topic, every partition (an empty one is an empty file: replay
counts partitions, and an idle partition still matters to the inventory stage's watermark),
named ``<topic>.p<NNN>.<ext>`` with the partition zero-padded so that a shell glob lists them
in partition order: ``syncgov replay out/syncgov.events.p*``. Each record's value is written
as it is on the topic (keys are not needed: the record carries its identity):

- ``.ndjson`` when every exported record is one line of JSON (a JSON object without a
  newline byte): one record per line;
- ``.bin`` otherwise (Avro, Confluent-framed or mixed records): each record framed by a
  4-byte big-endian length, the format ``syncgov replay`` reads for binary records.

``--format`` forces one. The export reads up to the partitions' ends at the time it starts.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Final

from app.kafka.clients import Record, end_offsets, read_all, watermarks
from app.settings import Settings

FORMATS: Final = ("auto", "ndjson", "framed")
EXTENSIONS: Final = {"ndjson": "ndjson", "framed": "bin"}


def parse_time(text: str) -> int:
    """Epoch milliseconds from digits (ms) or an ISO 8601 time (``Z`` or an offset; naive is UTC)."""
    if text.isdigit():
        return int(text)
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        from datetime import UTC

        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp() * 1000)


def starts_at_time(s: Settings, topic: str, partitions: Iterable[int], at_ms: int) -> dict[int, int]:
    """Per partition, the first offset whose timestamp is at or after ``at_ms`` (the end when none)."""
    from confluent_kafka import Consumer, TopicPartition

    from app.kafka.clients import client_config

    consumer = Consumer({**client_config(s.kafka.bootstrap_servers, s.kafka), "group.id": "syncgov-tools",
                         "enable.auto.commit": False})
    try:
        found = consumer.offsets_for_times([TopicPartition(topic, p, at_ms) for p in partitions], timeout=10)
        out = {}
        for tp in found:
            if tp.offset >= 0:
                out[tp.partition] = tp.offset
            else:  # no record at or after the time: start at the end
                out[tp.partition] = watermarks(consumer, topic, tp.partition)[1]
        return out
    finally:
        consumer.close()


def one_line_json(value: bytes) -> bool:
    return value.lstrip()[:1] == b"{" and b"\n" not in value and b"\r" not in value


def frame(value: bytes) -> bytes:
    from app.commands.replay import frame_avro

    return frame_avro(value)


def write_files(out_dir: Path, topic: str, partitions: Iterable[int], records: Iterable[Record],
                fmt: str = "auto") -> dict[int, tuple[Path, int]]:
    """The records into one file per partition; {partition: (file, records written)}."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    by_partition: dict[int, list[bytes]] = {p: [] for p in sorted(partitions)}
    for rec in records:
        by_partition.setdefault(rec.partition, []).append(rec.value)
    if fmt == "auto":
        fmt = "ndjson" if all(one_line_json(v) for vs in by_partition.values() for v in vs) else "framed"
    width = max(3, len(str(max(by_partition, default=0))))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for p, values in sorted(by_partition.items()):
        path = out_dir / f"{topic}.p{p:0{width}d}.{EXTENSIONS[fmt]}"
        with open(path, "wb") as f:
            for v in values:
                f.write(v.strip() + b"\n" if fmt == "ndjson" else frame(v))
        written[p] = (path, len(values))
    return written


def export(s: Settings, topic: str, out_dir: Path, *, from_offset: int | None = None, from_time_ms: int | None = None,
           fmt: str = "auto") -> dict[int, tuple[Path, int]]:
    """Every partition of ``topic`` from ``from_offset`` (each partition; default its start)
    or from the first record at or after ``from_time_ms``, to the ends at the start of the
    export."""
    partitions = sorted(end_offsets(s.kafka.bootstrap_servers, topic, s.kafka))
    if not partitions:
        raise LookupError(f"topic {topic} does not exist (or has no partitions)")
    starts: Mapping[int, int]
    if from_time_ms is not None:
        starts = starts_at_time(s, topic, partitions, from_time_ms)
    else:
        starts = dict.fromkeys(partitions, from_offset or 0)
    records = read_all(s.kafka.bootstrap_servers, topic, timeout_s=600.0, kafka=s.kafka, starts=starts)
    return write_files(out_dir, topic, partitions, records, fmt)


def main(topic: str | None, out_dir: str, from_offset: int | None, from_time: str | None, fmt: str) -> int:
    """``syncgov export``: 0 written, 1 Kafka or I/O failure (raised), 2 bad arguments."""
    from app import logs
    from app.commands.progress import summary
    from app.settings import load

    s = load()
    if from_offset is not None and from_time is not None:
        logs.error("give --from-offset or --from-time, not both", command="export")
        return 2
    try:
        at_ms = parse_time(from_time) if from_time is not None else None
    except ValueError:
        logs.error(f"--from-time {from_time!r}: not epoch milliseconds or an ISO 8601 time", command="export")
        return 2
    name = topic or s.topics.events
    written = export(s, name, Path(out_dir), from_offset=from_offset, from_time_ms=at_ms, fmt=fmt)
    for _, (path, n) in sorted(written.items()):
        print(f"{path}\t{n}")
    total = sum(n for _, n in written.values())
    summary("export", f"{total:,} records of {name} in {len(written)} partition file(s)", records=total,
            partitions=len(written))
    return 0
