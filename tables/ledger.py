"""The ERP ledger: what happened to each milestone at the ERP (RocksDB, changelog-backed).

Written only by the ERP sink (``app.erp.sink``), per milestones partition, in that
partition's store and changelog partition (an entry lives with its document's milestones):

- ``<milestone_id>`` -> ``{"outcome", "ref", "at", "type", ...}``; outcomes ``posted``,
  ``already_done``, ``skipped`` (done: never posted again), ``dead_lettered``, ``parked``
  (the document waits for a re-drive) and ``held`` (waits behind its document's blocker;
  the entry carries the milestone, which the release posts);
- ``order:<warehouse_id>|<order_id>`` -> the order's ERP-call trail (``tables/lineage.py``);
- ``sink\\x1fmeta\\x1f<partition>`` -> ``{"offset", "holds"}``: the last milestones offset
  whose whole prefix is resolved, and the held documents; the commit record of every sink
  commit, written alone and last (``app.runtime.statestore.commit_all``).
"""
from __future__ import annotations

from typing import Any

import faust
import orjson
from faust import Table

from app.erp.sink import BLOCKING, DONE, meta_key, order_key
from app.settings import Settings

__all__ = ["BLOCKING", "DONE", "Ledger", "declare", "meta_key", "order_key"]


class Ledger:
    """The ``erp-ledger`` table and its reads by milestone id."""

    def __init__(self, table: Table[bytes, bytes]) -> None:
        self.table = table

    def entry(self, milestone_id: str) -> dict[str, Any] | None:
        raw = self.table.get(milestone_id.encode())
        return None if raw is None else orjson.loads(raw)


def declare(app: faust.App, s: Settings) -> Ledger:
    """Declare the ``erp-ledger`` table on ``app``."""
    table = app.Table(
        "erp-ledger",
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=s.topics.partitions,
        help="milestone_id -> ERP outcome, document reference and time; per partition the sink's offset and holds.",
    )
    if not isinstance(table, Table):  # app.Table is declared to return the abstract TableT
        raise TypeError(f"the ERP ledger is a {type(table).__name__}, not a faust.Table")
    return Ledger(table)
