"""Shared fixtures: the Kafka broker of this test lane, and the worker settings that go with it.

One switch chooses the broker, the environment variable ``KAFKA_IMPL``:

- ``embedded`` (the default): a fresh embedded Tansu broker per test module;
- ``apache``: one Apache Kafka broker (``ops/kafka/run.py``) for the whole session.

``KAFKA_BOOTSTRAP_SERVERS``, when set, overrides both (an existing cluster; its lane's
worker settings are still those of ``KAFKA_IMPL``). `make test` runs the default lane,
then ``KAFKA_IMPL=apache pytest -m apache_kafka``.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from app.harness.processes import ops_module
from app.kafka.clients import BROKER_WORKER_ENV
from app.kafka.embedded import EmbeddedBroker

pytest_plugins = ["tests.fixtures.erp", "tests.fixtures.schema_registry"]

IMPLS = ("embedded", "apache")

#: Worker settings per broker (one declaration, in app/kafka/clients.py).
LANE_WORKER_ENV: dict[str, dict[str, str]] = BROKER_WORKER_ENV


def kafka_impl() -> str:
    """The lane's broker implementation (``KAFKA_IMPL``), validated."""
    impl = os.environ.get("KAFKA_IMPL", "embedded").strip().lower() or "embedded"
    if impl not in IMPLS:
        raise pytest.UsageError(f"KAFKA_IMPL={impl!r}: expected one of {', '.join(IMPLS)}")
    return impl


def worker_env(impl: str | None = None) -> dict[str, str]:
    """The worker settings for a broker implementation (default: this lane's). Every place
    that starts workers in the tests merges these in."""
    return dict(LANE_WORKER_ENV[impl or kafka_impl()])


def pytest_configure(config: pytest.Config) -> None:
    kafka_impl()  # a bad KAFKA_IMPL stops the run before any test


@pytest.fixture(scope="session")
def apache_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Apache Kafka broker for the session, whatever the lane (the compaction test
    always needs it). Its log cleaner runs soon after a segment rolls. Missing Java or
    jars is an install error (``ops/kafka/install.sh``), never a skip."""
    run = ops_module("kafka/run.py")
    broker = run.KafkaBroker(tmp_path_factory.mktemp("apache-kafka"), config=dict(run.EAGER_CLEANER))
    broker.start()
    try:
        from app.kafka.embedded import wait_for_metadata

        wait_for_metadata(broker.bootstrap)
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def kafka_bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    """Bootstrap address: KAFKA_BOOTSTRAP_SERVERS if set; else the lane's broker (a fresh
    embedded Tansu broker for each test module: it starts in well under a second, and one
    for the whole session slowed down as hundreds of test topics and groups piled up in its
    memory; or the session's Apache Kafka broker)."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured and configured != "embedded":
        yield configured
        return
    if kafka_impl() == "apache":
        yield request.getfixturevalue("apache_kafka").bootstrap
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture(scope="module")
def lane_worker_env() -> dict[str, str]:
    """The worker settings of this lane's broker (``worker_env()``)."""
    return worker_env()
