"""The chaos verifier: what should be in the ERP, what Tryton shows, and the difference.

Expected: the governance core replayed over the recorded events topic, partition by
partition in offset order (exactly what a worker computes, minus crashes), gives every
milestone that must reach the ERP; the order-release events give every order that must
end as a done shipment with the tracking number its simulated dispatch carried.

Posted: Tryton's own documents, read straight from Tryton (not through the gateway):
customer shipments (state, ``shipping_reference``, quantities), the notes that record
``OrderAccepted`` (``[syncgov <milestone_id>]``), the internal shipments that
``InventoryAdjusted`` posts (``reference`` = milestone id). Posted twice: more than one
note or internal shipment for a milestone, or more than one state-changing call
(``pick``, ``pack``, ``do``) for a document that the ERP answered 2xx — counted in the
fault proxy's log (what reached Tryton, including answers the client never saw because
of an injected timeout), in the nginx access log (what the client saw) and in Tryton's own
transition log (``ir.model.log``: one entry per record a button moved, also for the JSON-RPC
bulk calls, whose records travel in the body), the highest of the three.

Out of order: per customer shipment, the contract's milestone sequence (OrderAccepted v1..n
< OrderPicked < OrderPacked < ShipmentConfirmed < ReturnReceived) must be the order in which
their effects reached Tryton: the notes' and customer returns' own ``create_date`` (Tryton's
transaction time), the ``pick``/``pack``/``do`` calls that Tryton answered 2xx in the fault
proxy's log (arrival and answer times); plus every milestone Tryton refused because its
predecessor was not there yet (an ERP dead letter naming the document's state).

Poison: every poison record sent must be in the dead-letter topic, byte for byte, with a
reason; anything else in the dead-letter topic is unexpected.
"""
from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from app.commands.replay import PartitionedReplay, process_record
from app.core.model import CoreSettings, DeadLetter, Milestone
from app.erp.sales import stock_moves_view
from app.erp.tryton import INTERNAL, RETURN, SHIPMENT, TrytonRest
from app.kafka import codec
from app.kafka.clients import client_config

#: Milestone types whose effect must be in the ERP.
POSTED_TYPES = ("OrderAccepted", "OrderPicked", "OrderPacked", "ShipmentConfirmed", "InventoryAdjusted",
                "ReturnReceived")
#: Shipment states in which each order milestone's effect is in Tryton.
_STATES = {
    "OrderPicked": {"picked", "packed", "shipped", "done"},
    "OrderPacked": {"packed", "shipped", "done"},
    "ShipmentConfirmed": {"done"},
}
_BUTTON = {"OrderPicked": "pick", "OrderPacked": "pack", "ShipmentConfirmed": "do"}
_CALL = re.compile(r"/rest/model/(stock\.shipment\.(?:out\.return|out|internal))/(\d+)/(pick|pack|do|receive)(?:[?/]|$)")
#: An ERP dead letter saying the document was not ready for the milestone: it came too early.
_TOO_EARLY = re.compile(r"is in state '?(\w+)'? \(needs one of|not done \(not shipped\)")
_NOTE_ID = re.compile(r"\[syncgov ([0-9A-Za-z._:-]+)\]")


# -- Kafka -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rec:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    ts_ms: int = 0  # the record's Kafka timestamp (create time)


def read_topic(bootstrap: str, topic: str, idle_s: float = 4.0, timeout_s: float = 300.0) -> list[Rec]:
    """Every record of ``topic``, from the start until nothing new came for ``idle_s``
    (Tansu under-reports end offsets after multi-record batches, so no end offsets here)."""
    consumer = Consumer({**client_config(bootstrap), "group.id": f"syncgov-chaos-{time.monotonic_ns()}",
                         "enable.auto.commit": False, "fetch.message.max.bytes": 2_000_000})
    out: list[Rec] = []
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return out
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: still reading after {timeout_s:.0f} s ({len(out)} records)")
            msgs = consumer.consume(5000, 0.5)
            for msg in msgs:
                partition, offset = msg.partition(), msg.offset()
                if msg.error() is None and partition is not None and offset is not None:  # (always both, then)
                    out.append(Rec(partition, offset, msg.key(), msg.value() or b"", msg.timestamp()[1]))
            if msgs:
                last = time.monotonic()
    finally:
        consumer.close()
    return out


