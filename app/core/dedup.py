"""Rule 1 (deduplication): keys remembered for a retention of event time.

A key recorded at base time ``b`` (the watermark when it was seen, or the event's time if
later) is a duplicate while ``b + retention > watermark``. Expired keys are dropped in
one-minute buckets as the watermark passes them, so memory stays bounded without scans.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from heapq import heappop, heappush
from math import inf
from typing import Final

BUCKET_MS: Final = 60_000


def record_key(source: str, event_id: str) -> str:
    """The dedup key of a record: ``source`` and ``event_id`` joined by U+001F, as in
    its milestone id. A str (not a tuple) so that millions of keys add no GC work."""
    return f"{source}\x1f{event_id}"


class Dedup:
    """``store`` maps key -> base time (int ms); a worker may pass its own mapping."""

    def __init__(
        self, retention_ms: int, store: MutableMapping[str, int] | None = None
    ) -> None:
        self.retention = retention_ms
        self.store: MutableMapping[str, int] = {} if store is None else store
        self._buckets: dict[int, list[str]] = {}
        self._heap: list[int] = []
        self._last_bucket: int | None = None
        self._last_keys: list[str] = []
        #: The watermark at which ``prune`` next has work.
        self.next_prune: int | float = inf
        for key, base in self.store.items():
            self._index(key, base)

    def __len__(self) -> int:
        return len(self.store)

    def contains(self, key: str, watermark: int | None) -> bool:
        """Was ``key`` seen within the retention before ``watermark``?"""
        base = self.store.get(key)
        return base is not None and (watermark is None or base + self.retention > watermark)

    def add(self, key: str, base: int) -> None:
        self.store[key] = base
        self._index(key, base)

    def first(self, key: str, occurred_at: int, watermark: int | None) -> bool:
        """Record ``key`` unless it is a duplicate; True when it was not seen before.

        The base time is the event's time or the watermark, whichever is later.
        """
        store = self.store
        base = store.get(key)
        if base is not None and (watermark is None or base + self.retention > watermark):
            return False
        if watermark is not None and watermark > occurred_at:
            occurred_at = watermark
        store[key] = occurred_at
        bucket = occurred_at // BUCKET_MS
        if bucket == self._last_bucket:
            self._last_keys.append(key)
        else:
            self._index(key, occurred_at)
        return True

    def _index(self, key: str, base: int) -> None:
        bucket = base // BUCKET_MS
        keys = self._buckets.get(bucket)
        if keys is None:
            keys = self._buckets[bucket] = [key]
            heappush(self._heap, bucket)
            due = (bucket + 1) * BUCKET_MS + self.retention
            if due < self.next_prune:
                self.next_prune = due
        else:
            keys.append(key)
        self._last_bucket = bucket
        self._last_keys = keys

    def prune(self, watermark: int | float) -> None:
        """Forget keys whose retention ended at ``watermark``."""
        heap = self._heap
        store = self.store
        retention = self.retention
        while heap and (heap[0] + 1) * BUCKET_MS + retention <= watermark:
            bucket = heappop(heap)
            if bucket == self._last_bucket:
                self._last_bucket = None
            for key in self._buckets.pop(bucket):
                base = store.get(key)
                if base is not None and base + retention <= watermark:
                    del store[key]
        self.next_prune = (heap[0] + 1) * BUCKET_MS + retention if heap else inf
