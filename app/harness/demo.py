"""`make demo`: the whole pipeline on one machine, from sales entered in the ERP to done
shipments in the ERP, and what happened on the way.

Starts the embedded broker, Tryton (a copy of the cached template database) behind the
nginx quota gateway, and a `syncgov worker`; enters sales in Tryton, releases them with
`syncgov source --once`, plays the warehouse's work for them (plus telemetry noise and a
few faulty records), waits until Tryton has every shipment done, prints a report, and
stops everything it started. Everything lives under ``var/demo/`` (fresh each run).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any, NoReturn

import orjson

from app.core.keys import event_key
from app.core.model import Milestone
from app.core.timeutil import format_ts, parse_ts
from app.erp.client import ErpHttpClient
from app.erp.ratelimit import RatePolicy
from app.erp.sales import new_order, shipments_view, stock_moves_view
from app.erp.tryton import TrytonRest
from app.harness.processes import WorkerProcess, ops_module
from app.kafka import codec
from app.kafka.clients import produce, read_all
from app.kafka.embedded import EmbeddedBroker, free_port
from app.settings import load
from app.simulator.work import tracking_no, warehouse_work, watermark_flush

ROOT = Path(__file__).resolve().parents[2]
#: The ERP gateway's quota (nginx limit_req) and the shares of it.
GATEWAY_RATE_PER_S = 10
GATEWAY_BURST = 5
SOURCE_RATE_PER_S = 1
SINK_RATE_PER_S = GATEWAY_RATE_PER_S - SOURCE_RATE_PER_S - 1  # a margin below the rest of the quota
SINK_BURST = GATEWAY_BURST - 1
ORDERS = 12
SEED = 7
CUSTOMERS = ("Acme Retail", "Globex Stores", "Initech Supplies", "Umbrella Shop")
NOISE_EVENTS = 3000  # scans and conveyor reads: the bulk of a warehouse stream, never an ERP call
UNKNOWN_SKU = "SKU-0999"  # not in the ERP's master data: its adjustment is an ERP dead letter
FLUSH_AFTER_MS = 60_000  # event time of the last telemetry record after the work: closes every window
WAIT_S = 120.0
MALFORMED = b'{"event_id": "wms-5521", "type": "PickConfirmed", "occurred_at": "2026-'  # cut off mid-record


class DemoError(RuntimeError):
    """A step failed or timed out; the message says which and where to look."""


class Say:
    """Progress lines with the time since the demo started."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, text: str) -> None:
        print(f"[{self.elapsed:5.1f}s] {text}", flush=True)


@dataclass
class Stack:
    """What the demo started, and how to stop each (last started, first stopped)."""

    workdir: Path
    stops: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    bootstrap: str = ""
    tryton_url: str = ""
    gateway_url: str = ""
    database: str = ""
    key_file: Path | None = None
    access_log: Path | None = None
    worker: WorkerProcess | None = None

    def stop_all(self, say: Say) -> None:
        names = []
        while self.stops:
            name, stop = self.stops.pop()
            try:
                stop()
                names.append(name)
            except Exception as exc:
                print(f"could not stop the {name}: {exc}", file=sys.stderr, flush=True)
        if names:
            say(f"stopped: {', '.join(names)}")

    def env(self) -> dict[str, str]:
        """The syncgov environment of the worker and the CLI tools: Kafka, the ERP behind the gateway."""
        assert self.worker is not None
        return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, **self.worker.env}

    def direct_rest(self) -> TrytonRest:
        """REST calls straight to Tryton, as the ERP's own users (outside the gateway's quota)."""
        assert self.key_file is not None
        key = self.key_file.read_text().strip()
        client = ErpHttpClient(self.tryton_url, policy=RatePolicy(rate_per_s=200, burst=50, max_in_flight=4),
                               timeout_s=60, auth_header=("Authorization", f"bearer {key}"), secret=key)
        return TrytonRest(client, self.database)


# -- start-up -----------------------------------------------------------------------------------


