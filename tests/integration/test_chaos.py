"""The CI-sized chaos run (a few minutes): the whole pipeline — Tryton sales, `syncgov source`,
two workers with the ERP sink, Tryton behind the fault proxy behind nginx — with a kill -9
and restart of a worker, an ERP outage (Tryton stopped, started again on the same port and
database), ERP 500s and answers lost after the ERP committed, poison records and picks
from an older Avro writer schema. Then Tryton's own documents are compared with the
expected result: nothing lost, nothing posted twice, every poison record dead-lettered
with a reason. ``make chaos`` (``python -m app.chaos.run``) is the full-size run.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from app import codec
from app.chaos import verify
from app.chaos.faults import POISON_KINDS, encode_old_pick, expect_dead_letter, poison
from app.chaos.run import Chaos, ChaosConfig, Say
from app.core.model import CoreSettings
from app.core.timeutil import format_ts
from app.simulator.work import tracking_no, warehouse_work
from tests.conftest import worker_env

# -- the harness's own parts (no stack) -------------------------------------------------------


RELEASE = {"event_id": "tryton:stock.shipment.out:1:1", "type": "OrderReleased", "occurred_at": "2026-11-27T10:00:00.000Z",
           "source": "erp", "warehouse_id": "WH1", "order_id": "OUT-000001",
           "lines": [{"line_no": 11, "sku": "SKU-0001", "qty": 2}, {"line_no": 12, "sku": "SKU-0002", "qty": 1}]}


def test_every_poison_kind_is_a_dead_letter_and_old_picks_are_not() -> None:
    from random import Random

    rng = Random(5)
    work = warehouse_work([RELEASE], seed=1, start_ms=1_795_773_601_000)
    for n, kind in enumerate(POISON_KINDS * 3):
        raw = poison(kind, rng, n, work[n % len(work)])
        assert expect_dead_letter(raw), kind
    pick = next(e for e in work if e["type"] == "PickConfirmed")
    old = encode_old_pick(pick)
    assert old[:10] != codec.encode_event(pick)[:10]  # another writer schema
    assert expect_dead_letter(old) is None
    assert codec.decode(old)["tote_id"] is None and codec.decode(old)["qty"] == pick["qty"]


def test_state_changes_counts_only_answered_buttons() -> None:
    lines = [("POST", "/erp/rest/model/stock.shipment.out/7/do?f=state", 200),
             ("POST", "/erp/rest/model/stock.shipment.out/7/do?f=state", None),  # never answered
             ("POST", "/erp/rest/model/stock.shipment.out/7/do?f=state", 502),
             ("GET", "/erp/rest/model/stock.shipment.out?d=x", 200),
             ("POST", "/erp/rest/model/stock.shipment.internal/3/do", 200),
             ("POST", "/erp/rest/model/stock.shipment.out/7/pick", 200)]
    assert verify.state_changes(lines) == {("stock.shipment.out", 7, "do"): 1, ("stock.shipment.internal", 3, "do"): 1,
                                           ("stock.shipment.out", 7, "pick"): 1}


def _inputs(**tryton_changes: object) -> verify.Inputs:
    start = 1_795_773_601_000
    work = warehouse_work([RELEASE], seed=1, start_ms=start)
    flush = {"event_id": "flush", "type": "ItemScanned", "occurred_at": format_ts(start + 3_600_000), "source": "wms",
             "warehouse_id": "WH1", "barcode": "X", "location": "DOCK", "device_id": "t"}
    raws = [codec.encode_event(RELEASE)] + [codec.encode_event(e) for e in work] + [codec.encode_event(flush)]
    bad = b"\xfe not an event"
    settings = CoreSettings(window_size_ms=10_000, window_grace_ms=2_000)
    events = {0: [*raws, bad]}
    expected, _ = verify.replay(events, settings)
    mids = {m.type: m.milestone_id for m in expected}
    stock = next(m for m in expected if m.type == "InventoryAdjusted")
    shipment = {"id": 9, "number": "OUT-000001", "state": "done", "shipping_reference": tracking_no(1, "OUT-000001"),
                "outgoing_moves": [{"product": {"code": "SKU-0001"}, "quantity": 2.0},
                                   {"product": {"code": "SKU-0002"}, "quantity": 1.0}]}
    internal = {stock.milestone_id: [{"id": 4, "state": "done", "moves": [
        {"product": {"code": stock.body["sku"]}, "quantity": float(abs(stock.body["net_delta"]))}]}]}
    view = verify.TrytonView({"OUT-000001": shipment}, Counter({mids["OrderAccepted"]: 1}), internal)
    for name, value in tryton_changes.items():
        setattr(view, name, value)
    return verify.Inputs(
        events=events, settings=settings, milestones_topic=[m.to_dict() for m in expected],
        dead_letters=[{"raw": bad, "reason": "undecodable"}], erp_dead_letters=[], tryton=view,
        proxy_calls=Counter({("stock.shipment.out", 9, "do"): 1}), nginx_calls=Counter(),
        poison_sent=[("random-bytes", bad)], seeds={"OUT-000001": 1}, created=["OUT-000001"], tracking=tracking_no)


def test_the_verdict_passes_when_tryton_shows_each_effect_once() -> None:
    v = verify.judge(_inputs())
    assert (v.expected, v.posted, v.lost, v.twice) == (5, 5, [], [])
    assert v.orders_done == 1 and dict(v.poison_found) == {"random-bytes": 1} and v.ok


def test_the_verdict_finds_lost_and_twice_posted_milestones() -> None:
    inp = _inputs(internal={})
    inp.tryton.note_ids = Counter({k: 2 for k in inp.tryton.note_ids})
    inp.nginx_calls = Counter({("stock.shipment.out", 9, "do"): 2})
    inp.dead_letters = []
    v = verify.judge(inp)
    assert [x.split()[0] for x in v.lost] == ["InventoryAdjusted"]
    assert sorted(x.split()[0] for x in v.twice) == ["OrderAccepted", "ShipmentConfirmed"]
    assert v.poison_missing and not v.ok


# -- the CI-sized chaos run -------------------------------------------------------------------


@pytest.fixture(scope="module")
def chaos_run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    cfg = ChaosConfig(
        orders=16, seed=3, workdir=tmp_path_factory.mktemp("chaos"), bootstrap=kafka_bootstrap,
        prefix=f"chaos{int(time.time())}", kills=2, outage_s=20, storm_s=0, errors_s=6, scale=False,
        poison_rate=0.02, old_schema_share=0.3, drain_timeout_s=300, extra_env=worker_env())
    chaos = Chaos(cfg, Say())
    started = time.monotonic()
    # The loop's executor threads started the workers, which die with the thread that started
    # them (PR_SET_PDEATHSIG): the loop lives until the teardown.
    loop = asyncio.new_event_loop()
    try:
        chaos.verdict = loop.run_until_complete(chaos.run())
        print(f"chaos CI run: {time.monotonic() - started:.0f} s")
        yield chaos
    finally:
        chaos.stop()
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


@pytest.mark.chaos
@pytest.mark.erp
@pytest.mark.kafka
@pytest.mark.apache_kafka
@pytest.mark.timeout(900)
def test_faults_were_injected(chaos_run: Chaos) -> None:
    counts = chaos_run.faults.counts
    assert counts["(a) kill -9 + restart"] == 2
    assert counts["(b) ERP outage"] == 1
    assert counts["(d) the ERP answers 500/502/503"] == 1
    assert counts["(d) the ERP commits, then its answer is lost"] == 1
    assert chaos_run.pool is not None and chaos_run.pool.kills == 2
    assert chaos_run.sent["old-schema picks (v1 writer)"] > 0
    # What the ERP side saw: requests refused while Tryton was down, 500s, answers lost after commit.
    actions = Counter(line.action for line in chaos_run.proxy_lines())
    assert actions["unreachable"] > 0 and actions["error"] > 0 and actions["commit-timeout"] > 0, actions


@pytest.mark.chaos
@pytest.mark.erp
@pytest.mark.kafka
@pytest.mark.apache_kafka
@pytest.mark.timeout(900)
def test_every_released_order_is_done_once_with_its_tracking_number(chaos_run: Chaos) -> None:
    v = chaos_run.verdict
    assert v is not None
    assert v.not_released == []
    assert v.orders_released >= chaos_run.cfg.orders
    assert v.orders_done == v.orders_released, v.orders_wrong


@pytest.mark.chaos
@pytest.mark.erp
@pytest.mark.kafka
@pytest.mark.apache_kafka
@pytest.mark.timeout(900)
def test_nothing_lost(chaos_run: Chaos) -> None:
    v = chaos_run.verdict
    assert v is not None and v.expected > 4 * chaos_run.cfg.orders
    assert v.lost == []
    assert v.posted == v.expected
    assert v.missing_in_kafka == []


@pytest.mark.chaos
@pytest.mark.erp
@pytest.mark.kafka
@pytest.mark.apache_kafka
@pytest.mark.timeout(900)
def test_nothing_posted_twice(chaos_run: Chaos) -> None:
    v = chaos_run.verdict
    assert v is not None
    assert v.twice == []
    assert v.unexplained_documents == []
    assert v.erp_dead_letters == []


@pytest.mark.chaos
@pytest.mark.erp
@pytest.mark.kafka
@pytest.mark.apache_kafka
@pytest.mark.timeout(900)
def test_every_poison_record_is_dead_lettered_with_a_reason(chaos_run: Chaos) -> None:
    v = chaos_run.verdict
    assert v is not None
    assert set(v.poison_sent) == set(POISON_KINDS)
    assert v.poison_missing == []
    assert v.poison_found == v.poison_sent
    assert v.unexpected_dead_letters == []


@pytest.mark.chaos
@pytest.mark.erp
@pytest.mark.kafka
@pytest.mark.apache_kafka
@pytest.mark.timeout(900)
def test_workers_only_stop_when_killed(chaos_run: Chaos) -> None:
    """A worker that exits by itself (e.g. a batch that raised) is a crash."""
    assert chaos_run.pool is not None
    assert [(e.name, e.code) for e in chaos_run.pool.exits] == []


@pytest.mark.chaos
@pytest.mark.erp
@pytest.mark.kafka
@pytest.mark.apache_kafka
@pytest.mark.timeout(900)
def test_source_survives_erp_errors(chaos_run: Chaos) -> None:
    """`syncgov source` keeps polling through ERP outages and 5xx answers (a crash loop delays
    every order release by the restart back-off)."""
    assert chaos_run.source is not None
    exits = [(e.code, time.strftime("%H:%M:%S", time.localtime(e.at))) for e in chaos_run.source.exits]
    assert exits == [], f"syncgov source exited {len(exits)} times; see {chaos_run.source.log}"
