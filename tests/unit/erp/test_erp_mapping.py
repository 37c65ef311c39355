"""The generic adapter's mapping: templates, JSON Pointers, steps, read specs and the release
feed, pure and against a tiny local aiohttp ERP."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from app.erp import HttpAdapter, make_port
from app.erp.mapping import FeedSpec, ReadSpec, StepsRoute, Unresolved, pointer_get, render_json
from app.erp.port import PermanentErpError
from app.settings import SettingsError, load
from tests.fixtures.http_server import serving

KEY = "generic-erp-key"
PICKED = {"milestone_id": "m-1", "type": "OrderPicked", "warehouse_id": "WH1", "order_id": "SO 1/2",
          "occurred_at": "2026-11-27T10:00:00.000Z", "event_ids": ["e"], "lines": [], "short": False}


def test_pointers_and_templates() -> None:
    doc = {"a.": [{"b/c": 3, "n": None}], "x": "y"}
    assert pointer_get(doc, "") == doc
    assert pointer_get(doc, "/a./0/b~1c") == 3
    for missing in ("/a./1", "/z", "/x/0", "a"):
        with pytest.raises(Unresolved):
            pointer_get(doc, missing)
    scope = {"order_id": "SO 1/2", "qty": 3, "found": [{"id": 7, "when": {"y": 2026}}]}
    assert render_json({"q": "{qty}", "s": "order {order_id} x{qty}", "w": "{found/0/when}", "k": [1, "{found/0/id}"]},
                       scope) == {"q": 3, "s": "order SO 1/2 x3", "w": {"y": 2026}, "k": [1, 7]}
    route = StepsRoute.parse({"request": "POST /o/{order_id}/{found/0/id}?f=state", "body": {}}, "OrderPicked")
    assert route.steps[0].request.render(scope)[:3] == ("POST", "/o/SO%201%2F2/7?f=state", b"{}")
    with pytest.raises(Unresolved, match="found/1/id"):
        StepsRoute.parse("POST /o/{found/1/id}", "t").steps[0].request.render(scope)


@pytest.mark.parametrize(("raw", "words"), [
    ('{"OrderPicked": {"request": "POST /x", "bodyy": {}}}', "unknown key(s) bodyy"),
    ('{"OrderPicked": {"body": {}}}', "OrderPicked step 1: missing request"),
    ('{"OrderPicked": [{"request": "POST /x/{0}"}]}', "a placeholder is"),
    ('{"read:OrderPicked": {"request": "POST /s", "done": ["done"]}}', "done needs state"),
    ('{"read:OrderPicked": {"request": "POST /s", "state": "0/state"}}', "is not a JSON Pointer"),
    ('{"OrderPicked": {"request": "POST /x", "expect": {"/state": []}}}', "non-empty lists"),
    ('{"bulk:OrderPicked": {"request": "POST /x"}}', "a bulk route is"),
])
def test_bad_routes_are_start_up_errors_naming_the_setting(raw: str, words: str) -> None:
    with pytest.raises(SettingsError) as err:
        load({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "ERP_ADAPTER": "http", "ERP_HTTP_ROUTES": raw})
    assert "ERP_HTTP_ROUTES=" in str(err.value) and words in str(err.value), str(err.value)


FEED = {
    "request": "POST /feed", "body": {"after": "{cursor}", "max": "{limit}"},
    "items": "/orders", "next_cursor": "/next", "start": 0,
    "order": {"order_id": "/no", "warehouse_id": "/site", "carrier": "/ship_via"},
    "lines": {"items": "/lines", "line_no": "/n", "sku": "/item", "qty": "/q"},
}


@pytest.mark.parametrize(("change", "words"), [
    ({"item_cursor": "/id"}, "exactly one of next_cursor"),
    ({"order": {"order_id": "/no"}}, "missing warehouse_id"),
    ({"lines": {"items": "/lines", "sku": "/item", "qty": "/q"}}, "missing line_no"),
    ({"items": "orders"}, "is not a JSON Pointer"),
])
def test_bad_feeds_are_start_up_errors_naming_the_setting(change: dict[str, Any], words: str) -> None:
    with pytest.raises(SettingsError) as err:
        load({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "ERP_ADAPTER": "http", "ERP_HTTP_ROUTES": "{}",
              "ERP_HTTP_FEED": json.dumps({**FEED, **change})})
    assert "ERP_HTTP_FEED=" in str(err.value) and words in str(err.value), str(err.value)


def test_feed_items_become_order_released_events() -> None:
    feed = FeedSpec.parse(json.dumps({**FEED, "order": {**FEED["order"], "occurred_at": "/at"}}))
    item = {"no": "SO-1", "site": "WH1", "ship_via": "DHL", "at": "2026-11-27T10:00:00Z",
            "lines": [{"n": 2, "item": "SKU-2", "q": 1.0}, {"n": 1, "item": "SKU-1", "q": 2.5}, {"n": 3, "item": "X", "q": 0}]}
    assert feed.event(item, 0) == {
        "event_id": "feed:WH1:SO-1", "type": "OrderReleased", "occurred_at": "2026-11-27T10:00:00.000Z",
        "source": "erp", "warehouse_id": "WH1", "order_id": "SO-1", "carrier": "DHL",
        "lines": [{"line_no": 1, "sku": "SKU-1", "qty": 2.5}, {"line_no": 2, "sku": "SKU-2", "qty": 1}]}
    with pytest.raises(Unresolved, match="no warehouse_id at '/site'"):
        feed.event({**item, "site": None}, 0)
    keyset = FeedSpec.parse(json.dumps({**{k: v for k, v in FEED.items() if k != "next_cursor"},
                                        "item_cursor": ["/at", "/no"]}))
    assert keyset.next_cursor_of({}, [item], None) == ["2026-11-27T10:00:00Z", "SO-1"]
    assert keyset.next_cursor_of({}, [], ["x", 1]) == ["x", 1]
    read = ReadSpec.parse({"request": "POST /s", "found": "/0", "state": "/0/st", "done": ["done"], "ref": "/0/id",
                           "quantity": "/0/q", "changed": "/0/at"}, "read:X")
    assert read.document([], "w") is None
    assert read.document([{"st": "done", "id": 5, "q": 2, "at": 1000}], "w") == ("5", "done", True, 2.0, 1000)
    assert read.document([{"st": "open"}], "w") == ("w", "open", False, None, None)


# -- against a small ERP -------------------------------------------------------------------------


class StepErp:
    """Documents by number; a workflow (new -> ready -> picked); a release feed with a cursor."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any, dict[str, str]]] = []
        self.docs = {"SO-1": {"id": 11, "state": "new"}}
        self.orders = [{"no": f"SO-{i}", "site": "WH1", "lines": [{"n": 1, "item": "SKU-1", "q": i}]} for i in range(1, 6)]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        data = json.loads(body) if body else None
        self.requests.append((request.method, request.path_qs, data, dict(request.headers)))
        if request.path == "/find":
            doc = self.docs.get(data["number"])
            return web.json_response([{"number": data["number"], **doc}] if doc else [])
        if request.path == "/feed":
            after, limit = data["after"], data["max"]
            page = self.orders[after:after + limit]
            return web.json_response({"orders": page, "next": after + len(page)})
        doc_id, action = int(request.path.split("/")[2]), request.path.split("/")[3]
        doc = next(d for d in self.docs.values() if d["id"] == doc_id)
        flow = {"ready": ("new", "ready"), "pick": ("ready", "picked")}
        if action in flow and doc["state"] in (flow[action][0], flow[action][1]):
            doc["state"] = flow[action][1]
        return web.json_response({"id": doc_id, "state": doc["state"]})


