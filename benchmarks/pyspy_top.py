"""Top frames of a py-spy raw (collapsed-stack) profile, as shares of all samples.

    python -m benchmarks.pyspy_top PROFILE.txt [--top 30] [--thread MainThread]

Each line of ``py-spy record -f raw`` is ``frame;frame;...;frame COUNT`` (outermost first).
Prints, per function (``name (file)``), the inclusive share (samples with the function
anywhere on the stack) and the self share (samples with it on top), highest first, and the
share of idle samples (py-spy ``--idle`` is off, so only when present).
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

#: ``--groups``: the worker's samples by part of the streaming path. A stack goes to the first
#: group one of whose frame-name fragments it contains (so the order matters); a fragment
#: ending in ``$`` must be in the stack's last frame (the function's own time).
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("state changelog: Faust table send + aiokafka producer (per record)",
     ("send_writes", "Sender._send_produce_req", "ProducerBuffer", "SendProduceReqHandler", "Sender._sender_routine",
      "AIOKafkaProducer", "Producer.send (faust", "Topic.publish_message", "Topic._on_published",
      "on_send_completed", "MessageAccumulator", "set_persisted_offset")),
    ("state records: tables/records.py flush (keys, prior values, lineage trails)", ("PartitionState.flush",)),
    ("outputs: app/runtime/outputs (Avro, confluent-kafka produce)", ("emit (app/runtime/outputs", "produce (app/runtime/outputs")),
    ("core: Engine.process_event", ("Engine.process_event", "Engine.reject")),
    # The compiled core has no frames of its own: its time is the per-record loop's own.
    ("core (compiled) and the per-record loop: GovernanceStage._run_partition's own time",
     ("GovernanceStage._run_partition$",)),
    ("decode: codec.decode_input", ("decode_input",)),
    ("lineage entries per event and milestone", ("decoded_entry", "milestone_entry", "PartitionState.note")),
    ("stage: rest of GovernanceStage / InventoryStage (metrics, marks)", ("GovernanceStage", "InventoryStage")),
    ("reader thread: confluent-kafka consume() in the executor", ("_WorkItem.run",)),
    ("runner: rest of StageRunner", ("StageRunner",)),
    ("web: /metrics scrapes", ("metrics (app/web", "generate_latest")),
    ("event loop: select (waiting)", ("EpollSelector.select",)),
)
OTHER = "other: Faust services, asyncio callbacks, start-up"


def grouped(lines: list[str]) -> tuple[int, Counter[str]]:
    """Samples per group of ``GROUPS`` (plus ``OTHER``)."""
    total = 0
    groups: Counter[str] = Counter()
    for line in lines:
        m = _LINE.match(line.rstrip("\n"))
        if not m:
            continue
        count = int(m["count"])
        total += count
        stack = m["stack"]
        last = stack.rsplit(";", 1)[-1]
        groups[next((name for name, keys in GROUPS if any(_matches(k, stack, last) for k in keys)), OTHER)] += count
    return total, groups


def _matches(fragment: str, stack: str, last: str) -> bool:
    return fragment[:-1] in last if fragment.endswith("$") else fragment in stack


_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def function(frame: str) -> str:
    """``name (file)`` without the line number, the file shortened to its last two parts."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    parts = Path(m["file"]).parts
    return f"{m['name']} ({'/'.join(parts[-2:])})"


def summarize(lines: list[str], thread: str | None = None) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in lines:
        m = _LINE.match(line.rstrip("\n"))
        if not m:
            continue
        frames = m["stack"].split(";")
        if thread is not None and not any(thread in f for f in frames[:2]):
            continue
        count = int(m["count"])
        total += count
        names = [function(f) for f in frames]
        for name in set(names):
            inclusive[name] += count
        own[names[-1]] += count
    return total, inclusive, own


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--thread", help="only stacks whose first frames name this thread")
    parser.add_argument("--groups", action="store_true", help="shares by part of the worker's streaming path")
    parser.add_argument("--us-per-event", type=float, help="with --groups: also the share of this CPU time per event")
    args = parser.parse_args(argv)
    if args.groups:
        total, groups = grouped(args.profile.read_text().splitlines())
        print(f"{total} samples")
        for name, n in groups.most_common():
            us = f" | {args.us_per_event * n / total:.1f} µs" if args.us_per_event else ""
            print(f"| {name} | {100 * n / total:.1f} %{us} |")
        return 0
    total, inclusive, own = summarize(args.profile.read_text().splitlines(), args.thread)
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{total} samples")
    print("\ninclusive %  function")
    for name, n in inclusive.most_common(args.top):
        print(f"{100 * n / total:10.1f}  {name}")
    print("\nself %      function")
    for name, n in own.most_common(args.top):
        print(f"{100 * n / total:10.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