def start_services(stack: Stack, say: Say) -> None:
    """Broker, Tryton and its gateway: each registered for stopping as soon as it runs."""
    run = ops_module("erp/run.py")
    gateway = ops_module("nginx/gateway.py")

    broker = EmbeddedBroker().start()
    stack.stops.append(("broker", broker.stop))
    stack.bootstrap = broker.bootstrap
    say(f"broker: tansu pid {broker.process.pid if broker.process else '?'} at {broker.bootstrap}")

    if not run.init_db._is_current():
        say("building the Tryton template database (once per machine; about 2 minutes) ...")
    server = run.start(stack.workdir / "tryton", free_port())
    stack.stops.append(("Tryton", lambda: run.stop_pid(server.pid)))
    stack.tryton_url, stack.database, stack.key_file = server.base_url, server.database, server.key_file
    say(f"ERP: trytond pid {server.pid} at {server.base_url} (database {server.database!r})")

    gw = gateway.start(stack.workdir / "nginx", free_port(), server.base_url.removeprefix("http://"),
                       rate_per_s=GATEWAY_RATE_PER_S, burst=GATEWAY_BURST, retry_after_s=1)
    stack.stops.append(("gateway", lambda: gateway.stop_pid(gw.pid)))
    stack.gateway_url, stack.access_log = gw.base_url, gw.access_log
    say(f"gateway: nginx pid {gw.pid} at {gw.base_url} (quota {GATEWAY_RATE_PER_S} r/s, burst {GATEWAY_BURST})")


def start_worker(stack: Stack, say: Say) -> None:
    """A `syncgov worker` posting to the ERP through the gateway, with a share of its quota;
    windows short enough to close within the demo (input partitions the feed has left
    idle stop holding them after 5 s)."""
    worker = WorkerProcess(stack.bootstrap, stack.workdir / "worker", env={
        "ERP_SINK_ENABLED": "true", "ERP_ADAPTER": "tryton", "ERP_BASE_URL": stack.gateway_url,
        "ERP_DATABASE": stack.database, "ERP_API_KEY_FILE": str(stack.key_file),
        "ERP_RATE_PER_S": str(SINK_RATE_PER_S), "ERP_BURST": str(SINK_BURST),
        "ERP_SOURCE_RATE_PER_S": str(SOURCE_RATE_PER_S), "ERP_TIMEOUT_S": "30",
        "WINDOW_SIZE_S": "30", "WINDOW_GRACE_S": "5", "WORKER_IDLE_PARTITION_S": "5",
        "WORKER_EXACTLY_ONCE": "off",  # the demo's broker is the embedded one, given by address
    })
    stack.worker = worker
    stack.stops.append(("worker", worker.stop))
    worker.start()
    pid = worker.process.pid if worker.process else "?"
    say(f"worker: syncgov worker pid {pid}, web {worker.url} (ERP share {SINK_RATE_PER_S} r/s, burst {SINK_BURST})")


# -- the ERP side and the warehouse -----------------------------------------------------------


def sale_lines(rng: Random) -> list[tuple[str, int]]:
    """2 to 4 distinct SKUs of the master data, 1 to 4 of each."""
    skus = rng.sample(range(1, 201), rng.randint(2, 4))
    return [(f"SKU-{n:04d}", rng.randint(1, 4)) for n in skus]


async def enter_sales(rest: TrytonRest, say: Say) -> list[dict[str, Any]]:
    """The ERP's users enter and process ORDERS sales; their customer shipments wait for the warehouse."""
    rng = Random(SEED)
    created = []
    for n in range(ORDERS):
        created.append(await new_order(rest, sale_lines(rng), customer=CUSTOMERS[n % len(CUSTOMERS)]))
    say(f"Tryton: {len(created)} sales processed; shipments {created[0]['number']}..{created[-1]['number']} "
        f"are waiting for the warehouse")
    return created


def release(stack: Stack, say: Say) -> list[dict[str, Any]]:
    """`syncgov source --once`: the released orders go to Kafka; read them back."""
    log_path = stack.workdir / "source.log"
    with open(log_path, "wb") as log:
        try:
            done = subprocess.run([sys.executable, "-m", "app.cli", "source", "--once"], env=stack.env(),
                                  stdout=log, stderr=subprocess.STDOUT, timeout=120, check=False)
        except subprocess.TimeoutExpired:
            raise DemoError(f"syncgov source --once did not finish within 120 s; see {log_path}") from None
    if done.returncode != 0:
        raise DemoError(f"syncgov source --once exited with {done.returncode}; see {log_path}")
    summary = log_path.read_text().strip().splitlines()[-1]
    if summary.startswith("{"):  # LOG_FORMAT=json (or auto, as here: a file): a JSON log line
        summary = orjson.loads(summary)["msg"]
    topic = load(stack.env()).topics.events
    try:
        events = [codec.decode(r.value) for r in read_all(stack.bootstrap, topic, timeout_s=30, count=ORDERS)]
    except TimeoutError as exc:
        raise DemoError(f"the released orders did not reach {topic}: {exc}") from None
    releases = [e for e in events if e["type"] == "OrderReleased"]
    say(f"{summary.removeprefix('syncgov source: ')} to {topic}: "
        f"{len(releases)} OrderReleased (source erp)")
    return releases