ROUTES = {
    "read:OrderPicked": {"request": "POST /find", "body": {"number": "{order_id}"}, "found": "/0", "state": "/0/state",
                         "done": ["picked"], "ref": "/0/id"},
    "OrderPicked": [
        {"request": "POST /docs/{read/0/id}/ready", "body": {}, "headers": {"X-Ctx": "wh={warehouse_id}"}},
        {"request": "POST /docs/{read/0/id}/pick", "body": {"lines": "{lines}"}, "expect": {"/state": ["picked"]}},
    ],
    "read:ShipmentConfirmed": {"request": "POST /find", "body": {"number": "{order_id}"}, "found": "/0",
                               "state": "/0/state", "done": ["shipped"], "ref": "/0/id"},
    "ShipmentConfirmed": {"request": "POST /docs/{read/0/id}/ship", "body": {}, "expect": {"/state": ["shipped"]}},
}


@pytest.fixture
async def steps() -> AsyncIterator[tuple[StepErp, HttpAdapter]]:
    fake = StepErp()
    async with serving(fake.handle) as url:
        settings = load({"KAFKA_BOOTSTRAP_SERVERS": "unused:9092", "ERP_ADAPTER": "http",
                         "ERP_BASE_URL": url, "ERP_API_KEY": KEY, "ERP_HTTP_ROUTES": json.dumps(ROUTES),
                         "ERP_HTTP_FEED": json.dumps(FEED), "ERP_RATE_PER_S": "200", "ERP_BURST": "20"}).erp
        adapter = make_port(settings)
        assert isinstance(adapter, HttpAdapter)
        yield fake, adapter
        await adapter.close()


