"""Where simulated records go: an NDJSON file, a Kafka topic, a truth file; and a progress bar."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol, TextIO

import orjson

Batch = list[tuple[bytes, bytes]]


class Sink(Protocol):
    def write(self, batch: Batch) -> None: ...

    def close(self) -> None: ...


class FileSink:
    """One record per line; undecodable records are written as their raw bytes (no newline in them)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def write(self, batch: Batch) -> None:
        self._stream.write(b"\n".join([value for _, value in batch]))
        self._stream.write(b"\n")

    def close(self) -> None:
        self._stream.flush()


class TruthSink:
    """Writes truth milestones as NDJSON (the contract JSON form)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._buf: list[bytes] = []

    def __call__(self, milestone: dict[str, Any]) -> None:
        self._buf.append(orjson.dumps(milestone))
        if len(self._buf) >= 4096:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self._stream.write(b"\n".join(self._buf) + b"\n")
            self._buf = []

    def close(self) -> None:
        self.flush()
        self._stream.flush()


class KafkaSink:
    """Produces ``(key, record)`` pairs to a topic; ``rate`` > 0 paces them (records/s).

    Batching favours throughput (linger 20 ms, up to 10,000 records or 1 MiB a
    batch); :meth:`close` flushes and raises if any delivery failed.
    """

    def __init__(
        self,
        conf: dict[str, Any],
        topic: str,
        rate: float = 0.0,
        *,
        producer: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if producer is None:
            from confluent_kafka import Producer

            from app.kafka.clients import PRODUCER_DEFAULTS

            producer = Producer(
                {
                    **PRODUCER_DEFAULTS,
                    "linger.ms": 20,
                    "batch.num.messages": 10_000,
                    "batch.size": 1 << 20,
                    "queue.buffering.max.messages": 500_000,
                    "queue.buffering.max.kbytes": 512 * 1024,
                    **conf,
                    "on_delivery": self._delivered,
                }
            )
        self._producer = producer
        self._topic = topic
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._started: float | None = None
        self.sent = 0
        self.failed = 0
        self.first_error: str | None = None

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed += 1
            if self.first_error is None:
                self.first_error = str(err)

    def write(self, batch: Batch) -> None:
        from app.kafka.clients import send

        producer, topic = self._producer, self._topic
        if self._started is None:
            self._started = self._clock()
        step = max(1, int(self._rate / 100)) if self._rate > 0 else len(batch) or 1
        for i in range(0, len(batch), step):
            for key, value in batch[i : i + step]:
                send(producer, topic, value, key)  # waits while the local queue is full
            self.sent += min(step, len(batch) - i)
            producer.poll(0)
            if self._rate > 0:
                ahead = self.sent / self._rate - (self._clock() - self._started)
                if ahead > 0:
                    self._sleep(ahead)

    def close(self, timeout_s: float = 60.0) -> None:
        left = self._producer.flush(timeout_s)
        if left:
            raise RuntimeError(f"{left} records still undelivered after {timeout_s:.0f} s")
        if self.failed:
            raise RuntimeError(f"{self.failed} records failed delivery (first: {self.first_error})")


class Progress:
    """A one-line progress bar on a TTY stream; silent otherwise."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, every_s: float = 0.25) -> None:
        self._total = max(total, 1)
        self._stream = stream
        self._on = stream.isatty()
        self._every = every_s
        self._start = self._last = time.monotonic()
        self.done = 0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self._on and now - self._last >= self._every:
            self._last = now
            self._draw(now, min(self.done / self._total, 0.99))

    def finish(self) -> None:
        if self._on:
            self._draw(time.monotonic(), 1.0)
            self._stream.write("\n")

    def _draw(self, now: float, frac: float) -> None:
        width = 30
        filled = int(frac * width)
        rate = self.done / max(now - self._start, 1e-9)
        bar = "#" * filled + "." * (width - filled)
        self._stream.write(f"\r[{bar}] {frac:4.0%} {self.done:,} records {rate:,.0f}/s ")
        self._stream.flush()
