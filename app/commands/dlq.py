"""`syncgov dlq`: list the dead letters of both kinds and re-drive them.

**ERP dead letters** (below) are milestones the ERP rejected or the sink parked; **input
dead letters** (``InputEntry``, further down) are records of the events topic that failed
rule 8 (``TOPIC_DEAD_LETTERS``: the raw bytes, the reason, the original topic, partition
and offset).

The ERP dead-letter topic holds, per document key, what the ERP sink (``app.erp.sink``)
stopped at: a milestone the ERP rejected (``dead_lettered``), one parked after
``ERP_MAX_RETRIES`` failures (``parked: true``), the *held* markers of the document's
later milestones (``{"held": id, "blocker": id, ...}``: they wait behind it), and
undecodable records of the milestones topic (``undecodable: true``, the raw bytes).

Re-drive puts the milestone back on the milestones topic (same key, so it stays in
order with its document); the sink sees it above the offset it failed at, posts it, and
then posts the held milestones of its document in order (a re-drive releases the
document). A marker on the dead-letter topic remembers that the entry was re-driven, so
`list` shows what is still open. An undecodable record cannot be re-driven: re-driving it
only marks it as handled.
"""
from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Producer

from app.core import keys
from app.kafka import codec
from app.kafka.clients import PRODUCER_DEFAULTS, client_config, read_all, send, watermarks
from app.settings import Settings, load

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    key: bytes | None
    record: dict[str, Any]
    held: tuple[dict[str, Any], ...] = ()  # the document's milestones waiting behind this one
    upto: int = -1  # highest dead-letter topic offset of its record and held markers (closed by a re-drive)

    @property
    def milestone_id(self) -> str:
        return str(self.record["milestone_id"])

    @property
    def kind(self) -> str:
        if self.record.get("undecodable"):
            return "undecodable"
        return "parked" if self.record.get("parked") else "dead_lettered"

    @property
    def redrivable(self) -> bool:
        return self.record.get("milestone") is not None


def entries_from(records: Iterable[tuple[int, bytes | None, bytes]]) -> list[Entry]:
    """The open entries of the ERP dead-letter topic's (offset, key, value) records, oldest
    first, each with the milestones held behind it. A record and its re-drive marker share
    the document key, so one partition: a marker closes what is at or below its ``upto``
    offset (a failure after the re-drive stays open, whichever landed first)."""
    entries: dict[str, Entry] = {}
    held: dict[str, dict[str, tuple[int, dict[str, Any]]]] = {}
    for offset, key, raw in records:
        try:
            value = orjson.loads(raw)
            if type(value) is not dict:
                raise ValueError(f"a JSON {type(value).__name__}, not an object")
        except ValueError as exc:  # orjson.JSONDecodeError too: another producer's record
            log.warning("ERP dead-letter topic offset %d is not a dead letter (%s); skipped", offset, exc)
            continue
        if "redriven" in value:
            mid, upto = str(value["redriven"]), value.get("upto")
            if mid in entries and (upto is None or entries[mid].upto <= upto):
                del entries[mid]
            kept = {h: v for h, v in held.get(mid, {}).items() if upto is not None and v[0] > upto}
            held[mid] = kept
        elif "held" in value:
            held.setdefault(str(value["blocker"]), {})[str(value["held"])] = (offset, value)
        else:
            mid = str(value["milestone_id"])
            entries.pop(mid, None)
            entries[mid] = Entry(key, value, (), offset)
    out = []
    for mid, e in entries.items():
        behind = held.get(mid, {}).values()
        out.append(Entry(e.key, e.record, tuple(v for _, v in behind), max([e.upto, *(o for o, _ in behind)])))
    return out


def open_entries(s: Settings) -> list[Entry]:
    """Dead-lettered, parked and undecodable milestones not re-driven since they last
    failed, oldest first, with their held successors."""
    return entries_from(
        (rec.offset, rec.key, rec.value)
        for rec in read_all(s.kafka.bootstrap_servers, s.topics.erp_dead_letters, kafka=s.kafka)
    )


def redrive(s: Settings, entries: Sequence[Entry]) -> int:
    producer = Producer({**client_config(s.kafka.bootstrap_servers, s.kafka), **PRODUCER_DEFAULTS})
    for entry in entries:
        if not entry.redrivable:
            continue  # undecodable: nothing to post again; the marker below closes it
        send(producer, s.topics.milestones, codec.encode_milestone(entry.record["milestone"]), entry.key)
    if producer.flush(30) != 0:
        raise RuntimeError("milestones not delivered to Kafka within 30 s; nothing marked as re-driven")
    for entry in entries:
        marker = {"redriven": entry.milestone_id, "upto": entry.upto}
        send(producer, s.topics.erp_dead_letters, orjson.dumps(marker), entry.key)
    if producer.flush(30) != 0:
        raise RuntimeError("re-drive markers not delivered within 30 s (re-driving again is harmless)")
    return sum(1 for e in entries if e.redrivable)


