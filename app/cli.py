"""`syncgov` command line: one entry point, subcommands import only what they need."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence


def _broker(args: argparse.Namespace) -> int:
    from app.broker import run_foreground

    return run_foreground(args.port)


def _worker(args: argparse.Namespace) -> int:
    from app.worker import run_worker

    return run_worker()


def _replay(args: argparse.Namespace) -> int:
    from app.replay import run_replay

    return run_replay(args.input, args.output, args.dead_letter)


def _source(args: argparse.Namespace) -> int:
    from app.source_runner import run_source

    return run_source(once=args.once)


def _dlq(args: argparse.Namespace) -> int:
    from app import dlq

    return dlq.main(args.action, args.id or [])


def _trace(args: argparse.Namespace) -> int:
    from app.trace_cli import main as trace_main

    return trace_main(args.warehouse_id, args.order_id, args.url)


def _reconcile(args: argparse.Namespace) -> int:
    from app.reconcile import main as reconcile_main

    return reconcile_main()


def _check_config(args: argparse.Namespace) -> int:
    from app import settings

    settings.load()
    print("configuration OK")
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "broker": ("run the embedded Kafka-compatible broker in the foreground", _broker),
    "worker": ("run the stateful Faust worker", _worker),
    "replay": ("run the governance rules over a recorded stream", _replay),
    "source": ("poll the ERP for released orders and publish them to Kafka", _source),
    "dlq": ("list or re-drive milestones the ERP rejected", _dlq),
    "trace": ("print one order's trace (events, milestones, ERP calls) from a worker", _trace),
    "reconcile": ("compare the ERP's documents with the milestones and report drift", _reconcile),
    "check-config": ("validate the settings from the environment and exit", _check_config),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="syncgov", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("simulate", help="a seeded warehouse stream and its ground truth (see `syncgov simulate --help`)")
    for name, (help_text, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == "broker":
            p.add_argument("--port", type=int, default=0, help="listen port (default: a free one)")
        elif name == "source":
            p.add_argument("--once", action="store_true", help="poll until nothing is new, then exit")
        elif name == "dlq":
            p.add_argument("action", choices=["list", "replay"])
            p.add_argument("--id", action="append", help="milestone id to re-drive (repeatable; default: all open)")
        elif name == "trace":
            p.add_argument("warehouse_id")
            p.add_argument("order_id")
            p.add_argument("--url", help="a worker's base URL (default: WORKER_CANONICAL_URL)")
        elif name == "replay":
            p.add_argument(
                "input",
                nargs="+",
                help="NDJSON (or length-prefixed Avro single-object) events; several files are "
                "the partitions of one topic, in partition order",
            )
            p.add_argument("--output", help="milestones NDJSON (default: stdout)")
            p.add_argument("--dead-letter", help="dead letters NDJSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from app.settings import SettingsError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:  # the simulator owns its (many) options
        from app.simulator.cli import main as simulate_main

        return simulate_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except SettingsError as exc:
        print(f"syncgov: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