@dataclass(frozen=True)
class Feed:
    """The warehouse's records in the order they are produced, and what they are."""

    records: list[tuple[bytes, bytes]]
    kinds: Counter[str]  # order work, stock adjustments, telemetry
    faults: list[str]


def _telemetry(rng: Random, wh: str, n: int, at_ms: int) -> dict[str, Any]:
    base = {"event_id": f"tel-{n}", "occurred_at": format_ts(at_ms), "warehouse_id": wh}
    if rng.random() < 0.5:
        return {**base, "type": "ItemScanned", "source": rng.choice(("wms", "robotics")),
                "barcode": f"SKU-{rng.randint(1, 200):04d}", "location": f"A-{rng.randint(1, 40):02d}-01",
                "device_id": f"RF-{rng.randint(1, 12):02d}"}
    return {**base, "type": "ToteConveyed", "source": "conveyor", "tote_id": f"T-{rng.randint(1, 999):03d}",
            "scanner_id": f"SCN-{rng.randint(1, 8):02d}", "lane": rng.choice(("PICK-1", "PICK-2", "PACK-1"))}


def _adjustment(event_id: str, wh: str, at_ms: int, sku: str) -> dict[str, Any]:
    return {"event_id": event_id, "type": "StockAdjusted", "occurred_at": format_ts(at_ms), "source": "wms",
            "warehouse_id": wh, "sku": sku, "location": "B-03-02", "delta": -1, "reason": "damaged"}


def warehouse_feed(releases: Sequence[dict[str, Any]], start_ms: int, partitions: int) -> Feed:
    """The work for ``releases`` (`warehouse_work`), telemetry noise, two damaged-goods adjustments,
    an adjustment of a SKU the ERP does not know, and faulty records: a redelivered pick, a
    cancellation from the wrong source, a pick of 0 and a record cut off mid-way (produced last:
    once it is dead-lettered, the worker has seen everything)."""
    rng = Random(SEED)
    wh = releases[0]["warehouse_id"]
    work = warehouse_work(releases, seed=SEED, start_ms=start_ms)
    end_ms = parse_ts(work[-1]["occurred_at"])
    damaged = releases[-1]["lines"][0]["sku"]
    adjustments = [_adjustment("dmg-1", wh, end_ms - 800, damaged), _adjustment("dmg-2", wh, end_ms - 700, damaged),
                   _adjustment("dmg-3", wh, end_ms - 500, UNKNOWN_SKU)]
    noise = [_telemetry(rng, wh, n, rng.randint(start_ms, end_ms)) for n in range(NOISE_EVENTS)]
    first, second = releases[0], releases[1 % len(releases)]
    line = first["lines"][0]
    faulty = [
        {"event_id": "wms-cancel-1", "type": "OrderCancelled", "occurred_at": format_ts(start_ms + 300),
         "source": "wms", "warehouse_id": wh, "order_id": second["order_id"]},
        {"event_id": "wms-pick-0", "type": "PickConfirmed", "occurred_at": format_ts(start_ms + 500),
         "source": "wms", "warehouse_id": wh, "order_id": first["order_id"], "line_no": line["line_no"],
         "sku": line["sku"], "qty": 0, "location": "A-01-01"},
    ]
    events = sorted([*work, *adjustments, *noise, *faulty], key=lambda e: parse_ts(e["occurred_at"]))
    flush = [e for _, e in watermark_flush(wh, end_ms + FLUSH_AFTER_MS, partitions, "tel")]  # one per partition
    events += flush
    stock = sum(e["type"] == "StockAdjusted" for e in work) + len(adjustments)
    kinds = Counter({"order work": len(work) + len(adjustments) - stock, "stock adjustments": stock,
                     "telemetry": len(noise) + len(flush)})

    redelivered = next(e["event_id"] for e in work if e["type"] == "PickConfirmed")
    records: list[tuple[bytes, bytes]] = []
    for e in events:
        # Devices send telemetry as JSON; everything else is Avro single-object.
        value = orjson.dumps(e) if e["event_id"].startswith(("tel-", "flush-")) else codec.encode_event(e)
        records.append((event_key(e), value))
        if e["event_id"] == redelivered:
            records.append((event_key(e), value))  # the same record again
    records.append((wh.encode(), MALFORMED))
    faults = [f"a redelivered pick of {first['order_id']}", f"a cancellation of {second['order_id']} from wms",
              f"a pick of qty 0 for {first['order_id']}", "a record cut off mid-way"]
    return Feed(records, kinds, faults)