def by_partition(records: Iterable[Rec]) -> dict[int, list[bytes]]:
    parts: dict[int, list[Rec]] = defaultdict(list)
    for r in records:
        parts[r.partition].append(r)
    return {p: [r.value for r in sorted(rs, key=lambda r: r.offset)] for p, rs in sorted(parts.items())}


def replay(partitions: Mapping[int, Sequence[bytes]], settings: CoreSettings) -> tuple[list[Milestone], list[DeadLetter]]:
    """The worker's two stages over each partition's records (``app.commands.replay.PartitionedReplay``:
    an engine per input partition, one inventory stage), decoding as agents/governance.py
    does; no end-of-input flush (a partition that was never written is idle)."""
    milestones, letters, _ = replay_orders(partitions, settings)
    return milestones, letters


def replay_orders(partitions: Mapping[int, Sequence[bytes]], settings: CoreSettings
                  ) -> tuple[list[Milestone], list[DeadLetter], dict[str, str]]:
    """``replay``, plus every order's final status in the core (order id -> ``open``,
    ``cancelled`` or ``unreleased``)."""
    run = PartitionedReplay(max(partitions, default=-1) + 1, settings)
    outputs: list[object] = []
    for p in range(len(run.engines)):
        for raw in partitions.get(p, ()):
            outputs.extend(run.route(p, process_record(run.engines[p], raw)))
    for p in range(len(run.engines)):
        outputs.extend(run.end_partition(p))
    letters = [o for o in outputs if isinstance(o, DeadLetter)]
    statuses = {order_id: state.status for engine in run.engines for (_, order_id), state in engine.orders.items()}
    return [o for o in outputs if isinstance(o, Milestone)], letters, statuses


