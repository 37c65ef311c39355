"""Worker web endpoints: liveness, readiness (after table recovery), Prometheus metrics."""
from __future__ import annotations

from faust.web import Request, Response, Web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.faust_app import app
from app.metrics import RECOVERY_IN_PROGRESS, REGISTRY


def is_ready() -> bool:
    """Ready once tables have recovered and no rebalance is under way."""
    recovered = app.tables.recovery.completed.is_set() and not app.in_recovery
    RECOVERY_IN_PROGRESS.set(0 if recovered else 1)
    return recovered and not app.rebalancing


@app.page("/healthz")
async def healthz(web: Web, request: Request) -> Response:
    return web.json({"status": "ok"})


@app.page("/readyz")
async def readyz(web: Web, request: Request) -> Response:
    ready = is_ready()
    return web.json({"ready": ready}, status=200 if ready else 503)


@app.page("/metrics")
async def metrics(web: Web, request: Request) -> Response:
    is_ready()
    return web.bytes(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
