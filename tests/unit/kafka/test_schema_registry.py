"""Schema Registry: the Confluent wire format read and written through confluent-kafka's
``SchemaRegistryClient``, ``AvroSerializer`` and ``AvroDeserializer``, against the stand-in
registry of ``tests/fixtures/schema_registry.py`` (why not a real one: the README)."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from app.commands.replay import frame_avro
from app.core.model import Milestone
from app.kafka import codec, schema_registry
from app.settings import SchemaRegistrySettings, SettingsError, load, load_section
from tests.fixtures.schema_registry import FakeRegistry

pytestmark = pytest.mark.registry

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "golden"
PASSWORD = "sr-secret-Zq81!pw"
RELEASE = {"event_id": "r1", "type": "OrderReleased", "source": "erp", "warehouse_id": "WH1", "order_id": "O1",
           "occurred_at": "2026-11-27T10:00:00.000Z", "lines": [{"line_no": 1, "sku": "S1", "qty": 2}]}


@pytest.fixture(autouse=True)
def no_registry_after() -> Iterator[None]:
    yield
    codec.use_registry(None)


def settings_for(registry: FakeRegistry, **env: str) -> Any:
    return load({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "SCHEMA_REGISTRY_URL": registry.url, **env})


def serializer(registry: FakeRegistry, name: str) -> AvroSerializer:
    """A producer's serializer (another team's producer, RecordNameStrategy subjects)."""
    client = SchemaRegistryClient({"url": registry.url})
    return AvroSerializer(client, codec.schema_source(name),
                          conf={"auto.register.schemas": True,
                                "subject.name.strategy": lambda ctx, record_name: record_name})


def timestamps(name: str) -> set[str]:
    """The schema's top-level timestamp-millis fields."""
    def is_ts(t: Any) -> bool:
        return any(isinstance(b, dict) and b.get("logicalType") == "timestamp-millis"
                   for b in (t if isinstance(t, list) else [t]))
    return {f["name"] for f in orjson.loads(codec.schema_source(name))["fields"] if is_ts(f["type"])}


def to_ms(record: dict[str, Any], name: str = "syncgov.event.OrderReleased") -> dict[str, Any]:
    """A record with its ISO timestamps as int ms (what fastavro's timestamp-millis takes too)."""
    ts = timestamps(name)
    return {k: (int(datetime.fromisoformat(v).timestamp() * 1000) if k in ts and isinstance(v, str) else v)
            for k, v in record.items()}


def from_datetimes(record: dict[str, Any]) -> dict[str, Any]:
    """AvroDeserializer's datetimes back to int ms."""
    return {k: (int(v.timestamp() * 1000) if isinstance(v, datetime) else v) for k, v in record.items()}


CTX = SerializationContext("syncgov.events", MessageField.VALUE)


# -- start-up -------------------------------------------------------------------------------


def test_start_up_registers_every_schema_under_its_record_name(fake_registry: FakeRegistry) -> None:
    ids = schema_registry.setup(settings_for(fake_registry))
    assert set(ids) == set(codec.schema_names())
    assert sorted(fake_registry.subjects) == sorted(codec.schema_names())
    for name, schema_id in ids.items():
        assert fake_registry.id_of(name) == schema_id
        assert orjson.loads(fake_registry.schemas[schema_id]["schema"]) == orjson.loads(codec.schema_source(name))
    assert codec.registry_configured()
    # a second start-up finds them registered: the same ids, no new subject versions
    assert schema_registry.setup(settings_for(fake_registry)) == ids
    assert all(len(versions) == 1 for versions in fake_registry.subjects.values())


def test_topic_record_subjects_follow_the_topics(fake_registry: FakeRegistry) -> None:
    schema_registry.setup(settings_for(fake_registry, SCHEMA_REGISTRY_SUBJECT_STRATEGY="topic_record",
                                       TOPIC_EVENTS="wms.events", TOPIC_EXCEPTIONS="ops.exceptions"))
    assert "wms.events-syncgov.event.OrderReleased" in fake_registry.subjects
    assert "syncgov.milestones-syncgov.milestone.OrderPicked" in fake_registry.subjects
    assert "ops.exceptions-syncgov.milestone.SyncException" in fake_registry.subjects
    assert "syncgov.dead-letters-syncgov.ops.DeadLetter" in fake_registry.subjects


