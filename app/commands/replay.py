"""``syncgov replay``: run the governance core over a recorded stream, offline.

Input (a file, or ``-`` for stdin) is NDJSON (one event per line), or Avro records framed
as a 4-byte big-endian length followed by the single-object-encoded bytes (``C3 01`` +
fingerprint + body); the two are told apart by the byte(s) right after the first length
prefix. A length-prefixed record in the Confluent wire format (magic byte ``0`` + 4-byte
schema id + body, e.g. from ``kcat -f '%R%s'``) is recognised too: decoded through the
schema registry when ``SCHEMA_REGISTRY_URL`` is set (``app.kafka.schema_registry``), else (or when
the registry does not know the id) a dead letter whose reason names the schema id.
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
from dataclasses import dataclass
from typing import IO, Any, Final

import orjson

from app.core.engine import Engine, Output
from app.core.model import CoreSettings, DeadLetter, StockForward
from app.core.stock import InventoryStage, Mark
from app.kafka.codec import CONFLUENT_MAGIC
from app.runtime import heap

AVRO_MAGIC: Final = b"\xc3\x01"
LENGTH_BYTES: Final = 4
PROGRESS_EVERY: Final = 16_384
EXIT_OK: Final = 0
EXIT_OUTPUT: Final = 1
EXIT_INPUT: Final = 2
_JSON_OPTS: Final = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE


def _error(message: str) -> None:
    """On stderr: ``syncgov replay: ...``, or a JSON log line when logs are JSON."""
    from app.logs import error

    error(message, command="replay")


def is_avro_framed(head: bytes) -> bool:
    """True when ``head`` (the file's first bytes) starts a length-prefixed record: Avro, or
    any record behind a length below 16 MiB (its first byte is 0, which no NDJSON text
    starts with; ``syncgov export`` frames JSON records that way when a partition mixes them
    with binary ones)."""
    if len(head) > LENGTH_BYTES and head[:1] == b"\0":
        return True
    if len(head) < LENGTH_BYTES + 2:
        return False
    return head[LENGTH_BYTES : LENGTH_BYTES + 2] == AVRO_MAGIC or head[LENGTH_BYTES : LENGTH_BYTES + 1] == CONFLUENT_MAGIC


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


def process_record(engine: Engine, raw: bytes) -> list[Output]:
    """One record of an events topic as the worker reads it (``Engine.process``: accepted
    telemetry by ``Engine.process_telemetry``, any other record by ``app.kafka.codec.decode_input``
    then ``Engine.process_decoded``, as ``Engine.process_batch`` does for the worker)."""
    from app.kafka.codec import decode_input

    return engine.process(raw, decode_input)


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
                routed.extend(self.stage.forward(partition, self._offsets[partition], o.event, o.watermark))
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
    return [o for _, outputs in replay_by_record(partitions, settings, finish) for o in outputs]


def replay_by_record(partitions: list[list[bytes]], settings: CoreSettings = CoreSettings(),
                     finish: bool = False) -> Iterator[tuple[bytes | None, list[Output]]]:
    """``replay_partitions``' outputs with the record that made them: (record, its outputs)
    in replay order, then (None, what the partitions' ends and ``finish`` made)."""
    run = PartitionedReplay(len(partitions), settings)
    for p, records in enumerate(partitions):
        process = run.engines[p].process
        for raw in records:
            yield raw, run.route(p, process(raw))
    yield None, [o for p in range(len(partitions)) for o in run.end_partition(p)]
    if finish:
        yield None, run.finish()


def _ndjson(engine: Engine, stream: IO[bytes]) -> Iterator[list[Output]]:
    """Each non-blank line, stripped of surrounding whitespace, is one record."""
    process = engine.process
    for line in stream:
        raw = line.strip()
        if raw:
            yield process(raw)


def _avro(engine: Engine, stream: IO[bytes]) -> Iterator[list[Output]]:
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
        yield process_record(engine, record)


@dataclass
class Counts:
    """What a replay read and wrote."""

    records: int = 0
    milestones: int = 0
    dead_letters: int = 0


def _open_input(path: str, stack: ExitStack) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    return stack.enter_context(open(path, "rb"))


def _input_size(source: IO[bytes]) -> int:
    """The size of a regular file; 0 for a pipe, a terminal or anything unknown."""
    import stat

    try:
        st = os.fstat(source.fileno())
    except (OSError, ValueError, AttributeError):
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def run_replay(input_paths: str | list[str], output_path: str | None, dead_letter_path: str | None,
               *, quiet: bool = True) -> int:
    """Replay the input(s) (``-``: stdin); milestones to ``output_path`` (stdout if None), dead
    letters to ``dead_letter_path`` (dropped if None). Bad records never fail the run; the exit
    code is 2 when an input cannot be opened, 1 on an output (or mid-run I/O) error. Progress
    on a terminal; with ``quiet`` false (`syncgov replay`), a one-line summary on stderr at the end."""
    paths = [input_paths] if isinstance(input_paths, str) else input_paths
    if paths.count("-") > 1:
        _error("stdin ('-') can be only one of the inputs")
        return EXIT_INPUT
    started = time.monotonic()
    with ExitStack() as stack:
        sources = []
        for path in paths:
            try:
                sources.append(_open_input(path, stack))
            except OSError as exc:
                _error(f"cannot read {path}: {exc.strerror or exc}")
                return EXIT_INPUT
        try:
            out = (
                stack.enter_context(open(output_path, "wb"))
                if output_path and output_path != "-"
                else sys.stdout.buffer
            )
            dead = stack.enter_context(open(dead_letter_path, "wb")) if dead_letter_path else None
        except OSError as exc:
            _error(f"cannot write {exc.filename}: {exc.strerror}")
            return EXIT_OUTPUT
        counts = Counts()
        try:
            _run(sources, out, dead, counts)
        except BrokenPipeError:
            raise  # a closed stdout pipe (`| head`) is the caller's to handle
        except OSError as exc:
            _error(f"I/O error: {exc}")
            return EXIT_OUTPUT
    if not quiet:
        from app.commands.progress import summary

        elapsed = time.monotonic() - started
        summary("replay", f"{counts.records:,} records, {counts.milestones:,} milestones, "
                          f"{counts.dead_letters:,} dead letters in {elapsed:.1f} s",
                records=counts.records, milestones=counts.milestones, dead_letters=counts.dead_letters,
                seconds=round(elapsed, 3))
    return EXIT_OK


def _records(engine: Engine, source: IO[bytes]) -> Iterator[list[Output]]:
    head = source.peek(LENGTH_BYTES + 2)[: LENGTH_BYTES + 2]  # type: ignore[attr-defined]
    return _avro(engine, source) if is_avro_framed(head) else _ndjson(engine, source)


def _partitioned(sources: list[IO[bytes]], counts: Counts) -> Iterator[list[Output]]:
    run = PartitionedReplay(len(sources))
    for p, source in enumerate(sources):
        for outputs in _records(run.engines[p], source):
            counts.records += 1
            yield run.route(p, outputs)
    for p in range(len(sources)):
        yield run.end_partition(p)
    yield run.finish()


def _single(source: IO[bytes], counts: Counts) -> Iterator[list[Output]]:
    engine = Engine()
    for outputs in _records(engine, source):
        counts.records += 1
        yield outputs
    yield engine.finish()  # type: ignore[misc]


def _position(sources: list[IO[bytes]]) -> int:
    """Bytes read so far over every input (regular files only)."""
    total = 0
    for source in sources:
        try:
            total += source.tell()
        except (OSError, ValueError):
            pass
    return total


def _run(sources: list[IO[bytes]], out: IO[bytes], dead: IO[bytes] | None, counts: Counts | None = None) -> None:
    from app.commands.progress import Progress

    counts = Counts() if counts is None else counts
    batches = _single(sources[0], counts) if len(sources) == 1 else _partitioned(sources, counts)
    sizes = [_input_size(source) for source in sources]
    progress = Progress(sum(sizes) if all(sizes) else 0, unit="bytes" if all(sizes) else "records")
    write = out.write
    dumps = orjson.dumps
    for n, outputs in enumerate(batches, 1):
        for item in outputs:
            if item.__class__ is DeadLetter:
                counts.dead_letters += 1
                if dead is not None:
                    dead.write(dead_letter_line(item))
            else:
                counts.milestones += 1
                write(dumps(item.to_dict(), option=_JSON_OPTS))  # type: ignore[union-attr]
        if progress.enabled and not n % PROGRESS_EVERY:
            if progress.unit == "bytes":
                progress.update(_position(sources), counts.records)
            else:
                progress.update(counts.records)
    out.flush()
    progress.count = counts.records
    if progress.unit == "records":
        progress.done = counts.records
    progress.finish()


def main(argv: list[str] | None = None) -> int:
    """``python -m app.commands.replay INPUT [INPUT ...] [--output FILE] [--dead-letter FILE]``."""
    parser = argparse.ArgumentParser(prog="syncgov replay", description=__doc__.splitlines()[0])
    parser.add_argument(
        "input",
        nargs="+",
        help="NDJSON or length-prefixed Avro file of input events ('-': stdin); several files are the "
        "partitions of one topic, in partition order",
    )
    parser.add_argument("--output", "-o", help="milestones, one JSON line each (default stdout)")
    parser.add_argument("--dead-letter", help="dead letters, one {raw, reason} line each")
    args = parser.parse_args(argv)
    heap.tune()  # the worker's GC policy: the same core at the same speed
    try:
        return run_replay(args.input, args.output, args.dead_letter)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
