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

**Mapped routes, release feed, OAuth2.** An entry may also be an object or a list: steps
(several requests per milestone, with bodies and headers built from the milestone and the
answers before them) and reads that say where a document's state is (``app.erp.mapping``);
``ERP_HTTP_FEED`` maps the ERP's release feed for ``syncgov source`` (``releases``), the
read routes serve reconciliation (``reconcile_states``), and ``ERP_OAUTH_*`` switches the
key for OAuth2 client credentials (``app.erp.oauth``). With a read route, only a document
in one of its ``done`` states is acknowledged without posting.

**Bulk mode.** A ``"bulk:<type>"`` route (e.g. ``"bulk:OrderPicked": "POST /bulk/picked"``)
sends that type's milestones in batches through the coalescing batcher
(``app.erp.batcher``): one request whose body is a JSON array of milestones (each carries
its ``milestone_id``: the per-item idempotency key; the request's ``Idempotency-Key`` is a
digest of the ids in it), answered by a JSON array (or ``{"results": [...]}``) of per-item
results in the same order, each ``{"status": <http status>, "id": ..., "error": ...}``. Each
item's status is mapped like a single post's (2xx posted, 409 already done, 425 deferred, a
throttle status or 5xx transient, other 4xx permanent with that item's ``error``). A whole
request refused with 400/413/422 is bisected until the item at fault stands alone, so one
bad item never fails its neighbours; an item the answer does not mention is an unknown
outcome (retried after ``ERP_TIMEOUT_S``, where the ERP's idempotency answers it). Bulk
types are not read first (the per-item idempotency key is the ERP's duplicate check).
This is the shape to put in front of OData ``$batch``, Dataverse ``ExecuteMultiple`` or
NetSuite list operations (a gateway maps it).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import string
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from app.core import model
from app.erp.batcher import Batcher
from app.erp.client import ErpHttpClient, HttpAnswer
from app.erp.mapping import (
    FeedSpec,
    ReadSpec,
    StepsRoute,
    Unresolved,
    parse_mapped_routes,
    pointer_get,
    request_line,
)
from app.erp.oauth import ClientCredentials, OAuthHttpClient
from app.erp.port import (
    DocumentState,
    MilestoneRecord,
    NotReadyErpError,
    PermanentErpError,
    PostResult,
    TransientErpError,
)
from app.erp.ratelimit import RatePolicy
from app.settings import ErpSettings

READ_PREFIX = "read:"
BULK_PREFIX = "bulk:"
#: Whole-request refusals of a bulk body that one item can cause (bisected).
SPLITTABLE_STATUSES = frozenset({400, 413, 422})


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # e.g. /orders/{order_id}/picked
    fields: tuple[str, ...]

    @classmethod
    def parse(cls, spec: str) -> Route:
        try:
            method, path = request_line(spec)
        except ValueError as exc:
            raise ValueError(f"route {spec!r} {exc}") from None
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
    if not isinstance(table, dict) or not all(isinstance(v, (str, dict, list)) for v in table.values()):
        raise ValueError('ERP_HTTP_ROUTES must be a JSON object of routes, e.g. {"OrderPicked": "POST /orders/{order_id}/picked"}')
    parse_mapped_routes(table)  # the object-form entries (steps, read specs): validated; see HttpAdapter.from_settings
    posts, reads = {}, {}
    for key, spec in table.items():
        if not isinstance(spec, str):
            continue
        if key.startswith(BULK_PREFIX):
            Route.parse(spec)  # validated; see parse_bulk_routes
        elif key.startswith(READ_PREFIX):
            reads[key[len(READ_PREFIX):]] = Route.parse(spec)
        else:
            posts[key] = Route.parse(spec)
    return posts, reads


def parse_bulk_routes(raw: str) -> dict[str, Route]:
    """The ``"bulk:<type>"`` routes of ``ERP_HTTP_ROUTES`` by milestone type."""
    table = json.loads(raw) if raw else {}
    return {k[len(BULK_PREFIX):]: Route.parse(v) for k, v in table.items() if k.startswith(BULK_PREFIX)}


def _unresolved(where: str, exc: Unresolved) -> PermanentErpError:
    return PermanentErpError(None, f"{where}: {exc}")


class _MappedCalls:
    """The object-form routes and the feed of :class:`HttpAdapter` (mixed in below)."""

    client: ErpHttpClient
    mapped_posts: dict[str, StepsRoute]
    mapped_reads: dict[str, ReadSpec]
    reads: dict[str, Route]
    feed: FeedSpec | None

    async def read_state(self, milestone: MilestoneRecord) -> DocumentState | None:
        raise NotImplementedError

    def _parse(self, answer: HttpAnswer, route: Route, path: str) -> Any:
        raise NotImplementedError

    async def _send(self, request: tuple[str, str, bytes | None, dict[str, str]]) -> Any:
        """One rendered request; its JSON answer (409: already done; 425: not ready)."""
        method, path, body, headers = request
        answer = await self.client.request(method, path, body=body, headers=headers)
        return self._parse(answer, Route(method, path, ()), path)

    async def _read_mapped(self, milestone: MilestoneRecord) -> tuple[DocumentState | None, Any]:
        kind = str(milestone.get("type"))
        spec = self.mapped_reads[kind]
        scope = {**milestone, "milestone": milestone}
        try:
            request = spec.request.render(scope)
        except Unresolved as exc:
            raise _unresolved(f"read:{kind} {spec.request.where}", exc) from None
        try:
            answer = await self._send(request)
        except PermanentErpError as exc:
            if exc.status in (404, 410):
                return None, None
            raise
        found = spec.document(answer, f"{request[0]} {request[1]}")
        if found is None:
            return None, answer
        ref, state, done, quantity, changed = found
        fields = answer if isinstance(answer, dict) else {"body": answer}
        return DocumentState(ref, state, done, fields, quantity=quantity, changed_ms=changed), answer

    async def _post_steps(self, route: StepsRoute, milestone: MilestoneRecord) -> PostResult:
        """Read (when the type has a read route), then each step in order; every step's answer
        must meet its ``expect``. A 409 is ``already_done``, a 425 defers the milestone."""
        kind, mid = str(milestone.get("type")), str(milestone["milestone_id"])
        scope: dict[str, Any] = {**milestone, "milestone": milestone}
        if kind in self.mapped_reads:
            existing, scope["read"] = await self._read_mapped(milestone)
        else:
            existing = await self.read_state(milestone) if kind in self.reads else None
        if existing is not None and existing.done:
            return PostResult("already_done", existing.document_ref)
        answer: Any = None
        where = ""
        for i, step in enumerate(route.steps):
            try:
                method, path, body, headers = step.request.render(scope)
            except Unresolved as exc:
                hint = " (the read route found no document)" if kind in self.mapped_reads and existing is None else ""
                raise _unresolved(f"{kind} step {i + 1} ({step.request.where}){hint}", exc) from None
            where = f"{method} {path}"
            key = mid if len(route.steps) == 1 else f"{mid}.{i + 1}"
            try:
                answer = await self._send((method, path, body, {"Idempotency-Key": key, **headers}))
            except PermanentErpError as exc:
                if exc.status == 409:
                    return PostResult("already_done", where)
                if exc.status == 425:
                    raise NotReadyErpError(425, exc.detail) from None
                raise
            unmet = step.unmet(answer)
            if unmet is not None:
                raise PermanentErpError(200, self.client.scrub(f"{kind} step {i + 1} ({where}): {unmet}"))
            if step.name:
                scope[step.name] = answer
        ref: Any = None
        if route.ref is not None:
            try:
                ref = pointer_get(answer, route.ref)
            except Unresolved:
                ref = None
        elif isinstance(answer, dict):
            ref = answer.get("id")
        return PostResult("posted", where if ref is None else str(ref))

    async def releases(self, cursor: Any, *, page_size: int, overlap_s: float = 0.0,
                       max_pages: int = 10) -> tuple[list[dict[str, Any]], Any]:
        """The ``OrderReleased`` events since ``cursor`` (``{"cursor": <the feed's cursor>}``,
        None: the feed's ``start``) and the next cursor, from ``ERP_HTTP_FEED``. An item the
        mapping cannot read is a permanent error naming it (the source stops: nothing is
        skipped silently). ``overlap_s``: the feed's own business (the Tryton source's)."""
        del overlap_s
        feed = self.feed
        if feed is None:
            raise PermanentErpError(None, "ERP_HTTP_FEED is not set: the generic adapter has no release feed")
        position = feed.start if not cursor else cursor.get("cursor")
        events: list[dict[str, Any]] = []
        now_ms = int(time.time() * 1000)
        for _ in range(max_pages):
            scope = {"cursor": position, "limit": page_size}
            try:
                request = feed.request.render(scope)
            except Unresolved as exc:
                raise _unresolved(f"ERP_HTTP_FEED {feed.request.where}", exc) from None
            answer = await self._send(request)
            try:
                items = feed.page(answer)
                events += [feed.event(item, now_ms) for item in items]
                position = feed.next_cursor_of(answer, items, position)
            except Unresolved as exc:
                raise _unresolved(f"ERP_HTTP_FEED {request[0]} {request[1]}", exc) from None
            if len(items) < page_size:
                break
        return events, {"cursor": position}

    async def reconcile_states(self, probes: Sequence[MilestoneRecord],
                               page_size: int) -> dict[str, DocumentState | None]:
        """Each probe's document (by milestone id) read through the type's read route; probes
        of a type without one are left out (this ERP's mapping cannot check them)."""
        del page_size  # one read per document: the generic routes read one each
        checkable = [p for p in probes if str(p.get("type")) in self.mapped_reads or str(p.get("type")) in self.reads]
        states = await asyncio.gather(*(self.read_state(p) for p in checkable))
        return {str(p["milestone_id"]): state for p, state in zip(checkable, states, strict=True)}


def bulk_kind(group: Any) -> str:
    """A bulk group's kind of request (batch size limit, metrics label): ``bulk <METHOD>``
    (bounded: the rendered path may name a document)."""
    return f"bulk {group[0]}"



class HttpAdapter(_MappedCalls):
    """``ErpPort`` for any ERP with a JSON API (SAP, NetSuite, Dynamics behind a gateway)."""

    def __init__(self, client: ErpHttpClient, posts: Mapping[str, Route], reads: Mapping[str, Route],
                 bulk: Mapping[str, Route] | None = None, *, max_batch: int = 100, target_s: float = 3.0,
                 window_s: float = 0.01) -> None:
        self.client = client
        self.posts = dict(posts)
        self.reads = dict(reads)
        self.bulk = dict(bulk or {})
        # The object-form routes and the release feed (``app.erp.mapping``), set by from_settings.
        self.mapped_posts: dict[str, StepsRoute] = {}
        self.mapped_reads: dict[str, ReadSpec] = {}
        self.feed: FeedSpec | None = None
        self.batcher = Batcher(client, self._execute_bulk, max_items=max_batch, target_s=target_s, window_s=window_s,
                               splittable=lambda exc: isinstance(exc, PermanentErpError)
                               and exc.status in SPLITTABLE_STATUSES,
                               before_send=client.before_send, kind=bulk_kind)

    @classmethod
    def from_settings(
        cls,
        erp: ErpSettings,
        *,
        session: aiohttp.ClientSession | None = None,
        before_send: Callable[[], None] | None = None,
        max_batch: int = 100,
        role: str = "sink",
        window_s: float = 0.25,
    ) -> HttpAdapter:
        posts, reads = parse_routes(erp.http_routes)
        bulk = parse_bulk_routes(erp.http_routes) if erp.http_routes else {}
        adapter = cls(_client(erp, session, before_send, role), posts, reads, bulk, max_batch=max_batch,
                      target_s=max(0.5, min(5.0, erp.timeout_s / 3)), window_s=window_s)
        adapter.mapped_posts, adapter.mapped_reads = parse_mapped_routes(json.loads(erp.http_routes or "{}"))
        adapter.feed = FeedSpec.parse(erp.http_feed) if erp.http_feed else None
        return adapter

    async def close(self) -> None:
        await self.batcher.close()
        await self.client.close()

    async def read_state(self, milestone: MilestoneRecord) -> DocumentState | None:
        if str(milestone.get("type")) in self.mapped_reads:
            return (await self._read_mapped(milestone))[0]
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

    async def post(self, milestone: MilestoneRecord) -> PostResult:
        kind = str(milestone.get("type"))
        if kind != model.M_SYNC_EXCEPTION and kind in self.bulk:
            bulk_route = self.bulk[kind]
            result: PostResult = await self.batcher.call((bulk_route.method, bulk_route.render(milestone)), milestone)
            return result
        if kind != model.M_SYNC_EXCEPTION and kind in self.mapped_posts:
            return await self._post_steps(self.mapped_posts[kind], milestone)
        route = self.posts.get(kind)
        if kind == model.M_SYNC_EXCEPTION or route is None:
            return PostResult("skipped", "")
        path = route.render(milestone)
        existing = await self.read_state(milestone)
        if existing is not None and existing.done:
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

    async def _execute_bulk(self, group: Any, milestones: list[dict[str, Any]]) -> list[Any]:
        """One bulk request; one outcome (PostResult or error) per milestone."""
        method, path = group
        ids = [str(m["milestone_id"]) for m in milestones]
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
        answer = await self.client.request(method, path, body=orjson.dumps(milestones),
                                           headers={"Idempotency-Key": f"bulk-{digest}"}, acquired=True)
        where = f"{method} {path}"
        body = self._parse(answer, Route(method, path, ()), path)
        results = body.get("results") if isinstance(body, dict) else body
        if not isinstance(results, list):
            raise PermanentErpError(answer.status, f"{where}: bulk answer is not a list of results: {str(body)[:300]}")
        by_id = {str(r.get("milestone_id")): r for r in results if isinstance(r, dict) and r.get("milestone_id")}
        out: list[Any] = []
        for i in range(len(milestones)):
            result = by_id.get(ids[i]) or (results[i] if i < len(results) and not by_id else None)
            out.append(self._item_outcome(where, ids[i], result))
        return out

    def _item_outcome(self, where: str, mid: str, result: Any) -> Any:
        if not isinstance(result, dict) or not isinstance(result.get("status"), int):
            return TransientErpError(None, None, f"{where}: no result for {mid} in the bulk answer "
                                                 f"({str(result)[:200]})", unknown=True)
        status = result["status"]
        detail = self.client.scrub(f"{where} [{mid}]: {status} {result.get('error') or result.get('detail') or ''}".strip())
        if 200 <= status < 300:
            ref = result.get("id")
            return PostResult("posted", str(ref) if ref is not None else f"{where} [{mid}]")
        if status == 409:
            return PostResult("already_done", f"{where} [{mid}]")
        if status == 425:
            return NotReadyErpError(425, detail)
        if status in self.client.throttle_statuses or status >= 500 or status == 408:
            return TransientErpError(status, None, detail, unknown=status in (502, 504))
        return PermanentErpError(status, detail)

    def _parse(self, answer: HttpAnswer, route: Route, path: str) -> Any:
        """The JSON answer (None when empty); anything else is a permanent error."""
        if not answer.body.strip():
            return None
        try:
            return orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            text = self.client.scrub(answer.body.decode("utf-8", "replace"))
            raise PermanentErpError(answer.status, f"{route.method} {path}: unparseable answer: {text}") from None


# -- mapped routes, the release feed, reconciliation and OAuth2 (app.erp.mapping, app.erp.oauth) ------


def _client(erp: ErpSettings, session: aiohttp.ClientSession | None,
            before_send: Callable[[], None] | None, role: str = "sink") -> ErpHttpClient:
    """The generic adapter's ERP client: OAuth2 client credentials when ``ERP_OAUTH_TOKEN_URL``
    is set, else the static key in ``ERP_HTTP_AUTH_HEADER`` (or no auth header)."""
    common: dict[str, Any] = {
        "policy": RatePolicy(rate_per_s=erp.rate_per_s, burst=erp.burst, max_in_flight=erp.max_in_flight,
                             reserve=erp.burst_reserve),
        "timeout_s": erp.timeout_s, "throttle_statuses": erp.throttle_statuses, "session": session,
        "before_send": before_send, "role": role,
    }
    if erp.oauth_token_url:
        credentials = ClientCredentials(erp.oauth_token_url, erp.oauth_client_id, erp.oauth_client_secret.value,
                                        scope=erp.oauth_scope, client_auth=erp.oauth_client_auth,
                                        timeout_s=erp.timeout_s)
        return OAuthHttpClient(erp.base_url, credentials=credentials, header=erp.http_auth_header,
                               scheme=erp.http_auth_scheme, **common)
    key = erp.api_key.value
    return ErpHttpClient(erp.base_url, auth_header=(erp.http_auth_header, f"{erp.http_auth_scheme} {key}".strip())
                         if key else None, secret=key, **common)
