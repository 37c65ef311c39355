"""The process's garbage-collector policy (the worker, replay, the core benchmark).

The governance state is a large heap of long-lived containers (orders, their lines, dedup
entries, inventory windows) that dies by reference counting, not through cycles. Python's
default thresholds (700, 10, 10) run a young collection every 700 net allocations of
containers and, as the heap grows, full collections that walk all of it: on the core's own
workload that is about a quarter of its time (measured: 180,000 events/s with the defaults,
236,000 with this policy, 230,000 with the collector off; 1M events, docs/benchmarks.md).

The policy: after start-up, ``gc.freeze()`` moves everything alive (modules, classes, the
app's wiring) out of the collector's sight for good, and young collections run every
``gen0`` net allocations, the older generations every 20 of the one below. Cycles are still
collected, just later; the memory they hold in between is a few tens of thousands of small
objects. ``gen0`` 0 keeps Python's defaults (and freezes nothing).
"""
from __future__ import annotations

import gc
from typing import Final

#: Young-generation threshold of the policy (Python's own is 700).
GEN0: Final = 50_000
#: How many collections of a generation trigger one of the next (Python's own: 10).
OLDER: Final = 20


def tune(gen0: int = GEN0) -> tuple[int, int, int]:
    """Apply the policy to this process; returns the thresholds now in force."""
    if gen0 > 0:
        gc.collect()  # what start-up left as garbage is not frozen with the rest
        gc.freeze()
        gc.set_threshold(gen0, OLDER, OLDER)
    return gc.get_threshold()
