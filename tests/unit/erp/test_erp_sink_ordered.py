"""The ordered ERP sink: nothing lost, nothing twice, nothing out of order while
partitions are cut, restarted and fenced; deferral, holds, parking, poison, lost answers.

Every test drives ``app.erp.sink.OrderedErpSink`` with fakes (``sinkfakes``): a topic and
its consumer, the ledger, the dead-letter topic, a scripted ERP and virtual time."""
from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

import pytest

from app import metrics
from app.commands import dlq
from app.erp.port import (
    NotReadyErpError,
    PermanentErpError,
    PostResult,
    TransientErpError,
)
from app.erp.sink import SinkConfig
from tests.unit.erp.sinkfakes import Erp, Harness, Topic, milestone


def gauge(g: Any, *labels: str) -> float:
    return (g.labels(*labels) if labels else g)._value.get()


# -- hole 1: a batch cut by a rebalance --------------------------------------------------------


async def test_a_cut_batch_is_neither_overtaken_nor_skipped_by_a_later_all_in_ledger_batch() -> None:
    """A1 is cut mid-call (the partition is revoked), A2 was read behind it, and a later
    record C1 needs no ERP call (already in the ledger). Nothing is committed past A1 until
    its effect is in the ERP, and A2 never reaches the ERP before A1."""
    topic = Topic()
    a1, a2 = milestone("a1", "OrderPicked", "OUT-A"), milestone("a2", "OrderPacked", "OUT-A")
    c1 = milestone("c1", "OrderPicked", "OUT-C")
    topic.add(a1), topic.add(a2)
    h = Harness(topic, Erp())
    h.ledger.data[0] = {b"c1": b'{"outcome":"posted","ref":"doc:c1","at":"x","type":"OrderPicked"}'}

    def revoke_during_a1(m: dict[str, Any]) -> None:
        if m["milestone_id"] == "a1" and h.owner.partitions:
            h.owner.partitions = None  # a rebalance begins while a1 is about to be sent

    h.erp.on_call = revoke_during_a1
    h.start()
    await h.settle(5)
    assert h.erp.calls == [] and h.ledger.offset() == -1  # a1 cut before it was sent; nothing committed
    topic.add(c1)  # the later batch: all in the ledger
    await h.settle(20)  # ownership unknown meanwhile
    assert h.ledger.offset() == -1
    h.erp.on_call = None
    h.owner.partitions = {0}  # the partition comes back (or goes to the next owner)
    await h.run_until(lambda: h.done("a1", "a2") and h.ledger.offset() == 2)
    assert h.erp.calls == ["a1", "a2"]  # in order, each once; c1 acknowledged from the ledger
    assert h.source is not None and h.source.committed == {0: 3}
    assert h.source.assignments[-1] == {0: 0}  # the cut partition was read again from its stored offset


async def test_revoking_one_partition_stops_only_that_partitions_work() -> None:
    """Per-partition lifecycle, no process-wide flag: partition 1 goes on while 0 is revoked."""
    topic = Topic(partitions=2)
    topic.add(milestone("a1", "OrderPicked", "OUT-A"), partition=0)
    topic.add(milestone("b1", "OrderPicked", "OUT-B"), partition=1)
    topic.add(milestone("b2", "OrderPacked", "OUT-B"), partition=1)
    erp = Erp()
    h = Harness(topic, erp, owner=__import__("tests.unit.erp.sinkfakes", fromlist=["Ownership"]).Ownership({0, 1}),
                config=SinkConfig(settle_s=0.0))

    def revoke_0(m: dict[str, Any]) -> None:
        if m["milestone_id"] == "a1" and h.owner.partitions == {0, 1}:
            h.owner.partitions = {1}

    erp.on_call = revoke_0
    h.start()
    await h.run_until(lambda: h.done("b1", "b2", partition=1) and h.ledger.offset(1) == 1)
    assert "a1" not in erp.calls and h.ledger.offset(0) == -1
    assert h.sink is not None and set(h.sink.runs) == {1}


