"""ERP port and adapters: Tryton (REST) and a generic HTTP/JSON adapter."""
from __future__ import annotations

import aiohttp

from app.erp.http import HttpAdapter
from app.erp.port import (
    DocumentState,
    ErpError,
    ErpPort,
    PermanentErpError,
    PostResult,
    TransientErpError,
    post_with_retry,
)
from app.erp.tryton import TrytonAdapter
from app.settings import ErpSettings


def make_port(erp: ErpSettings, *, session: aiohttp.ClientSession | None = None) -> ErpPort:
    """The adapter ``ERP_ADAPTER`` names, configured from ``Settings.erp``."""
    if erp.adapter == "tryton":
        return TrytonAdapter.from_settings(erp, session=session)
    return HttpAdapter.from_settings(erp, session=session)


__all__ = [
    "DocumentState", "ErpError", "ErpPort", "HttpAdapter", "PermanentErpError", "PostResult",
    "TransientErpError", "TrytonAdapter", "make_port", "post_with_retry",
]
