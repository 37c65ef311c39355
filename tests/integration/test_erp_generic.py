"""Any ERP end to end: Tryton's REST API driven as "another ERP" through the generic adapter.

Nothing of syncgov's Tryton code runs on the way: the release feed, the milestone routes and
the reads are mapping only (``ERP_HTTP_FEED``, ``ERP_HTTP_ROUTES``: Tryton's REST search
and workflow buttons described as requests and JSON Pointers), and the adapter authenticates
with OAuth2 client credentials at a token endpoint in front of the ERP (the test's gateway
swaps its short-lived access tokens for Tryton's key). Orders entered in Tryton flow through
``syncgov source``, the worker and its ERP sink (behind the nginx quota) to done shipments;
``syncgov reconcile`` then finds the ERP in sync but for the one order the ERP cancelled.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time

import orjson
import pytest

from app.commands import dlq
from app.core.keys import event_key
from app.erp.sales import new_order, shipment
from app.kafka import codec
from app.kafka.clients import produce, read_all
from app.settings import load
from app.simulator.work import tracking_no, warehouse_work, watermark_flush
from tests.fixtures.erp import ErpStack
from tests.fixtures.oauth import OAuthFront

pytestmark = [pytest.mark.erp, pytest.mark.kafka, pytest.mark.apache_kafka]

CLIENT_ID, CLIENT_SECRET = "syncgov-e2e", "e2e-client-secret-Vb71"
TOKEN_LIFETIME_S = 3.0
#: Time between the client's look at its token's age and the request's arrival at the gateway.
RENEWAL_SLACK_S = 0.5
#: Tryton's context header asking it to skip its confirmation dialogs (base64url of
#: {"_skip_warnings": true}): a static header of the mapping, nothing computed.
SKIP_WARNINGS = {"X-Tryton-Context": "eyJfc2tpcF93YXJuaW5ncyI6IHRydWV9"}


def tryton_datetime(when: dt.datetime) -> dict[str, object]:
    return {"__class__": "datetime", "year": when.year, "month": when.month, "day": when.day, "hour": when.hour,
            "minute": when.minute, "second": when.second, "microsecond": when.microsecond}


def mapping(database: str, start: dt.datetime) -> tuple[dict[str, object], dict[str, object]]:
    """(ERP_HTTP_ROUTES, ERP_HTTP_FEED) for Tryton's REST API, as a user of the generic adapter writes them."""
    model = f"/{database}/rest/model/stock.shipment.out"
    find = {"request": f"POST {model}/search_read",
            "body": {"domain": [["number", "=", "{order_id}"], ["warehouse.code", "=", "{warehouse_id}"]],
                     "fields_names": ["number", "state"], "limit": 1},
            "found": "/0", "state": "/0/state", "ref": "/0/id"}

    def button(name: str, state: str) -> dict[str, object]:
        return {"request": f"POST {model}/{{read/0/id}}/{name}?f=state", "body": {}, "headers": SKIP_WARNINGS,
                "expect": {"/state": [state]}}

    routes = {
        "read:OrderPicked": {**find, "done": ["picked", "packed", "shipped", "done"]},
        "OrderPicked": [button("assign_force", "assigned"), button("pick", "picked")],
        "read:OrderPacked": {**find, "done": ["packed", "shipped", "done"]},
        "OrderPacked": button("pack", "packed"),
        "read:ShipmentConfirmed": {**find, "done": ["done"]},
        "ShipmentConfirmed": [
            {"request": f"PUT {model}/{{read/0/id}}?f=state", "body": {"shipping_reference": "{tracking_no}"}},
            button("do", "done"),
        ],
    }
    feed = {
        "request": f"POST {model}/search_read",
        "body": {"domain": [["state", "in", ["waiting", "assigned"]],
                            ["OR", [["write_date", ">", "{cursor/0}"]],
                             [["write_date", "=", "{cursor/0}"], ["id", ">", "{cursor/1}"]]]],
                 "fields_names": ["number", "write_date", "warehouse.code", "outgoing_moves.product.code",
                                  "outgoing_moves.quantity"],
                 "order": [["write_date", "ASC"], ["id", "ASC"]], "limit": "{limit}"},
        "item_cursor": ["/write_date", "/id"],
        "start": [tryton_datetime(start), 0],
        "order": {"order_id": "/number", "warehouse_id": "/warehouse./code"},
        "lines": {"items": "/outgoing_moves.", "line_no": "/id", "sku": "/product./code", "qty": "/quantity"},
    }
    return routes, feed