async def test_a_restart_mid_document_keeps_its_order_and_posts_nothing_twice() -> None:
    topic = Topic()
    for m in (milestone("a1", "OrderPicked", "OUT-A"), milestone("a2", "OrderPacked", "OUT-A"),
              milestone("a3", "ShipmentConfirmed", "OUT-A")):
        topic.add(m)
    erp = Erp()
    h = Harness(topic, erp)
    h.start()
    await h.run_until(lambda: "a1" in erp.posted)
    await h.stop()  # kill: a1 posted, maybe not in the ledger yet
    h.start()  # a new worker on the same ledger
    await h.run_until(lambda: h.done("a1", "a2", "a3") and h.ledger.offset() == 2)
    assert erp.posted == ["a1", "a2", "a3"]


async def test_a_new_owner_waits_until_the_previous_owners_requests_can_no_longer_commit() -> None:
    topic = Topic()
    topic.add(milestone("i1", "InventoryAdjusted"))
    h = Harness(topic, Erp())
    h.start()
    started = h.clock()
    await h.run_until(lambda: h.done("i1"))
    assert h.clock() - started >= h.config.settle_s  # inherited record: after the settle time
    topic.add(milestone("i2", "InventoryAdjusted", sku="SKU-2"))
    before = h.clock()
    await h.run_until(lambda: h.done("i2"))
    assert h.clock() - before < h.config.settle_s  # a record written after the takeover: at once


async def test_records_written_before_the_assignment_wait_even_when_the_broker_under_reports_the_end() -> None:
    """Tansu reports a partition's end as the base offset of its last producer batch + 1: a
    backlog written in one batch looks like 'nothing inherited'. The records' own timestamps
    (written before the assignment) still make the new owner wait the settle time; a record
    written after the assignment goes at once."""
    topic = Topic()
    topic.add(milestone("i1", "InventoryAdjusted")), topic.add(milestone("i2", "InventoryAdjusted", sku="SKU-2"))
    erp = Erp()
    h = Harness(topic, erp)
    h.start()
    source = h.source
    assert source is not None

    async def under_reported(partitions: Collection[int]) -> dict[int, int]:
        return dict.fromkeys(partitions, 0)

    source.ends = under_reported  # type: ignore[method-assign]
    started = h.clock()
    at: dict[str, float] = {}
    erp.on_call = lambda m: at.setdefault(m["milestone_id"], h.clock())
    await h.run_until(lambda: h.done("i1", "i2"))
    assert min(at.values()) - started >= h.config.settle_s
    i3 = milestone("i3", "InventoryAdjusted", sku="SKU-3")
    topic.add(i3)
    topic.parts[0][-1] = dataclasses.replace(topic.parts[0][-1], timestamp_ms=int(h.clock.wall() * 1000) + 1)
    before = h.clock()
    await h.run_until(lambda: h.done("i3"))
    assert at["i3"] - before < h.config.settle_s


# -- fencing -------------------------------------------------------------------------------------


async def test_a_revoked_partition_commits_nothing_and_the_next_owner_redoes_it_as_acknowledgements() -> None:
    topic = Topic()
    topic.add(milestone("a1", "OrderPicked", "OUT-A")), topic.add(milestone("a2", "OrderPacked", "OUT-A"))
    erp = Erp()
    h = Harness(topic, erp, config=SinkConfig(max_retries=3, settle_s=0.0))

    def lose_ownership_after_a1(m: dict[str, Any]) -> None:
        if m["milestone_id"] == "a2":
            h.owner.partitions = set()  # the fencing epoch moved on: another worker owns it now

    erp.on_call = lose_ownership_after_a1
    first = h.start()
    await h.settle(30)
    assert erp.posted == ["a1"] and h.ledger.commits <= 1
    assert h.ledger.offset() in (-1, 0) and 0 not in first.runs
    # The next owner (a new instance) redoes from the stored offset: a1 is acknowledged.
    erp.on_call = None
    h.owner.partitions = {0}
    h.start()
    await h.run_until(lambda: h.done("a1", "a2") and h.ledger.offset() == 1)
    assert erp.posted == ["a1", "a2"]


