"""ERP port and adapters: Tryton (REST) and a generic HTTP/JSON adapter."""
from __future__ import annotations

from collections.abc import Callable

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


def make_port(
    erp: ErpSettings, *, session: aiohttp.ClientSession | None = None, before_send: Callable[[], None] | None = None
) -> ErpPort:
    """The adapter ``ERP_ADAPTER`` names, configured from ``Settings.erp`` (``before_send``:
    see ``ErpHttpClient``)."""
    if erp.adapter == "tryton":
        return TrytonAdapter.from_settings(erp, session=session, before_send=before_send)
    return HttpAdapter.from_settings(erp, session=session, before_send=before_send)


__all__ = [
    "DocumentState", "ErpError", "ErpPort", "HttpAdapter", "NotReadyErpError", "PermanentErpError", "PostResult",
    "TransientErpError", "TrytonAdapter", "make_port", "post_with_retry",
]
