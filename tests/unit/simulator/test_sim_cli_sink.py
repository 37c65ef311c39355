"""`syncgov simulate` arguments and outputs, and the Kafka sink against a fake producer."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.simulator import cli
from app.simulator.model import DEFAULT_FAULTS, Faults
from app.simulator.sink import FileSink, KafkaSink, Progress


def test_cli_writes_records_and_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, truth = tmp_path / "events.ndjson", tmp_path / "truth.ndjson"
    args = ["--orders", "30", "--seed", "4", "--output", str(out), "--truth", str(truth)]
    assert cli.main(args) == 0
    summary = orjson.loads(capsys.readouterr().err.strip().splitlines()[-1])
    lines = out.read_bytes().splitlines()
    assert summary["records"] == len(lines) and summary["sent"]["OrderReleased"] == 30
    milestones = [orjson.loads(line) for line in truth.read_bytes().splitlines()]
    assert sum(summary["truth"].values()) == len(milestones)
    first = out.read_bytes()
    assert cli.main([*args, "--quiet"]) == 0
    assert out.read_bytes() == first and capsys.readouterr().err == ""


def test_cli_rates_override_the_preset() -> None:
    args = cli.build_parser().parse_args(["--preset", "clean", "--late-rate", "0.5", "--no-read-rate", "0"])
    config = cli.config_from_args(args)
    assert config.faults == Faults(late=0.5)
    assert config.model.no_read_rate == 0.0
    assert cli.config_from_args(cli.build_parser().parse_args([])).faults == DEFAULT_FAULTS


def test_cli_rejects_bad_rates(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--duplicate-rate", "2"])
    assert exc.value.code == 2
    too_many = ["--preset", "clean", "--duplicate-rate", "0.6", "--malformed-rate", "0.6", "--output", "/dev/null"]
    assert cli.main(too_many) == 2


def test_file_sink_writes_one_line_per_record() -> None:
    buf = io.BytesIO()
    sink = FileSink(buf)
    sink.write([(b"WH1", b"{}"), (b"WH1", b"\xff\xfe")])
    sink.write([(b"WH2", b"[]")])
    sink.close()
    assert buf.getvalue() == b"{}\n\xff\xfe\n[]\n"


class FakeProducer:
    def __init__(self, full_every: int = 0, fail: bool = False) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.full_every = full_every
        self.calls = 0
        self.polls = 0
        self.fail = fail
        self.on_delivery: Any = None

    def produce(self, topic: str, value: bytes, key: bytes, partition: int = -1) -> None:
        self.calls += 1
        if self.full_every and self.calls % self.full_every == 0:
            raise BufferError("queue full")
        self.sent.append((topic, key, value))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0

    def flush(self, timeout: float) -> int:
        if self.fail and self.on_delivery:
            self.on_delivery("broker down", None)
        return 0


def test_kafka_sink_keys_by_warehouse_and_retries_a_full_queue() -> None:
    fake = FakeProducer(full_every=3)
    sink = KafkaSink({}, "events", producer=fake)
    batch = [(b"WH%d" % (i % 2 + 1), b"{%d}" % i) for i in range(10)]
    sink.write(batch)
    sink.close()
    assert [(k, v) for _, k, v in fake.sent] == batch
    assert {t for t, _, _ in fake.sent} == {"events"} and sink.sent == 10


def test_kafka_sink_paces_to_the_rate() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    sink = KafkaSink({}, "events", rate=1000.0, producer=FakeProducer(), clock=lambda: clock[0], sleep=sleep)
    sink.write([(b"WH1", b"{}")] * 2500)
    assert clock[0] == pytest.approx(2.5)
    assert len(slept) == 250  # paced every 10 records (rate / 100)


def test_kafka_sink_reports_failed_deliveries() -> None:
    fake = FakeProducer(fail=True)
    sink = KafkaSink({}, "events", producer=fake)
    fake.on_delivery = sink._delivered
    sink.write([(b"WH1", b"{}")])
    with pytest.raises(RuntimeError, match="failed delivery"):
        sink.close()


def test_progress_is_silent_off_a_tty() -> None:
    stream = io.StringIO()
    progress = Progress(100, stream)
    progress.update(50)
    progress.finish()
    assert stream.getvalue() == "" and progress.done == 50