def main(action: str, ids: Sequence[str]) -> int:
    s = load()
    if not s.kafka.bootstrap_servers:
        raise SystemExit("syncgov dlq: KAFKA_BOOTSTRAP_SERVERS is required")
    entries = open_entries(s)
    if action == "list":
        for line in list_lines(entries):
            print(line)
        return 0
    chosen = [e for e in entries if not ids or e.milestone_id in ids]
    unknown = sorted(set(ids) - {e.milestone_id for e in chosen})
    if unknown:
        print(f"syncgov dlq: not open: {', '.join(unknown)}")
        return 1
    print(f"re-driven {redrive(s, chosen)} milestone(s)")
    closed = [e.milestone_id for e in chosen if not e.redrivable]
    if closed:
        print(f"closed {len(closed)} undecodable record(s) (nothing to re-drive): {', '.join(closed)}")
    return 0


def list_lines(entries: Sequence[Entry]) -> list[str]:
    """`syncgov dlq list`: one line per open entry, then the milestones held behind it."""
    lines = []
    for e in entries:
        r = e.record
        m = r.get("milestone") or {}
        doc = str(m.get("order_id") or m.get("sku") or "")
        lines.append(f"{r['milestone_id']}  {r.get('type')!s:<18} {doc:<14} {e.kind:<13} {r.get('status')}  "
                     f"{str(r.get('detail', ''))[:120]}")
        for h in e.held:
            lines.append(f"    held behind it: {h['held']}  {h['type']}")
    held = sum(len(e.held) for e in entries)
    lines.append(f"{len(entries)} open ERP dead letter(s), {held} milestone(s) held behind them")
    return lines


# -- input dead letters ---------------------------------------------------------------------------
#
# A record of the events topic that fails rule 8 is written to TOPIC_DEAD_LETTERS as a
# ``syncgov.ops.DeadLetter`` (Avro), keyed by its record id. Re-drive puts its raw bytes (or
# a fixed record supplied by the operator) back on the events topic with the ORIGINAL key,
# read from the events topic at the dead letter's partition and offset; when retention has
# removed that record, the key the producers' contract gives the record re-driven
# (``app.core.keys.event_key``). Same key, same partition: the record is governed in order
# with its order's other events. A JSON marker ``{"redriven": record_id, "upto": offset}``
# on the dead-letter topic (same key) closes the entry; if the record fails again, its new
# dead letter is open again.


@dataclass(frozen=True)
class InputEntry:
    record: dict[str, Any]  # the decoded DeadLetter: raw, reason, record_id, topic, partition, offset, failed_at
    upto: int = -1  # its offset on the dead-letter topic

    kind = "input"

    @property
    def record_id(self) -> str:
        return str(self.record["record_id"])

    @property
    def raw(self) -> bytes:
        return bytes(self.record["raw"])

    def to_json(self) -> dict[str, Any]:
        """The entry for ``--json`` and the ops page: the raw bytes as text, or base64."""
        out = {k: v for k, v in self.record.items() if k != "raw"}
        out["failed_at"] = _iso(self.record.get("failed_at"))
        try:
            out["raw"] = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            out["raw"], out["raw_encoding"] = base64.b64encode(self.raw).decode("ascii"), "base64"
        return {**out, "kind": self.kind}


def _iso(value: Any) -> Any:
    from datetime import datetime

    return value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else value


def input_entries_from(records: Iterable[tuple[int, bytes | None, bytes]]) -> list[InputEntry]:
    """The open input dead letters of the dead-letter topic's (offset, key, value) records,
    oldest first; a re-drive marker closes the entry at or below its ``upto``."""
    entries: dict[str, InputEntry] = {}
    for offset, _key, raw in records:
        if raw[:1] == b"{":  # a re-drive marker (dead letters are Avro)
            marker = orjson.loads(raw)
            rid, upto = str(marker.get("redriven")), int(marker.get("upto", -1))
            if rid in entries and entries[rid].upto <= upto:
                del entries[rid]
            continue
        try:
            record = codec.decode_dead_letter(raw)
        except codec.DecodeError as exc:
            log.warning("dead-letter topic offset %d is not a dead letter (%s); skipped", offset, exc)
            continue
        rid = str(record["record_id"])
        entries.pop(rid, None)
        entries[rid] = InputEntry(record, offset)
    return list(entries.values())


def open_input_entries(s: Settings) -> list[InputEntry]:
    """Input dead letters not re-driven since they were written, oldest first."""
    return input_entries_from(
        (rec.offset, rec.key, rec.value)
        for rec in read_all(s.kafka.bootstrap_servers, s.topics.dead_letters, kafka=s.kafka)
    )


