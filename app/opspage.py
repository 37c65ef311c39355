"""The operations page at ``/``: plain HTML and a little JS (``app/static``), no build step.

The page reads this worker's ``/metrics`` every few seconds and the order trace
(``/orders/{warehouse}/{order}/trace``) on demand; it needs nothing else.
"""
from __future__ import annotations

from pathlib import Path

from faust.web import Request, Response, View

from app.faust_app import app

STATIC = Path(__file__).resolve().parent / "static"
#: The page only talks to its own origin.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
    "Cache-Control": "no-cache",
}


@app.page("/")
async def ops_page(web: View, request: Request) -> Response:
    return web.html((STATIC / "ops.html").read_text(encoding="utf-8"), headers=dict(HEADERS))


@app.page("/ops.js")
async def ops_script(web: View, request: Request) -> Response:
    body = (STATIC / "ops.js").read_bytes()
    return web.bytes(body, headers={**HEADERS, "Content-Type": "text/javascript; charset=utf-8"})