def feed_warehouse(stack: Stack, releases: Sequence[dict[str, Any]], say: Say) -> Feed:
    start_ms = max(parse_ts(r["occurred_at"]) for r in releases) + 1000
    feed = warehouse_feed(releases, start_ms, load(stack.env()).topics.partitions)
    topic = load(stack.env()).topics.events
    produce(stack.bootstrap, topic, feed.records)
    say(f"warehouse: {len(feed.records)} records to {topic}: "
        f"{', '.join(f'{n} {kind}' for kind, n in feed.kinds.items())}, "
        f"{len(feed.faults)} faulty ({'; '.join(feed.faults)})")
    return feed


# -- outputs ------------------------------------------------------------------------------------


@dataclass
class Outputs:
    """What the worker wrote to Kafka."""

    milestones: list[dict[str, Any]]
    exceptions: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]
    erp_dead_letters: list[dict[str, Any]]

    @property
    def stock_milestones(self) -> list[dict[str, Any]]:
        return [m for m in self.milestones if m["type"] == "InventoryAdjusted"]


def read_outputs(stack: Stack) -> Outputs:
    topics = load(stack.env()).topics

    def milestones(topic: str) -> list[dict[str, Any]]:
        return [Milestone.from_dict(codec.decode(r.value)).to_dict() for r in read_all(stack.bootstrap, topic)]

    erp_dead = [orjson.loads(r.value) for r in read_all(stack.bootstrap, topics.erp_dead_letters)]
    return Outputs(
        milestones=milestones(topics.milestones),
        exceptions=milestones(topics.exceptions),
        dead_letters=[codec.decode_dead_letter(r.value) for r in read_all(stack.bootstrap, topics.dead_letters)],
        erp_dead_letters=[d for d in erp_dead if "milestone_id" in d],
    )


async def wait_until_synced(stack: Stack, rest: TrytonRest, created: Sequence[dict[str, Any]],
                            say: Say) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Outputs]:
    """Poll Kafka and Tryton until the worker has seen every record, every shipment is done and every
    stock adjustment is in Tryton (or an ERP dead letter); bounded by WAIT_S."""
    assert stack.worker is not None
    ids = [s["id"] for s in created]
    deadline = time.monotonic() + WAIT_S
    last, last_at = "", 0.0
    while True:
        worker = stack.worker.process
        if worker is None or worker.poll() is not None:
            raise DemoError(f"the worker exited; see {stack.workdir / 'worker' / 'worker.log'}")
        out = read_outputs(stack)
        seen_all = any(d["raw"] == MALFORMED for d in out.dead_letters)
        ships = await shipments_view(rest, ids)
        moves = await stock_moves_view(rest)
        done_refs = {m["reference"] for m in moves if m["state"] == "done"}
        rejected = {d["milestone_id"] for d in out.erp_dead_letters}
        pending_stock = [m for m in out.stock_milestones
                         if m["milestone_id"] not in done_refs and m["milestone_id"] not in rejected]
        states = Counter(s["state"] for s in ships)
        if seen_all and states["done"] == len(ids) and not pending_stock:
            say(f"in sync: {len(ids)} shipments done, {len(done_refs)} stock moves done in Tryton")
            return ships, moves, out
        status = (f"shipments {', '.join(f'{n} {state}' for state, n in sorted(states.items()))}; "
                  f"{len(out.milestones)} milestones; stock moves {len(done_refs)} done; "
                  f"ERP dead letters {len(rejected)}" + ("" if seen_all else "; worker still reading"))
        if status != last or time.monotonic() - last_at > 10:
            say(f"waiting: {status}")
            last, last_at = status, time.monotonic()
        if time.monotonic() > deadline:
            raise DemoError(f"not in sync after {WAIT_S:.0f} s ({status}); see "
                            f"{stack.workdir / 'worker' / 'worker.log'} and {stack.workdir / 'nginx' / 'access.log'}")
        await asyncio.sleep(2)