def erp_events(partitions: Mapping[int, Sequence[bytes]], types: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The ERP's (source erp) Avro events of ``types`` on the topic, partition by partition, in offset order."""
    for records in partitions.values():
        for raw in records:
            if raw[:2] != codec.MAGIC:
                continue
            try:
                d = codec.decode(raw)
            except codec.DecodeError:
                continue
            if d.get("type") in types and d.get("source") == "erp":
                yield d


def releases_of(partitions: Mapping[int, Sequence[bytes]]) -> dict[str, dict[str, Any]]:
    """The first OrderReleased (source erp) of every order in the events topic, by order id."""
    out: dict[str, dict[str, Any]] = {}
    for d in erp_events(partitions, ("OrderReleased",)):
        out.setdefault(d["order_id"], d)
    return out


def order_changes(partitions: Mapping[int, Sequence[bytes]]) -> dict[str, list[str]]:
    """Order id -> the ERP's OrderChanged / OrderCancelled types on the topic, in offset order."""
    out: dict[str, list[str]] = defaultdict(list)
    for d in erp_events(partitions, ("OrderChanged", "OrderCancelled")):
        out[d["order_id"]].append(d["type"])
    return dict(out)


def release_lags(events: Iterable[Rec], milestones: Iterable[Rec]) -> list[float]:
    """Seconds from each OrderReleased reaching Kafka to its OrderAccepted reaching Kafka (first
    copies): how long warehouse processing kept an order waiting, rebalances and crashes included."""
    released: dict[str, int] = {}
    for r in events:
        if r.value[:2] == codec.MAGIC:
            try:
                d = codec.decode(r.value)
            except codec.DecodeError:
                continue
            if d.get("type") == "OrderReleased":
                released.setdefault(d["event_id"], r.ts_ms)
    accepted: dict[str, int] = {}
    for r in milestones:
        try:
            m = codec.decode(r.value)
        except codec.DecodeError:
            continue
        if m.get("type") == "OrderAccepted" and m.get("event_ids"):
            first = m["event_ids"][0]
            accepted[first] = min(accepted.get(first, r.ts_ms), r.ts_ms)
    return sorted((accepted[e] - released[e]) / 1000 for e in accepted if e in released)


# -- Tryton ------------------------------------------------------------------------------------


@dataclass
class TrytonView:
    shipments: dict[str, dict[str, Any]]  # by number
    note_ids: Counter[str]  # milestone id -> notes carrying it
    internal: dict[str, list[dict[str, Any]]]  # reference -> internal shipments
    note_times: dict[str, float] = field(default_factory=dict)  # milestone id -> first note's create_date (epoch s)
    returns: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "<rma>/<sku>" -> customer returns
    # (model, id, button) -> create_date (epoch s) of each state transition Tryton logged for it
    transitions: dict[tuple[str, int, str], list[float]] = field(default_factory=dict)


def epoch(stamp: Any) -> float | None:
    """A Tryton datetime (naive UTC: trytond runs with TZ=UTC) as epoch seconds."""
    if isinstance(stamp, dt.datetime):
        return stamp.replace(tzinfo=dt.UTC).timestamp()
    return None


async def read_tryton(rest: TrytonRest, numbers: Iterable[str]) -> TrytonView:
    """Tryton's own documents for these order numbers, the syncgov notes and referenced stock moves."""
    shipments: dict[str, dict[str, Any]] = {}
    wanted = sorted(set(numbers))
    for i in range(0, len(wanted), 200):
        for s in await rest.search(SHIPMENT, [("number", "in", wanted[i:i + 200])], [
                "number", "state", "shipping_reference", "outgoing_moves.product.code",
                "outgoing_moves.quantity", "outgoing_moves.state"]):
            shipments[s["number"]] = s
    notes = await rest.search("ir.note", [("message", "like", "%[syncgov %")], ["message", "resource", "create_date"])
    note_ids: Counter[str] = Counter()
    note_times: dict[str, float] = {}
    for note in notes:
        found = _NOTE_ID.findall(note.get("message") or "")
        note_ids.update(found)
        at = epoch(note.get("create_date"))
        for mid in found:
            if at is not None and (mid not in note_times or at < note_times[mid]):
                note_times[mid] = at
    internal: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in await stock_moves_view(rest):
        internal[doc["reference"]].append(doc)
    returns: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in await rest.search(RETURN, [("reference", "!=", None)], [
            "reference", "state", "create_date", "warehouse.code", "incoming_moves.product.code",
            "incoming_moves.quantity"]):
        returns[doc["reference"]].append(doc)
    transitions = transition_times(await rest.search(
        "ir.model.log", [("event", "=", "transition")], ["resource", "target", "create_date"]))
    return TrytonView(shipments, note_ids, dict(internal), note_times, dict(returns), transitions)


#: The button whose transition Tryton logs with each target (``ir.model.log``, event ``transition``).
_TARGET_BUTTON = {"state:picked": "pick", "state:packed": "pack", "state:done": "do", "state:received": "receive"}


def transition_times(logs: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int, str], list[float]]:
    """(model, id, button) -> the times Tryton itself logged that button's transition
    (``Workflow.transition`` writes one ``ir.model.log`` per record it moved, whatever the
    protocol: REST, or a JSON-RPC bulk call whose ids travel in the body; a record already
    in the target state is not moved and not logged)."""
    out: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    for entry in logs:
        resource, button = str(entry.get("resource") or ""), _TARGET_BUTTON.get(str(entry.get("target")))
        model, _, rid = resource.rpartition(",")
        at = epoch(entry.get("create_date"))
        if button and model in (SHIPMENT, INTERNAL, RETURN) and rid.isdigit() and at is not None:
            out[(model, int(rid), button)].append(at)
    return {k: sorted(v) for k, v in out.items()}


async def done_progress(rest: TrytonRest, numbers: Iterable[str]) -> tuple[int, set[str]]:
    """(shipments done among ``numbers``, references of done internal shipments): the cheap
    progress check while waiting for the pipeline to drain."""
    wanted = sorted(set(numbers))
    done = 0
    for i in range(0, len(wanted), 500):
        done += len(await rest.search(SHIPMENT, [("number", "in", wanted[i:i + 500]), ("state", "=", "done")],
                                      ["number"]))
    refs = {d["reference"] for d in await rest.search(INTERNAL, [("reference", "!=", None), ("state", "=", "done")],
                                                      ["reference"])}
    return done, refs


# -- logs --------------------------------------------------------------------------------------


