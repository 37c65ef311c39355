"""The worker with a Schema Registry: a producer's Confluent-framed events (confluent-kafka's
``AvroSerializer``) in, milestones out in the Confluent framing (``OUTPUT_FORMAT=confluent``)
that its ``AvroDeserializer`` reads; an unknown schema id is a dead letter naming the id.
The registry is the stand-in of ``tests/fixtures/schema_registry.py`` (see the README)."""
from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import fastavro
import orjson
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from app.core.keys import order_key
from app.kafka import codec
from app.kafka.clients import produce, read_all
from tests.fixtures.schema_registry import FakeRegistry
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.apache_kafka, pytest.mark.registry]

ORDERS = 6


def release(i: int) -> dict[str, Any]:
    return {"event_id": f"rel-{i}", "type": "OrderReleased", "source": "erp", "warehouse_id": "WH1",
            "order_id": f"O-{i}", "occurred_at": 1795773600000 + i * 1000,
            "lines": [{"line_no": 1, "sku": "SKU-0001", "qty": 2}]}


def test_confluent_events_in_confluent_milestones_out(kafka_bootstrap: str, worker_factory: Any,
                                                      fake_registry: FakeRegistry) -> None:
    worker_factory(SCHEMA_REGISTRY_URL=fake_registry.url, OUTPUT_FORMAT="confluent")
    prefix = worker_factory.prefix
    client = SchemaRegistryClient({"url": fake_registry.url})
    ctx = SerializationContext(f"{prefix}.events", MessageField.VALUE)
    write = AvroSerializer(client, codec.schema_source("syncgov.event.OrderReleased"),
                           conf={"auto.register.schemas": False, "subject.name.strategy": lambda c, name: name})
    wait_for(lambda: "syncgov.event.OrderReleased" in fake_registry.subjects, 60, "the worker's start-up registration")
    records = [(order_key("WH1", f"O-{i}"), write(release(i), ctx)) for i in range(ORDERS)]
    unknown = codec.confluent_header(777) + records[0][1][5:]
    records.append((b"WH1", unknown))
    produce(kafka_bootstrap, f"{prefix}.events", records)

    def milestones() -> list[Any]:
        return list(read_all(kafka_bootstrap, f"{prefix}.milestones", timeout_s=5))

    wait_for(lambda: len(milestones()) >= ORDERS, 90, f"{ORDERS} milestones")
    read = AvroDeserializer(client)
    got = milestones()
    assert all(r.value[:1] == b"\x00" for r in got)
    accepted = [read(r.value, SerializationContext(f"{prefix}.milestones", MessageField.VALUE)) for r in got]
    assert sorted(m["order_id"] for m in accepted if m["type"] == "OrderAccepted") == [f"O-{i}" for i in range(ORDERS)]
    assert all(isinstance(m["occurred_at"], datetime) for m in accepted)
    assert {r.value[1:5] for r in got} == {fake_registry.id_of("syncgov.milestone.OrderAccepted").to_bytes(4, "big")}

    wait_for(lambda: bool(list(read_all(kafka_bootstrap, f"{prefix}.dead-letters", timeout_s=5))), 60, "a dead letter")
    letters = [read(r.value, SerializationContext(f"{prefix}.dead-letters", MessageField.VALUE))
               for r in read_all(kafka_bootstrap, f"{prefix}.dead-letters")]
    assert len(letters) == 1
    assert letters[0]["raw"] == unknown
    assert letters[0]["reason"].startswith("undecodable: Confluent wire format (magic byte 0), schema id 777: "
                                           "unknown to the schema registry")
    # the worker fetched the producer's schema id once, however many records carried it
    assert fake_registry.calls("GET", f"/schemas/ids/{fake_registry.id_of('syncgov.event.OrderReleased')}") <= 1


def test_a_registry_that_does_not_answer_stops_the_worker_and_loses_nothing(
        kafka_bootstrap: str, worker_factory: Any, fake_registry: FakeRegistry) -> None:
    """A record whose schema id is new while the registry is down is not a dead letter: the
    worker exits (70) before committing, and the next worker decodes it once the registry is back."""
    first = worker_factory("w1", SCHEMA_REGISTRY_URL=fake_registry.url)
    prefix = worker_factory.prefix
    name = "syncgov.event.OrderReleased"
    old = orjson.loads(codec.schema_source(name))
    added = next(f for f in old["fields"] if "default" in f)
    old["fields"] = [f for f in old["fields"] if f is not added]
    old_id = fake_registry.add(name, orjson.dumps(old).decode())  # a producer's older version: new to the worker
    record = {k: v for k, v in release(0).items() if k != added["name"]}
    raw = codec.confluent_header(old_id) + schemaless(old, record)
    fake_registry.down = True
    produce(kafka_bootstrap, f"{prefix}.events", [(order_key("WH1", "O-0"), raw)])
    assert first.process is not None
    wait_for(lambda: first.process is not None and first.process.poll() is not None, 90, "the worker to stop")
    assert first.process.returncode == 70
    assert not list(read_all(kafka_bootstrap, f"{prefix}.dead-letters", timeout_s=3))
    fake_registry.down = False
    worker_factory("w2", SCHEMA_REGISTRY_URL=fake_registry.url)
    wait_for(lambda: bool(list(read_all(kafka_bootstrap, f"{prefix}.milestones", timeout_s=5))), 90, "the milestone")
    milestones = [codec.decode(r.value) for r in read_all(kafka_bootstrap, f"{prefix}.milestones")]
    assert [(m["type"], m["order_id"]) for m in milestones] == [("OrderAccepted", "O-0")]
    assert not list(read_all(kafka_bootstrap, f"{prefix}.dead-letters", timeout_s=3))


def schemaless(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()
