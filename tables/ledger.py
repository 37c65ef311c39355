"""The ERP ledger: what happened to each milestone at the ERP (RocksDB, changelog-backed).

Keyed by ``milestone_id``; written by the ERP sink under the milestone's own record,
so an entry lives in the same partition as the milestones of its document.
"""
from __future__ import annotations

from typing import Any, Final

import orjson

from app.faust_app import SETTINGS, app

#: Outcomes after which a redelivered milestone is not posted again.
DONE: Final = frozenset({"posted", "already_done", "skipped"})

erp_ledger = app.Table(
    "erp-ledger",
    default=None,
    key_type=bytes,
    value_type=bytes,
    partitions=SETTINGS.topics.partitions,
    help="milestone_id -> ERP outcome, document reference and time.",
)


def order_key(warehouse_id: str, order_id: str) -> bytes:
    """Key of an order's ERP-call trail (milestone ids are hex, so no clash)."""
    return f"order:{warehouse_id}|{order_id}".encode()


def entry(milestone_id: str) -> dict[str, Any] | None:
    raw = erp_ledger.get(milestone_id.encode())
    return None if raw is None else orjson.loads(raw)


def is_done(milestone_id: str) -> bool:
    found = entry(milestone_id)
    return found is not None and found["outcome"] in DONE