def state_change_times(lines: Iterable[tuple[float, float, str, str, int | None]]
                       ) -> dict[tuple[str, int, str], list[tuple[float, float]]]:
    """(model, id, button) -> (arrival, answer) epoch times of each call answered 2xx, from
    the fault proxy's (arrival, answer, method, uri, upstream status) lines (both times from
    the proxy's wall clock, in microseconds: a call sent after an answer arrives after it)."""
    out: dict[tuple[str, int, str], list[tuple[float, float]]] = defaultdict(list)
    for arrived, answered, method, uri, status in lines:
        if method != "POST" or status is None or not 200 <= status < 300:
            continue
        m = _CALL.search(uri)
        if m:
            out[(m[1], int(m[2]), m[3])].append((arrived, answered))
    return {k: sorted(v) for k, v in out.items()}


def state_changes(lines: Iterable[tuple[str, str, int | None]]) -> Counter[tuple[str, int, str]]:
    """(model, id, button) -> calls answered 2xx, from (method, uri, status) lines."""
    out: Counter[tuple[str, int, str]] = Counter()
    for method, uri, status in lines:
        if method != "POST" or status is None or not 200 <= status < 300:
            continue
        m = _CALL.search(uri)
        if m:
            out[(m[1], int(m[2]), m[3])] += 1
    return out


# -- the verdict -------------------------------------------------------------------------------


@dataclass
class Inputs:
    """Everything the verdict is computed from (gathered by the harness)."""

    events: dict[int, list[bytes]]  # the events topic by partition, offset order
    settings: CoreSettings
    milestones_topic: list[dict[str, Any]]  # decoded, every copy
    dead_letters: list[dict[str, Any]]  # decoded DeadLetter records
    erp_dead_letters: list[dict[str, Any]]
    tryton: TrytonView
    proxy_calls: Counter[tuple[str, int, str]]  # what reached Tryton and was answered 2xx
    nginx_calls: Counter[tuple[str, int, str]]  # what the client was answered 2xx
    poison_sent: list[tuple[str, bytes]]  # (kind, raw)
    seeds: dict[str, int]  # order id -> seed of its simulated work (tracking number)
    created: list[str] = field(default_factory=list)  # order numbers the ERP users created
    tracking: Any = None  # (seed, order_id) -> tracking number; app.simulator.work.tracking_no
    proxy_times: dict[tuple[str, int, str], list[tuple[float, float]]] = field(default_factory=dict)  # state_change_times


@dataclass
class Verdict:
    expected: int = 0
    posted: int = 0
    lost: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)
    by_type: dict[str, tuple[int, int]] = field(default_factory=dict)  # type -> (expected, posted)
    orders_released: int = 0
    orders_done: int = 0
    orders_wrong: list[str] = field(default_factory=list)
    not_released: list[str] = field(default_factory=list)
    missing_in_kafka: list[str] = field(default_factory=list)
    unexpected_milestones: list[str] = field(default_factory=list)
    milestone_copies: int = 0  # extra copies on the milestones topic (at-least-once re-emits)
    poison_sent: Counter[str] = field(default_factory=Counter)
    poison_found: Counter[str] = field(default_factory=Counter)
    poison_missing: list[str] = field(default_factory=list)
    unexpected_dead_letters: list[str] = field(default_factory=list)
    erp_dead_letters: list[str] = field(default_factory=list)
    unexplained_documents: list[str] = field(default_factory=list)
    events_in_topic: int = 0
    out_of_order: list[str] = field(default_factory=list)
    orders_cancelled: int = 0  # released, cancelled by the ERP's users before picking, cancelled in Tryton
    orders_changed: int = 0  # released orders the ERP changed before picking (more than one OrderAccepted)
    orders_short: int = 0  # OrderPicked with short = true
    orders_unworked: list[str] = field(default_factory=list)  # released, not cancelled, no warehouse work

    @property
    def ok(self) -> bool:
        return (not self.lost and not self.twice and not self.out_of_order and not self.poison_missing
                and not self.not_released and not self.orders_unworked
                and sum(self.poison_sent.values()) == sum(self.poison_found.values()))


