"""`syncgov source`: the ERP order-release connector.

Polls the ERP (its own share of the quota, ``ERP_SOURCE_RATE_PER_S``) for customer
shipments waiting for the warehouse, publishes OrderReleased / OrderChanged /
OrderCancelled (Avro, key = warehouse_id) to the events topic, then stores the
cursor on the cursor topic. Events are flushed before the cursor moves: a crash
re-polls and re-publishes the same event ids, which governance deduplicates.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from typing import Any

import orjson
from confluent_kafka import Producer

from app import codec
from app.core.keys import event_key
from app.erp.port import TransientErpError
from app.erp.source import SourceCursor, poll
from app.erp.tryton import TrytonAdapter
from app.kafka_io import PRODUCER_DEFAULTS, client_config, create_topics, read_all, send
from app.settings import Settings, load

log = logging.getLogger("syncgov.source")
CURSOR_KEY = b"cursor"


def load_cursor(s: Settings) -> SourceCursor:
    """The last stored cursor, or a fresh one."""
    last: dict[str, Any] | None = None
    for rec in read_all(s.kafka.bootstrap_servers, s.topics.source_cursor, kafka=s.kafka):
        if rec.key == CURSOR_KEY:
            last = orjson.loads(rec.value)
    return SourceCursor.from_json(last) if last else SourceCursor()


def publish(producer: Producer, s: Settings, events: list[dict[str, Any]], cursor: SourceCursor) -> None:
    for event in events:
        send(producer, s.topics.events, codec.encode_event(event), event_key(event))
    if producer.flush(30) != 0:
        raise RuntimeError("events not delivered to Kafka within 30 s; the cursor stays where it was")
    send(producer, s.topics.source_cursor, orjson.dumps(cursor.to_json()), CURSOR_KEY)
    if producer.flush(30) != 0:
        raise RuntimeError("cursor not stored within 30 s")


async def run(s: Settings, once: bool) -> int:
    """Poll until stopped (or, with ``once``, until the ERP has nothing new)."""
    if s.erp.adapter != "tryton":
        raise SystemExit("syncgov source: ERP_ADAPTER=tryton is required (the generic adapter has no release feed)")
    bootstrap = s.kafka.bootstrap_servers
    create_topics(bootstrap, [s.topics.events, s.topics.source_cursor], s.topics.partitions, s.kafka,
                  replication_factor=s.topics.replication_factor)
    producer = Producer({**client_config(bootstrap, s.kafka), **PRODUCER_DEFAULTS, "linger.ms": 0, "batch.num.messages": 1})
    adapter = TrytonAdapter.from_settings(dataclasses.replace(s.erp, rate_per_s=s.erp.source_rate_per_s, burst=1))
    cursor = load_cursor(s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    total = 0
    try:
        while not stop.is_set():
            try:
                events, cursor = await poll(
                    adapter.rest, cursor, page_size=s.erp.source_page_size, overlap_s=s.erp.source_overlap_s
                )
            except TransientErpError as exc:  # throttled, 5xx, timeout, refused: wait, poll again
                wait = max(exc.retry_after_s or 0.0, s.erp.source_poll_s)
                log.warning("ERP not answering (%s); polling again in %.1f s", exc, wait)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=wait)
                except TimeoutError:
                    pass
                continue
            publish(producer, s, events, cursor)
            total += len(events)
            if events:
                log.info("published %d order events (cursor %s)", len(events), cursor.write_date)
            elif once:
                break
            if not once:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=s.erp.source_poll_s)
                except TimeoutError:
                    pass
    finally:
        await adapter.close()
    from app.progress import summary

    summary("source", f"published {total} order events", published=total)  # a JSON line with JSON logs
    return 0


def run_source(once: bool = False) -> int:
    settings = load()
    if not settings.kafka.bootstrap_servers:
        raise SystemExit("syncgov source: KAFKA_BOOTSTRAP_SERVERS is required")
    logging.basicConfig(level=settings.worker.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return asyncio.run(run(settings, once))