def test_an_incompatible_schema_stops_start_up_naming_its_subject(fake_registry: FakeRegistry) -> None:
    """Another version of OrderPicked is registered whose data ours cannot read (it lacks our
    required ``order_id``): start-up fails, naming the subject; the others are still checked."""
    name = "syncgov.milestone.OrderPicked"
    theirs = orjson.loads(codec.schema_source(name))
    theirs["fields"] = [f for f in theirs["fields"] if f["name"] != "order_id"]
    fake_registry.add(name, orjson.dumps(theirs).decode())
    with pytest.raises(schema_registry.RegistryStartupError) as err:
        schema_registry.setup(settings_for(fake_registry))
    assert len(err.value.errors) == 1
    assert f"subject {name!r}" in err.value.errors[0] and "incompatible" in err.value.errors[0]
    assert fake_registry.subjects[name] == [1]  # not registered over it
    assert not codec.registry_configured()


def test_the_worker_refuses_to_start_on_an_incompatible_schema(fake_registry: FakeRegistry, tmp_path: Path) -> None:
    """`syncgov worker` exits 2 (configuration) before it touches Kafka, naming the subject;
    the registry password (sent as basic auth) is not in its output."""
    name = "syncgov.event.PickConfirmed"
    theirs = orjson.loads(codec.schema_source(name))
    theirs["fields"][0]["type"] = "long"  # event_id: string -> long
    fake_registry.add(name, orjson.dumps(theirs).decode())
    fake_registry.auth = ("syncgov", PASSWORD)
    done = cli({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "SCHEMA_REGISTRY_URL": fake_registry.url,
                "SCHEMA_REGISTRY_USERNAME": "syncgov", "SCHEMA_REGISTRY_PASSWORD": PASSWORD,
                "WORKER_DATA_DIR": str(tmp_path / "w"), "LOG_LEVEL": "debug"}, "worker")
    assert done.returncode == 2, done
    assert f"schema registry subject {name!r}" in done.stderr and "incompatible" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert any(h.startswith("Basic ") for h in fake_registry.authorizations)


def test_without_auto_registration_a_missing_schema_names_its_subject(fake_registry: FakeRegistry) -> None:
    for name in codec.schema_names():
        if name != "syncgov.event.ItemScanned":
            fake_registry.add(name, codec.schema_source(name))
    with pytest.raises(schema_registry.RegistryStartupError) as err:
        schema_registry.setup(settings_for(fake_registry, SCHEMA_REGISTRY_AUTO_REGISTER="false"))
    assert len(err.value.errors) == 1
    assert "'syncgov.event.ItemScanned'" in err.value.errors[0] and "not registered" in err.value.errors[0]
    assert fake_registry.calls("POST", "/subjects/syncgov.event.ItemScanned/versions") == 0


def test_an_unreachable_registry_is_a_failure_not_a_configuration_error() -> None:
    s = load({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "SCHEMA_REGISTRY_URL": "http://127.0.0.1:9"})
    with pytest.raises(schema_registry.RegistryUnavailable, match=r"schema registry http://127\.0\.0\.1:9"):
        schema_registry.setup(s)


# -- input ----------------------------------------------------------------------------------


def test_a_producers_confluent_records_decode_like_single_object(fake_registry: FakeRegistry) -> None:
    schema_registry.setup(settings_for(fake_registry))
    raw = serializer(fake_registry, "syncgov.event.OrderReleased")(to_ms(RELEASE), CTX)
    assert raw[:1] == b"\x00"
    assert codec.decode_input(raw) == codec.decode_input(codec.encode_event(RELEASE))
    assert codec.decode_input(raw)["occurred_at"] == to_ms(RELEASE)["occurred_at"]


def test_an_old_writer_schema_is_resolved_to_the_current_one(fake_registry: FakeRegistry) -> None:
    """A producer still on an older version (a field we added since, with its default)."""
    name = "syncgov.event.OrderReleased"
    old = orjson.loads(codec.schema_source(name))
    added = next(f for f in old["fields"] if "default" in f)
    old["fields"] = [f for f in old["fields"] if f is not added]
    old_id = fake_registry.add(name, orjson.dumps(old).decode())
    schema_registry.setup(settings_for(fake_registry))
    client = SchemaRegistryClient({"url": fake_registry.url})
    producer = AvroSerializer(client, orjson.dumps(old).decode(), conf={
        "use.schema.id": old_id, "auto.register.schemas": False, "subject.name.strategy": lambda ctx, n: n})
    record = {k: v for k, v in to_ms(RELEASE).items() if k != added["name"]}
    got = codec.decode_input(producer(record, CTX))
    assert got[added["name"]] == added["default"]
    assert got["order_id"] == "O1"


def test_each_schema_id_is_fetched_once(fake_registry: FakeRegistry) -> None:
    schema_registry.setup(settings_for(fake_registry))
    write = serializer(fake_registry, "syncgov.event.OrderReleased")
    records = [write(to_ms({**RELEASE, "event_id": f"r{i}", "order_id": f"O{i}"}), CTX) for i in range(200)]
    schema_id = int.from_bytes(records[0][1:5], "big")
    before = fake_registry.calls("GET", f"/schemas/ids/{schema_id}")
    decoded = [codec.decode_input(r) for r in records]
    assert [d["order_id"] for d in decoded] == [f"O{i}" for i in range(200)]
    assert fake_registry.calls("GET", f"/schemas/ids/{schema_id}") - before <= 1


