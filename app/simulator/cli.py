"""`syncgov simulate`: write a seeded warehouse stream to a file and/or Kafka, and its truth."""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import fields, replace
from typing import Any, BinaryIO, Protocol

import orjson

from app.simulator.generate import Simulation, mean_events_per_order
from app.simulator.model import PRESETS, Faults, Incidents, Model, SimConfig
from app.simulator.sink import FileSink, KafkaSink, Sink, TruthSink


def _error(message: str) -> None:
    """On stderr: ``syncgov simulate: ...``, or a JSON log line when logs are JSON."""
    from app.logs import error

    error(message, command="simulate")


def _rate(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r}: not a number") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{raw}: a rate must be in 0..1")
    return value


def _count(minimum: int) -> Any:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r}: not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{raw}: must be >= {minimum}")
        return value

    return parse


def _number(*, positive: bool) -> Any:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r}: not a number") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError(f"{raw}: must be a finite number {'> 0' if positive else '>= 0'}")
        return value

    return parse


def _timestamp(raw: str) -> str:
    from app.core.timeutil import parse_ts

    try:
        parse_ts(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r}: not an ISO-8601 timestamp (e.g. {SimConfig.start})") from None
    return raw


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="syncgov simulate",
        description="Generate a seeded, realistic warehouse event stream and the milestones the "
        "contract requires for it (the ground truth). Same arguments, same bytes.",
    )
    p.add_argument("--seed", type=_count(0), default=1, help="random seed (default 1)")
    p.add_argument("--orders", type=_count(0), default=1000, help="orders released by the ERP (default 1000)")
    p.add_argument("--warehouses", type=_count(1), default=1, help="warehouses WH1.. (default 1)")
    p.add_argument(
        "--events-per-s", type=_number(positive=True), default=200.0,
        help="steady-state records per second of event time (default 200)",
    )
    p.add_argument("--start", type=_timestamp, default=SimConfig.start,
                   help=f"event time of the first wave (default {SimConfig.start})")
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default="default", help="fault/incident mix; the rates below override it"
    )
    faults = p.add_argument_group("faults (rates 0..1; default: the preset's)")
    faults.add_argument("--duplicate-rate", type=_rate, help="records redelivered later, byte for byte")
    faults.add_argument(
        "--out-of-order-rate", type=_rate, help="orders whose OrderReleased arrives after their first execution event"
    )
    faults.add_argument("--late-rate", type=_rate, help="StockAdjusted sent well after their window closed")
    faults.add_argument("--malformed-rate", type=_rate, help="records preceded by an undecodable or schema-broken copy")
    faults.add_argument(
        "--wrong-source-rate", type=_rate, help="records followed by a copy from a source without authority"
    )
    incidents = p.add_argument_group("business incidents (rates per order; default: the preset's)")
    incidents.add_argument("--conflict-rate", type=_rate, help="ERP change/cancel after picking started")
    incidents.add_argument("--orphan-rate", type=_rate, help="picks for an order never released")
    incidents.add_argument("--over-pick-rate", type=_rate, help="one unit picked too many")
    incidents.add_argument("--stray-return-rate", type=_rate, help="returns for an order never shipped here")
    model = p.add_argument_group("telemetry")
    model.add_argument(
        "--dup-read-rate", type=_rate, default=Model.dup_read_rate, help="reads reported twice with one event_id"
    )
    model.add_argument("--no-read-rate", type=_rate, default=Model.no_read_rate, help="reads with barcode NOREAD")
    out = p.add_argument_group("outputs (default: records to stdout)")
    out.add_argument("--output", metavar="FILE", help="records as NDJSON ('-' for stdout)")
    out.add_argument("--truth", metavar="FILE", help="expected milestones as NDJSON")
    out.add_argument("--kafka", metavar="BOOTSTRAP", help="produce records to this Kafka cluster")
    out.add_argument("--topic", help="Kafka topic (default: TOPIC_EVENTS from the settings)")
    out.add_argument(
        "--rate", type=_number(positive=False), default=0.0,
        help="Kafka records per wall-clock second (default 0: as fast as possible)",
    )
    out.add_argument("--quiet", action="store_true",
                     help="no summary on stderr (progress with an ETA is shown on a terminal only)")
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The SimConfig the arguments describe (preset, then explicit rates)."""
    faults, incidents = PRESETS[args.preset]
    given = vars(args)

    def rates(group: type) -> dict[str, float]:
        return {f.name: given[f"{f.name}_rate"] for f in fields(group) if given[f"{f.name}_rate"] is not None}

    faults = replace(faults, **rates(Faults))
    incidents = replace(incidents, **rates(Incidents))
    return SimConfig(
        seed=args.seed,
        orders=args.orders,
        warehouses=args.warehouses,
        events_per_s=args.events_per_s,
        start=args.start,
        faults=faults,
        incidents=incidents,
        model=Model(dup_read_rate=args.dup_read_rate, no_read_rate=args.no_read_rate),
    )


def _open(path: str | None, stack: contextlib.ExitStack) -> BinaryIO | None:
    """The file to write (``-``: stdout), closed with ``stack``."""
    if path is None:
        return None
    if path == "-":
        return sys.stdout.buffer
    return stack.enter_context(open(path, "wb", buffering=1 << 20))


def _kafka_sink(args: argparse.Namespace) -> KafkaSink:
    from app import settings as app_settings
    from app.kafka.clients import client_config, create_topics

    s = app_settings.load({**os.environ, "KAFKA_BOOTSTRAP_SERVERS": args.kafka})  # --kafka is the address
    topic = args.topic or s.topics.events
    create_topics(args.kafka, [topic], s.topics.partitions, s.kafka, replication_factor=s.topics.replication_factor)
    return KafkaSink(client_config(args.kafka, s.kafka), topic, args.rate)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The stream allocates millions of short-lived acyclic objects; cyclic GC only slows it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _Updates(Protocol):
    def update(self, n: int) -> None: ...


def run(config: SimConfig, sinks: list[Sink], truth: TruthSink | None, progress: _Updates | None = None) -> Simulation:
    """Generate the whole stream into ``sinks`` (and its truth); returns the finished Simulation."""
    sim = Simulation(config, on_truth=truth or (lambda m: None))
    with _no_gc():
        for batch in sim.batches():
            for sink in sinks:
                sink.write(batch)
            if progress is not None:
                progress.update(len(batch))
    for sink in sinks:
        sink.close()
    if truth is not None:
        truth.close()
    return sim


def main(argv: Sequence[str] | None = None) -> int:
    """0 done; 1 the output or Kafka failed; 2 bad arguments or configuration (a message on
    stderr, never a traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `syncgov simulate -- --orders 5`: the separator is passed through
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        _error(f"{exc}")
        return 2
    try:
        return _simulate(args, config)
    except BrokenPipeError:
        raise  # `| head`: the caller's to handle
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        _error(f"cannot write{where}: {exc.strerror or exc}")
        return 1
    except ValueError as exc:  # a setting (SettingsError) or an argument the checks above let through
        from app.settings import SettingsError

        if isinstance(exc, SettingsError):
            _error(f"configuration error: {exc}")
        else:
            _error(f"{exc}")
        return 2
    except Exception as exc:
        _error(f"failed: {exc.__class__.__name__}: {exc}")
        return 1


def _simulate(args: argparse.Namespace, config: SimConfig) -> int:
    from app.commands.progress import Progress

    output = args.output if args.output or args.kafka else "-"
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        sinks: list[Sink] = []
        records = _open(output, stack)
        if records is not None:
            sinks.append(FileSink(records))
        if args.kafka:
            sinks.append(_kafka_sink(args))
        truth_stream = _open(args.truth, stack)
        truth = TruthSink(truth_stream) if truth_stream is not None else None
        progress = Progress(int(config.orders * mean_events_per_order(config.model)))
        sim = run(config, sinks, truth, _Count(progress))
        progress.finish()
    elapsed = time.perf_counter() - started
    if not args.quiet:
        sent = sum(v for k, v in sim.counts.items() if k[0].isupper())
        summary: dict[str, Any] = {
            "records": int(progress.done),
            "events": sent,
            "milestones": sum(sim.truth_counts.values()),
            "dead_letters": sim.counts.get("malformed", 0),
            "seconds": round(elapsed, 3),
            "records_per_s": round(progress.done / max(elapsed, 1e-9)),
            "sent": sim.counts,
            "truth": sim.truth_counts,
        }
        sys.stderr.write(orjson.dumps(summary).decode() + "\n")
    return 0


class _Count:
    """``run``'s progress protocol (``update(n)`` adds n records) on :class:`app.commands.progress.Progress`."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress

    def update(self, n: int) -> None:
        self.progress.update(self.progress.done + n)


if __name__ == "__main__":
    sys.exit(main())
