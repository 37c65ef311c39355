"""The worker benchmark's timer: from the governance stage's first records in hand (its log line)
to its last committed batch, over all the records; never from whenever a poll is answered."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
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


def test_the_cpu_is_the_workers_own_over_the_timed_span_not_from_when_the_bench_saw_it_ready(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker starts reading as it becomes ready, before the bench's next ready poll: its
    CPU is read from the trace at the span's two ends, on the worker's clock."""
    worker = WorkerProcess("127.0.0.1:1", tmp_path)
    worker.log_file.write_text(log_line("2026-12-06T03:00:00.000Z", "governance: first records from t.events since the assignment: 20000") + "\n")
    start = worker_bench.first_records_at(worker, "t.events")
    assert start is not None

    class Alive:
        pid = 1

        def poll(self) -> None:
            return None

    worker.process = Alive()  # type: ignore[assignment]
    scrape = {"syncgov_records_processed_total": 100_000.0, "syncgov_last_commit_timestamp_seconds": start + 2.0}
    monkeypatch.setattr(worker_bench, "metric", lambda w, name, labels="": scrape.get(name))
    monkeypatch.setattr(worker_bench, "cpu_seconds", lambda pid: 9.0)  # the bench's own reads: nothing moves
    trace = worker_bench.CpuTrace.__new__(worker_bench.CpuTrace)
    trace.every_s, trace._thread = 0.0, threading.Thread(target=lambda: None)  # a finished sampler
    trace.samples = [(start - 1.0, 0.5), (start + 0.5, 0.9), (start + 2.0, 2.1), (start + 3.0, 2.2)]
    done = worker_bench.wait_processed(worker, 100_000, timeout_s=5, topic="t.events", trace=trace)
    assert done["cpu_s"] == pytest.approx(2.1 - 0.5)  # the samples at or before each end
    assert done["cpu_s_from_ready"] == 0.0


def test_a_cpu_trace_follows_a_live_process() -> None:
    """The sampler thread reads a real process's CPU seconds as it uses them."""
    burn = "import time\nwhile time.process_time() < 0.3: pass\n"
    proc = subprocess.Popen([sys.executable, "-c", burn])
    worker = WorkerProcess("127.0.0.1:1", Path("."))
    worker.process = proc
    trace = worker_bench.CpuTrace(worker)
    try:
        proc.wait(60)
        time.sleep(0.05)
        assert trace.at(time.time()) >= 0.25  # the child's 0.3 CPU s (less what it used before the first sample)
        with pytest.raises(RuntimeError, match="no CPU sample"):
            trace.at(0.0)
    finally:
        trace.stop()