# -- the report ---------------------------------------------------------------------------------


def describe(m: dict[str, Any]) -> str:
    """A milestone in one line."""
    kind = m["type"]
    if kind == "OrderAccepted":
        return f"{m['order_id']} version {m['version']}, {len(m['lines'])} lines"
    if kind == "OrderPicked":
        picked = sum(line["picked"] for line in m["lines"])
        ordered = sum(line["ordered"] for line in m["lines"])
        return f"{m['order_id']} picked {picked}/{ordered} units{' (short)' if m['short'] else ''}"
    if kind == "OrderPacked":
        return f"{m['order_id']} in {', '.join(m['package_ids'])}"
    if kind == "ShipmentConfirmed":
        return f"{m['order_id']} {m['shipment_id']} {m['carrier']} tracking {m['tracking_no']}"
    if kind == "InventoryAdjusted":
        return (f"{m['sku']} at {m['location']} net {m['net_delta']:+d} from {m['event_count']} events, "
                f"window {m['window_start'][11:19]}-{m['window_end'][11:19]}")
    if kind == "SyncException":
        return f"{m['code']} {m.get('order_id') or '-'}: {m['detail']}"
    return orjson.dumps(m).decode()


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _lines(moves: Iterable[dict[str, Any]]) -> str:
    return ", ".join(f"{m['quantity']:g} x {m['product']['code']}" for m in moves)


def report_milestones(out: Outputs, feed: Feed) -> None:
    section(f"Milestones (Kafka): {len(out.milestones)} from {len(feed.records)} warehouse records")
    by_type = Counter(m["type"] for m in out.milestones)
    for kind, n in sorted(by_type.items()):
        examples = [m for m in out.milestones if m["type"] == kind][:2]
        print(f"  {kind:<18} {n:>3}   e.g. {describe(examples[0])}")
        for m in examples[1:]:
            print(f"  {'':<18} {'':>3}        {describe(m)}")
    confirmed = next((m for m in out.milestones if m["type"] == "ShipmentConfirmed"), None)
    if confirmed:
        print("  one in full:", orjson.dumps(confirmed).decode())
    section(f"SyncExceptions (Kafka, for people; never posted): {len(out.exceptions)}")
    for m in out.exceptions:
        print(f"  {describe(m)}")
    section(f"Dead letters (Kafka, rule 8: raw bytes kept): {len(out.dead_letters)}")
    for d in out.dead_letters:
        raw = bytes(d["raw"])
        kept = f"Avro, {len(raw)} bytes" if raw[:2] == b"\xc3\x01" else repr(raw[:48])
        print(f"  offset {d['offset']}: {d['reason']}  (raw: {kept})")
    section(f"ERP dead letters (the ERP said no, with its answer): {len(out.erp_dead_letters)}")
    for d in out.erp_dead_letters:
        print(f"  {d['type']} {describe(d['milestone'])}\n    ERP answered {d['status']}: {d['detail']}")


def report_tryton(ships: Sequence[dict[str, Any]], moves: Sequence[dict[str, Any]]) -> list[str]:
    """Tryton's own view; returns the problems found (a shipment not done or with the wrong tracking)."""
    section(f"Tryton: customer shipments ({len(ships)})")
    print(f"  {'number':<11} {'customer':<17} {'state':<6} {'tracking':<16} lines")
    problems = []
    for s in ships:
        tracking = s["shipping_reference"] or "-"
        print(f"  {s['number']:<11} {s['customer']['name']:<17} {s['state']:<6} {tracking:<16} "
              f"{_lines(s['outgoing_moves'])}")
        if s["state"] != "done" or tracking != tracking_no(SEED, s["number"]):
            problems.append(f"{s['number']} is {s['state']} with tracking {tracking!r}")
    section(f"Tryton: stock moves posted by InventoryAdjusted ({len(moves)} internal shipments)")
    for doc in moves:
        for mv in doc["moves"]:
            print(f"  {doc['number']:<11} {doc['state']:<5} {mv['quantity']:g} x {mv['product']['code']}  "
                  f"{mv['from_location']['rec_name']} -> {mv['to_location']['rec_name']}  "
                  f"(reference {doc['reference'][:16]}...)")
    return problems


