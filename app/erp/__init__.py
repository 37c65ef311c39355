"""ERP port and adapters: Tryton (REST) and a generic HTTP/JSON adapter."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from app.erp.client import ErpHttpClient
from app.erp.http import HttpAdapter
from app.erp.port import (
    DocumentState,
    ErpError,
    ErpPort,
    NotReadyErpError,
    PermanentErpError,
    PostResult,
    TransientErpError,
    post_with_retry,
)
from app.erp.tryton import TrytonAdapter
from app.settings import ErpSettings


@dataclass(frozen=True)
class BulkSettings:
    """The batching settings (``ERP_RPC_LOGIN``, ``ERP_RPC_PASSWORD``, ``ERP_BATCH_MAX``, from
    ``app.settings.ErpSettings``, and ``ERP_BATCH_WINDOW_S``): a Tryton user for JSON-RPC
    bulk writes (empty: Tryton writes go one by one over REST; reads are batched either way),
    the most records in one ERP request (fewer while the ERP is slow: ``app.erp.batcher``), and
    how long a request waits for more records."""

    rpc_login: str = ""
    rpc_password: str = ""
    batch_max: int = 100
    batch_window_s: float = 0.25

    @classmethod
    def of(cls, erp: ErpSettings) -> BulkSettings:
        return cls(erp.rpc_login, erp.rpc_password.value, erp.batch_max, erp.batch_window_s)


def make_port(
    erp: ErpSettings, *, session: aiohttp.ClientSession | None = None, before_send: Callable[[], None] | None = None,
    bulk: BulkSettings | None = None, role: str = "sink",
) -> ErpPort:
    """The adapter ``ERP_ADAPTER`` names, configured from ``Settings.erp`` (``before_send``:
    see ``ErpHttpClient``; ``bulk``: ``BulkSettings.of(erp)`` when not given; ``role``: the
    ``role`` label of its client's metrics)."""
    bulk = bulk if bulk is not None else BulkSettings.of(erp)
    if erp.adapter == "tryton":
        return TrytonAdapter.from_settings(erp, session=session, before_send=before_send, rpc_login=bulk.rpc_login,
                                           rpc_password=bulk.rpc_password, max_batch=bulk.batch_max, role=role,
                                           window_s=bulk.batch_window_s)
    return HttpAdapter.from_settings(erp, session=session, before_send=before_send, max_batch=bulk.batch_max,
                                     role=role, window_s=bulk.batch_window_s)


def http_client(port: ErpPort) -> ErpHttpClient:
    """The rate-limited HTTP client behind an adapter of ``make_port`` (its quota share is
    set through it: ``app.erp.quota``)."""
    if isinstance(port, TrytonAdapter):
        return port.rest.client
    if isinstance(port, HttpAdapter):
        return port.client
    raise TypeError(f"no ERP HTTP client behind {type(port).__name__}")


__all__ = [
    "BulkSettings", "DocumentState", "ErpError", "ErpPort", "HttpAdapter", "NotReadyErpError", "PermanentErpError", "PostResult",
    "TransientErpError", "TrytonAdapter", "http_client", "make_port", "post_with_retry",
]
