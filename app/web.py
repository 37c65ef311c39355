"""Worker web endpoints: liveness, readiness (after table recovery), Prometheus metrics,
and the order trace (routed to the workers that own the order's state)."""
from __future__ import annotations

import asyncio
import hmac
import re
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from faust.assignor import PartitionAssignor
from faust.web import Request, Response, View, Web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.commands import dlq
from app.core import keys
from app.core.timeutil import format_ts
from app.kafka.clients import partition_for
from app.metrics import RECOVERY_IN_PROGRESS, REGISTRY
from tables.ledger import order_key
from tables.records import LINEAGE, table_key

if TYPE_CHECKING:
    from app.faust_app import WorkerApp

_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def admin_denied(token: str, web: Web, request: Request) -> Response | None:
    """403 when admin endpoints are off (no ``token``), 401 without a bearer token, 403 with
    a wrong one."""
    if not token:
        return web.json({"error": "admin endpoints are off: set WORKER_ADMIN_TOKEN to enable them"}, status=403)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return web.json({"error": "bearer token required"}, status=401)
    if not hmac.compare_digest(given.encode(), token.encode()):
        return web.json({"error": "token not accepted"}, status=403)
    return None


def register(worker: WorkerApp) -> None:
    """The worker's web endpoints on its app."""
    from app.faust_app import tables_recovered

    app, s = worker.app, worker.settings
    governance_state, erp_ledger = worker.tables.governance, worker.tables.ledger.table
    ownership_topic = worker.ownership_topic.get_topic_name()

    def is_ready() -> bool:
        """Ready once tables have recovered and no rebalance is under way."""
        recovered = tables_recovered(app) and not app.in_recovery
        RECOVERY_IN_PROGRESS.set(0 if recovered else 1)
        return recovered and not app.rebalancing

    # Faust makes a page function the ``get`` of a View subclass: its first argument is that
    # View (which answers ``json``/``bytes``/``html`` through its Web).
    @app.page("/healthz")
    async def healthz(web: View, request: Request) -> Response:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: View, request: Request) -> Response:
        ready = is_ready()
        return web.json({"ready": ready}, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics(web: View, request: Request) -> Response:
        is_ready()
        # aiohttp refuses a charset inside content_type; the header carries the full value.
        return web.bytes(generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- order trace -------------------------------------------------------------------------

    def local_part(part: str, warehouse_id: str, order_id: str) -> list[dict[str, Any]]:
        """This worker's share of the trace: the order lineage, or its ERP calls."""
        if part == "lineage":
            partition = partition_for(keys.order_key(warehouse_id, order_id), s.topics.partitions)
            raw = governance_state.get(table_key(partition, LINEAGE, [warehouse_id, order_id]))
            return list(orjson.loads(raw)) if raw else []
        raw = erp_ledger.get(order_key(warehouse_id, order_id))
        return orjson.loads(raw) if raw else []

    def owner(topic: str, partition: int) -> str | None:
        """URL of the worker that consumes ``topic``/``partition`` (None if not known yet)."""
        assignor = app.assignor  # declared as the abstract PartitionAssignorT
        if not isinstance(assignor, PartitionAssignor):
            return None
        for url, topics in assignor.external_topic_distribution.items():
            if partition in topics.get(topic, ()):
                return str(url).rstrip("/")
        return None

    async def trace_part(part: str, warehouse_id: str, order_id: str) -> list[dict[str, Any]]:
        """A part of the trace from the worker that owns it (this one, or a peer over HTTP)."""
        # The lineage lives with the order's events partition, the ERP calls with its
        # milestones partition (same key, same number): both with the partition's owner.
        key = keys.order_key(warehouse_id, order_id)
        url = owner(ownership_topic, partition_for(key, s.topics.partitions))
        if url is None or url == str(app.conf.canonical_url).rstrip("/"):
            return local_part(part, warehouse_id, order_id)
        peer = f"{url}/orders/{warehouse_id}/{order_id}/trace?part={part}"
        async with aiohttp.ClientSession() as session, session.get(peer, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            resp.raise_for_status()
            return list((await resp.json())["entries"])

    @app.page("/orders/{warehouse_id}/{order_id}/trace")
    async def order_trace(web: View, request: Request, warehouse_id: str, order_id: str) -> Response:
        """Every event, milestone, exception and ERP call of one order, in time order."""
        if not (_ID.match(warehouse_id) and _ID.match(order_id)):
            return web.json({"error": "warehouse_id and order_id must be 1-64 of A-Z a-z 0-9 . _ : -"}, status=400)
        part = request.query.get("part")
        if part is not None and part not in ("lineage", "erp"):
            return web.json({"error": "part must be lineage or erp"}, status=400)
        if part is not None:  # a peer's request: raw entries, times as int ms
            return web.json({"entries": local_part(part, warehouse_id, order_id)})
        entries = [e for p in ("lineage", "erp") for e in await trace_part(p, warehouse_id, order_id)]
        if not entries:
            return web.json({"error": f"no trace for order {order_id} in warehouse {warehouse_id}"}, status=404)
        entries.sort(key=lambda e: (e.get("at") or 0))
        for e in entries:
            e["at"] = format_ts(e["at"]) if isinstance(e.get("at"), int) else e.get("at")
        return web.json({"warehouse_id": warehouse_id, "order_id": order_id, "entries": entries})

    # -- admin (mutating) endpoints: off unless WORKER_ADMIN_TOKEN is set --------------------

    @app.page("/admin/dlq/replay")
    class DlqReplay(View):
        """POST: re-drive open ERP dead letters (all, or ``{"ids": [...]}``) through the sink."""

        async def post(self, request: Request) -> Response:
            denied = admin_denied(s.worker.admin_token.value, self.web, request)
            if denied is not None:
                return denied
            try:
                body = orjson.loads(await request.read() or b"{}")
                ids = list(body.get("ids") or [])
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                return self.web.json({"error": 'body must be JSON like {"ids": ["<milestone_id>", ...]}'}, status=400)
            if not all(isinstance(i, str) and _ID.match(i) for i in ids):
                return self.web.json({"error": "ids must be milestone ids"}, status=400)
            loop = asyncio.get_running_loop()
            entries = await loop.run_in_executor(None, dlq.open_entries, s)
            chosen = [e for e in entries if not ids or e.milestone_id in ids]
            count = await loop.run_in_executor(None, dlq.redrive, s, chosen)
            return self.web.json({"redriven": count, "ids": [e.milestone_id for e in chosen]})