def judge(inp: Inputs) -> Verdict:
    v = Verdict(events_in_topic=sum(len(r) for r in inp.events.values()))
    expected_ms, letters, statuses = replay_orders(inp.events, inp.settings)
    expected = {m.milestone_id: m.to_dict() for m in expected_ms if m.type in POSTED_TYPES}
    v.expected = len(expected)
    releases = releases_of(inp.events)
    v.orders_released = len(releases)
    v.not_released = sorted(set(inp.created) - set(releases))
    shipments = inp.tryton.shipments

    # Kafka: every expected milestone emitted (copies are fine: at-least-once).
    emitted = Counter(m["milestone_id"] for m in inp.milestones_topic)
    v.milestone_copies = sum(n - 1 for n in emitted.values())
    v.missing_in_kafka = sorted(mid for mid in expected if mid not in emitted)
    v.unexpected_milestones = sorted(
        f"{m['type']} {m['milestone_id']}" for m in {m["milestone_id"]: m for m in inp.milestones_topic}.values()
        if m["milestone_id"] not in expected and m["type"] in POSTED_TYPES)

    # Tryton: every expected milestone's effect, once.
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for mid, m in sorted(expected.items(), key=lambda kv: (kv[1]["type"], kv[0])):
        kind = m["type"]
        counts[kind][0] += 1
        label = f"{kind} {m.get('order_id') or m.get('sku', '')} ({mid[:12]})"
        posted, calls = _effect(m, inp.tryton, shipments, inp.proxy_calls, inp.nginx_calls)
        if posted:
            counts[kind][1] += 1
            v.posted += 1
        else:
            v.lost.append(label)
        if calls > 1:
            v.twice.append(f"{label}: {calls} state changes")
    v.by_type = {k: (c[0], c[1]) for k, c in sorted(counts.items())}

    # Orders: what the replay says each released order must be in Tryton. Cancelled by the
    # ERP before picking: cancelled. Confirmed: done with the milestone's tracking number and
    # the picked quantities (a short pick ships less; a change ships the new lines).
    by_order: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for m in expected.values():
        if m.get("order_id") and m["type"] in ("OrderPicked", "ShipmentConfirmed"):
            by_order[m["order_id"]][m["type"]] = m
    v.orders_changed = len({m["order_id"] for m in expected.values() if m["type"] == "OrderAccepted"
                            and int(m.get("version") or 1) > 1})
    v.orders_short = sum(1 for ms in by_order.values() if ms.get("OrderPicked", {}).get("short"))
    for order_id, _rel in sorted(releases.items()):
        s = shipments.get(order_id)
        if statuses.get(order_id) == "cancelled":
            if s is None or s["state"] != "cancelled":
                v.orders_wrong.append(f"{order_id}: cancelled by the ERP before picking, "
                                      f"{s['state'] if s else 'not in Tryton'} in Tryton")
            else:
                v.orders_cancelled += 1
            continue
        confirmed = by_order.get(order_id, {}).get("ShipmentConfirmed")
        if confirmed is None:
            v.orders_unworked.append(f"{order_id}: released, no ShipmentConfirmed expected "
                                     f"(Tryton: {s['state'] if s else 'not in Tryton'})")
            continue
        if s is None or s["state"] != "done":
            v.orders_wrong.append(f"{order_id}: {s['state'] if s else 'not in Tryton'}")
            continue
        want_track = inp.tracking(inp.seeds[order_id], order_id) if inp.tracking and order_id in inp.seeds else None
        skus = {int(line["line_no"]): line["sku"] for line in by_order[order_id]["OrderPicked"]["lines"]} \
            if "OrderPicked" in by_order[order_id] else {}
        qty: Counter[str] = Counter()
        for line in confirmed["lines"]:
            qty[skus.get(int(line["line_no"]), f"line {line['line_no']}")] += int(line["qty"])
        got: Counter[str] = Counter()
        for mv in s["outgoing_moves"]:
            if mv.get("state") != "cancelled" and mv["quantity"]:
                got[mv["product"]["code"]] += int(mv["quantity"])
        if want_track is not None and confirmed["tracking_no"] != want_track:
            v.orders_wrong.append(f"{order_id}: the warehouse dispatched {want_track!r}, "
                                  f"the replay confirms {confirmed['tracking_no']!r}")
        elif s["shipping_reference"] != confirmed["tracking_no"]:
            v.orders_wrong.append(f"{order_id}: tracking {s['shipping_reference']!r}, expected {confirmed['tracking_no']!r}")
        elif got != qty:
            v.orders_wrong.append(f"{order_id}: quantities {dict(got)}, picked {dict(qty)}")
        else:
            v.orders_done += 1
    for order_id in v.not_released:
        v.lost.append(f"order {order_id}: created in Tryton, never released to Kafka")

    # ERP documents no expected milestone explains.
    return_refs = {f"{m['rma_id']}/{m['sku']}" for m in expected.values() if m["type"] == "ReturnReceived"}
    v.unexplained_documents = sorted(
        [f"note for {mid} x{n}" for mid, n in inp.tryton.note_ids.items() if mid not in expected]
        + [f"internal shipment ref {ref} x{len(docs)}" for ref, docs in inp.tryton.internal.items()
           if ref not in expected]
        + [f"customer return ref {ref} x{len(docs)}" for ref, docs in inp.tryton.returns.items()
           if ref not in return_refs])

    # Out of order: per customer shipment, the effects in Tryton against the contract's sequence.
    v.out_of_order = out_of_order(expected, inp.tryton, inp.proxy_times)
    for d in inp.erp_dead_letters:
        if "milestone_id" in d and d.get("milestone_id") in expected and _TOO_EARLY.search(str(d.get("detail"))):
            v.out_of_order.append(f"{expected[d['milestone_id']].get('order_id')}: {d.get('type')} "
                                  f"({str(d['milestone_id'])[:12]}) "
                                  f"refused by the ERP, its predecessor was not there yet: {str(d.get('detail'))[:120]}")

    # Poison vs dead letters.
    found: dict[bytes, str] = {}
    for d in inp.dead_letters:
        raw = bytes(d["raw"])
        if d.get("reason"):
            found.setdefault(raw, d["reason"])
    sent_raw = set()
    for kind, raw in inp.poison_sent:
        v.poison_sent[kind] += 1
        sent_raw.add(raw)
        if raw in found:
            v.poison_found[kind] += 1
        else:
            v.poison_missing.append(f"{kind}: {raw[:40]!r}")
    expected_letters = {bytes(dl.raw) for dl in letters}
    v.unexpected_dead_letters = sorted(
        f"{found[raw][:80]}: {raw[:40]!r}" for raw in found if raw not in sent_raw and raw not in expected_letters)
    v.erp_dead_letters = [f"{d.get('type')} {d.get('milestone_id', '')[:12]}: {d.get('status')} {str(d.get('detail'))[:160]}"
                          for d in inp.erp_dead_letters if "milestone_id" in d]
    return v


