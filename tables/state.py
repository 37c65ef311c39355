"""The governance state table (RocksDB via rocksdict, backed by a changelog topic).

One table holds every input partition's state under a ``<partition>`` key prefix
(orders with their held events, inventory windows, returns, dedup logs, meta, the fence);
see ``tables/records.py`` for the record layout and the crash-consistency rule, and
``app/runtime/ownership.py`` for the fence.
"""
from __future__ import annotations

import faust

from app.runtime import faust_adapter
from app.runtime.faust_adapter import FencedTable
from app.settings import Settings
from tables.records import fence_key


def declare(app: faust.App, s: Settings) -> FencedTable:
    """Declare the ``governance-state`` table on ``app``."""
    return faust_adapter.fenced_table(
        app,
        "governance-state",
        fence_key,
        default=None,
        key_type=bytes,  # bytes types select Faust's "raw" codec: we encode with orjson ourselves
        value_type=bytes,
        partitions=s.topics.partitions,
        help="Per-partition governance state: orders, windows, returns, dedup logs, meta.",
    )

