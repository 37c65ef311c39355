"""The CI-sized chaos run (a few minutes): the whole pipeline — Tryton sales over three
warehouses, `syncgov source`, two workers with the ERP sink, Tryton behind the fault proxy
behind nginx — with a kill -9 and restart of a worker, scaling out and in under load (a
fresh node recovering from the changelogs), a worker stalled (SIGSTOP) past the group's
session timeout and resumed, an ERP outage (Tryton stopped, started again on the same port
and database), ERP 500s, answers lost after the ERP committed (a create among them), poison
records and picks from an older Avro writer schema; orders changed and cancelled by the
ERP's users before picking, short picks and customer returns. Then Tryton's own documents
are compared with the expected result: nothing lost, nothing posted twice, nothing out of
order, every poison record dead-lettered with a reason. ``make chaos``
(``python -m app.harness.chaos.run``) is the full-size run.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.model import CoreSettings
from app.core.timeutil import format_ts
from app.harness.chaos import verify
from app.harness.chaos.faults import POISON_KINDS, WorkerPool, encode_old_pick, expect_dead_letter, poison
from app.harness.chaos.run import CREATE_CALL, Chaos, ChaosConfig, Say
from app.kafka import codec
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


def test_out_of_order_compares_each_effect_with_its_predecessors() -> None:
    order = "OUT-000007"
    expected = {
        "a1": {"type": "OrderAccepted", "order_id": order, "version": 1},
        "a2": {"type": "OrderAccepted", "order_id": order, "version": 2},
        "p": {"type": "OrderPicked", "order_id": order},
        "k": {"type": "OrderPacked", "order_id": order},
        "c": {"type": "ShipmentConfirmed", "order_id": order},
        "r": {"type": "ReturnReceived", "order_id": order, "rma_id": "RMA-7", "sku": "SKU-0001",
              "warehouse_id": "WH2"},
        "inv": {"type": "InventoryAdjusted", "sku": "SKU-0001"},
    }
    import datetime as dt

    def at(s: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(1_800_000_000 + s, dt.UTC).replace(tzinfo=None)

    def view(note_a2: float, ret: float) -> verify.TrytonView:
        return verify.TrytonView(
            {order: {"id": 7, "number": order}}, Counter({"a1": 1, "a2": 1}), {},
            note_times={"a1": 1_800_000_000 + 1.0, "a2": 1_800_000_000 + note_a2},
            returns={"RMA-7/SKU-0001": [{"id": 1, "create_date": at(ret), "warehouse": {"code": "WH2"}}]})

    times = {("stock.shipment.out", 7, "pick"): [(1_800_000_010.0, 1_800_000_011.0)],
             ("stock.shipment.out", 7, "pack"): [(1_800_000_012.0, 1_800_000_013.0)],
             ("stock.shipment.out", 7, "do"): [(1_800_000_014.0, 1_800_000_015.0)]}
    assert verify.out_of_order(expected, view(2.0, 20.0), times) == []
    # The v2 note written after the pick was sent; the return created while `do` was running.
    found = verify.out_of_order(expected, view(10.5, 14.5), times)
    assert [f.split(":")[0] + " " + f.split(": ")[1].split(" reached")[0] for f in found] == [
        f"{order} OrderPicked", f"{order} ReturnReceived RMA-7/SKU-0001"]
    # Two pick calls at once with the pack (a state change overlapping its predecessor's).
    times2 = {**times, ("stock.shipment.out", 7, "pack"): [(1_800_000_010.5, 1_800_000_013.0)]}
    assert [f.split(": ")[1].split(" reached")[0] for f in verify.out_of_order(expected, view(2.0, 20.0), times2)] \
        == ["OrderPacked"]


def test_a_fenced_exit_after_a_stall_is_expected_any_other_exit_is_a_crash(tmp_path: Path) -> None:
    pool = WorkerPool("127.0.0.1:1", tmp_path, {}, say=lambda _: None)
    restarted: list[str] = []
    pool._start = lambda name, timeout: restarted.append(name)  # type: ignore[method-assign,assignment,return-value]

    def exited(code: int) -> None:
        from app.harness.processes import WorkerProcess

        proc = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
        proc.wait()
        pool.workers["w1"] = WorkerProcess("127.0.0.1:1", tmp_path / "w1", process=proc)
        pool.wanted.add("w1")

    exited(75)
    pool.resumed_at["w1"] = time.monotonic()  # stalled, resumed just now
    pool.supervise()
    assert ([e.code for e in pool.fenced], pool.exits) == ([75], [])
    exited(75)  # no stall before it: the worker fenced itself on its own
    pool.supervise()
    exited(1)
    pool.resumed_at["w1"] = time.monotonic()
    pool.supervise()
    assert [e.code for e in pool.exits] == [75, 1] and restarted == ["w1"] * 3


def test_only_creates_match_the_create_filter() -> None:
    assert re.search(CREATE_CALL, "POST /erp/rest/model/ir.note?f=id")
    assert re.search(CREATE_CALL, "POST /erp/rest/model/stock.shipment.internal?f=state&f=number")
    assert not re.search(CREATE_CALL, "POST /erp/rest/model/stock.shipment.out/7/do?f=state")
    assert not re.search(CREATE_CALL, "GET /erp/rest/model/ir.note?d=x")
    assert not re.search(CREATE_CALL, "PUT /erp/rest/model/stock.shipment.out/7")
    assert re.search(CREATE_CALL, "POST /erp/rpc/?m=model.ir.note.create&n=12")
    assert re.search(CREATE_CALL, "POST /erp/rpc/?m=model.stock.shipment.internal.create&n=3")
    assert not re.search(CREATE_CALL, "POST /erp/rpc/?m=model.res.user.warning.create&n=4")
    assert not re.search(CREATE_CALL, "POST /erp/rpc/?m=model.stock.shipment.out.pick&n=4")
    assert not re.search(CREATE_CALL, "POST /erp/rpc/?m=common.db.login&n=1")


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


def test_bulk_calls_are_counted_from_trytons_own_transition_log() -> None:
    """A JSON-RPC bulk call names its records in its body: the fault proxy and nginx see one
    ``?m=model.stock.shipment.out.pick`` for many shipments. Tryton's ``ir.model.log`` has
    one transition per record it moved: that is what counts a repeat and times the effect."""
    at = dt.datetime(2026, 11, 27, 10, 0, 5)
    logs = [{"resource": "stock.shipment.out,9", "target": "state:picked", "create_date": at},
            {"resource": "stock.shipment.out,9", "target": "state:packed", "create_date": at + dt.timedelta(seconds=1)},
            {"resource": "stock.shipment.out,9", "target": "state:assigned", "create_date": at},  # no milestone's
            {"resource": "stock.shipment.internal,4", "target": "state:done", "create_date": at},
            {"resource": "sale.sale,1", "target": "state:done", "create_date": at}]
    times = verify.transition_times(logs)
    assert set(times) == {("stock.shipment.out", 9, "pick"), ("stock.shipment.out", 9, "pack"),
                          ("stock.shipment.internal", 4, "do")}
    assert verify.judge(_inputs(transitions=times)).twice == []
    twice = verify.transition_times([*logs, {"resource": "stock.shipment.out,9", "target": "state:picked",
                                             "create_date": at + dt.timedelta(seconds=9)}])
    v = verify.judge(_inputs(transitions=twice))
    assert [x.split()[0] for x in v.twice] == ["OrderPicked"]
    assert v.out_of_order == []
    swapped = verify.transition_times([{**logs[0], "create_date": at + dt.timedelta(seconds=2)}, *logs[1:]])
    v = verify.judge(_inputs(transitions=swapped))
    assert len(v.out_of_order) == 1 and "OrderPacked reached Tryton" in v.out_of_order[0], v.out_of_order


# -- the CI-sized chaos run -------------------------------------------------------------------


@pytest.fixture(scope="module")
def chaos_run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    cfg = ChaosConfig(
        orders=16, seed=3, workdir=tmp_path_factory.mktemp("chaos"), bootstrap=kafka_bootstrap,
        prefix=f"chaos{int(time.time())}", kills=2, outage_s=20, storm_s=0, errors_s=6, scale=True,
        scale_step_s=10, stalls=1, stall_s=10, change_share=0.15, cancel_share=0.1, short_share=0.3,
        return_share=0.3, poison_rate=0.02, old_schema_share=0.3, drain_timeout_s=300, extra_env=worker_env())
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
    assert counts["(d) the ERP commits a create, then its answer is lost"] == 1
    assert counts["(f) scale 1 -> 2 -> 1"] == 1
    assert counts["(h) worker stalled past the session timeout"] == 1
    assert chaos_run.pool is not None and chaos_run.pool.kills == 2 and chaos_run.pool.stalls == 1
    assert chaos_run.sent["old-schema picks (v1 writer)"] > 0
    # What the ERP side saw: requests refused while Tryton was down, 500s, answers lost after commit
    # (a create among them: Tryton made the document, the client never heard of it).
    lines = chaos_run.proxy_lines()
    actions = Counter(line.action for line in lines)
    assert actions["unreachable"] > 0 and actions["error"] > 0 and actions["commit-timeout"] > 0, actions
    assert [p for p in lines if p.action == "commit-timeout" and p.upstream_status is not None
            and 200 <= p.upstream_status < 300 and re.search(CREATE_CALL, f"{p.method} {p.uri}")]


@pytest.mark.chaos
@pytest.mark.erp
@pytest.mark.kafka
@pytest.mark.timeout(900)
def test_the_load_has_changes_cancellations_short_picks_returns_and_several_warehouses(chaos_run: Chaos) -> None:
    v = chaos_run.verdict
    assert v is not None and chaos_run.tail is not None
    assert {r["warehouse_id"] for r in chaos_run.tail.releases.values()} == set(chaos_run.cfg.warehouses)
    assert chaos_run.user_edits["change"] > 0 and chaos_run.user_edits["cancel"] > 0
    assert v.orders_changed == chaos_run.user_edits["change"]
    assert v.orders_cancelled == chaos_run.user_edits["cancel"]
    assert v.orders_short > 0 and chaos_run.sent["LineShortClosed"] == v.orders_short
    assert v.by_type.get("ReturnReceived", (0, 0))[0] == chaos_run.sent["ReturnReceived"] > 0  # posted: test_nothing_lost


@pytest.mark.chaos
@pytest.mark.erp
@pytest.mark.kafka
@pytest.mark.timeout(900)
def test_nothing_out_of_order(chaos_run: Chaos) -> None:
    """Per customer shipment, Tryton received OrderAccepted (each version), OrderPicked,
    OrderPacked, ShipmentConfirmed and ReturnReceived in that order."""
    v = chaos_run.verdict
    assert v is not None
    assert v.out_of_order == []


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
    assert v.orders_unworked == []
    assert v.orders_done + v.orders_cancelled == v.orders_released, v.orders_wrong


@pytest.mark.chaos
@pytest.mark.erp
@pytest.mark.kafka
@pytest.mark.apache_kafka
@pytest.mark.timeout(900)
def test_the_erp_writes_went_as_bulk_calls(chaos_run: Chaos) -> None:
    """Bulk mode is on in the chaos run: Tryton JSON-RPC button calls reached Tryton, some on
    several records at once, and the verdict counted their transitions from Tryton's log."""
    proxy = [p for p in chaos_run.proxy_lines() if "/rpc/" in p.uri and "m=model.stock.shipment.out." in p.uri]
    sizes = [int(m[1]) for p in proxy if (m := re.search(r"[?&]n=(\d+)", p.uri))]
    assert chaos_run.cfg.bulk and sizes, "no JSON-RPC bulk call on customer shipments reached Tryton"
    assert max(sizes) > 1, f"every bulk call carried one record: {Counter(sizes)}"
    assert chaos_run.transitions, "Tryton's transition log was not read"


@pytest.mark.chaos
@pytest.mark.erp
@pytest.mark.kafka
@pytest.mark.apache_kafka
@pytest.mark.timeout(900)
def test_nothing_lost(chaos_run: Chaos) -> None:
    v = chaos_run.verdict
    assert v is not None and v.expected > 3 * chaos_run.cfg.orders
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
    """A worker that exits by itself (e.g. a batch that raised) is a crash; exit code 75 shortly
    after its stall is a worker that found itself fenced, and expected."""
    assert chaos_run.pool is not None
    assert [(e.name, e.code) for e in chaos_run.pool.exits] == []
    assert all(e.code == 75 for e in chaos_run.pool.fenced)


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
