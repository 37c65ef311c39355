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


def _stores(data_dir) -> dict[str, dict[bytes, bytes]]:  # type: ignore[no-untyped-def]
    """A stopped worker's RocksDB stores (every table partition), without Faust's offset key."""
    from rocksdict import AccessType, Options, Rdict

    out = {}
    for path in sorted((data_dir / "v1" / "tables").glob("*.db")):
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            out[path.name] = {k: v for k, v in db.items() if k != b"__faust\0offset__"}
        finally:
            db.close()
    return out


def test_a_cold_start_restores_in_bulk_exactly_what_fausts_own_recovery_restores(kafka_bootstrap, worker_factory) -> None:
    from tables.records import FENCE, SEP
    from tests.integration.streams import simulate

    first = worker_factory("w1")
    prefix = worker_factory.prefix
    stream = simulate(orders=60, warehouses=2, seed=5)
    produce(kafka_bootstrap, f"{prefix}.events", stream)

    def processed() -> float:
        status, body = first.get("/metrics", timeout_s=5)
        for line in body.decode().splitlines() if status == 200 else ():
            if line.startswith("syncgov_records_processed_total "):
                return float(line.split()[1])
        return 0.0

    wait_for(lambda: processed() >= len(stream), 120, "the stream processed")
    first.stop()
    # Two new nodes with empty data dirs, one after the other: the bulk restore, then Faust's
    # record-by-record recovery of the same changelogs. Each writes its own fence record
    # when it takes the partitions over: everything else must be the same, byte for byte.
    bulk = worker_factory("bulk", WORKER_BULK_RESTORE="true")
    bulk.stop()
    faust_way = worker_factory("faust", WORKER_BULK_RESTORE="false")
    faust_way.stop()

    def state(name: str) -> dict[str, dict[bytes, bytes]]:
        return {db: {k: v for k, v in kv.items() if k.split(SEP.encode(), 2)[1:2] != [FENCE.encode()]}
                for db, kv in _stores(worker_factory.tmp_path / name).items()}

    restored = state("bulk")
    assert sum(len(kv) for kv in restored.values()) > 100
    assert restored == state("faust")
    assert {db: kv for db, kv in restored.items() if kv} == {db: kv for db, kv in state("w1").items() if kv}
    assert "bulk restore:" in (worker_factory.tmp_path / "bulk" / "worker.log").read_text()
    assert "bulk restore:" not in (worker_factory.tmp_path / "faust" / "worker.log").read_text()
