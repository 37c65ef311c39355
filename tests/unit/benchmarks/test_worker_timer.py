"""The worker benchmark's timer: from the governance stage's first records in hand (its log line)
to its last committed batch, over all the records; never from whenever a poll is answered."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.harness.processes import WorkerProcess
from benchmarks import worker_bench


def log_line(ts: str, msg: str, logger: str = "app.runtime.runner") -> str:
    return json.dumps({"ts": ts, "level": "info", "logger": logger, "msg": msg})


def test_the_start_is_the_first_first_records_line_of_the_governance_stage_for_the_topic(tmp_path: Path) -> None:
    worker = WorkerProcess("127.0.0.1:1", tmp_path)
    worker.log_file.write_text("\n".join([
        "not json at all: governance: reading t.events partitions [0]",
        log_line("2026-12-06T03:00:00.000Z", "governance: first records from t.events since the assignment: 20000"),
        log_line("2026-12-06T03:00:01.000Z", "inventory: first records from t.stock since the assignment: 20000"),
        log_line("2026-12-06T03:00:02.500Z", "governance: first records from other.events since the assignment: 20000"),
        log_line("2026-12-06T03:00:03.250Z", "governance: first records from t.events since the assignment: 20000"),
    ]) + "\n")
    assert worker_bench.first_records_at(worker, "t.events") == pytest.approx(1796526000.0)  # the first, not a later re-assignment's
    assert worker_bench.first_records_at(worker, "t.events", stage="inventory") is None
    assert worker_bench.first_records_at(worker, "missing.events") is None


def test_every_record_counts_and_the_span_ends_at_the_last_commit(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The first scrape already sees most records processed (a long first batch): the rate is
    still all the records over reading start -> last commit, not the rest over poll time."""
    worker = WorkerProcess("127.0.0.1:1", tmp_path)
    worker.log_file.write_text(log_line("2026-12-06T03:00:00.000Z", "governance: first records from t.events since the assignment: 20000") + "\n")
    start = worker_bench.first_records_at(worker, "t.events")
    assert start is not None
    scrapes = iter([{"syncgov_records_processed_total": 60_000.0},
                    {"syncgov_records_processed_total": 100_000.0, "syncgov_last_commit_timestamp_seconds": start + 2.0}])
    current: dict[str, Any] = {}

    def metric(w: WorkerProcess, name: str, labels: str = "") -> float | None:
        if name == "syncgov_records_processed_total":
            current.clear()
            current.update(next(scrapes))
        return current.get(name)

    class Alive:
        pid = 1

        def poll(self) -> None:
            return None

    worker.process = Alive()  # type: ignore[assignment]
    monkeypatch.setattr(worker_bench, "metric", metric)
    monkeypatch.setattr(worker_bench, "cpu_seconds", lambda pid: 0.0)
    monkeypatch.setattr(worker_bench, "POLL_S", 0.0)
    done = worker_bench.wait_processed(worker, 100_000, timeout_s=5, topic="t.events")
    assert done["counted"] == 100_000
    assert done["seconds"] == pytest.approx(2.0)
    assert done["events_per_s"] == pytest.approx(50_000)