#: The contract's milestone sequence per order (OrderAccepted by version first).
_SEQUENCE = {"OrderAccepted": 0, "OrderPicked": 1, "OrderPacked": 2, "ShipmentConfirmed": 3, "ReturnReceived": 4}


def out_of_order(expected: Mapping[str, dict[str, Any]], view: TrytonView,
                 times: Mapping[tuple[str, int, str], list[tuple[float, float]]]) -> list[str]:
    """Customer shipments whose milestones' effects reached Tryton out of the contract's
    sequence. Each effect has an interval (began, committed): a note or a customer return
    its ``create_date`` (Tryton's transaction time) for both; a button its first 2xx call's
    arrival at the fault proxy and the ERP's answer (a bulk JSON-RPC call names its records in
    its body, not its address: then the ``create_date`` of the transition Tryton logged). A milestone is out of order when it
    began before its predecessor's effect was committed (so also when both ran at once)."""
    per_order: dict[str, list[tuple[tuple[int, int], str, float, float]]] = defaultdict(list)
    for mid, m in expected.items():
        kind, order_id = m["type"], m.get("order_id")
        if kind not in _SEQUENCE or not order_id:
            continue
        rank = (_SEQUENCE[kind], int(m.get("version") or 0))
        label = f"{kind}{' v' + str(m.get('version')) if kind == 'OrderAccepted' else ''}"
        if kind == "OrderAccepted":
            at = view.note_times.get(mid)
            if at is not None:
                per_order[order_id].append((rank, label, at, at))
        elif kind == "ReturnReceived":
            docs = [d for d in view.returns.get(f"{m['rma_id']}/{m['sku']}", [])
                    if (d.get("warehouse") or {}).get("code") in (None, m.get("warehouse_id"))]
            stamps = [t for t in (epoch(d.get("create_date")) for d in docs) if t is not None]
            if stamps:
                per_order[order_id].append((rank, f"{label} {m['rma_id']}/{m['sku']}", min(stamps), min(stamps)))
        else:
            s = view.shipments.get(order_id)
            key = (SHIPMENT, s["id"], _BUTTON[kind]) if s else None
            # the fault proxy's REST calls; else (a JSON-RPC bulk call) Tryton's own transition log
            calls = (times.get(key) or [(t, t) for t in view.transitions.get(key, ())]) if key else []
            if calls:
                per_order[order_id].append((rank, label, calls[0][0], calls[0][1]))
    out: list[str] = []
    for order_id, effects in sorted(per_order.items()):
        effects.sort(key=lambda e: e[0])
        for i, (rank, label, began, _) in enumerate(effects):
            for prank, plabel, _, committed in effects[:i]:
                if prank < rank and began < committed:
                    out.append(f"{order_id}: {label} reached Tryton at {_hms(began)}, before its predecessor "
                               f"{plabel} was in (at {_hms(committed)})")
                    break
    return out


