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
    args = parser.parse_args(argv)
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
