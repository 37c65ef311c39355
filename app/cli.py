"""syncgov: governs how warehouse execution and the ERP stay in sync (Kafka events in,
governed business milestones out). One entry point; subcommands import only what they need.

Exit codes: 0 fine; 1 findings (drift, an order without a trace, ids not open) or a failure
(Kafka, the ERP or a worker unreachable, an I/O error); 2 usage or configuration error;
130 interrupted. Errors go to stderr; results to stdout.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

EXIT_OK = 0
EXIT_FINDINGS = 1  # or a failure
EXIT_USAGE = 2  # or a configuration error
EXIT_INTERRUPTED = 130

EPILOG = "exit codes: 0 fine, 1 findings or failure, 2 usage or configuration error, 130 interrupted"

log = logging.getLogger("syncgov.cli")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("syncgov")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without install
        return "unknown"


def _broker(args: argparse.Namespace) -> int:
    from app.commands.worker import require_embedded_broker

    require_embedded_broker()
    from app.kafka.embedded import run_foreground

    return run_foreground(args.port)


def _worker(args: argparse.Namespace) -> int:
    from app.commands.worker import run_worker

    return run_worker()


def _replay(args: argparse.Namespace) -> int:
    from app.commands.replay import run_replay

    return run_replay(args.input, args.output, args.dead_letter, quiet=args.quiet)


def _source(args: argparse.Namespace) -> int:
    from app.commands.source import run_source

    return run_source(once=args.once)


def _dlq(args: argparse.Namespace) -> int:
    """`app.commands.dlq`'s entries of both kinds and their re-drive, with this CLI's conventions:
    --json, errors on stderr."""
    import orjson

    from app import logs
    from app.commands import dlq
    from app.settings import load

    s = load()
    ids = args.id or []
    kind = args.kind or ("all" if args.action == "list" or ids or args.fixed else "erp")
    if args.fixed and kind == "erp":
        logs.error("--fixed replaces an input dead letter: not with --kind erp", command="dlq")
        return EXIT_USAGE
    entries = dlq.open_entries(s) if kind in ("erp", "all") else []
    inputs = dlq.open_input_entries(s) if kind in ("input", "all") else []
    if args.action == "list":
        if args.json:
            print(orjson.dumps([{**e.record, "kind": e.kind, "held": list(e.held)} for e in entries]
                               + [e.to_json() for e in inputs]).decode())
        else:
            lines = (dlq.list_lines(entries) if kind != "input" else []) + (
                dlq.input_list_lines(inputs) if kind != "erp" else [])
            for line in lines:
                print(line)
        return EXIT_OK
    chosen = [e for e in entries if not ids or e.milestone_id in ids]
    # Without ids, the events topic's: a refused record of the internal stock topic is only listed.
    chosen_inputs = [e for e in inputs if e.record_id in ids or (not ids and e.record.get("topic") == s.topics.events)]
    unknown = sorted(set(ids) - {e.milestone_id for e in chosen} - {e.record_id for e in chosen_inputs})
    if unknown:
        logs.error(f"not open: {', '.join(unknown)}", command="dlq")
        return EXIT_FINDINGS
    fixed = None
    if args.fixed:
        if chosen or len(chosen_inputs) != 1:
            logs.error("--fixed replaces exactly one input dead letter: give its record id with --id", command="dlq")
            return EXIT_USAGE
        fixed = sys.stdin.buffer.read() if args.fixed == "-" else open(args.fixed, "rb").read()  # noqa: SIM115
        fixed = fixed.strip() if fixed.lstrip()[:1] == b"{" else fixed  # a JSON file's trailing newline
    if chosen_inputs or kind == "input":
        try:
            count = dlq.redrive_input(s, chosen_inputs, fixed)
        except dlq.RedriveError as exc:
            logs.error(str(exc), command="dlq")
            return EXIT_FINDINGS
        print(f"re-driven {count} input record(s) to {s.topics.events}" + (" (the fixed record)" if fixed else ""))
    if kind != "input" and (chosen or not chosen_inputs):
        print(f"re-driven {dlq.redrive(s, chosen)} milestone(s)")
    closed = [e.milestone_id for e in chosen if not e.redrivable]
    if closed:
        print(f"closed {len(closed)} undecodable record(s) (nothing to re-drive): {', '.join(closed)}")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from app.commands.export import main as export_main

    return export_main(args.topic, args.output, args.from_offset, args.from_time, args.format)


def _trace(args: argparse.Namespace) -> int:
    from app.commands.trace import main as trace_main

    return trace_main(args.warehouse_id, args.order_id, args.url, as_json=args.json)


def _reconcile(args: argparse.Namespace) -> int:
    from app.erp.reconcile import main as reconcile_main

    return reconcile_main(as_json=args.json)


def _check_config(args: argparse.Namespace) -> int:
    from app import settings

    settings.load()
    print("configuration OK")
    return EXIT_OK


#: name -> (one-line help, description, handler)
COMMANDS: dict[str, tuple[str, str, Callable[[argparse.Namespace], int]]] = {
    "worker": (
        "run the stateful Faust worker",
        "Run the stateful Faust worker: governance, inventory windows, the ERP sink, reconciliation "
        "timer, and the web endpoints (/healthz, /readyz, /metrics, order traces). It joins the cluster "
        "in KAFKA_BOOTSTRAP_SERVERS; KAFKA_BOOTSTRAP_SERVERS=embedded starts the embedded broker first "
        "(development and tests; needs the [embedded] extra).",
        _worker,
    ),
    "broker": (
        "run the embedded Kafka-compatible broker in the foreground",
        "Run the embedded Kafka-compatible broker (Tansu, in memory) in the foreground and print its "
        "bootstrap address; for development and tests (needs the [embedded] extra).",
        _broker,
    ),
    "replay": (
        "run the governance rules over a recorded stream",
        "Run the governance rules over a recorded stream, offline, with no broker: NDJSON or "
        "length-prefixed Avro (single-object, or the Confluent wire format: decoded through "
        "SCHEMA_REGISTRY_URL, else dead letters naming their schema id). Milestones as JSON lines to --output (default stdout). Progress with an ETA on a "
        "terminal; a one-line summary (records, milestones, dead letters) on stderr at the end.",
        _replay,
    ),
    "simulate": (
        "a seeded warehouse stream and its ground truth",
        "A seeded warehouse stream and its ground truth (see `syncgov simulate --help`).",
        lambda args: EXIT_OK,  # dispatched before parsing: the simulator owns its options
    ),
    "source": (
        "poll the ERP for released orders and publish them to Kafka",
        "The ERP order-release connector: poll the ERP (Tryton's customer shipments waiting for the "
        "warehouse, or the generic adapter's ERP_HTTP_FEED) and publish OrderReleased / OrderChanged / "
        "OrderCancelled to the events topic.",
        _source,
    ),
    "dlq": (
        "list or re-drive dead letters (input records and ERP milestones)",
        "List the open dead letters of both kinds: input records that failed the rules (the dead-letter "
        "topic: raw bytes, reason, original topic/partition/offset) and milestones the ERP rejected or the "
        "sink parked (the ERP dead-letter topic), or re-drive them after the cause is fixed: an input record "
        "goes back to the events topic with its original key (as it was, or a fixed record with --fixed), a "
        "milestone through the worker's ERP sink. `replay` without --id re-drives every open ERP dead letter "
        "(--kind input: every open input one). Exit 1 when an --id is not open or a record cannot be re-driven.",
        _dlq,
    ),
    "export": (
        "write a topic's partitions to files that `syncgov replay` reads",
        "Write every partition of a topic (default TOPIC_EVENTS), from an offset or a time to its current end, "
        "to one file per partition in --output: <topic>.p<NNN>.ndjson (every record one line of JSON) or "
        ".bin (4-byte length-framed records: Avro, or mixed). `syncgov replay DIR/<topic>.p*` replays them "
        "as the partitions of that topic. Exit 0 written, 1 Kafka or I/O failure, 2 bad arguments.",
        _export,
    ),
    "trace": (
        "print one order's trace (events, milestones, ERP calls) from a worker",
        "Print one order's events, milestones, exceptions and ERP calls in time order, from a worker "
        "(any worker: it routes to the owners). Exit 1 when the order has no trace or no worker answers.",
        _trace,
    ),
    "reconcile": (
        "compare the ERP's documents with the milestones and report drift",
        "Compare the ERP's documents with the governed milestones and report drift; drift older than "
        "RECONCILE_WINDOW_S is published as SyncDrift records. Exit 0 in sync, 1 drift found or the ERP "
        "or Kafka unreadable, 2 bad configuration.",
        _reconcile,
    ),
    "check-config": (
        "validate the settings from the environment and exit",
        "Validate every setting in the environment, report every bad one (and unknown variables with the "
        "app's prefixes) and exit: 0 valid, 2 not.",
        _check_config,
    ),
}

#: Commands that connect to Kafka themselves: `embedded` (a broker only a worker starts) is no address.
_NEEDS_CLUSTER = {"source", "dlq", "reconcile", "export"}
#: Commands that read or write Avro records: the schema registry is set up first (``app.kafka.schema_registry``).
_AVRO_COMMANDS = {"worker", "replay", "source", "dlq", "reconcile"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="syncgov", description=__doc__.split("\n\n")[0], epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, description, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=description, epilog=EPILOG)
        if name == "broker":
            p.add_argument("--port", type=int, default=0, help="listen port (default: a free one)")
        elif name == "source":
            p.add_argument("--once", action="store_true", help="poll until nothing is new, then exit")
        elif name == "dlq":
            p.add_argument("action", choices=["list", "replay"], help="list the open ones, or re-drive them")
            p.add_argument("--id", action="append",
                           help="milestone id (ERP) or record id (input) to re-drive (repeatable; default: all open)")
            p.add_argument("--kind", choices=["erp", "input", "all"],
                           help="which dead letters (default: list all; replay the ERP ones, or those of --id)")
            p.add_argument("--fixed", metavar="FILE",
                           help="replay of one input dead letter (--id): send this corrected record instead of its "
                                "raw bytes (the record as a producer sends it: JSON or Avro; '-': stdin)")
            p.add_argument("--json", action="store_true",
                           help="list: one JSON array of the open entries (ERP: their records, kind, held "
                                "milestones; input: the dead letter with kind \"input\")")
        elif name == "export":
            p.add_argument("topic", nargs="?", help="the topic (default: TOPIC_EVENTS)")
            p.add_argument("--output", "-o", required=True, help="directory for the partition files")
            p.add_argument("--from-offset", type=int, help="start at this offset in every partition (default: 0)")
            p.add_argument("--from-time", help="start at the first record at or after this time (ISO 8601, or "
                                               "epoch milliseconds)")
            p.add_argument("--format", choices=["auto", "ndjson", "framed"], default="auto",
                           help="auto (default): ndjson when every record is one line of JSON, else framed")
        elif name == "trace":
            p.add_argument("warehouse_id")
            p.add_argument("order_id")
            p.add_argument("--url", help="a worker's base URL (default: WORKER_CANONICAL_URL)")
            p.add_argument("--json", action="store_true", help="the worker's trace document, as JSON")
        elif name == "reconcile":
            p.add_argument("--json", action="store_true", help="the report as one JSON document")
        elif name == "replay":
            p.add_argument(
                "input",
                nargs="+",
                help="NDJSON or length-prefixed Avro events ('-': stdin); several files are the "
                "partitions of one topic, in partition order",
            )
            p.add_argument("--output", help="milestones NDJSON (default: stdout)")
            p.add_argument("--dead-letter", help="dead letters NDJSON")
            p.add_argument("--quiet", action="store_true", help="no summary line on stderr")
    return parser


def _configuration_error(exc: Exception) -> int:
    from app import logs

    errors = getattr(exc, "errors", None) or [str(exc)]
    if len(errors) == 1:
        logs.error(f"configuration error: {errors[0]}")
    else:
        logs.error(f"{len(errors)} configuration errors:")
        for text in errors:
            logs.error(f"configuration error: {text}")
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    from app import logs

    argv = list(sys.argv[1:] if argv is None else argv)
    logs.setup()
    try:
        from app.settings import SettingsError
    except ImportError as exc:  # GOVERNANCE_CORE_BUILD names a build that cannot be used
        if getattr(exc, "setting", None) is None:
            raise
        logs.error(f"configuration error: {exc}")
        return EXIT_USAGE
    if argv[:1] == ["simulate"]:  # the simulator owns its (many) options
        args = argparse.Namespace(command="simulate")
    else:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version (0) or a usage error (2)
            return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    try:
        if args.command == "simulate" and argv[:1] == ["simulate"]:
            from app.simulator.cli import main as simulate_main

            try:
                return simulate_main(argv[1:])
            except SystemExit as exc:  # its --help (0) or a usage error (2), already explained
                return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        if args.command in _NEEDS_CLUSTER and os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip() == "embedded":
            raise SettingsError(
                f"KAFKA_BOOTSTRAP_SERVERS='embedded': `syncgov {args.command}` needs the address of a running "
                "broker (an embedded one prints it: `syncgov broker`, or the worker's log)"
            )
        if args.command in _AVRO_COMMANDS:
            from app.kafka.schema_registry import setup_command

            setup_command(args.command)
        return COMMANDS[args.command][2](args)
    except SettingsError as exc:
        return _configuration_error(exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        from app.kafka.embedded import BrokerError

        log.debug("syncgov %s failed", args.command, exc_info=True)
        what = "embedded broker" if isinstance(exc, BrokerError) else args.command
        logs.error(f"{exc.__class__.__name__}: {exc}", command=what)
        return EXIT_FINDINGS


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
