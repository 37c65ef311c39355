"""The embedded broker: starts, answers metadata, stops without orphans."""
from __future__ import annotations

import os

import pytest
from confluent_kafka import Consumer, Producer

from app.kafka.embedded import EmbeddedBroker, free_port


@pytest.mark.kafka
def test_embedded_broker_round_trip_and_clean_stop() -> None:
    broker = EmbeddedBroker().start()
    pid = broker.process.pid if broker.process else 0
    try:
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        producer.produce("broker-smoke", key=b"k", value=b"hello")
        assert producer.flush(10) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": "smoke",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
            }
        )
        consumer.subscribe(["broker-smoke"])
        got = []
        for _ in range(30):
            got += [m.value() for m in consumer.consume(10, 1.0) if m.error() is None]
            if got:
                break
        consumer.close()
        assert got == [b"hello"]
    finally:
        broker.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_free_port_is_bindable() -> None:
    assert 1024 <= free_port() <= 65535