def _hms(at: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}"


def _effect(m: dict[str, Any], view: TrytonView, shipments: Mapping[str, dict[str, Any]],
            proxy: Counter[tuple[str, int, str]], nginx: Counter[tuple[str, int, str]]) -> tuple[bool, int]:
    """(is the milestone's effect in Tryton, how many times was it applied)."""
    kind, mid = m["type"], m["milestone_id"]
    if kind == "OrderAccepted":
        n = view.note_ids.get(mid, 0)
        return n >= 1, n
    if kind in _STATES:
        s = shipments.get(m["order_id"])
        if s is None:
            return False, 0
        key = (SHIPMENT, s["id"], _BUTTON[kind])
        calls = max(proxy.get(key, 0), nginx.get(key, 0), len(view.transitions.get(key, ())))
        posted = s["state"] in _STATES[kind]
        if kind == "ShipmentConfirmed":
            posted = posted and s["shipping_reference"] == m["tracking_no"]
        return posted, calls
    if kind == "InventoryAdjusted":
        docs = view.internal.get(mid, [])
        good = [d for d in docs if d["state"] == "done" and [
            (mv["product"]["code"], int(mv["quantity"])) for mv in d["moves"]] == [(m["sku"], abs(int(m["net_delta"])))]]
        dos = max([max(proxy.get((INTERNAL, d["id"], "do"), 0), nginx.get((INTERNAL, d["id"], "do"), 0),
                       len(view.transitions.get((INTERNAL, d["id"], "do"), ()))) for d in docs] or [0])
        return bool(good), max(len(docs), dos)
    if kind == "ReturnReceived":
        ref = f"{m['rma_id']}/{m['sku']}"
        docs = [d for d in view.returns.get(ref, []) if (d.get("warehouse") or {}).get("code") in (None, m.get("warehouse_id"))]
        done = {"done"} if m.get("disposition") == "restock" else {"received", "done"}
        good = [d for d in docs if d["state"] in done and [
            (mv["product"]["code"], int(mv["quantity"])) for mv in d.get("incoming_moves", [])] == [(m["sku"], int(m["qty"]))]]
        calls = max([max(proxy.get((RETURN, d["id"], b), 0), nginx.get((RETURN, d["id"], b), 0),
                         len(view.transitions.get((RETURN, d["id"], b), ())))
                     for d in docs for b in ("receive", "do")] or [0])
        return bool(good), max(len(docs), calls)
    return False, 0


def table(rows: Sequence[tuple[str, str]], title: str = "") -> str:
    """A two-column text table."""
    width = max(len(k) for k, _ in rows)
    vwidth = max(len(v) for _, v in rows)
    bar = f"+-{'-' * width}-+-{'-' * vwidth}-+"
    out = [title] if title else []
    out.append(bar)
    for k, val in rows:
        out.append(f"| {k:<{width}} | {val:>{vwidth}} |")
    out.append(bar)
    return "\n".join(out)
