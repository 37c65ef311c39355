"""Rule 6: StockAdjusted deltas summed per (warehouse_id, sku, location) in tumbling,
epoch-aligned event-time windows; a window [start, end) closes when the watermark
reaches end + grace, and emits InventoryAdjusted unless it nets to 0."""

from __future__ import annotations

from collections.abc import MutableMapping
from heapq import heappop, heappush
from math import inf
from typing import Any

from app.core import milestones as ms
from app.core.model import MAX_EVIDENCE, Code, CoreSettings, Event, Milestone

StockKey = tuple[str, str, str]  # (warehouse_id, sku, location)
#: One open window: [net_delta, event_count, first 50 event ids in arrival order].
WindowRecord = list[Any]
LATE = "late"

_DEFAULTS = CoreSettings()


def late(ev: Event) -> Milestone:
    """The INVALID_EVENT of a StockAdjusted whose window had closed."""
    return ms.record_exception(ev, Code.INVALID_EVENT, LATE)


class Windows:
    """Open windows in ``store``: key -> {window_start_ms: WindowRecord} (plain data).

    Windows are indexed by close deadline (all keys' windows share the epoch-aligned
    deadlines, so the heap holds each deadline once), so closing never scans every key;
    windows with the same deadline close in the order they were opened.
    """

    def __init__(
        self,
        size_ms: int = _DEFAULTS.window_size_ms,
        grace_ms: int = _DEFAULTS.window_grace_ms,
        store: MutableMapping[StockKey, dict[int, WindowRecord]] | None = None,
    ) -> None:
        self.size = size_ms
        self.grace = grace_ms
        self.store: MutableMapping[StockKey, dict[int, WindowRecord]] = (
            {} if store is None else store
        )
        self._heap: list[int] = []
        self._due: dict[int, list[tuple[StockKey, int]]] = {}
        for key, wins in self.store.items():
            for start in wins:
                self._index(start + size_ms + grace_ms, key, start)

    @property
    def next_close(self) -> int | float:
        """The watermark at which ``close`` next has work (inf when nothing is open)."""
        return self._heap[0] if self._heap else inf

    def window_of(self, occurred_at: int) -> tuple[int, int]:
        """[start, end) of the window holding ``occurred_at``."""
        start = occurred_at - occurred_at % self.size
        return start, start + self.size

    def _index(self, deadline: int, key: StockKey, start: int) -> None:
        entries = self._due.get(deadline)
        if entries is None:
            self._due[deadline] = [(key, start)]
            heappush(self._heap, deadline)
        else:
            entries.append((key, start))

    def is_late(self, occurred_at: int, watermark: int | float) -> bool:
        """True when the window holding ``occurred_at`` has closed at ``watermark``."""
        return watermark >= occurred_at - occurred_at % self.size + self.size + self.grace

    def add(self, ev: Event, watermark: int | float) -> list[Milestone]:
        """Count a StockAdjusted; one whose window already closed is INVALID_EVENT ``late``."""
        if self.is_late(ev.occurred_at, watermark):
            return [late(ev)]
        start, end = self.window_of(ev.occurred_at)
        deadline = end + self.grace
        data = ev.data
        key = (ev.warehouse_id, data["sku"], data["location"])
        wins = self.store.get(key)
        if wins is None:
            wins = {}
        win = wins.get(start)
        if win is None:
            win = wins[start] = [0, 0, []]
            self._index(deadline, key, start)
        win[0] += data["delta"]
        win[1] += 1
        if len(win[2]) < MAX_EVIDENCE:
            win[2].append(ev.event_id)
        self.store[key] = wins
        return []

    def close(self, watermark: int | float) -> list[Milestone]:
        """Close every window due at ``watermark``: by deadline, then in opening order."""
        out: list[Milestone] = []
        heap = self._heap
        store = self.store
        size = self.size
        while heap and heap[0] <= watermark:
            for key, start in self._due.pop(heappop(heap)):
                wins = store.get(key)
                win = wins.pop(start, None) if wins else None
                if win is None:
                    continue
                if wins:
                    store[key] = wins
                else:
                    del store[key]
                net, count, event_ids = win
                if net:
                    wh, sku, location = key
                    out.append(
                        ms.inventory_adjusted(
                            wh, sku, location, start, start + size, net, count, tuple(event_ids)
                        )
                    )
        return out
