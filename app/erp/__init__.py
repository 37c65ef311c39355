"""ERP port and adapters: Tryton (REST) and a generic HTTP/JSON adapter."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

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
    """The batching settings (read here until ``app/settings.py`` carries them):

    - ``ERP_RPC_LOGIN`` / ``ERP_RPC_PASSWORD`` (or ``ERP_RPC_PASSWORD_FILE``): a Tryton user
      for JSON-RPC bulk writes; empty: Tryton writes go one by one over REST (reads are
      batched either way);
    - ``ERP_BATCH_MAX`` (100): most items in one ERP request (the batch is also cut at a
      third of ``ERP_TIMEOUT_S`` worth of the ERP's measured time per item)."""

    rpc_login: str = ""
    rpc_password: str = ""
    batch_max: int = 100

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BulkSettings:
        env = os.environ if env is None else env
        password = env.get("ERP_RPC_PASSWORD", "")
        if not password and env.get("ERP_RPC_PASSWORD_FILE"):
            password = Path(env["ERP_RPC_PASSWORD_FILE"]).read_text().strip()
        raw = env.get("ERP_BATCH_MAX", "100")
        try:
            batch_max = int(raw)
        except ValueError:
            raise ValueError(f"ERP_BATCH_MAX must be an integer >= 1, got {raw!r}") from None
        if batch_max < 1:
            raise ValueError(f"ERP_BATCH_MAX must be an integer >= 1, got {raw!r}")
        return cls(env.get("ERP_RPC_LOGIN", ""), password, batch_max)


def make_port(
    erp: ErpSettings, *, session: aiohttp.ClientSession | None = None, before_send: Callable[[], None] | None = None,
    bulk: BulkSettings | None = None,
) -> ErpPort:
    """The adapter ``ERP_ADAPTER`` names, configured from ``Settings.erp`` (``before_send``:
    see ``ErpHttpClient``; ``bulk``: ``BulkSettings.from_env()`` when not given)."""
    bulk = bulk if bulk is not None else BulkSettings.from_env()
    if erp.adapter == "tryton":
        return TrytonAdapter.from_settings(erp, session=session, before_send=before_send, rpc_login=bulk.rpc_login,
                                           rpc_password=bulk.rpc_password, max_batch=bulk.batch_max)
    return HttpAdapter.from_settings(erp, session=session, before_send=before_send, max_batch=bulk.batch_max)


__all__ = [
    "BulkSettings", "DocumentState", "ErpError", "ErpPort", "HttpAdapter", "NotReadyErpError", "PermanentErpError", "PostResult",
    "TransientErpError", "TrytonAdapter", "make_port", "post_with_retry",
]
