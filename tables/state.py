"""The governance state table (RocksDB via rocksdict, backed by a changelog topic).

One table holds every input partition's state under a ``<partition>`` key prefix
(orders with their held events, inventory windows, returns, dedup logs, meta, the fence);
see ``tables/records.py`` for the record layout and the crash-consistency rule, and
``app/runtime/ownership.py`` for the fence.
"""
from __future__ import annotations

from app.core.model import CoreSettings
from app.faust_app import SETTINGS, app
from app.runtime import faust_adapter
from app.runtime.statestore import BatchClock, Origin, TableStore, bind, commit_all, records
from tables.records import fence_key

__all__ = ["CLOCK", "Origin", "TableStore", "bind", "commit_all", "core_settings", "governance_state", "records"]

governance_state = faust_adapter.fenced_table(
    app,
    "governance-state",
    fence_key,
    default=None,
    key_type=bytes,  # bytes types select Faust's "raw" codec: we encode with orjson ourselves
    value_type=bytes,
    partitions=SETTINGS.topics.partitions,
    help="Per-partition governance state: orders, windows, returns, dedup logs, meta.",
)


def core_settings() -> CoreSettings:
    g = SETTINGS.governance
    return CoreSettings(
        dedup_retention_ms=int(g.dedup_retention_s * 1000),
        hold_window_ms=int(g.hold_window_s * 1000),
        window_size_ms=int(g.window_size_s * 1000),
        window_grace_ms=int(g.window_grace_s * 1000),
        future_tolerance_ms=int(g.future_tolerance_s * 1000),
    )


CLOCK = BatchClock()
