"""``syncgov replay``: run the governance core over a recorded stream, offline.

Input is NDJSON (one event per line), or Avro records framed as a 4-byte big-endian
length followed by the single-object-encoded bytes (``C3 01`` + fingerprint + body); the
two are told apart by the ``C3 01`` magic right after the first length prefix.
Output is one JSON line per milestone (sorted keys), byte-identical across runs; dead
letters are one ``{"raw", "reason"}`` line each (see docs/rules.md).
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
from app.core.model import DeadLetter

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


def run_replay(input_path: str, output_path: str | None, dead_letter_path: str | None) -> int:
    """Replay ``input_path``; milestones to ``output_path`` (stdout if None), dead letters
    to ``dead_letter_path`` (dropped if None). Bad records never fail the run; the exit
    code is 2 when the input cannot be opened, 1 on an output (or mid-run I/O) error."""
    try:
        source = open(input_path, "rb")  # noqa: SIM115 - closed by the ExitStack below
    except OSError as exc:
        print(f"syncgov replay: cannot read {input_path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INPUT
    with ExitStack() as stack:
        stack.enter_context(source)
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
            _run(Engine(), source, out, dead)
        except BrokenPipeError:
            raise  # a closed stdout pipe (`| head`) is the caller's to handle
        except OSError as exc:
            print(f"syncgov replay: I/O error: {exc}", file=sys.stderr)
            return EXIT_OUTPUT
    return EXIT_OK


def _run(engine: Engine, source: IO[bytes], out: IO[bytes], dead: IO[bytes] | None) -> None:
    head = source.peek(LENGTH_BYTES + 2)[: LENGTH_BYTES + 2]  # type: ignore[attr-defined]
    batches = _avro(engine, source) if is_avro_framed(head) else _ndjson(engine, source)
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
    for milestone in engine.finish():
        write(dumps(milestone.to_dict(), option=_JSON_OPTS))
    out.flush()
    if count >= PROGRESS_EVERY:
        progress.show(count, final=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m app.replay INPUT [--output FILE] [--dead-letter FILE]``."""
    parser = argparse.ArgumentParser(prog="syncgov replay", description=__doc__.splitlines()[0])
    parser.add_argument("input", help="NDJSON or length-prefixed Avro file of input events")
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
