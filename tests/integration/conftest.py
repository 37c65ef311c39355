"""Integration fixtures: worker processes on the lane's broker, topic readers."""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.core.model import Milestone
from app.harness.processes import WorkerProcess
from app.kafka import codec
from app.kafka.clients import read_all

_group = itertools.count()


def make_worker_factory(bootstrap: str, tmp_path: Path, lane_env: dict[str, str]) -> WorkerFactory:
    """Start workers with a fresh app id (consumer group and topics) and the lane's worker
    settings (``tests.conftest.worker_env``); ``stop_all()`` stops them."""
    return WorkerFactory(bootstrap, tmp_path, lane_env, f"t{int(time.time())}{next(_group)}")


class WorkerFactory:
    """``factory(name, **env)`` starts a worker ``name`` (its store in ``tmp_path/name``)."""

    def __init__(self, bootstrap: str, tmp_path: Path, lane_env: dict[str, str], prefix: str) -> None:
        self.bootstrap, self.tmp_path, self.lane_env, self.prefix = bootstrap, tmp_path, lane_env, prefix
        self.started: list[WorkerProcess] = []

    def env(self, **env: str) -> dict[str, str]:
        prefix = self.prefix
        return {
            **self.lane_env,
            "WORKER_APP_ID": prefix,
            "TOPIC_EVENTS": f"{prefix}.events",
            "TOPIC_MILESTONES": f"{prefix}.milestones",
            "TOPIC_EXCEPTIONS": f"{prefix}.exceptions",
            "TOPIC_DEAD_LETTERS": f"{prefix}.dead-letters",
            "TOPIC_ERP_DEAD_LETTERS": f"{prefix}.erp-dead-letters",
            "TOPIC_STOCK": f"{prefix}.stock",
            "WORKER_IDLE_PARTITION_S": "5",
            "ERP_SINK_ENABLED": "false",
            **env,
        }

    def __call__(self, name: str = "w1", **env: str) -> WorkerProcess:
        worker = WorkerProcess(self.bootstrap, self.tmp_path / name, env=self.env(**env))
        self.started.append(worker)
        return worker.start()

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()


@pytest.fixture
def worker_factory(kafka_bootstrap: str, lane_worker_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerFactory]:
    """Workers on the lane's broker with the lane's settings; stopped after the test."""
    factory = make_worker_factory(kafka_bootstrap, tmp_path, lane_worker_env)
    yield factory
    factory.stop_all()


def normalize(d: dict) -> dict:  # type: ignore[type-arg]
    """The contract JSON form, whatever the encoding (Avro gives int-ms times and
    explicit nulls for absent optional fields)."""
    out = Milestone.from_dict(d).to_dict()
    return {k: v for k, v in out.items() if v is not None or k in ("warehouse_id", "occurred_at")}


def read_milestones(bootstrap: str, prefix: str) -> list[dict]:  # type: ignore[type-arg]
    """Every milestone on the milestones and exceptions topics, decoded and normalized."""
    out = []
    for topic in (f"{prefix}.milestones", f"{prefix}.exceptions"):
        out += [normalize(codec.decode(r.value)) for r in read_all(bootstrap, topic)]
    return out


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
