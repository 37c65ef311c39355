"""``syncgov replay``: run the governance core over a recorded stream, offline.

Input is NDJSON (one event per line), or Avro records framed as a 4-byte big-endian
length followed by the single-object-encoded bytes (``C3 01`` + fingerprint + body); the
two are told apart by the ``C3 01`` magic right after the first length prefix.
Output is one JSON line per milestone (sorted keys), byte-identical across runs; dead
letters are one ``{"raw", "reason"}`` line each (see docs/rules.md).

Several inputs are the partitions of one recorded topic, in partition order: each runs
through its own engine (its own watermark, as in the worker) and their StockAdjusted
meet in one inventory stage (``app.core.stock``), exactly as the worker's two stages do.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import IO, Any, Final

import orjson

from app.core.engine import Engine, Output
from app.core.model import CoreSettings, DeadLetter, StockForward
from app.core.stock import InventoryStage, Mark

AVRO_MAGIC: Final = b"\xc3\x01"
LENGTH_BYTES: Final = 4
PROGRESS_EVERY: Final = 16_384
EXIT_OK: Final = 0
EXIT_OUTPUT: Final = 1
EXIT_INPUT: Final = 2
_JSON_OPTS: Final = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE


def is_avro_framed(head: bytes) -> bool:
    """True when ``head`` (the file's first bytes) starts a length-prefixed Avro record."""
    return len(head) >= LENGTH_BYTES + 2 and head[LENGTH_BYTES : LENGTH_BYTES + 2] == AVRO_MAGIC


def frame_avro(record: bytes) -> bytes:
    """One record of the Avro replay format: 4-byte big-endian length + the record."""
    return len(record).to_bytes(LENGTH_BYTES, "big") + record


def dead_letter_line(letter: DeadLetter) -> bytes:
    """``{"raw": text, "reason": ...}``; raw bytes that are not UTF-8 are base64 with
    ``"raw_encoding": "base64"``."""
    record: dict[str, Any]
    try:
        record = {"raw": letter.raw.decode("utf-8"), "reason": letter.reason}
    except UnicodeDecodeError:
        record = {
            "raw": base64.b64encode(letter.raw).decode("ascii"),
            "raw_encoding": "base64",
            "reason": letter.reason,
        }
    return orjson.dumps(record, option=_JSON_OPTS)


class _Progress:
    """records and records/s on stderr, only when stderr is a terminal (long inputs:
    every ``PROGRESS_EVERY`` records)."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.start = time.monotonic()

    def show(self, count: int, final: bool = False) -> None:
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - self.start, 1e-9)
        end = "\n" if final else ""
        sys.stderr.write(f"\r{count:,} records, {count / elapsed:,.0f} records/s{end}")
        sys.stderr.flush()


def process_record(engine: Engine, raw: bytes) -> list[Output]:
    """One record of an events topic as the worker reads it (``app.codec.decode_input``)."""
    from app.codec import decode_input

    d = decode_input(raw)
    if d.__class__ is str:
        return engine.reject(raw, d)  # type: ignore[arg-type]
    return engine.process_event(d, raw)  # type: ignore[arg-type]


class PartitionedReplay:
    """A topic's partitions through the worker's two stages: one engine per input
    partition (forwarding StockAdjusted), one inventory stage for all of them."""

    def __init__(self, partitions: int, settings: CoreSettings = CoreSettings()) -> None:
        self.engines = [Engine(settings, forward_stock=True) for _ in range(partitions)]
        self.stage = InventoryStage(settings, partitions)
        self._offsets = [-1] * partitions

    def route(self, partition: int, outputs: list[Output]) -> list[Output]:
        """One record's outputs from ``partition``'s engine, forwards replaced by what
        the inventory stage makes of them."""
        self._offsets[partition] += 1
        if not any(o.__class__ is StockForward for o in outputs):
            return outputs
        routed: list[Output] = []
        for o in outputs:
            if o.__class__ is StockForward:
                routed.extend(self.stage.forward(partition, self._offsets[partition], o.event, o.watermark))  # type: ignore[union-attr]
            else:
                routed.append(o)
        return routed

    def end_partition(self, partition: int) -> list[Output]:
        """A partition's input is over: it reports itself idle (as a worker's does)."""
        engine = self.engines[partition]
        return list(self.stage.mark(Mark(partition, self._offsets[partition], engine.watermark, idle=True)))

    def finish(self) -> list[Output]:
        """End of input (rule 9) for every partition and the inventory stage."""
        out: list[Output] = []
        for engine in self.engines:
            out.extend(engine.finish())
        out.extend(self.stage.finish())
        return out


def replay_partitions(partitions: list[list[bytes]], settings: CoreSettings = CoreSettings(), finish: bool = False) -> list[Output]:
    """Every output of a recorded topic's partitions (JSON records); without ``finish``
    no end-of-input flush, which is what a worker (that never sees an end) gives."""
    run = PartitionedReplay(len(partitions), settings)
    out: list[Output] = []
    for p, records in enumerate(partitions):
        process = run.engines[p].process
        for raw in records:
            out.extend(run.route(p, process(raw)))
    for p in range(len(partitions)):
        out.extend(run.end_partition(p))
    if finish:
        out.extend(run.finish())
    return out


def _ndjson(engine: Engine, stream: IO[bytes]) -> Iterator[list[Output]]:
    """Each non-blank line, stripped of surrounding whitespace, is one record."""
    process = engine.process
    for line in stream:
        raw = line.strip()
        if raw:
            yield process(raw)


def _avro(engine: Engine, stream: IO[bytes]) -> Iterator[list[Output]]:
    from app.codec import DecodeError, decode

    while True:
        prefix = stream.read(LENGTH_BYTES)
        if not prefix:
            return
        if len(prefix) < LENGTH_BYTES:
            yield engine.reject(prefix, "undecodable: truncated length prefix at end of input")
            return
        size = int.from_bytes(prefix, "big")
        record = stream.read(size)
        if len(record) < size:
            yield engine.reject(
                record, f"undecodable: truncated record, expected {size} bytes, got {len(record)}"
            )
            return
        try:
            d = decode(record)
        except DecodeError as exc:
            yield engine.reject(record, f"undecodable: {exc}")
        else:
            yield engine.process_event(d, record)


def run_replay(input_paths: str | list[str], output_path: str | None, dead_letter_path: str | None) -> int:
    """Replay the input(s); milestones to ``output_path`` (stdout if None), dead letters
    to ``dead_letter_path`` (dropped if None). Bad records never fail the run; the exit
    code is 2 when an input cannot be opened, 1 on an output (or mid-run I/O) error."""
    paths = [input_paths] if isinstance(input_paths, str) else input_paths
    with ExitStack() as stack:
        sources = []
        for path in paths:
            try:
                sources.append(stack.enter_context(open(path, "rb")))
            except OSError as exc:
                print(f"syncgov replay: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
                return EXIT_INPUT
        try:
            out = (
                stack.enter_context(open(output_path, "wb"))
                if output_path
                else sys.stdout.buffer
            )
            dead = stack.enter_context(open(dead_letter_path, "wb")) if dead_letter_path else None
        except OSError as exc:
            print(f"syncgov replay: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
            return EXIT_OUTPUT
        try:
            _run(sources, out, dead)
        except BrokenPipeError:
            raise  # a closed stdout pipe (`| head`) is the caller's to handle
        except OSError as exc:
            print(f"syncgov replay: I/O error: {exc}", file=sys.stderr)
            return EXIT_OUTPUT
    return EXIT_OK


def _records(engine: Engine, source: IO[bytes]) -> Iterator[list[Output]]:
    head = source.peek(LENGTH_BYTES + 2)[: LENGTH_BYTES + 2]  # type: ignore[attr-defined]
    return _avro(engine, source) if is_avro_framed(head) else _ndjson(engine, source)


def _partitioned(sources: list[IO[bytes]]) -> Iterator[list[Output]]:
    run = PartitionedReplay(len(sources))
    for p, source in enumerate(sources):
        for outputs in _records(run.engines[p], source):
            yield run.route(p, outputs)
    for p in range(len(sources)):
        yield run.end_partition(p)
    yield run.finish()


def _single(source: IO[bytes]) -> Iterator[list[Output]]:
    engine = Engine()
    yield from _records(engine, source)
    yield engine.finish()  # type: ignore[misc]


def _run(sources: list[IO[bytes]], out: IO[bytes], dead: IO[bytes] | None) -> None:
    batches = _single(sources[0]) if len(sources) == 1 else _partitioned(sources)
    progress = _Progress()
    write = out.write
    dumps = orjson.dumps
    count = 0
    for outputs in batches:
        count += 1
        for item in outputs:
            if item.__class__ is DeadLetter:
                if dead is not None:
                    dead.write(dead_letter_line(item))  # type: ignore[arg-type]
            else:
                write(dumps(item.to_dict(), option=_JSON_OPTS))  # type: ignore[union-attr]
        if not count % PROGRESS_EVERY:
            progress.show(count)
    out.flush()
    if count >= PROGRESS_EVERY:
        progress.show(count, final=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m app.replay INPUT [INPUT ...] [--output FILE] [--dead-letter FILE]``."""
    parser = argparse.ArgumentParser(prog="syncgov replay", description=__doc__.splitlines()[0])
    parser.add_argument(
        "input",
        nargs="+",
        help="NDJSON or length-prefixed Avro file of input events; several files are the "
        "partitions of one topic, in partition order",
    )
    parser.add_argument("--output", "-o", help="milestones, one JSON line each (default stdout)")
    parser.add_argument("--dead-letter", help="dead letters, one {raw, reason} line each")
    args = parser.parse_args(argv)
    try:
        return run_replay(args.input, args.output, args.dead_letter)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
