"""Shared fixtures: the embedded broker (or the configured cluster) for `kafka` tests."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from app.broker import EmbeddedBroker

pytest_plugins = ["tests.fixtures.erp"]


@pytest.fixture(scope="module")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address: KAFKA_BOOTSTRAP_SERVERS if set, else a fresh embedded Tansu broker
    for each test module (it starts in well under a second; one broker for the whole session
    slowed down as hundreds of test topics and groups piled up in its memory)."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured and configured != "embedded":
        yield configured
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap
