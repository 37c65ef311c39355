"""The inventory stage's table (RocksDB via rocksdict, backed by a changelog topic):
per stock-topic partition its open windows per (warehouse_id, sku, location) and, in
its meta record, each input partition's reported watermark and offset (see
``app/core/stock.py``; record layout, crash rule and fence as in ``tables/records.py``)."""
from __future__ import annotations

import faust

from app.runtime import faust_adapter
from app.runtime.faust_adapter import FencedTable
from app.settings import Settings
from tables.records import fence_key


def declare(app: faust.App, s: Settings) -> FencedTable:
    """Declare the ``inventory-state`` table on ``app``."""
    return faust_adapter.fenced_table(
        app,
        "inventory-state",
        fence_key,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=s.topics.partitions,
        help="Per stock partition: open inventory windows and the input partitions' watermarks.",
    )