# -- hole 4: deferral, holds, parking, poison -----------------------------------------------


async def test_a_precondition_not_met_is_deferred_not_dead_lettered() -> None:
    topic = Topic()
    topic.add(milestone("k1", "OrderPacked", "OUT-A")), topic.add(milestone("c1", "ShipmentConfirmed", "OUT-A"))
    not_ready = NotReadyErpError(200, "OrderPacked: stock.shipment.out 'OUT-A' is in state 'waiting'")
    erp = Erp(script={"k1": [not_ready, not_ready]})
    h = Harness(topic, erp, config=SinkConfig(max_retries=3, settle_s=0.0))
    h.start()
    await h.run_until(lambda: h.done("k1", "c1"))
    assert erp.calls == ["k1", "k1", "k1", "c1"]  # c1 waited for k1's effect
    assert h.dead.records == []
    assert h.ledger.entry("k1")["outcome"] == "posted"


async def test_deferred_documents_retry_together_on_the_shared_tick() -> None:
    """Two documents not ready, deferred at different moments with different backoffs, retry at
    the same instant (a tick), so an adapter's reads for them share one batched request."""
    topic = Topic()
    topic.add(milestone("a1", "OrderPacked", "OUT-A")), topic.add(milestone("b1", "OrderPacked", "OUT-B"))
    not_ready = NotReadyErpError(200, "OrderPacked: stock.shipment.out is in state 'waiting'")
    erp = Erp(script={"a1": [not_ready, not_ready], "b1": [not_ready]})
    h = Harness(topic, erp, config=SinkConfig(max_retries=5, settle_s=0.0, defer_tick_s=2.0))
    at: dict[str, list[float]] = {}
    erp.on_call = lambda m: at.setdefault(m["milestone_id"], []).append(h.clock())
    h.start()
    await h.run_until(lambda: h.done("a1", "b1"))
    retries = at["a1"][1:] + at["b1"][1:]
    assert all(t % 2.0 == 0 for t in retries), at  # every retry on the tick
    assert at["a1"][1] == at["b1"][1]  # the first retries of both together
    assert h.dead.records == []


async def test_a_dead_lettered_milestone_holds_its_documents_successors_until_re_driven() -> None:
    topic = Topic()
    a1, a2, a3 = (milestone("a1", "OrderPicked", "OUT-A"), milestone("a2", "OrderPacked", "OUT-A"),
                  milestone("a3", "ShipmentConfirmed", "OUT-A"))
    b1 = milestone("b1", "OrderPicked", "OUT-B")
    topic.add(a1), topic.add(a2), topic.add(b1)
    erp = Erp(script={"a1": [PermanentErpError(200, "Tryton has no product 'SKU-1'")]})
    h = Harness(topic, erp, config=SinkConfig(max_retries=3, settle_s=0.0))
    h.start()
    await h.run_until(lambda: h.done("b1") and h.ledger.offset() == 2)
    topic.add(a3)  # a later milestone of the held document
    await h.run_until(lambda: (h.ledger.entry("a3") or {}).get("outcome") == "held" and h.ledger.offset() == 3)
    assert erp.calls == ["a1", "b1"]  # a2, a3 never reached the ERP
    assert h.ledger.entry("a1")["outcome"] == "dead_lettered"
    assert h.ledger.holds()[b"WH1|OUT-A".hex()] == {"blocker": "a1", "offset": 0, "reason": "dead_lettered",
                                                    "held": ["a2", "a3"]}
    assert gauge(metrics.ERP_HELD) == 2 and gauge(metrics.ERP_BLOCKED_DOCUMENTS, "dead_lettered") == 1
    # `syncgov dlq list` shows the blocker with its held successors.
    records = [(i, k, __import__("orjson").dumps(v)) for i, (k, v) in enumerate(h.dead.records)]
    entry, = dlq.entries_from(records)
    assert entry.milestone_id == "a1" and [x["held"] for x in entry.held] == ["a2", "a3"]
    assert any("held behind it: a2" in line for line in dlq.list_lines([entry]))
    await h.settle(50)
    assert erp.calls == ["a1", "b1"]  # still held: nothing moves without a re-drive
    # The fix, then `syncgov dlq replay`: a1 again on the topic, above where it failed.
    topic.add(a1)
    await h.run_until(lambda: h.done("a1", "a2", "a3") and h.ledger.offset() == 4)
    assert erp.posted == ["b1", "a1", "a2", "a3"]
    assert h.ledger.holds() == {} and gauge(metrics.ERP_HELD) == 0
    assert gauge(metrics.ERP_BLOCKED_DOCUMENTS, "dead_lettered") == 0
    # The re-drive marker closes the entry and its held markers.
    records.append((len(records), b"WH1|OUT-A", __import__("orjson").dumps({"redriven": "a1", "upto": entry.upto})))
    assert dlq.entries_from(records) == []


