"""`syncgov trace WAREHOUSE ORDER`: print one order's trace from a worker."""
from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

import orjson

from app.settings import load


def main(warehouse_id: str, order_id: str, url: str | None) -> int:
    base = (url or load().worker.canonical_url).rstrip("/")
    path = f"/orders/{urllib.parse.quote(warehouse_id, safe='')}/{urllib.parse.quote(order_id, safe='')}/trace"
    try:
        with urllib.request.urlopen(base + path, timeout=10) as resp:  # noqa: S310 - operator-given URL
            trace = orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        print(f"syncgov trace: {exc.code}: {orjson.loads(exc.read()).get('error', '')}")
        return 1
    except urllib.error.URLError as exc:
        print(f"syncgov trace: cannot reach the worker at {base}: {exc.reason}")
        return 1
    print(f"order {trace['order_id']} in {trace['warehouse_id']}")
    for e in trace["entries"]:
        extra = e.get("code") or e.get("outcome") or e.get("source") or ""
        ref = e.get("document_ref") or ""
        print(f"{e['at']}  {e['kind']:<9} {e['type']:<18} {extra:<20} {ref}  {e['id']}")
    return 0
