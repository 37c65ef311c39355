"""Dead letters and backfill on a real broker: `syncgov export` writes a topic's partitions
to files `syncgov replay` reads back to the same milestones (from an offset or a time), and
`syncgov dlq` lists an input dead letter and re-drives a fixed record into the events topic
with the original key, where the worker governs it."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from app.commands import dlq
from app.commands.export import export
from app.commands.replay import PartitionedReplay, process_record, run_replay
from app.core.keys import event_key, order_key
from app.core.model import DeadLetter
from app.core.timeutil import format_ts
from app.kafka import codec
from app.kafka.clients import create_topics, produce, read_all
from app.settings import load
from tests.integration.conftest import wait_for
from tests.integration.streams import PARTITIONS, simulate

pytestmark = [pytest.mark.kafka, pytest.mark.apache_kafka]


def _topic(bootstrap: str, name: str) -> str:
    create_topics(bootstrap, [name], PARTITIONS)
    return name


def _partitions(bootstrap: str, topic: str) -> list[list[bytes]]:
    parts: list[list[bytes]] = [[] for _ in range(PARTITIONS)]
    for rec in read_all(bootstrap, topic):
        parts[rec.partition].append(rec.value)
    return parts


def _replayed(files: list[Path], tmp: Path) -> tuple[list[dict], int]:  # type: ignore[type-arg]
    out, dead = tmp / "milestones.ndjson", tmp / "dead.ndjson"
    assert run_replay([str(f) for f in files], str(out), str(dead)) == 0
    return [orjson.loads(line) for line in out.read_bytes().splitlines()], len(dead.read_bytes().splitlines())


def _expected(parts: list[list[bytes]]) -> tuple[list[dict], int]:  # type: ignore[type-arg]
    """What the topic's records, read straight from Kafka, give through the worker's two
    stages (each record decoded as the worker decodes it: JSON or Avro)."""
    run = PartitionedReplay(len(parts))
    outputs = []
    for p, records in enumerate(parts):
        for raw in records:
            outputs += run.route(p, process_record(run.engines[p], raw))
    for p in range(len(parts)):
        outputs += run.end_partition(p)
    outputs += run.finish()
    return ([o.to_dict() for o in outputs if not isinstance(o, DeadLetter)],  # type: ignore[union-attr]
            sum(isinstance(o, DeadLetter) for o in outputs))


@pytest.mark.parametrize("binary", [False, True], ids=["ndjson", "framed"])
def test_export_round_trips_through_replay(kafka_bootstrap: str, tmp_path: Path, binary: bool) -> None:
    topic = _topic(kafka_bootstrap, f"export{int(time.time() * 1000)}{int(binary)}.events")
    records = simulate(orders=25)
    if binary:  # some Avro single-object records and an undecodable binary one: no longer one-line JSON
        records = [(k, codec.encode_event(orjson.loads(v)) if i % 3 == 0 and v.startswith(b"{") and _ok(v) else v)
                   for i, (k, v) in enumerate(records)] + [(b"WH1", b"\xc3\x01\x00broken")]
    produce(kafka_bootstrap, topic, records)
    s = load({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap})
    written = export(s, topic, tmp_path / "out")
    files = [path for _, (path, _) in sorted(written.items())]
    assert len(files) == PARTITIONS and all(f.suffix == (".bin" if binary else ".ndjson") for f in files)
    assert sum(n for _, n in written.values()) == len(records)
    assert sorted(files) == files  # a shell glob lists them in partition order
    parts = _partitions(kafka_bootstrap, topic)
    milestones, dead = _replayed(files, tmp_path)
    expected, expected_dead = _expected(parts)
    assert milestones == expected and dead == expected_dead
    assert len(milestones) > 50 and dead >= 1  # a real stream: milestones and its faulty records


def _ok(raw: bytes) -> bool:
    try:
        codec.encode_event(orjson.loads(raw))
        return True
    except Exception:  # not a valid event for its schema: it stays JSON
        return False


def test_export_from_a_time_or_an_offset(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = _topic(kafka_bootstrap, f"exporttime{int(time.time() * 1000)}.events")
    first = [(f"k{i}".encode(), orjson.dumps({"n": i})) for i in range(40)]
    produce(kafka_bootstrap, topic, first)
    time.sleep(1.5)
    since = format_ts(int(time.time() * 1000))
    second = [(f"k{i}".encode(), orjson.dumps({"n": 100 + i})) for i in range(40)]
    produce(kafka_bootstrap, topic, second)
    done = subprocess.run([sys.executable, "-m", "app.cli", "export", topic, "--output", str(tmp_path / "t"),
                           "--from-time", since], env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    files = sorted((tmp_path / "t").glob(f"{topic}.p*.ndjson"))
    assert len(files) == PARTITIONS and len(done.stdout.splitlines()) == PARTITIONS
    got = sorted(orjson.loads(line)["n"] for f in files for line in f.read_bytes().splitlines())
    assert got == [100 + i for i in range(40)]
    assert "80 records" not in done.stderr and "40 records" in done.stderr
    # from an offset: each partition from there on
    s = load({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap})
    parts = _partitions(kafka_bootstrap, topic)
    written = export(s, topic, tmp_path / "o", from_offset=5)
    for p, (path, n) in written.items():
        assert path.read_bytes().splitlines() == parts[p][5:] and n == max(0, len(parts[p]) - 5)


def test_an_input_dead_letter_is_listed_and_re_driven_fixed_with_its_original_key(
        kafka_bootstrap: str, worker_factory, tmp_path: Path) -> None:
    worker = worker_factory()
    env = {**os.environ, **worker.env, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "LOG_FORMAT": "text"}
    events = worker.env["TOPIC_EVENTS"]
    at = format_ts(int(time.time() * 1000) - 60_000)
    good = {"event_id": "rel-1", "type": "OrderReleased", "occurred_at": at, "source": "erp", "warehouse_id": "WH1",
            "order_id": "O-77", "lines": [{"line_no": 1, "sku": "SKU-0001", "qty": 2}]}
    broken = orjson.dumps({**good, "lines": [{"line_no": 1, "sku": "SKU-0001", "qty": "two"}]})
    key = order_key("WH1", "O-77")
    produce(kafka_bootstrap, events, [(key, broken)])
    settings = load(env)
    wait_for(lambda: bool(dlq.open_input_entries(settings)), 60, "the input dead letter")
    listed = subprocess.run([sys.executable, "-m", "app.cli", "dlq", "list", "--json"], env=env,
                            capture_output=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    entry, = [e for e in orjson.loads(listed.stdout) if e["kind"] == "input"]
    assert entry["raw"] == broken.decode() and entry["topic"] == events and "qty" in entry["reason"]
    text = subprocess.run([sys.executable, "-m", "app.cli", "dlq", "list", "--kind", "input"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert text.stdout.splitlines()[-1] == "1 open input dead letter(s)" and entry["record_id"] in text.stdout

    fixed = tmp_path / "fixed.json"
    fixed.write_bytes(orjson.dumps(good) + b"\n")
    done = subprocess.run([sys.executable, "-m", "app.cli", "dlq", "replay", "--id", entry["record_id"], "--fixed",
                           str(fixed)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "re-driven 1 input record(s)" in done.stdout
    last = list(read_all(kafka_bootstrap, events))[-1]
    assert last.key == key == event_key(good) and last.value == orjson.dumps(good)  # the original key
    wait_for(lambda: b'syncgov_milestones_total{type="OrderAccepted"} 1.0' in worker.get("/metrics")[1], 60,
             "the fixed record governed: OrderAccepted")
    assert dlq.open_input_entries(settings) == []
    again = subprocess.run([sys.executable, "-m", "app.cli", "dlq", "replay", "--id", entry["record_id"]], env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and f"not open: {entry['record_id']}" in again.stderr