class RedriveError(Exception):
    """An input dead letter cannot be re-driven as asked (nothing was sent)."""


def original_keys(s: Settings, entries: Sequence[InputEntry]) -> dict[str, bytes | None]:
    """record_id -> the key of the original record, read at its topic, partition and offset
    (absent when retention has removed it)."""
    from confluent_kafka import Consumer, TopicPartition

    wanted = {(str(e.record["topic"]), int(e.record["partition"]), int(e.record["offset"])): e.record_id
              for e in entries}
    found: dict[str, bytes | None] = {}
    if not wanted:
        return found
    consumer = Consumer({**client_config(s.kafka.bootstrap_servers, s.kafka), "group.id": "syncgov-tools",
                         "enable.auto.commit": False})
    try:
        for (topic, partition, offset), rid in wanted.items():
            low, high = watermarks(consumer, topic, partition)
            if not low <= offset < high:
                continue
            consumer.assign([TopicPartition(topic, partition, offset)])
            for _ in range(20):
                msgs = consumer.consume(1, 0.5)
                if msgs and msgs[0].error() is None and msgs[0].offset() == offset:
                    found[rid] = msgs[0].key()
                    break
    finally:
        consumer.close()
    return found


def _derived_key(value: bytes) -> bytes | None:
    decoded = codec.decode_input(value)
    return None if isinstance(decoded, str) else keys.event_key(decoded)


def plan_input_redrive(entries: Sequence[InputEntry], originals: Mapping[str, bytes | None],
                       fixed: bytes | None = None,
                       events_topic: str | None = None) -> list[tuple[InputEntry, bytes | None, bytes]]:
    """(entry, key, value) to send for each entry, or ``RedriveError`` naming what is wrong:
    a fixed record that would be dead-lettered again, a record whose key is unknown, or one
    that did not come from ``events_topic`` (a record of the worker's internal stock topic
    that the inventory stage refused: kept for inspection, never put on the events topic)."""
    if events_topic is not None:
        for e in entries:
            if e.record.get("topic") != events_topic:
                raise RedriveError(f"{e.record_id}: a record of {e.record.get('topic')}, not of the events topic "
                                   f"{events_topic}: kept for inspection, not re-driven")
    if fixed is not None:
        if len(entries) != 1:
            raise RedriveError("a fixed record replaces exactly one dead letter: give one --id")
        reason = codec.decode_input(fixed)
        if isinstance(reason, str):
            raise RedriveError(f"the fixed record would be dead-lettered again: {reason}")
    plan = []
    for e in entries:
        value = fixed if fixed is not None else e.raw
        if e.record_id in originals:
            key = originals[e.record_id]
        else:
            key = _derived_key(value)
            if key is None:
                raise RedriveError(
                    f"{e.record_id}: the original record ({e.record['topic']} partition {e.record['partition']} "
                    f"offset {e.record['offset']}) is no longer in Kafka and this record cannot be decoded to "
                    "compute its key: supply a fixed record (--fixed FILE)")
        plan.append((e, key, value))
    return plan


def redrive_input(s: Settings, entries: Sequence[InputEntry], fixed: bytes | None = None) -> int:
    """Put the entries' raw bytes (or ``fixed``, for one entry) back on the events topic
    with the original key, then close them with a marker. Nothing is sent when any entry
    cannot be re-driven (``RedriveError``)."""
    plan = plan_input_redrive(entries, original_keys(s, entries), fixed, s.topics.events)
    producer = Producer({**client_config(s.kafka.bootstrap_servers, s.kafka), **PRODUCER_DEFAULTS})
    for _, key, value in plan:
        send(producer, s.topics.events, value, key)
    if producer.flush(30) != 0:
        raise RuntimeError("records not delivered to Kafka within 30 s; nothing marked as re-driven")
    for e, _, _ in plan:
        send(producer, s.topics.dead_letters, orjson.dumps({"redriven": e.record_id, "upto": e.upto}),
             e.record_id.encode())
    if producer.flush(30) != 0:
        raise RuntimeError("re-drive markers not delivered within 30 s (the records are back on the events topic)")
    return len(plan)


def input_list_lines(entries: Sequence[InputEntry]) -> list[str]:
    """`syncgov dlq list`: one line per open input dead letter."""
    lines = []
    for e in entries:
        r = e.record
        raw = e.raw[:60].decode("utf-8", "replace").replace("\n", " ")
        lines.append(f"{e.record_id}  input  {r['topic']}[{r['partition']}]@{r['offset']}  {r['reason'][:100]}  "
                     f"raw: {raw}")
    lines.append(f"{len(entries)} open input dead letter(s)")
    return lines
