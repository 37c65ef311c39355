"""`syncgov dlq`: list the milestones the ERP rejected, and re-drive them after a fix.

Re-drive puts the milestone back on the milestones topic (same key, so it stays in
order with its document); the worker's ERP sink posts it within the shared quota and
records the result in its ledger. A marker on the dead-letter topic remembers that
the entry was re-driven, so `list` shows what is still open.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Producer

from app import codec
from app.kafka_io import PRODUCER_DEFAULTS, client_config, read_all
from app.settings import Settings, load


@dataclass(frozen=True)
class Entry:
    key: bytes | None
    record: dict[str, Any]

    @property
    def milestone_id(self) -> str:
        return str(self.record["milestone_id"])


def open_entries(s: Settings) -> list[Entry]:
    """Dead-lettered milestones not re-driven since they last failed, oldest first."""
    entries: dict[str, Entry] = {}
    for rec in read_all(s.kafka.bootstrap_servers, s.topics.erp_dead_letters, kafka=s.kafka):
        value = orjson.loads(rec.value)
        if "redriven" in value:
            entries.pop(value["redriven"], None)
        else:
            entries.pop(value["milestone_id"], None)
            entries[value["milestone_id"]] = Entry(rec.key, value)
    return list(entries.values())


def redrive(s: Settings, entries: Sequence[Entry]) -> int:
    producer = Producer({**client_config(s.kafka.bootstrap_servers, s.kafka), **PRODUCER_DEFAULTS})
    for entry in entries:
        producer.produce(s.topics.milestones, key=entry.key, value=codec.encode_milestone(entry.record["milestone"]))
    if producer.flush(30) != 0:
        raise RuntimeError("milestones not delivered to Kafka within 30 s; nothing marked as re-driven")
    for entry in entries:
        producer.produce(s.topics.erp_dead_letters, key=entry.key, value=orjson.dumps({"redriven": entry.milestone_id}))
    if producer.flush(30) != 0:
        raise RuntimeError("re-drive markers not delivered within 30 s (re-driving again is harmless)")
    return len(entries)


def main(action: str, ids: Sequence[str]) -> int:
    s = load()
    if not s.kafka.bootstrap_servers:
        raise SystemExit("syncgov dlq: KAFKA_BOOTSTRAP_SERVERS is required")
    entries = open_entries(s)
    if action == "list":
        for e in entries:
            r = e.record
            order = r["milestone"].get("order_id") or r["milestone"].get("sku") or ""
            print(f"{r['milestone_id']}  {r['type']:<18} {order:<14} {r['status']}  {r['detail'][:120]}")
        print(f"{len(entries)} open ERP dead letter(s)")
        return 0
    chosen = [e for e in entries if not ids or e.milestone_id in ids]
    unknown = sorted(set(ids) - {e.milestone_id for e in chosen})
    if unknown:
        print(f"syncgov dlq: not open: {', '.join(unknown)}")
        return 1
    print(f"re-driven {redrive(s, chosen)} milestone(s)")
    return 0