def test_an_unknown_schema_id_is_a_dead_letter_naming_the_id(fake_registry: FakeRegistry) -> None:
    schema_registry.setup(settings_for(fake_registry))
    raw = codec.confluent_header(4242) + codec.encode_event(RELEASE)[codec.HEADER_LEN:]
    reason = codec.decode_input(raw)
    assert isinstance(reason, str)
    assert reason.startswith("undecodable: Confluent wire format (magic byte 0), schema id 4242: unknown to the "
                             "schema registry"), reason
    asked = fake_registry.calls("GET", "/schemas/ids/4242")
    assert asked == 1
    assert codec.decode_input(raw) == reason
    assert fake_registry.calls("GET", "/schemas/ids/4242") == asked  # not asked again for every record


def test_a_protobuf_schema_id_is_a_dead_letter(fake_registry: FakeRegistry) -> None:
    schema_registry.setup(settings_for(fake_registry))
    proto_id = fake_registry.add("other-value", 'syntax = "proto3"; message M { string a = 1; }', "PROTOBUF")
    reason = codec.decode_input(codec.confluent_header(proto_id) + b"\x0a\x01a")
    assert reason == (f"undecodable: Confluent wire format (magic byte 0), schema id {proto_id}: a PROTOBUF schema, "
                      "not Avro")


def test_a_registry_down_on_a_new_id_is_an_error_not_a_dead_letter(fake_registry: FakeRegistry) -> None:
    """A record is never dead-lettered because the registry did not answer: the worker stops
    (and its records are read again after the restart)."""
    s = load_section(SchemaRegistrySettings, {"SCHEMA_REGISTRY_URL": "http://127.0.0.1:9"})
    schema_registry.setup_decoding(s)
    with pytest.raises(schema_registry.RegistryUnavailable):
        codec.decode_input(codec.confluent_header(7) + b"\x02")


def test_without_a_registry_confluent_records_stay_dead_letters() -> None:
    codec.use_registry(None)
    assert codec.decode_input(codec.confluent_header(9) + b"\x02").startswith(
        "undecodable: Confluent wire format (magic byte 0), schema id 9: unknown schema (no schema registry")


# -- output ---------------------------------------------------------------------------------


def test_confluent_output_is_what_avro_serializer_writes_and_deserializer_reads(fake_registry: FakeRegistry) -> None:
    ids = schema_registry.setup(settings_for(fake_registry, OUTPUT_FORMAT="confluent"))
    expected = [orjson.loads(line) for line in (GOLDEN / "expected_milestones.ndjson").read_bytes().splitlines()[:40]]
    client = SchemaRegistryClient({"url": fake_registry.url})
    reader = AvroDeserializer(client)
    for m in expected:
        record = Milestone.from_dict(m).to_dict()
        name = f"syncgov.milestone.{record['type']}"
        ours = codec.encode_milestone(record)
        assert ours[:5] == b"\x00" + ids[name].to_bytes(4, "big")
        theirs = AvroSerializer(client, codec.schema_source(name), conf={
            "auto.register.schemas": False, "subject.name.strategy": lambda ctx, n: n})(to_ms(record, name), CTX)
        assert ours == theirs
        read = reader(ours, CTX)
        assert isinstance(read, dict)
        assert Milestone.from_dict(from_datetimes(read)).to_dict() == record
        assert Milestone.from_dict(codec.decode(ours)).to_dict() == record
    letter = codec.encode_dead_letter(raw=b"x", reason="r", record_id="id", topic="t", partition=0, offset=1,
                                      failed_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert letter[:5] == codec.confluent_header(ids[codec.DEAD_LETTER_SCHEMA])
    assert codec.decode_dead_letter(letter)["reason"] == "r"


def test_writing_confluent_records_asks_the_registry_nothing(fake_registry: FakeRegistry) -> None:
    schema_registry.setup(settings_for(fake_registry, OUTPUT_FORMAT="confluent"))
    asked = len(fake_registry.requests)
    for line in (GOLDEN / "expected_milestones.ndjson").read_bytes().splitlines()[:200]:
        assert codec.encode_milestone(Milestone.from_dict(orjson.loads(line)).to_dict())[:1] == b"\x00"
    assert codec.encode_event(RELEASE)[:1] == b"\x00"
    assert fake_registry.requests[asked:] == []


def test_single_object_stays_the_default_output(fake_registry: FakeRegistry) -> None:
    schema_registry.setup(settings_for(fake_registry))
    assert codec.encode_event(RELEASE)[:2] == codec.MAGIC


# -- replay ---------------------------------------------------------------------------------


def cli(env: dict[str, str], *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("KAFKA_", "ERP_", "WORKER_", "TOPIC_", "SCHEMA_REGISTRY_", "OUTPUT_"))}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env={**base, **env}, cwd=ROOT,
                          input=stdin.decode("latin-1") if stdin is not None else None, capture_output=True,
                          text=True, encoding="latin-1", timeout=120, check=False)