def generic_env(stack: ErpStack, front: OAuthFront, start: dt.datetime) -> dict[str, str]:
    routes, feed = mapping(stack.database, start)
    return {
        "ERP_SINK_ENABLED": "true", "ERP_ADAPTER": "http", "ERP_BASE_URL": front.url,
        "ERP_HTTP_ROUTES": json.dumps(routes), "ERP_HTTP_FEED": json.dumps(feed),
        "ERP_OAUTH_TOKEN_URL": f"{front.url}/token", "ERP_OAUTH_CLIENT_ID": CLIENT_ID,
        "ERP_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
        "ERP_RATE_PER_S": str(stack.rate_per_s), "ERP_BURST": str(stack.burst), "ERP_TIMEOUT_S": "30",
        "RECONCILE_INTERVAL_S": "3600", "WINDOW_SIZE_S": "10", "WINDOW_GRACE_S": "1",
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True,
                          timeout=180, check=False)


async def test_tryton_as_another_erp_release_feed_to_reconciliation(erp_stack, kafka_bootstrap, worker_factory) -> None:
    rest = erp_stack.direct_rest()
    front = OAuthFront(erp_stack.gateway_url, {"Authorization": f"bearer {erp_stack.key}"}, client_id=CLIENT_ID,
                       client_secret=CLIENT_SECRET, lifetime_s=TOKEN_LIFETIME_S).start()
    try:
        start = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=2)  # Tryton: naive UTC
        created = [await new_order(rest, [("SKU-0071", 2), ("SKU-0072", 1)]) for _ in range(6)]
        cancelled = created[-1]  # the ERP cancels this one after its release: the warehouse ships it anyway
        good = created[:-1]
        numbers = {s["number"] for s in created}
        worker = worker_factory(**generic_env(erp_stack, front, start),
                                TOPIC_SOURCE_CURSOR=f"{worker_factory.prefix}.source-cursor")
        env = {**os.environ, **worker.env, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}

        # 1. The release feed: `syncgov source` with no Tryton code path.
        done_source = cli(env, "source", "--once")
        assert done_source.returncode == 0, done_source.stderr
        releases = [codec.decode(r.value) for r in read_all(kafka_bootstrap, worker.env["TOPIC_EVENTS"])]
        releases = [r for r in releases if r["type"] == "OrderReleased" and r["order_id"] in numbers]
        assert sorted(r["order_id"] for r in releases) == sorted(numbers)
        for r in releases:
            ship = next(s for s in created if s["number"] == r["order_id"])
            assert r["event_id"] == f"feed:WH1:{r['order_id']}" and r["source"] == "erp" and r["warehouse_id"] == "WH1"
            assert r["lines"] == sorted(({"line_no": mv["id"], "sku": mv["product"]["code"], "qty": int(mv["quantity"])}
                                         for mv in ship["outgoing_moves"]), key=lambda line: line["line_no"])
        # The cursor is stored: a second poll publishes nothing new.
        again = cli(env, "source", "--once")
        assert again.returncode == 0 and "published 0 order events" in again.stderr + again.stdout, again.stderr
        cursors = [r for r in read_all(kafka_bootstrap, worker.env["TOPIC_SOURCE_CURSOR"]) if r.key == b"cursor:http"]
        assert cursors and orjson.loads(cursors[-1].value)["cursor"][1] >= max(s["id"] for s in created)
        await rest.button("stock.shipment.out", cancelled["id"], "cancel")
        source_done_at = time.time()

        # 2. The warehouse works every order; the sink posts through the mapped routes.
        front.revoke_next()  # the ERP drops the worker's first token early: renewed once, sent again
        begin = max(r["occurred_at"] for r in releases) + 1000
        work = warehouse_work(releases, seed=3, start_ms=begin)
        records = [(event_key(e), orjson.dumps(e)) for e in work]
        records += [(key, orjson.dumps(e)) for key, e in watermark_flush("WH1", begin + 30_000, 4, "generic")]
        produce(kafka_bootstrap, worker.env["TOPIC_EVENTS"], records)

        deadline = time.monotonic() + 150
        done: dict[str, dict] = {}
        settings = load(env)
        while time.monotonic() < deadline and (len(done) < len(good) or not dlq.open_entries(settings)):
            for s in good:
                found = await shipment(rest, s["id"])
                if found["state"] == "done":
                    done[found["number"]] = found
            await asyncio.sleep(1)
        assert set(done) == {s["number"] for s in good}, f"not done in Tryton: {set(s['number'] for s in good) - set(done)}"
        for number, found in done.items():
            assert found["shipping_reference"] == tracking_no(3, number)
            assert {m["product"]["code"]: m["quantity"] for m in found["outgoing_moves"]} == {"SKU-0071": 2, "SKU-0072": 1}
        log = erp_stack.access_log.read_text().splitlines()
        for s in good:  # exactly once: one `do` per shipment reached the ERP
            assert len([line for line in log if f"/stock.shipment.out/{s['id']}/do" in line and " 200 " in line]) == 1
        # The cancelled order: Tryton ignores the button on a cancelled shipment (200, still
        # cancelled); the step's `expect` makes that a dead letter with what the ERP answered.
        entries = dlq.open_entries(settings)
        assert [(e.record["type"], e.record["milestone"]["order_id"]) for e in entries] == [
            ("OrderPicked", cancelled["number"])], [e.record for e in entries]
        assert entries[0].record["detail"].endswith(
            "/assign_force?f=state): expected one of ['assigned'] at '/state', the ERP answered cancelled"), entries[0].record
        assert (await shipment(rest, cancelled["id"]))["state"] == "cancelled"

        # 3. OAuth2: the token was renewed before it expired (never sent expired), and once on the 401.
        record = front.record
        assert [why for _, why in record.refused if why != "revoked"] == [], record.refused
        assert [why for _, why in record.refused].count("revoked") >= 1
        # The client stops using a token a quarter of its lifetime before it expires. Whether a
        # request of this run falls in that last quarter depends on the run's pace (an idle sink
        # fetches its next token after the expiry, which is right too), so what is asserted is
        # that no request carried a token past its renewal point; the renewal itself, with the
        # clock under control, is pinned by tests/unit/erp/test_erp_oauth.py.
        issued_at = dict((token, at) for at, token in record.issued)
        renew_after = TOKEN_LIFETIME_S * 0.75 + RENEWAL_SLACK_S
        late = [(at - issued_at[token], path) for at, token, path in record.forwarded
                if at - issued_at[token] > renew_after]
        assert late == [], f"requests sent with a token past its renewal point ({renew_after} s): {late}"
        assert len([1 for at, _ in record.issued if at >= source_done_at]) >= 2  # the revoked one was replaced
        assert record.bad_client == 0

        # 4. Reconciliation through the port: in sync but for the cancelled order.
        milestones = [codec.decode(r.value) for r in read_all(kafka_bootstrap, worker.env["TOPIC_MILESTONES"])]
        assert ("ShipmentConfirmed", cancelled["number"]) in {(m["type"], m.get("order_id")) for m in milestones}
        checked = cli({**env, "RECONCILE_WINDOW_S": "0"}, "reconcile", "--json")
        assert checked.returncode == 1, checked.stderr
        report = json.loads(checked.stdout)
        assert [(d["kind"], d["order_id"]) for d in report["drift"]] == [("shipped_not_posted", cancelled["number"])]
        assert "is cancelled in the ERP" in report["drift"][0]["detail"]
        assert report["drift"][0]["erp_ref"] == str(cancelled["id"])
        assert report["published"] == [report["drift"][0]["record_id"]]

        # Secrets: the client secret, the tokens and Tryton's key appear in no log or output.
        texts = [worker.log_file.read_text(), done_source.stdout + done_source.stderr, checked.stdout + checked.stderr]
        for text in texts:
            assert CLIENT_SECRET not in text and erp_stack.key not in text
            assert not any(token in text for _, token in record.issued)
    finally:
        front.stop()
        await rest.close()
