"""`syncgov dlq`: list the milestones the ERP rejected or the sink parked, and re-drive them.

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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Producer

from app import codec
from app.kafka_io import PRODUCER_DEFAULTS, client_config, read_all, send
from app.settings import Settings, load


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
        value = orjson.loads(raw)
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
        doc = m.get("order_id") or m.get("sku") or ""
        lines.append(f"{r['milestone_id']}  {r['type']:<18} {doc:<14} {e.kind:<13} {r.get('status')}  "
                     f"{str(r.get('detail', ''))[:120]}")
        for h in e.held:
            lines.append(f"    held behind it: {h['held']}  {h['type']}")
    held = sum(len(e.held) for e in entries)
    lines.append(f"{len(entries)} open ERP dead letter(s), {held} milestone(s) held behind them")
    return lines