async def test_steps_run_in_order_on_the_read_document_and_a_repeat_only_reads(steps) -> None:
    fake, adapter = steps
    picked = {**PICKED, "order_id": "SO-1", "lines": [{"line_no": 1, "sku": "SKU-1", "ordered": 2, "picked": 2}]}
    state = await adapter.read_state(picked)
    assert state is not None and (state.state, state.done, state.document_ref) == ("new", False, "11")
    result = await adapter.post(picked)
    assert (result.outcome, result.document_ref) == ("posted", "11")
    assert [(m, p) for m, p, _, _ in fake.requests] == [
        ("POST", "/find"), ("POST", "/find"), ("POST", "/docs/11/ready"), ("POST", "/docs/11/pick")]
    _, _, body, headers = fake.requests[-1]
    assert body == {"lines": picked["lines"]} and headers["Idempotency-Key"] == "m-1.2"
    assert fake.requests[-2][3]["X-Ctx"] == "wh=WH1" and fake.requests[-2][3]["Authorization"] == f"Bearer {KEY}"
    before = len(fake.requests)
    assert (await adapter.post(picked)).outcome == "already_done"
    assert [p for _, p, _, _ in fake.requests[before:]] == ["/find"]


async def test_an_unmet_expectation_is_permanent_and_a_missing_document_names_it(steps) -> None:
    _, adapter = steps
    confirmed = {**PICKED, "type": "ShipmentConfirmed", "order_id": "SO-1"}
    with pytest.raises(PermanentErpError, match=r"expected one of \['shipped'\] at '/state', the ERP answered new"):
        await adapter.post(confirmed)
    with pytest.raises(PermanentErpError, match=r"\(the read route found no document\): \{read/0/id\}: nothing there"):
        await adapter.post({**confirmed, "order_id": "SO-404"})
    assert await adapter.read_state({**confirmed, "order_id": "SO-404"}) is None


async def test_the_feed_pages_from_its_cursor_and_reconciliation_reads_routed_types(steps) -> None:
    fake, adapter = steps
    events, cursor = await adapter.releases(None, page_size=2, overlap_s=5)
    assert [e["order_id"] for e in events] == ["SO-1", "SO-2", "SO-3", "SO-4", "SO-5"]
    assert cursor == {"cursor": 5}
    assert [r[2] for r in fake.requests] == [{"after": 0, "max": 2}, {"after": 2, "max": 2}, {"after": 4, "max": 2}]
    fake.orders.append({"no": "SO-6", "site": "WH1", "lines": [{"n": 1, "item": "SKU-1", "q": 6}]})
    events, cursor = await adapter.releases(cursor, page_size=2, overlap_s=5)
    assert [e["order_id"] for e in events] == ["SO-6"] and cursor == {"cursor": 6}
    fake.orders.append({"no": "SO-7", "site": None, "lines": []})
    with pytest.raises(PermanentErpError, match="ERP_HTTP_FEED POST /feed: feed item has no warehouse_id"):
        await adapter.releases(cursor, page_size=2, overlap_s=5)

    probes = [{"milestone_id": "c1", "type": "ShipmentConfirmed", "warehouse_id": "WH1", "order_id": "SO-1"},
              {"milestone_id": "c2", "type": "ShipmentConfirmed", "warehouse_id": "WH1", "order_id": "SO-9"},
              {"milestone_id": "a1", "type": "InventoryAdjusted", "warehouse_id": "WH1", "sku": "S", "net_delta": 1}]
    states = await adapter.reconcile_states(probes, 100)
    assert set(states) == {"c1", "c2"}  # no read route for InventoryAdjusted: not checkable here
    assert states["c2"] is None and states["c1"] is not None and not states["c1"].done