def test_replay_reads_confluent_framed_input_through_the_registry(fake_registry: FakeRegistry, tmp_path: Path) -> None:
    """The recorded trace, Confluent-framed by AvroSerializer, replays to the same milestones
    as its NDJSON; one record with an id the registry lacks is a dead letter naming it."""
    events = []
    for line in (GOLDEN / "trace.ndjson").read_bytes().splitlines()[:300]:
        event = orjson.loads(line)
        try:
            codec.encode_event(event)
        except codec.EncodeError:  # the trace's poison records: no producer's serializer writes those
            continue
        events.append(event)
    writers: dict[str, AvroSerializer] = {}
    stream = b""
    for e in events:
        name = f"{codec.EVENT_NAMESPACE}.{e['type']}"
        write = writers.setdefault(name, serializer(fake_registry, name))
        stream += frame_avro(write(to_ms(e, name), CTX))
    stream += frame_avro(codec.confluent_header(999) + b"\x02")
    ndjson = tmp_path / "trace.ndjson"
    ndjson.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    avro = tmp_path / "trace.avro"
    avro.write_bytes(stream)
    dead = tmp_path / "dead.ndjson"
    env = {"SCHEMA_REGISTRY_URL": fake_registry.url}
    framed = cli(env, "replay", str(avro), "--dead-letter", str(dead), "--quiet")
    plain = cli({}, "replay", str(ndjson), "--quiet")
    assert framed.returncode == 0 and plain.returncode == 0, framed.stderr + plain.stderr
    extra = [line for line in framed.stdout.splitlines() if "schema id 999" in line]
    assert len(extra) == 1 and orjson.loads(extra[0])["code"] == "INVALID_EVENT"  # rule 8: the dead letter's exception
    assert [line for line in framed.stdout.splitlines() if line not in extra] == plain.stdout.splitlines()
    assert plain.stdout.count("\n") > 50
    reasons = [orjson.loads(line)["reason"] for line in dead.read_bytes().splitlines()]
    assert reasons == ["undecodable: Confluent wire format (magic byte 0), schema id 999: unknown to the schema "
                       "registry (Schema 999 not found, error code 40403)"]
    assert fake_registry.calls("POST", "/subjects/syncgov.event.ItemScanned/versions") == 1  # the producer's only


# -- settings -------------------------------------------------------------------------------


def test_registry_settings_are_checked_together() -> None:
    with pytest.raises(SettingsError) as err:
        load({"KAFKA_BOOTSTRAP_SERVERS": "h:1", "OUTPUT_FORMAT": "confluent", "SCHEMA_REGISTRY_USERNAME": "u"})
    text = str(err.value)
    assert "OUTPUT_FORMAT='confluent': needs SCHEMA_REGISTRY_URL" in text
    assert "SCHEMA_REGISTRY_USERNAME and SCHEMA_REGISTRY_PASSWORD" in text


def test_registry_credentials_never_show() -> None:
    s = load({"KAFKA_BOOTSTRAP_SERVERS": "h:1", "SCHEMA_REGISTRY_URL": "https://sr.example:8081",
              "SCHEMA_REGISTRY_USERNAME": "key", "SCHEMA_REGISTRY_PASSWORD": PASSWORD})
    assert PASSWORD not in repr(s) and PASSWORD not in str(s.schema_registry)
    assert schema_registry.client_config(s.schema_registry)["basic.auth.user.info"] == f"key:{PASSWORD}"
    with pytest.raises(SettingsError) as err:
        load({"KAFKA_BOOTSTRAP_SERVERS": "h:1", "SCHEMA_REGISTRY_URL": f"https://key:{PASSWORD}@sr.example"})
    assert "SCHEMA_REGISTRY_URL" in str(err.value) and "credentials" in str(err.value)
    assert PASSWORD not in str(err.value)


def test_the_registry_password_may_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "sr-password"
    secret.write_text(PASSWORD + "\n")
    s = load_section(SchemaRegistrySettings, {"SCHEMA_REGISTRY_URL": "http://h:1", "SCHEMA_REGISTRY_USERNAME": "u",
                                              "SCHEMA_REGISTRY_PASSWORD_FILE": str(secret)})
    assert s.password.value == PASSWORD
