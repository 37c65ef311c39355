"""The inventory stage's table (RocksDB via rocksdict, backed by a changelog topic):
per stock-topic partition its open windows per (warehouse_id, sku, location) and, in
its meta record, each input partition's reported watermark and offset (see
``app/core/stock.py``; record layout and crash rule as in ``tables/records.py``)."""
from __future__ import annotations

from app.faust_app import SETTINGS, app
from tables import state
from tables.records import InventoryState

inventory_state = app.Table(
    "inventory-state",
    default=None,
    key_type=bytes,
    value_type=bytes,
    partitions=SETTINGS.topics.partitions,
    help="Per stock partition: open inventory windows and the input partitions' watermarks.",
)


def load_partition(partition: int) -> InventoryState:
    """Build a stock partition's inventory stage from the (recovered) table."""
    return InventoryState(
        partition, state.core_settings(), SETTINGS.topics.partitions, state.records(inventory_state, partition)
    )