async def test_a_redelivered_dead_lettered_milestone_does_not_release_its_document() -> None:
    """After a crash the blocker's own record (same offset) comes again: still held."""
    topic = Topic()
    topic.add(milestone("a1", "OrderPicked", "OUT-A")), topic.add(milestone("a2", "OrderPacked", "OUT-A"))
    erp = Erp(script={"a1": [PermanentErpError(400, "no")]})
    h = Harness(topic, erp, config=SinkConfig(max_retries=3, settle_s=0.0))
    h.start()
    await h.run_until(lambda: h.ledger.offset() == 1)
    h.ledger.data[0][b"sink\x1fmeta\x1f0"] = h.ledger.data[0][b"sink\x1fmeta\x1f0"].replace(b'"offset":1', b'"offset":-1')
    await h.stop()
    h.start()  # re-reads a1 and a2 from offset 0
    await h.settle(50)
    assert erp.calls == ["a1"] and h.ledger.entry("a2")["outcome"] == "held" and h.ledger.offset() == 1


async def test_bounded_retries_park_one_document_while_another_of_the_partition_goes_on() -> None:
    topic = Topic()
    topic.add(milestone("a1", "OrderPicked", "OUT-A"))
    for i in range(1, 4):
        topic.add(milestone(f"b{i}", ["OrderPicked", "OrderPacked", "ShipmentConfirmed"][i - 1], "OUT-B"))
    topic.add(milestone("a2", "OrderPacked", "OUT-A"))
    erp = Erp(script={"a1": [TransientErpError(503, None, "ERP 503")] * 100})
    h = Harness(topic, erp, config=SinkConfig(max_retries=2, backoff_base_s=0.5, backoff_cap_s=4, settle_s=0.0))
    h.start()
    await h.run_until(lambda: h.done("b1", "b2", "b3") and h.ledger.offset() == 4)
    entry = h.ledger.entry("a1")
    assert entry["outcome"] == "parked" and "503" in entry["detail"]
    assert h.ledger.entry("a2")["outcome"] == "held" and "a2" not in erp.calls
    parked = [v for _, v in h.dead.records if v.get("parked")]
    assert [v["milestone_id"] for v in parked] == ["a1"] and parked[0]["failures"] >= 3
    assert gauge(metrics.ERP_BLOCKED_DOCUMENTS, "parked") == 1
    assert erp.calls.count("a1") < 10  # bounded: no endless retries
    # Re-drive after the ERP is fixed: a1, then the held a2.
    erp.script["a1"] = []
    topic.add(milestone("a1", "OrderPicked", "OUT-A"))
    await h.run_until(lambda: h.done("a1", "a2"))
    assert erp.posted[-2:] == ["a1", "a2"]


