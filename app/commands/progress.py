"""Progress of long CLI runs (`syncgov replay`, `syncgov simulate`).

On a terminal: one line redrawn in place, with the total and an ETA when the total is
known. Elsewhere (a file, a pipe, a container log): nothing while running; the command
prints a one-line summary at the end instead (:func:`summary`).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """``done`` out of ``total`` (units, e.g. records or bytes), drawn at most every
    ``every_s`` on a TTY. ``total`` 0 or None: unknown (no ETA)."""

    def __init__(self, total: float | None, *, unit: str = "records", stream: TextIO | None = None,
                 every_s: float = 0.25, clock: Callable[[], float] = time.monotonic,
                 enabled: bool | None = None) -> None:
        self.total = total or 0
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        try:
            tty = self.stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        self.enabled = tty if enabled is None else enabled
        self.every_s = every_s
        self.clock = clock
        self.started = self._last = clock()
        self.done = 0.0
        self.count = 0  # records, when the unit is something else (bytes)
        self._drawn = False

    def update(self, done: float, count: int | None = None) -> None:
        """Progress is now ``done`` units (and ``count`` records)."""
        self.done = done
        if count is not None:
            self.count = count
        if not self.enabled:
            return
        now = self.clock()
        if now - self._last >= self.every_s:
            self._last = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        records = self.count if self.unit != "records" else int(self.done)
        rate = f"{records / elapsed:,.0f} records/s"
        if self.total:
            frac = min(self.done / self.total, 1.0 if self.done <= self.total else 0.99)
            eta = (elapsed / frac - elapsed) if frac > 0 else 0.0
            width = 24
            bar = "#" * int(frac * width) + "." * (width - int(frac * width))
            what = f"{int(self.done):,}/{int(self.total):,} {self.unit}"
            if self.unit != "records":
                what = f"{records:,} records ({what})"
            return f"[{bar}] {frac:4.0%} {what}, {rate}, ETA {_duration(eta)}"
        return f"{records:,} records, {rate}, {_duration(elapsed)} elapsed"

    def _draw(self, now: float) -> None:
        self.stream.write("\r" + self.line(now) + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        """The final line on a terminal (the total reached)."""
        if self.enabled and self._drawn:
            if self.unit == "records":  # a total may be an estimate (simulate): the count is the truth
                self.total = self.done
            elif self.total:
                self.done = self.total
            self.stream.write("\r" + self.line() + "\x1b[K\n")
            self.stream.flush()


def summary(command: str, text: str, **fields: object) -> None:
    """The one-line summary of a run on stderr: a JSON log line (``msg`` = the text, plus
    ``fields``) when logs are JSON, else ``syncgov <command>: <text>``."""
    from app.logs import json_enabled

    if json_enabled():
        import orjson

        from app.logs import _timestamp

        line = {"ts": _timestamp(time.time()), "level": "info", "logger": f"syncgov.{command}", "msg": text,
                **fields}
        sys.stderr.write(orjson.dumps(line).decode() + "\n")
    else:
        sys.stderr.write(f"syncgov {command}: {text}\n")
    sys.stderr.flush()
