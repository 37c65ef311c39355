"""The worker on the real (embedded) broker: events in, milestones and dead letters out."""
from __future__ import annotations

import orjson
import pytest

from app.kafka import codec
from app.kafka.clients import produce, read_all
from tests.integration.conftest import read_milestones, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.apache_kafka]


def _release(i: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"rel-{i}",
            "type": "OrderReleased",
            "occurred_at": f"2026-11-27T10:00:{i:02d}.000Z",
            "source": "erp",
            "warehouse_id": "WH1",
            "order_id": f"O-{i}",
            "lines": [{"line_no": 1, "sku": "SKU-0001", "qty": 2}],
        }
    )


def test_order_released_becomes_order_accepted_and_garbage_a_dead_letter(kafka_bootstrap, worker_factory) -> None:
    worker = worker_factory()
    prefix = worker_factory.prefix
    records = [(b"WH1", _release(i)) for i in range(5)]
    records.append((b"WH1", b"{not json"))
    records.append((b"WH1", _release(0)))  # a redelivery: ignored
    produce(kafka_bootstrap, f"{prefix}.events", records)

    def done() -> bool:
        return len(read_milestones(kafka_bootstrap, prefix)) >= 6

    wait_for(done, 60, "6 milestones")
    got = read_milestones(kafka_bootstrap, prefix)
    accepted = sorted(m["order_id"] for m in got if m["type"] == "OrderAccepted")
    assert accepted == [f"O-{i}" for i in range(5)]
    assert all(m["version"] == 1 for m in got if m["type"] == "OrderAccepted")
    invalid = [m for m in got if m["type"] == "SyncException"]
    assert [m["code"] for m in invalid] == ["INVALID_EVENT"]
    letters = [codec.decode_dead_letter(r.value) for r in read_all(kafka_bootstrap, f"{prefix}.dead-letters")]
    assert len(letters) == 1
    assert letters[0]["raw"] == b"{not json"
    assert letters[0]["reason"].startswith("undecodable")
    assert letters[0]["topic"] == f"{prefix}.events"
    status, body = worker.get("/metrics")
    text = body.decode()
    assert status == 200
    assert 'syncgov_events_total{source="erp",type="OrderReleased"} 6.0' in text  # the redelivery is counted too
    assert 'syncgov_dead_letters_total{reason="undecodable"} 1.0' in text
    assert 'syncgov_table_keys{table="orders"} 5.0' in text
    assert 'syncgov_consumer_lag_records{partition=' in text
