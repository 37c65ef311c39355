"""Shared fixtures: the embedded broker (or the configured cluster) for `kafka` tests."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from app.broker import EmbeddedBroker

pytest_plugins = ["tests.fixtures.erp"]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address: KAFKA_BOOTSTRAP_SERVERS if set, else an embedded Tansu broker."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap
