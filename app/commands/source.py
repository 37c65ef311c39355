"""`syncgov source`: the ERP order-release connector.

Polls the ERP through the port (``ErpPort.releases``: Tryton's customer shipments, or the
generic adapter's ``ERP_HTTP_FEED``; its own share of the quota, ``ERP_SOURCE_RATE_PER_S``),
publishes OrderReleased / OrderChanged / OrderCancelled (Avro, key = warehouse_id) to the
events topic, then stores the cursor on the cursor topic (one record key per adapter, so a
Tryton cursor is never read as another ERP's). Events are flushed before the cursor moves: a
crash re-polls and re-publishes the same event ids, which governance deduplicates.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from typing import Any

import orjson
from aiohttp import web
from confluent_kafka import Producer

from app import metrics
from app.core.keys import event_key
from app.erp import ErpPort, make_port
from app.erp.port import TransientErpError
from app.kafka import codec
from app.kafka.clients import PRODUCER_DEFAULTS, client_config, create_topics, read_all, send
from app.settings import Settings, SettingsError, load

log = logging.getLogger("syncgov.source")
CURSOR_KEY = b"cursor"  # the Tryton adapter's (the key it always had); others: cursor:<adapter>


def cursor_key(s: Settings) -> bytes:
    return CURSOR_KEY if s.erp.adapter == "tryton" else f"cursor:{s.erp.adapter}".encode()


def load_cursor(s: Settings) -> Any:
    """The last stored cursor of this adapter (JSON), or None."""
    last: Any = None
    key = cursor_key(s)
    for rec in read_all(s.kafka.bootstrap_servers, s.topics.source_cursor, kafka=s.kafka):
        if rec.key == key:
            last = orjson.loads(rec.value)
    return last


def encoded(event: dict[str, Any]) -> bytes:
    """An event as the source publishes it: Avro; or, when the ERP's data does not fit the
    contract (a product without a code, a fractional quantity), the same fields as JSON, which
    the worker dead-letters with the contract's reason (`syncgov dlq list`; re-drive it with
    ``--fixed`` once the ERP's data is corrected). One bad order neither stops the releases of
    all the others nor is skipped silently."""
    try:
        return codec.encode_event(event)
    except codec.EncodeError as exc:
        log.warning("%s %s of warehouse %s does not fit the contract (%s): published as JSON for the worker to "
                    "dead-letter with its reason", event.get("type"), event.get("order_id"), event.get("warehouse_id"),
                    exc)
        return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS, default=str)


def publish(producer: Producer, s: Settings, events: list[dict[str, Any]], cursor: Any) -> None:
    for event in events:
        send(producer, s.topics.events, encoded(event), event_key(event))
    if producer.flush(30) != 0:
        raise RuntimeError("events not delivered to Kafka within 30 s; the cursor stays where it was")
    send(producer, s.topics.source_cursor, orjson.dumps(cursor), cursor_key(s))
    if producer.flush(30) != 0:
        raise RuntimeError("cursor not stored within 30 s")


async def serve_metrics(host: str, port: int) -> web.AppRunner:
    """``/metrics`` (the connector's figures: last poll, failures, events, its ERP client's
    under ``role="source"``) and ``/healthz`` (the event loop answers) on ``host:port``."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("serving /metrics and /healthz on %s:%d", host, port)
    return runner


async def run(s: Settings, once: bool) -> int:
    """Poll until stopped (or, with ``once``, until the ERP has nothing new)."""
    bootstrap = s.kafka.bootstrap_servers
    create_topics(bootstrap, [s.topics.events, s.topics.source_cursor], s.topics.partitions, s.kafka,
                  replication_factor=s.topics.replication_factor)
    producer = Producer({**client_config(bootstrap, s.kafka), **PRODUCER_DEFAULTS, "linger.ms": 0, "batch.num.messages": 1})
    adapter: ErpPort = make_port(dataclasses.replace(s.erp, rate_per_s=s.erp.source_rate_per_s, burst=1), role="source")
    cursor = load_cursor(s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    total = 0
    web = await serve_metrics(s.worker.web_host, s.erp.source_web_port) if s.erp.source_web_port else None
    try:
        while not stop.is_set():
            try:
                events, cursor = await adapter.releases(
                    cursor, page_size=s.erp.source_page_size, overlap_s=s.erp.source_overlap_s
                )
            except TransientErpError as exc:  # throttled, 5xx, timeout, refused: wait, poll again
                metrics.SOURCE_POLL_FAILURES.inc()
                wait = max(exc.retry_after_s or 0.0, s.erp.source_poll_s)
                log.warning("ERP not answering (%s); polling again in %.1f s", exc, wait)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=wait)
                except TimeoutError:
                    pass
                continue
            publish(producer, s, events, cursor)
            metrics.SOURCE_EVENTS.inc(len(events))
            metrics.SOURCE_LAST_POLL.set(time.time())
            total += len(events)
            if events:
                log.info("published %d order events", len(events))
            elif once:
                break
            if not once:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=s.erp.source_poll_s)
                except TimeoutError:
                    pass
    finally:
        await adapter.close()
        if web is not None:
            await web.cleanup()
    from app.commands.progress import summary

    summary("source", f"published {total} order events", published=total)  # a JSON line with JSON logs
    return 0


def run_source(once: bool = False) -> int:
    settings = load()
    if not settings.kafka.bootstrap_servers:
        raise SystemExit("syncgov source: KAFKA_BOOTSTRAP_SERVERS is required")
    if settings.erp.adapter == "http" and not settings.erp.http_feed:
        raise SettingsError("ERP_HTTP_FEED='': required by `syncgov source` when ERP_ADAPTER=http "
                            "(the release feed to poll)")
    logging.basicConfig(level=settings.worker.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return asyncio.run(run(settings, once))