def report_traffic(stack: Stack, feed: Feed, out: Outputs) -> None:
    assert stack.access_log is not None and stack.worker is not None
    gateway = ops_module("nginx/gateway.py")
    time.sleep(0.5)  # nginx logs a request after answering it
    log = gateway.read_access_log(stack.access_log)
    throttled = sum(line.status == 429 for line in log)
    methods = Counter(line.method for line in log)
    section("ERP traffic (the gateway's access log: every request the ERP side saw)")
    print(f"  {len(feed.records)} warehouse records -> {len(out.milestones)} milestones -> {len(log)} ERP requests "
          f"({', '.join(f'{n} {m}' for m, n in sorted(methods.items()))}), {throttled} answered 429")
    if log:
        print(f"  {len(feed.records) / len(log):.1f} warehouse records per ERP request "
              f"(requests include the source's polls; set-up and checks went to Tryton directly)")
    status, body = stack.worker.get("/metrics")
    outcomes: Counter[str] = Counter()
    for match in re.finditer(r'^syncgov_erp_calls_total\{[^}]*outcome="([^"]+)"[^}]*\} ([0-9.e+]+)$',
                             body.decode(), re.MULTILINE):
        outcomes[match[1]] += int(float(match[2]))
    if status != 200:
        print(f"  (the worker's /metrics answered {status})")
    elif outcomes:
        print(f"  the worker's ERP sink: {', '.join(f'{n} {o}' for o, n in sorted(outcomes.items()))}")


def report_operations(stack: Stack, keep: bool) -> None:
    assert stack.worker is not None
    section("Operations")
    print(f"  metrics: {stack.worker.url}/metrics")
    try:
        page = stack.worker.get("/")[0] == 200
    except OSError:
        page = False
    if page:
        print(f"  operations page: {stack.worker.url}/")
    if not keep:
        print("  (everything stops when the demo ends; `python -m app.harness.demo --keep` keeps it running)")


def report_reconcile(stack: Stack) -> None:
    """`syncgov reconcile`, when the command exists."""
    cmd = [sys.executable, "-m", "app.cli", "reconcile"]
    probe = subprocess.run([*cmd, "--help"], env=stack.env(), capture_output=True, timeout=60, check=False)
    if probe.returncode != 0:
        return
    section("syncgov reconcile")
    try:
        done = subprocess.run(cmd, env=stack.env(), capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        print("  did not finish within 120 s")
        return
    for line in (done.stdout + done.stderr).strip().splitlines():
        print(f"  {line}")
    print(f"  (exit code {done.returncode})")


# -- main ---------------------------------------------------------------------------------------


async def run_demo(stack: Stack, say: Say, keep: bool) -> None:
    start_services(stack, say)
    worker_ready = asyncio.create_task(asyncio.to_thread(start_worker, stack, say))  # meanwhile, sales
    rest = stack.direct_rest()
    try:
        created = await enter_sales(rest, say)
        await worker_ready
        releases = release(stack, say)
        if {r["order_id"] for r in releases} != {s["number"] for s in created}:
            raise DemoError(f"released {sorted(r['order_id'] for r in releases)}, "
                            f"entered {sorted(s['number'] for s in created)}")
        feed = feed_warehouse(stack, releases, say)
        ships, moves, out = await wait_until_synced(stack, rest, created, say)
    finally:
        await rest.close()
    report_milestones(out, feed)
    problems = report_tryton(ships, moves)
    report_traffic(stack, feed, out)
    report_operations(stack, keep)
    report_reconcile(stack)
    if problems:
        raise DemoError("Tryton does not show what the warehouse did: " + "; ".join(problems))
    print(f"\nOK: {len(ships)} orders from sale to done shipment in {say.elapsed:.0f} s", flush=True)
    if keep:
        say("still running (Ctrl-C stops everything)")
        while True:
            await asyncio.sleep(3600)


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.harness.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=ROOT / "var" / "demo", help="work dir (emptied first)")
    parser.add_argument("--keep", action="store_true", help="keep everything running until Ctrl-C")
    args = parser.parse_args(argv)
    say = Say()
    workdir = args.dir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    stack = Stack(workdir)
    signal.signal(signal.SIGTERM, _terminate)
    say(f"syncgov demo in {workdir}")
    try:
        asyncio.run(run_demo(stack, say, args.keep))
    except DemoError as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"\ndemo FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop_all(say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
