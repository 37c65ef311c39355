"""Generic HTTP/JSON ERP adapter: one configured route per milestone type.

``ERP_HTTP_ROUTES`` is a JSON object. A milestone type maps to
``"METHOD /path/{field}"``; ``"read:<type>"`` optionally maps to a read
route that answers 200 when the milestone's effect already exists in the
ERP (404: not yet). Path fields come from the milestone and are URL-quoted.

A post sends the milestone's contract JSON as the body with
``Idempotency-Key: <milestone_id>`` and the key in the auth header
(``Authorization: Bearer <key>`` unless told otherwise). With a read route,
the document is read first and a hit is acknowledged without posting. A 409
answer means the ERP already has it (``already_done``); a 425 (Too Early)
means the document is not ready for this milestone yet (deferred, see
``NotReadyErpError``). Types without a route, and ``SyncException``, are
``skipped``.
"""
from __future__ import annotations

import json
import string
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from app.core.ratelimit import RatePolicy
from app.erp.client import ErpHttpClient, HttpAnswer
from app.erp.port import DocumentState, NotReadyErpError, PermanentErpError, PostResult
from app.settings import ErpSettings

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
READ_PREFIX = "read:"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # e.g. /orders/{order_id}/picked
    fields: tuple[str, ...]

    @classmethod
    def parse(cls, spec: str) -> Route:
        try:
            method, path = spec.split(None, 1)
        except ValueError:
            raise ValueError(f"route {spec!r} must be 'METHOD /path'") from None
        method, path = method.upper(), path.strip()
        if method not in METHODS or not path.startswith("/"):
            raise ValueError(f"route {spec!r} must be 'METHOD /path' with METHOD in {', '.join(sorted(METHODS))}")
        names = tuple(name for _, name, _, _ in string.Formatter().parse(path) if name)
        return cls(method, path, names)

    def render(self, milestone: Mapping[str, Any]) -> str:
        missing = [name for name in self.fields if milestone.get(name) in (None, "")]
        if missing:
            raise PermanentErpError(None, f"route {self.method} {self.path}: milestone has no {', '.join(missing)}")
        return self.path.format_map({name: urllib.parse.quote(str(milestone[name]), safe="") for name in self.fields})


def parse_routes(raw: str) -> tuple[dict[str, Route], dict[str, Route]]:
    """``ERP_HTTP_ROUTES`` -> (post routes, read routes) by milestone type; ValueError if malformed."""
    try:
        table = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"ERP_HTTP_ROUTES is not JSON: {exc}") from None
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise ValueError('ERP_HTTP_ROUTES must be a JSON object of strings, e.g. {"OrderPicked": "POST /orders/{order_id}/picked"}')
    posts, reads = {}, {}
    for key, spec in table.items():
        if key.startswith(READ_PREFIX):
            reads[key[len(READ_PREFIX):]] = Route.parse(spec)
        else:
            posts[key] = Route.parse(spec)
    return posts, reads


class HttpAdapter:
    """``ErpPort`` for any ERP with a JSON API (SAP, NetSuite, Dynamics behind a gateway)."""

    def __init__(self, client: ErpHttpClient, posts: Mapping[str, Route], reads: Mapping[str, Route]) -> None:
        self.client = client
        self.posts = dict(posts)
        self.reads = dict(reads)

    @classmethod
    def from_settings(
        cls,
        erp: ErpSettings,
        *,
        session: aiohttp.ClientSession | None = None,
        before_send: Callable[[], None] | None = None,
    ) -> HttpAdapter:
        posts, reads = parse_routes(erp.http_routes)
        key = erp.api_key.value
        client = ErpHttpClient(
            erp.base_url,
            policy=RatePolicy(rate_per_s=erp.rate_per_s, burst=erp.burst, max_in_flight=erp.max_in_flight),
            timeout_s=erp.timeout_s,
            throttle_statuses=erp.throttle_statuses,
            auth_header=(erp.http_auth_header, f"{erp.http_auth_scheme} {key}".strip()) if key else None,
            secret=key,
            session=session,
            before_send=before_send,
        )
        return cls(client, posts, reads)

    async def close(self) -> None:
        await self.client.close()

    async def read_state(self, milestone: dict[str, Any]) -> DocumentState | None:
        route = self.reads.get(str(milestone.get("type")))
        if route is None:
            return None
        path = route.render(milestone)
        try:
            answer = await self.client.request(route.method, path)
        except PermanentErpError as exc:
            if exc.status in (404, 410):
                return None
            raise
        body = self._parse(answer, route, path)
        fields = body if isinstance(body, dict) else {"body": body}
        state = str(fields.get("state") or fields.get("status") or "exists")
        return DocumentState(path, state, True, fields)

    async def post(self, milestone: dict[str, Any]) -> PostResult:
        kind = str(milestone.get("type"))
        route = self.posts.get(kind)
        if kind == "SyncException" or route is None:
            return PostResult("skipped", "")
        path = route.render(milestone)
        existing = await self.read_state(milestone)
        if existing is not None:
            return PostResult("already_done", existing.document_ref)
        try:
            answer = await self.client.request(
                route.method, path, body=orjson.dumps(milestone),
                headers={"Idempotency-Key": str(milestone["milestone_id"])})
        except PermanentErpError as exc:
            if exc.status == 409:
                return PostResult("already_done", f"{route.method} {path}")
            if exc.status == 425:
                raise NotReadyErpError(425, exc.detail) from None
            raise
        body = self._parse(answer, route, path)
        if isinstance(body, dict) and body.get("id") is not None:
            return PostResult("posted", str(body["id"]))
        return PostResult("posted", answer.headers.get("Location") or f"{route.method} {path}")

    def _parse(self, answer: HttpAnswer, route: Route, path: str) -> Any:
        """The JSON answer (None when empty); anything else is a permanent error."""
        if not answer.body.strip():
            return None
        try:
            return orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            text = self.client.scrub(answer.body.decode("utf-8", "replace"))
            raise PermanentErpError(answer.status, f"{route.method} {path}: unparseable answer: {text}") from None
