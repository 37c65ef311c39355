"""The operations page at ``/``: plain HTML and a little JS (``app/static``), no build step.

The page reads this worker's ``/metrics`` every few seconds, the open dead letters of both
kinds (``/ops/dead-letters``: read from the two dead-letter topics, at most every
``REFRESH_S``) and the order trace (``/orders/{warehouse}/{order}/trace``) on demand.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faust.web import Request, Response, View

from app.commands import dlq
from app.settings import Settings

if TYPE_CHECKING:
    from app.faust_app import WorkerApp

STATIC = Path(__file__).resolve().parent / "static"
#: The page only talks to its own origin.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
    "Cache-Control": "no-cache",
}


# -- open dead letters of both kinds ---------------------------------------------------------

#: The newest entries of each kind the page shows (the counts cover all of them).
SHOWN = 50
#: The topics are read again at most this often (every open page polls).
REFRESH_S = 10.0
_TEXT = 300


def dead_letters_document(s: Settings) -> dict[str, Any]:
    """The open dead letters, as `syncgov dlq list` finds them: input records that failed
    the rules (reason, raw bytes, where they came from) and milestones the ERP rejected or
    the sink parked (the ERP's answer, the milestones held behind each)."""
    inputs = dlq.open_input_entries(s)
    erp = dlq.open_entries(s)

    def short(value: Any) -> str:
        text = str(value or "")
        return text if len(text) <= _TEXT else text[:_TEXT] + "…"

    def erp_json(e: dlq.Entry) -> dict[str, Any]:
        m = e.record.get("milestone") or {}
        return {"id": e.milestone_id, "kind": e.kind, "type": e.record.get("type"), "status": e.record.get("status"),
                "reason": short(e.record.get("detail")), "document": m.get("order_id") or m.get("sku") or "",
                "held": len(e.held)}

    def input_json(e: dlq.InputEntry) -> dict[str, Any]:
        d = e.to_json()
        return {"id": e.record_id, "kind": "input", "reason": short(d["reason"]), "raw": short(d["raw"]),
                "raw_encoding": d.get("raw_encoding", "text"), "failed_at": d.get("failed_at"),
                "where": f"{d['topic']}[{d['partition']}]@{d['offset']}"}

    return {
        "input": {"open": len(inputs), "entries": [input_json(e) for e in inputs[-SHOWN:]]},
        "erp": {"open": len(erp), "entries": [erp_json(e) for e in erp[-SHOWN:]]},
    }


class DeadLettersCache:
    """The dead-letters document, read again at most every ``REFRESH_S`` (one read at a time)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.at = -REFRESH_S
        self.body: dict[str, Any] | None = None
        self.lock = asyncio.Lock()

    async def get(self) -> dict[str, Any]:
        async with self.lock:
            if self.body is None or time.monotonic() - self.at >= REFRESH_S:
                loop = asyncio.get_running_loop()
                self.body = await loop.run_in_executor(None, dead_letters_document, self.settings)
                self.at = time.monotonic()
            return self.body


def register(worker: WorkerApp) -> None:
    """The operations page and its dead-letters document on the worker's app."""
    app = worker.app
    cache = DeadLettersCache(worker.settings)

    @app.page("/")
    async def ops_page(web: View, request: Request) -> Response:
        return web.html((STATIC / "ops.html").read_text(encoding="utf-8"), headers=dict(HEADERS))

    @app.page("/ops.js")
    async def ops_script(web: View, request: Request) -> Response:
        body = (STATIC / "ops.js").read_bytes()
        return web.bytes(body, headers={**HEADERS, "Content-Type": "text/javascript; charset=utf-8"})

    @app.page("/ops/dead-letters")
    async def ops_dead_letters(web: View, request: Request) -> Response:
        """The open dead letters of both kinds with their reasons (JSON, read-only)."""
        return web.json(await cache.get(), headers={"Cache-Control": "no-cache"})
