"""The inventory stage of a partitioned worker (rule 6 across input partitions).

Order events are partitioned by (warehouse_id, order_id); a StockAdjusted is checked
(rules 8, 1, 2, lateness) by the engine of the input partition it arrived on, then
re-keyed by (warehouse_id, sku, location) as a ``StockForward`` stamped with that
partition's watermark. Here windows are summed per key and close when the stage's
watermark passes end + grace. The stage's watermark is the minimum over the input
partitions of their latest stamp (``Mark``), so a window closes only once no input
partition can still send an on-time event for it: which events count is decided by
each input partition's own stream, the same on every run and in ``replay``.

An input partition that has never had an event and reports itself idle (nothing to
read for a while) is left out of the minimum; every other partition counts with its last
watermark, so a quiet partition holds windows until it moves on (upstream heartbeats, e.g.
scanner telemetry, keep every partition moving). An idle report is kept only once some
input partition has had an event: before that the whole input is quiet (a fresh topic
before the load starts), which says nothing of whether this partition will have events.
Kept, such a report would leave the partition out when the load starts, and the first
partitions to report would close windows before it is heard from, making its first
events late (its upstream repeats the report while it stays idle and empty). Forwards
are deduplicated by the input offset they carry: a restarted upstream re-sends a batch,
never a different one.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from app.core.inventory import StockKey, WindowRecord, Windows
from app.core.model import STOCK_ADJUSTED, CoreSettings, Event, Milestone

#: Per input partition: [latest watermark (None before its first event), highest input
#: offset seen, idle flag]; plain data so a worker can store it.
SourceMark = list[Any]


@dataclass(frozen=True, slots=True)
class Mark:
    """An input partition's progress: every record up to ``offset`` has been sent, its
    watermark is ``watermark``; ``idle`` when it has nothing left to read."""

    source: int
    offset: int
    watermark: int | None
    idle: bool = False


class InventoryStage:
    """Windows per (warehouse_id, sku, location) fed by ``sources`` input partitions."""

    def __init__(
        self,
        settings: CoreSettings,
        sources: int,
        store: MutableMapping[StockKey, dict[int, WindowRecord]] | None = None,
        marks: MutableMapping[int, SourceMark] | None = None,
        watermark: int | None = None,
    ) -> None:
        self.sources = sources
        self.windows = Windows(settings.window_size_ms, settings.window_grace_ms, store)
        self.marks: MutableMapping[int, SourceMark] = {} if marks is None else marks
        #: Never moves back, also when an idle source returns with older events.
        self.watermark = watermark

    def forward(self, source: int, offset: int, ev: Event, stamp: int) -> list[Milestone]:
        """Count one re-keyed StockAdjusted (``stamp``: its input partition's watermark)."""
        mark = self.marks.get(source)
        if mark is not None and offset <= mark[1]:
            return []  # re-sent by a restarted upstream: already counted
        out = self._progress(source, offset, stamp, False)
        # On time upstream means its window is still open here; the check only guards
        # against a source that left idleness with older events (see the module doc).
        out.extend(self.windows.add(ev, -1 if self.watermark is None else self.watermark))
        return out

    def mark(self, mark: Mark) -> list[Milestone]:
        """An input partition's progress report."""
        return self._progress(mark.source, mark.offset, mark.watermark, mark.idle)

    def finish(self) -> list[Milestone]:
        """End of input (rule 9, replay only): every open window closes."""
        return self.windows.close(float("inf"))

    def _progress(self, source: int, offset: int, stamp: int | None, idle: bool) -> list[Milestone]:
        mark = self.marks.get(source)
        if mark is None:
            mark = [None, -1, False]
        wm = mark[0] if stamp is None or (mark[0] is not None and mark[0] >= stamp) else stamp
        if idle and wm is None and not self._started():
            idle = False  # the whole input is quiet: not a reason to leave this partition out
        self.marks[source] = [wm, max(offset, mark[1]), idle]
        new = self._watermark()
        if new is None or (self.watermark is not None and new <= self.watermark):
            return []
        self.watermark = new
        return self.windows.close(new)

    def _started(self) -> bool:
        """Whether some input partition has had an event (has a watermark)."""
        return any(mark[0] is not None for mark in self.marks.values())

    def _watermark(self) -> int | None:
        """The minimum over the input partitions' watermarks. A partition that never had an
        event holds everything until it reports itself idle; one that had events always
        counts with its last watermark, idle or not, so the result never depends on timing."""
        known = []
        for source in range(self.sources):
            mark = self.marks.get(source)
            if mark is None or mark[0] is None:
                if mark is not None and mark[2]:
                    continue  # idle and empty: nothing of it can be pending
                return None  # not heard from yet: it may still send anything
            known.append(mark[0])
        return min(known) if known else None


def encode_forward(source: int, offset: int, ev: Event, stamp: int) -> bytes:
    """The stock-topic record of a forward (internal: compact JSON, not the contract)."""
    return orjson.dumps(["f", source, offset, stamp, ev.event_id, ev.source, ev.occurred_at, ev.warehouse_id, ev.data])


def encode_mark(mark: Mark) -> bytes:
    return orjson.dumps(["m", mark.source, mark.offset, mark.watermark, mark.idle])


def _int(v: Any) -> bool:
    return type(v) is int


def _source(v: Any) -> bool:
    return type(v) is int and v >= 0


def _text(v: Any) -> bool:
    return type(v) is str and v != ""


def stock_reason(rec: Any) -> str:
    """Why a decoded stock-topic record is not one ``encode_forward``/``encode_mark`` wrote
    ("" if it is one): the topic is internal, but a record another producer wrote to it, or
    a truncated or empty one, is a dead letter, not a stopped partition."""
    if type(rec) is not list or not rec:
        return "not a stock-topic record: expected a JSON list"
    if rec[0] == "m":
        if len(rec) != 5 or not (_source(rec[1]) and _int(rec[2])) or not (
                rec[3] is None or _int(rec[3])) or type(rec[4]) is not bool:
            return "not a stock-topic mark: expected [\"m\", source, offset, watermark or null, idle]"
        return ""
    if rec[0] != "f" or len(rec) != 9:
        return "not a stock-topic record: expected a mark [\"m\", ...] or a forward [\"f\", ...]"
    _, source, offset, stamp, event_id, src, occurred_at, warehouse_id, data = rec
    if not (_source(source) and _int(offset) and _int(stamp) and _text(event_id) and _text(src)
            and _int(occurred_at) and _text(warehouse_id) and type(data) is dict
            and _text(data.get("sku")) and _text(data.get("location")) and type(data.get("delta")) is int):
        return ("not a stock-topic forward: expected [\"f\", source, offset, stamp, event_id, source, "
                "occurred_at, warehouse_id, {sku, location, delta, ...}] of their types")
    return ""


def apply_record(stage: InventoryStage, raw: bytes) -> list[Milestone] | str:
    """Apply one stock-topic record (written by ``encode_forward``/``encode_mark``); the
    reason it is none (``stock_reason``, or not JSON) instead, leaving ``stage`` unchanged."""
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"undecodable: not a stock-topic record: invalid JSON: {exc}"
    reason = stock_reason(rec)
    if reason:
        return reason
    if rec[0] == "m":
        return stage.mark(Mark(rec[1], rec[2], rec[3], rec[4]))
    _, source, offset, stamp, event_id, src, occurred_at, warehouse_id, data = rec
    ev = Event(event_id, STOCK_ADJUSTED, src, occurred_at, warehouse_id, None, data)
    return stage.forward(source, offset, ev, stamp)
