"""`syncgov trace WAREHOUSE ORDER`: print one order's trace from a worker.

Exit 0 with the trace on stdout (a table, or ``--json``: the worker's trace document);
1 when the worker has no trace of the order or cannot be reached (message on stderr).
"""
from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

import orjson

from app import logs
from app.settings import load


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        body = orjson.loads(exc.read())
    except (orjson.JSONDecodeError, OSError):
        return exc.reason or ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def main(warehouse_id: str, order_id: str, url: str | None, *, as_json: bool = False) -> int:
    base = (url or load().worker.canonical_url).rstrip("/")
    path = f"/orders/{urllib.parse.quote(warehouse_id, safe='')}/{urllib.parse.quote(order_id, safe='')}/trace"
    try:
        with urllib.request.urlopen(base + path, timeout=10) as resp:
            raw = resp.read()
            trace = orjson.loads(raw)
    except urllib.error.HTTPError as exc:
        logs.error(f"{exc.code}: {_error_text(exc)}", command="trace")
        return 1
    except urllib.error.URLError as exc:
        logs.error(f"cannot reach the worker at {base}: {exc.reason}", command="trace")
        return 1
    except (orjson.JSONDecodeError, OSError, ValueError) as exc:
        logs.error(f"bad answer from {base}: {exc}", command="trace")
        return 1
    if as_json:
        print(orjson.dumps(trace).decode())
        return 0
    print(f"order {trace['order_id']} in {trace['warehouse_id']}")
    for e in trace["entries"]:
        extra = e.get("code") or e.get("outcome") or e.get("source") or ""
        ref = e.get("document_ref") or ""
        print(f"{e['at']}  {e['kind']:<9} {e['type']:<18} {extra:<20} {ref}  {e['id']}")
    return 0