async def test_a_partial_erp_incident_shorter_than_the_park_time_parks_nothing() -> None:
    """Reads of one kind fail while the ERP answers others (seen in a chaos run: documents
    parked 25 s into an error phase, holding their successors): with ``park_after_s`` the
    counted failures alone do not park; the document is posted once the ERP recovers."""
    topic = Topic()
    topic.add(milestone("a1", "OrderPicked", "OUT-A"))
    for i in range(1, 4):
        topic.add(milestone(f"b{i}", ["OrderPicked", "OrderPacked", "ShipmentConfirmed"][i - 1], "OUT-B"))
    erp = Erp(script={"a1": [TransientErpError(502, None, "ERP 502")] * 6})
    h = Harness(topic, erp, config=SinkConfig(max_retries=2, park_after_s=300.0, backoff_base_s=0.5, backoff_cap_s=4,
                                              settle_s=0.0))
    h.start()
    await h.run_until(lambda: h.done("b1", "b2", "b3", "a1"), steps=20000)
    assert h.ledger.entry("a1")["outcome"] == "posted"
    assert h.dead.records == [] and erp.calls.count("a1") == 7
    # ... while a document that keeps failing alone past the park time is parked.
    topic.add(milestone("c1", "OrderPicked", "OUT-C"))
    topic.add(milestone("d1", "OrderPicked", "OUT-D"))
    erp.script["c1"] = [TransientErpError(502, None, "ERP 502")] * 1000
    await h.run_until(lambda: h.done("d1") and h.ledger.entry("c1") is not None, steps=200000)
    assert h.ledger.entry("c1")["outcome"] == "parked"
    assert erp.calls.count("c1") > 3  # more than max_retries: the time floor held it back


async def test_a_down_erp_parks_nothing() -> None:
    """When nothing gets through, failures do not count: the backlog waits, nothing is parked."""
    topic = Topic()
    topic.add(milestone("a1", "OrderPicked", "OUT-A")), topic.add(milestone("b1", "OrderPicked", "OUT-B"))
    down = [TransientErpError(None, None, "refused")] * 30
    erp = Erp(script={"a1": list(down), "b1": list(down)})
    h = Harness(topic, erp, config=SinkConfig(max_retries=2, backoff_cap_s=4, settle_s=0.0))
    h.start()
    await h.run_until(lambda: h.done("a1", "b1"), steps=20000)
    assert h.dead.records == [] and erp.calls.count("a1") == 31


async def test_an_undecodable_milestone_goes_to_the_erp_dead_letter_topic_and_the_sink_goes_on() -> None:
    topic = Topic()
    topic.add(b"\xc3\x01not a milestone")
    topic.add(milestone("a1", "OrderPicked", "OUT-A"))
    h = Harness(topic, Erp(), config=SinkConfig(settle_s=0.0))
    h.start()
    await h.run_until(lambda: h.done("a1") and h.ledger.offset() == 1)
    (key, record), = h.dead.records
    assert record["undecodable"] is True and record["detail"].startswith("undecodable milestone: ")
    assert record["offset"] == 0 and key == b"junk"
    entry, = dlq.entries_from([(0, key, __import__("orjson").dumps(record))])
    assert entry.kind == "undecodable" and not entry.redrivable


