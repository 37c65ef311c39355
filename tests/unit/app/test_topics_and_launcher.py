"""Topic layout (no broker needed) and the Apache Kafka launcher's install errors."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from app import settings as settings_module
from app.commands.worker import prepare_topics
from app.harness.processes import ops_module
from app.kafka.clients import (
    CHANGELOG_CONFIG,
    TABLES,
    TOPIC_CONFIG,
    KafkaUnavailable,
    changelog_topic,
    ensure_topics,
    worker_topics,
)
from app.kafka.embedded import free_port


def test_worker_topics_cover_every_topic_and_changelog_with_their_configs() -> None:
    s = settings_module.load({"KAFKA_BOOTSTRAP_SERVERS": "unused:9092", "WORKER_APP_ID": "wh", "TOPIC_EVENTS": "e", "TOPIC_STOCK": "s", "TOPIC_MILESTONES": "m",
                              "TOPIC_EXCEPTIONS": "x", "TOPIC_DEAD_LETTERS": "d", "TOPIC_ERP_DEAD_LETTERS": "ed"})
    specs = {t.name: t for t in worker_topics(s)}
    changelogs = {f"wh-{t}-changelog" for t in ("governance-state", "inventory-state", "erp-ledger")}
    assert set(specs) == {"e", "s", "m", "x", "d", "ed"} | changelogs
    assert {n for n, t in specs.items() if t.copartitioned} == {"e", "s", "m"} | changelogs
    assert all(specs[n].config == CHANGELOG_CONFIG for n in changelogs)
    assert CHANGELOG_CONFIG["cleanup.policy"] == "compact"
    assert all(specs[n].config == TOPIC_CONFIG for n in ("e", "s", "m", "x", "d", "ed"))


def test_the_table_list_is_the_faust_apps_tables(tmp_path: Path) -> None:
    from tests.fixtures.worker_app import built_worker

    app = built_worker(tmp_path).app  # built, never started
    assert set(TABLES) == set(app.tables)
    assert {t.changelog_topic.get_topic_name() for t in app.tables.values()} == {
        changelog_topic(app.conf.id, name) for name in TABLES}


def test_faust_declares_the_same_topic_configs(tmp_path: Path) -> None:
    from tests.fixtures.worker_app import built_worker

    worker = built_worker(tmp_path)
    topics = worker.topics
    assert all(t.config == TOPIC_CONFIG for t in topics.all())
    changelogs = {changelog_topic(worker.settings.worker.app_id, name) for name in TABLES}
    assert {t.get_topic_name() for t in topics.all()} == {t.name for t in worker_topics(worker.settings)} - changelogs


def test_an_unreachable_broker_is_retried_with_a_line_each_time_then_a_clear_error() -> None:
    dead = f"127.0.0.1:{free_port()}"
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match=f"Kafka at {dead} did not answer a metadata request within 8 s"):
        ensure_topics(dead, [], 4, wait_s=8, say=lines.append)
    assert time.monotonic() - started < 12, "bounded"
    assert lines and all(f"Kafka at {dead} is not answering" in x and "retrying for up to" in x for x in lines)


def test_worker_start_up_with_kafka_down_exits_3_naming_the_broker(capsys, monkeypatch) -> None:
    dead = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", dead)
    s = settings_module.load({"KAFKA_BOOTSTRAP_SERVERS": dead})
    assert prepare_topics(s, wait_s=1) == 3
    err = capsys.readouterr().err
    assert f"syncgov: cannot start: Kafka at {dead} did not answer" in err


# -- the Apache Kafka launcher (ops/kafka/run.py) ------------------------------------------


def test_missing_jars_are_an_install_error_naming_the_install_step() -> None:
    run = ops_module("kafka/run.py")
    with pytest.raises(run.KafkaInstallError, match=r"Apache Kafka 0\.0\.0 is not installed.*ops/kafka/install\.sh"):
        run.libs_dir("0.0.0")


def test_missing_java_is_an_install_error(monkeypatch) -> None:
    run = ops_module("kafka/run.py")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(run.KafkaInstallError, match=r"no `java` on PATH.*openjdk-17-jre-headless"):
        run.java_binary()


def test_a_broker_start_without_jars_fails_before_anything_runs(tmp_path: Path) -> None:
    run = ops_module("kafka/run.py")
    broker = run.KafkaBroker(tmp_path / "k", version="0.0.0")
    with pytest.raises(run.KafkaInstallError):
        broker.start()
    assert broker.process is None


def test_a_cluster_id_never_looks_like_an_option(monkeypatch) -> None:
    # About one id in 64 began with "-" and Kafka's storage tool took it for an option.
    run = ops_module("kafka/run.py")
    ids = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=bytes(16))])
    monkeypatch.setattr(run.uuid, "uuid4", lambda: next(ids))
    assert run.base64.urlsafe_b64encode(b"\xf8" + bytes(15)).decode().startswith("-")
    assert run.new_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"


def test_server_properties_single_node_kraft_no_auto_create(tmp_path: Path) -> None:
    run = ops_module("kafka/run.py")
    text = run.server_properties(tmp_path, 9092, 9093, {"log.cleaner.backoff.ms": "200"})
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.cleaner.backoff.ms"] == "200"


def test_the_lane_switch_rejects_an_unknown_broker(monkeypatch) -> None:
    from tests.conftest import kafka_impl, worker_env

    monkeypatch.setenv("KAFKA_IMPL", "redpanda")
    with pytest.raises(pytest.UsageError, match="KAFKA_IMPL='redpanda'"):
        kafka_impl()
    assert worker_env("embedded")["KAFKA_SESSION_TIMEOUT_S"] == "6"
    assert worker_env("apache")["WORKER_RECOVERY_CONSISTENCY_CHECK"] == "true"