@pytest.mark.parametrize("foreign", [
    {"milestone_id": 7}, {"milestone_id": ["x1"]}, {"milestone_id": ""}, {"type": ["OrderPicked"]},
    {"event_ids": [1]}, {"order_id": ["OUT-X"]}, {"warehouse_id": {"id": 1}}, {"note": b"\x01"},
], ids=lambda d: ",".join(f"{k}={type(v).__name__}" for k, v in d.items()))
async def test_a_milestone_of_a_foreign_shape_is_a_dead_letter_and_the_sink_goes_on(
        foreign: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A record another producer wrote to the milestones topic with its own registry schema
    decodes to whatever that schema holds (an int id, bytes): the port refuses it by name, the
    sink dead-letters it and goes on, also after a restart (it once exited on writing such a
    record to its ledger, or on the next load of a hold keyed by an int id)."""
    from app.kafka import codec

    real = codec.decode
    record = {**milestone("x1", "OrderPicked", "OUT-X"), **foreign}
    monkeypatch.setattr(codec, "decode", lambda raw: dict(record) if raw == b"FOREIGN" else real(raw))
    topic = Topic()
    topic.add(b"FOREIGN", key=b"WH1|OUT-X")
    topic.add(milestone("a1", "OrderPicked", "OUT-A"))
    h = Harness(topic, Erp(), config=SinkConfig(settle_s=0.0))
    h.start()
    await h.run_until(lambda: h.done("a1") and h.ledger.offset() == 1)
    (_, dead), = h.dead.records
    assert dead["undecodable"] is True and dead["offset"] == 0
    h.start()  # a restart reads its partition's ledger and holds again
    topic.add(milestone("a2", "OrderPacked", "OUT-A"))
    await h.run_until(lambda: h.done("a2"))
    assert len(h.dead.records) == 1


# -- hole 3: a create whose answer is lost -------------------------------------------------


class LateCommitErp:
    """InventoryAdjusted as Tryton does it: read the internal shipment by reference, create
    it if none. The first create reaches the ERP but commits ``delay`` s later, after the
    client gave up (no answer)."""

    def __init__(self, clock: Any, delay: float) -> None:
        self.clock, self.delay = clock, delay
        self.documents: list[tuple[str, float]] = []  # (reference, commit time)
        self.creates = 0

    def visible(self, mid: str) -> bool:
        return any(ref == mid and at <= self.clock() for ref, at in self.documents)

    async def post(self, m: dict[str, Any]) -> PostResult:
        mid = m["milestone_id"]
        if self.visible(mid):
            return PostResult("already_done", f"stock.shipment.internal,{mid}")
        self.creates += 1
        if self.creates == 1:
            self.documents.append((mid, self.clock() + self.delay))
            raise TransientErpError(None, None, "POST stock.shipment.internal: no answer within 10 s", unknown=True)
        self.documents.append((mid, self.clock()))
        return PostResult("posted", f"stock.shipment.internal,{mid}")

    async def read_state(self, m: dict[str, Any]) -> None:
        return None

    async def close(self) -> None:
        pass


async def test_a_create_whose_answer_is_lost_makes_exactly_one_erp_document() -> None:
    topic = Topic()
    topic.add(milestone("i1", "InventoryAdjusted"))
    h = Harness(topic, None, config=SinkConfig(max_retries=5, backoff_base_s=0.5, backoff_cap_s=30, settle_s=10.0))
    h.erp = LateCommitErp(h.clock, delay=8.0)  # commits within the stated bound (ERP_TIMEOUT_S)
    h.start()
    await h.run_until(lambda: h.done("i1"))
    assert [ref for ref, _ in h.erp.documents] == ["i1"]  # one internal shipment: stock moved once
    assert h.ledger.entry("i1")["outcome"] == "already_done"


async def test_an_answered_transient_error_is_retried_after_the_backoff_only() -> None:
    topic = Topic()
    topic.add(milestone("a1", "OrderPicked", "OUT-A"))
    erp = Erp(script={"a1": [TransientErpError(503, None, "503")]})
    h = Harness(topic, erp, config=SinkConfig(backoff_base_s=0.5, backoff_cap_s=4, settle_s=60.0))
    h.start()
    await h.run_until(lambda: "a1" in erp.calls)
    first = h.clock()
    await h.run_until(lambda: h.done("a1"))
    assert h.clock() - first < 60.0  # known outcome (rolled back): no settle wait


# -- the window and backpressure ----------------------------------------------------------------


async def test_a_stuck_document_pauses_its_partition_at_the_window_and_resumes_after() -> None:
    topic = Topic()
    topic.add(milestone("a1", "OrderPicked", "OUT-A"))
    for i in range(12):
        topic.add(milestone(f"x{i}", "OrderPicked", f"OUT-X{i}"))
    erp = Erp(script={"a1": [NotReadyErpError(200, "waiting")] * 3})
    h = Harness(topic, erp, config=SinkConfig(max_retries=50, backoff_cap_s=2, settle_s=0.0, max_window=4,
                                               poll_records=2))
    h.start()
    await h.run_until(lambda: h.source is not None and 0 in h.source.paused)
    assert h.ledger.offset() == -1  # nothing past a1 committed while it is not resolved
    await h.run_until(lambda: h.done("a1", *(f"x{i}" for i in range(12))) and h.ledger.offset() == 12)


@pytest.mark.parametrize("state,kind", [("waiting", NotReadyErpError), ("cancelled", PermanentErpError)])
def test_tryton_packed_on_a_shipment_not_picked_yet_is_deferred_but_cancelled_is_permanent(state: str, kind: type) -> None:
    from app.erp.tryton import TrytonAdapter

    with pytest.raises(kind):
        TrytonAdapter._check_state({"number": "OUT-1", "state": state}, ("picked",), "OrderPacked")


async def test_an_adapter_bug_on_one_milestone_parks_it_instead_of_a_crash_loop() -> None:
    topic = Topic()
    topic.add(milestone("a1", "OrderPicked", "OUT-A")), topic.add(milestone("b1", "OrderPicked", "OUT-B"))
    topic.add(milestone("b2", "OrderPacked", "OUT-B")), topic.add(milestone("b3", "ShipmentConfirmed", "OUT-B"))
    erp = Erp(script={"a1": [KeyError("lines")] * 100})
    h = Harness(topic, erp, config=SinkConfig(max_retries=1, backoff_cap_s=1, settle_s=0.5))
    h.start()
    await h.run_until(lambda: h.done("b1", "b2", "b3") and (h.ledger.entry("a1") or {}).get("outcome") == "parked")
    assert "KeyError" in h.ledger.entry("a1")["detail"]


async def test_a_release_cut_by_a_restart_goes_on_in_order_on_the_next_owner() -> None:
    topic = Topic()
    a = [milestone("a1", "OrderPicked", "OUT-A"), milestone("a2", "OrderPacked", "OUT-A"),
         milestone("a3", "ShipmentConfirmed", "OUT-A")]
    for m in a:
        topic.add(m)
    erp = Erp(script={"a1": [PermanentErpError(200, "no such SKU")]})
    h = Harness(topic, erp, config=SinkConfig(max_retries=3, settle_s=5.0))
    h.start()
    await h.run_until(lambda: h.ledger.offset() == 2 and len(h.ledger.holds()) == 1)
    topic.add(a[0])  # re-drive
    await h.run_until(lambda: "a2" in erp.posted and h.ledger.offset() == 3)
    await h.stop()  # dies mid-release: a3 still held in the stored meta
    h.start()
    await h.run_until(lambda: h.done("a1", "a2", "a3") and h.ledger.holds() == {})
    assert erp.posted == ["a1", "a2", "a3"]


async def test_records_polled_while_ownership_moved_are_read_again() -> None:
    topic = Topic()
    topic.add(milestone("a1", "OrderPicked", "OUT-A"))
    h = Harness(topic, Erp(), config=SinkConfig(settle_s=0.0))
    sink = h.start()
    await sink.step()  # assigned, a1 read and started
    topic.add(milestone("a2", "OrderPacked", "OUT-A"))
    assert h.source is not None
    real_poll = h.source.poll

    async def poll_during_a_rebalance(n: int, t: float) -> list:
        out = await real_poll(n, t)
        h.owner.partitions = None  # the rebalance begins while the poll was out
        return out

    h.source.poll = poll_during_a_rebalance  # type: ignore[method-assign]
    await sink.step()
    h.source.poll = real_poll  # type: ignore[method-assign]
    h.owner.partitions = {0}  # same ownership as before
    await h.run_until(lambda: h.done("a1", "a2") and h.ledger.offset() == 1)
