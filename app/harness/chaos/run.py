"""`make chaos` / ``python -m app.harness.chaos.run``: the whole pipeline under faults, then the verdict.

Embedded broker, Tryton behind the fault proxy behind the nginx quota gateway, two
`syncgov worker`s with the ERP sink on, `syncgov source` polling Tryton. The ERP's users
enter ``--orders`` sales (straight into Tryton); the source releases them; the warehouse
work for each wave of releases is produced by ``app.simulator.work.warehouse_work``, mixed
with poison records (``--poison-rate``) and picks written with an older Avro writer
schema. Meanwhile the faults run, in turn and in combination (see docs/chaos.md):

  (a) kill -9 of a random worker at random moments (``--kills``), each restarted
  (b) the ERP stopped for ``--outage-s`` and started again on the same port and database
  (c) nginx answering 429 to everything for ``--storm-s``
  (d) the ERP answering 500s, then hanging, then losing answers after committing
      (``--errors-s`` each)
  (e) poison records: random bytes, truncated Avro, unknown fingerprint, JSON with wrong
      types, oversized records
  (f) workers scaled 1 -> 2 -> 1 under load (the second one a fresh node)
  (g) PickConfirmed from a producer on the v1 writer schema (avro/history)
  (h) a worker stalled (SIGSTOP) past the group's session timeout, then SIGCONT; alone and
      during ERP faults (``--stalls``, ``--stall-s``)

The load: sales over several warehouses (``--warehouses``); some orders changed or cancelled
by the ERP's users in Tryton before picking, some picked short (LineShortClosed; Tryton then
makes a back order, released and worked like any other), some partly returned after shipping.

When every released order is where the replay says it must be in Tryton (or
``--drain-timeout-s`` passed) the verifier (``app.harness.chaos.verify``) compares Tryton's documents
with the expected result and prints the table. Exit code 0 only with 0 lost, 0 posted twice,
0 out of order and every poison record in the dead-letter topic with a reason. Everything
lives under ``--dir`` (fresh each run).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any, NoReturn, Protocol

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from app.core.keys import event_key
from app.core.model import Milestone
from app.core.timeutil import format_ts, parse_ts
from app.erp.port import PermanentErpError, TransientErpError
from app.erp.tryton import SHIPMENT
from app.harness.chaos import verify
from app.harness.chaos.faults import POISON_KINDS, ErpSide, Supervised, WorkerPool, encode_old_pick, poison
from app.harness.chaos.users import add_warehouses, cancel_order, change_order, new_sale
from app.harness.processes import ops_module
from app.kafka import codec
from app.kafka.clients import BROKER_WORKER_ENV, client_config, create_topics, produce
from app.kafka.embedded import EmbeddedBroker
from app.settings import load
from app.simulator.work import tracking_no, warehouse_work, watermark_flush

ROOT = Path(__file__).resolve().parents[3]
CUSTOMERS = ("Acme Retail", "Globex Stores", "Initech Supplies", "Umbrella Shop")
TELEMETRY = ("ItemScanned", "ToteConveyed")
#: A create (POST on a model, no record id): a note, an internal shipment, a customer return;
#: or a Tryton JSON-RPC bulk create of those (``/rpc/?m=model.<model>.create``; not the
#: warnings answered ahead of a bulk button).
CREATE_CALL = (r"^POST [^?]*/rest/model/[a-z_]+(\.[a-z_]+)*(\?|$)"
               r"|^POST [^?]*/rpc/\?m=model\.(?!res\.user\.warning\.)[a-z_]+(\.[a-z_]+)*\.create(&|$)")


@dataclass
class ChaosConfig:
    orders: int = 300
    seed: int = 7
    workdir: Path = ROOT / "var" / "chaos"
    bootstrap: str = "embedded"  # as KAFKA_BOOTSTRAP_SERVERS: "embedded" (Tansu) or "apache" starts a broker for this run
    prefix: str = ""  # app id and topic prefix; empty: "chaos<seed>"
    kills: int = 10
    outage_s: float = 60.0
    storm_s: float = 30.0
    errors_s: float = 30.0
    scale: bool = True
    scale_step_s: float = 20.0
    stalls: int = 2  # SIGSTOP past the session timeout: one alone, one during the ERP's errors
    stall_s: float = 12.0  # at least the session timeout + 4 s
    warehouses: tuple[str, ...] = ("WH1", "WH2", "WH3")
    change_share: float = 0.06  # released orders the ERP's users change before picking
    cancel_share: float = 0.04  # ... cancel before picking
    short_share: float = 0.10  # orders picked short (one line, when a line has 2 or more)
    return_share: float = 0.08  # shipped orders partly returned
    poison_rate: float = 0.01
    old_schema_share: float = 0.25
    create_concurrency: int = 3
    gateway_rate: float = 20
    gateway_burst: int = 10
    erp_timeout_s: float = 10.0
    hold_s: float = 15.0  # injected timeouts: longer than erp_timeout_s
    wave_s: float = 2.0
    drain_timeout_s: float = 900.0
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. secrets for the security test
    key_in_env: bool = False  # ERP_API_KEY instead of ERP_API_KEY_FILE
    proxy_mode: dict[str, Any] = field(default_factory=dict)  # the proxy's mode for the whole run, e.g. echo-auth
    # Bulk mode: buttons, writes and creates as Tryton JSON-RPC calls on many records (the
    # template database's admin user); False: one REST call per record (reads are batched either way).
    bulk: bool = True


class Say:
    def __init__(self, quiet: bool = False) -> None:
        self.started = time.monotonic()
        self.quiet = quiet
        self.lines: list[str] = []

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, text: str) -> None:
        line = f"[{self.elapsed:6.1f}s] {text}"
        self.lines.append(line)
        if not self.quiet:
            print(line, flush=True)


class ProxyLine(Protocol):
    """A request line of the ERP fault proxy's log (``ops/chaos/faultproxy.py``)."""

    @property
    def ts(self) -> float: ...
    @property
    def action(self) -> str: ...
    @property
    def upstream_status(self) -> int | None: ...
    @property
    def method(self) -> str: ...
    @property
    def uri(self) -> str: ...
    @property
    def seconds(self) -> float: ...
    @property
    def arrived(self) -> float: ...


@dataclass
class FaultLog:
    """What was injected, when, for how long."""

    counts: Counter[str] = field(default_factory=Counter)
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    timeline: list[str] = field(default_factory=list)


class ReleaseTail(threading.Thread):
    """Reads the events topic from the start and collects OrderReleased (source erp)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.lock = threading.Lock()
        self.releases: dict[str, dict[str, Any]] = {}
        self.new: list[dict[str, Any]] = []
        self.changed: dict[str, dict[str, Any]] = {}  # order id -> its latest OrderChanged
        self.cancelled: set[str] = set()
        self.last_release = time.monotonic()
        self.stopping = threading.Event()

    def run(self) -> None:
        consumer = Consumer({**client_config(self.bootstrap), "group.id": f"chaos-tail-{time.monotonic_ns()}",
                             "enable.auto.commit": False, "fetch.message.max.bytes": 2_000_000})
        try:
            while not self.stopping.is_set():
                meta = consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)
                if meta is not None and meta.error is None and meta.partitions:
                    break
                time.sleep(0.5)
            else:
                return
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions])
            while not self.stopping.is_set():
                for msg in consumer.consume(1000, 0.5):
                    value = msg.value() if msg.error() is None else None
                    if not value or value[:2] != codec.MAGIC:
                        continue
                    try:
                        d = codec.decode(value)
                    except codec.DecodeError:
                        continue
                    if d.get("source") != "erp":
                        continue
                    with self.lock:
                        if d.get("type") == "OrderReleased" and d["order_id"] not in self.releases:
                            d = {**d, "occurred_at": format_ts(d["occurred_at"])}
                            self.releases[d["order_id"]] = d
                            self.new.append(d)
                            self.last_release = time.monotonic()
                        elif d.get("type") == "OrderChanged":
                            self.changed[d["order_id"]] = d
                        elif d.get("type") == "OrderCancelled":
                            self.cancelled.add(d["order_id"])
        finally:
            consumer.close()

    def take(self) -> list[dict[str, Any]]:
        with self.lock:
            out, self.new = self.new, []
        return out


class Chaos:
    """One chaos run: start, load + faults, drain, verify, stop."""

    def __init__(self, cfg: ChaosConfig, say: Say) -> None:
        self.cfg, self.say = cfg, say
        self.rng = Random(cfg.seed)
        self.prefix = cfg.prefix or f"chaos{cfg.seed}"
        self.workdir = cfg.workdir.resolve()
        self.broker: Any = None  # EmbeddedBroker or ops/kafka's KafkaBroker, when this run started one
        self.bootstrap = cfg.bootstrap
        self.erp = ErpSide(self.workdir / "erp", gateway_rate=cfg.gateway_rate, gateway_burst=cfg.gateway_burst)
        self.pool: WorkerPool | None = None
        self.source: Supervised | None = None
        self.faults = FaultLog()
        self.erp_up = asyncio.Event()
        self.creating = 0
        self.created: list[str] = []
        self.sites: dict[str, int] = {}  # warehouse code -> Tryton location (create_orders)
        self.create_errors = 0
        self.creation_done = False
        self.feed_done = False
        self.seeds: dict[str, int] = {}
        self.poison_sent: list[tuple[str, bytes]] = []
        self.sent: Counter[str] = Counter()
        self.clock_ms = 0
        self.verdict: verify.Verdict | None = None
        self.rows: list[tuple[str, str]] = []
        self.env: dict[str, str] = {}
        self.stop_requested = False
        self.killing: set[str] = set()
        self.lags: list[float] = []
        self.transitions: dict[tuple[str, int, str], list[float]] = {}  # Tryton's transition log, at the verdict
        self.background: list[asyncio.Task[None]] = []
        self.creation_done_at = 0.0
        self.tail: ReleaseTail | None = None
        self.fed: set[str] = set()
        self.cancelled_orders: set[str] = set()  # cancelled by the ERP's users, seen on the topic
        self.plans: dict[str, tuple[str | None, bool, bool]] = {}  # order id -> decide()
        self.user_edits: Counter[str] = Counter()  # "change" / "cancel" done in Tryton
        self.changed_fed = 0  # orders worked with the lines of their OrderChanged
        self.feed_version = 0  # bumped by every record batch the warehouse feeds
        self.feed_flushed = False  # every window closed after the last wave
        self.stop_feeding = False

    # -- set-up --------------------------------------------------------------------------

    def topics(self) -> dict[str, str]:
        p = self.prefix
        return {"TOPIC_EVENTS": f"{p}.events", "TOPIC_MILESTONES": f"{p}.milestones",
                "TOPIC_EXCEPTIONS": f"{p}.exceptions", "TOPIC_DEAD_LETTERS": f"{p}.dead-letters",
                "TOPIC_ERP_DEAD_LETTERS": f"{p}.erp-dead-letters", "TOPIC_SOURCE_CURSOR": f"{p}.source-cursor",
                "TOPIC_STOCK": f"{p}.stock"}

    def start(self) -> None:
        cfg = self.cfg
        broker_env: dict[str, str] = {}
        if self.bootstrap in ("", "embedded"):
            self.broker = EmbeddedBroker().start()
            self.bootstrap = self.broker.bootstrap
            broker_env = dict(BROKER_WORKER_ENV["embedded"])
        elif self.bootstrap == "apache":
            self.broker = ops_module("kafka/run.py").KafkaBroker(self.workdir / "kafka").start()
            self.bootstrap = self.broker.bootstrap
            broker_env = dict(BROKER_WORKER_ENV["apache"])
        self.say(f"broker at {self.bootstrap}")
        self.erp.start()
        if cfg.proxy_mode:
            self.erp.proxy_mode(**cfg.proxy_mode)
        self.say(f"ERP: Tryton {self.erp.tryton_url} <- fault proxy :{self.erp.proxy_port} <- nginx "
                 f"{self.erp.gateway_url} (quota {cfg.gateway_rate:g} r/s, burst {cfg.gateway_burst})")
        share = max(1.0, (cfg.gateway_rate - 2) / 2)  # two workers, the source 1 r/s, a margin of 1
        self.env = {
            "WORKER_APP_ID": self.prefix, **self.topics(),
            "ERP_SINK_ENABLED": "true", "ERP_ADAPTER": "tryton", "ERP_BASE_URL": self.erp.gateway_url,
            "ERP_DATABASE": self.erp.database, "ERP_RATE_PER_S": f"{share:g}", "ERP_BURST": "4",
            "ERP_SOURCE_RATE_PER_S": "1", "ERP_SOURCE_POLL_S": "2", "ERP_TIMEOUT_S": f"{cfg.erp_timeout_s:g}",
            "ERP_BACKOFF_CAP_S": "10", "WINDOW_SIZE_S": "10", "WINDOW_GRACE_S": "2", "WORKER_IDLE_PARTITION_S": "5", "LOG_LEVEL": "info",
            **({"ERP_API_KEY": self.erp.key} if cfg.key_in_env else {"ERP_API_KEY_FILE": str(self.erp.key_file)}),
            **({"ERP_RPC_LOGIN": "admin", "ERP_RPC_PASSWORD": "admin"} if cfg.bulk else {}),
            **broker_env,
            **cfg.extra_env,
        }
        settings = load({**self.env, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap})
        t = settings.topics
        create_topics(self.bootstrap, [t.events, t.milestones, t.exceptions, t.dead_letters, t.erp_dead_letters,
                                       t.source_cursor], t.partitions, settings.kafka,
                      replication_factor=t.replication_factor)
        self.pool = WorkerPool(self.bootstrap, self.workdir / "workers", self.env, say=self.say)
        for name in ("w1", "w2"):
            self.pool.start(name)
        self.say(f"workers: {', '.join(f'{n} {w.url}' for n, w in self.pool.workers.items())} "
                 f"(ERP share {share:g} r/s each)")
        self.source = Supervised("source", ["source"], self.cli_env(), self.workdir / "source.log", say=self.say)
        self.source.start()

    def cli_env(self) -> dict[str, str]:
        return {**os.environ, **self.env, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap}

    def stop(self) -> None:
        for what, stop in (("source", self.source.stop if self.source else None),
                           ("workers", self.pool.stop_all if self.pool else None),
                           ("ERP", self.erp.stop), ("broker", self.broker.stop if self.broker else None)):
            if stop is None:
                continue
            try:
                stop()
            except Exception as exc:
                print(f"could not stop the {what}: {exc}", file=sys.stderr, flush=True)

    # -- load: the ERP's users and the warehouse ---------------------------------------------

    async def create_orders(self) -> None:
        cfg = self.cfg
        rest = self.erp.direct_rest(cfg.create_concurrency)
        sem = asyncio.Semaphore(cfg.create_concurrency)
        rng = Random(cfg.seed + 1)
        plans = [([(f"SKU-{n:04d}", rng.randint(1, 3)) for n in rng.sample(range(1, 201), rng.randint(1, 3))],
                  CUSTOMERS[i % len(CUSTOMERS)], cfg.warehouses[i % len(cfg.warehouses)]) for i in range(cfg.orders)]
        sites = self.sites = await add_warehouses(rest, cfg.warehouses)
        self.say(f"ERP users: warehouses {', '.join(f'{code} (location {sites[code]})' for code in cfg.warehouses)}")

        async def one(lines: list[tuple[str, int]], customer: str, site: str) -> None:
            async with sem:
                for attempt in range(1, 6):
                    await self.erp_up.wait()
                    self.creating += 1
                    try:
                        ship = await new_sale(rest, lines, customer=customer, warehouse=sites[site])
                        self.created.append(ship["number"])
                        return
                    except (TransientErpError, PermanentErpError) as exc:
                        self.create_errors += 1
                        if attempt == 5:
                            self.say(f"could not create an order: {exc}")
                        await asyncio.sleep(1.0)
                    finally:
                        self.creating -= 1

        try:
            await asyncio.gather(*(one(lines, customer, site) for lines, customer, site in plans))
        finally:
            await rest.close()
            self.creation_done = True
            self.creation_done_at = time.monotonic()
        self.say(f"ERP users: {len(self.created)} sales entered and processed ({self.create_errors} retried calls)")

    async def late_sale(self) -> None:
        """One more sale entered by the ERP's users (straight into Tryton), so that a create
        (its OrderAccepted note) reaches the ERP while creates lose their answers, when the
        load brings none at that moment. Released and worked like every other order: the
        warehouse works releases until the drain is over, and the drain waits for every
        release to be worked, so this holds after the ERP's users are done too (the usual
        case at the end of a short run, where only the warehouse's buttons are still queued)."""
        if self.stop_feeding or not self.sites:
            return
        rest = self.erp.direct_rest(1)
        code = self.cfg.warehouses[0]
        try:
            ship = await new_sale(rest, [("SKU-0001", 1)], customer=CUSTOMERS[0], warehouse=self.sites[code])
            self.created.append(ship["number"])
            self.say(f"ERP users: a late order {ship['number']} (no create was in flight)")
        except (TransientErpError, PermanentErpError) as exc:
            self.say(f"could not enter the late order: {exc}")
        finally:
            await rest.close()

    def decide(self, order_id: str) -> tuple[str | None, bool, bool]:
        """(ERP users' edit before picking: "change", "cancel" or None; picked short; partly
        returned) for an order: drawn from the seed and the order id, so the same on every run."""
        cfg = self.cfg
        rng = Random(f"{cfg.seed}:{order_id}")
        x = rng.random()
        edit = "cancel" if x < cfg.cancel_share else "change" if x < cfg.cancel_share + cfg.change_share else None
        short = rng.random() < cfg.short_share
        returned = edit != "cancel" and rng.random() < cfg.return_share
        return edit, short, returned

    async def user_edit(self, rest: Any, edit: str, release: dict[str, Any]) -> bool:
        """The ERP's user changes (one line +1 or +2, another with 2 or more -1) or cancels a
        released order in Tryton before the warehouse starts on it; False if Tryton refused."""
        order_id = release["order_id"]
        for attempt in range(1, 4):
            await self.erp_up.wait()
            self.creating += 1
            try:
                found = await rest.search(SHIPMENT, [("number", "=", order_id)], ["state"])
                if not found or found[0]["state"] not in ("waiting", "assigned", "draft"):
                    self.say(f"ERP users: cannot {edit} {order_id}: {found[0]['state'] if found else 'not found'}")
                    return False
                ship_id = found[0]["id"]
                if edit == "cancel":
                    await cancel_order(rest, ship_id)
                else:
                    lines = sorted(release["lines"], key=lambda line: line["line_no"])
                    rng = Random(f"{self.cfg.seed}:change:{order_id}")
                    up = rng.choice(lines)
                    quantities = {up["line_no"]: int(up["qty"]) + rng.randint(1, 2)}
                    down = [line for line in lines if line is not up and int(line["qty"]) >= 2]
                    if down:
                        quantities[down[0]["line_no"]] = int(down[0]["qty"]) - 1
                    await change_order(rest, ship_id, quantities)
                self.user_edits[edit] += 1
                return True
            except (TransientErpError, PermanentErpError) as exc:
                self.say(f"ERP users: {edit} of {order_id} failed (attempt {attempt}): {str(exc)[:160]}")
                await asyncio.sleep(1.0)
            finally:
                self.creating -= 1
        return False

    def wave(self, releases: list[dict[str, Any]], n: int) -> list[tuple[bytes | None, bytes]]:
        """The warehouse's records for one wave of releases, with poison and old-schema picks."""
        cfg, rng = self.cfg, self.rng
        seed = cfg.seed * 100_000 + n
        now = int(time.time() * 1000)
        start_ms = max(now, self.clock_ms + 1)
        short = {r["order_id"] for r in releases if self.plans.get(r["order_id"], (None, False, False))[1]}
        returned = {r["order_id"] for r in releases if self.plans.get(r["order_id"], (None, False, False))[2]}
        work = warehouse_work(releases, seed=seed, start_ms=start_ms, short=short, returned=returned,
                              step_ms=max(1, min(50, int(cfg.wave_s * 1000) // max(1, len(releases) * 12))))
        old = {r["order_id"] for r in releases if rng.random() < cfg.old_schema_share}
        for r in releases:
            self.seeds[r["order_id"]] = seed
        records: list[tuple[bytes | None, bytes]] = []
        for e in work:
            key = event_key(e)
            if e["type"] == "PickConfirmed" and e["order_id"] in old:
                value, kind = encode_old_pick(e), "old-schema picks (v1 writer)"
            elif e["type"] in TELEMETRY:
                value, kind = orjson.dumps(e), "telemetry (JSON)"
            else:
                value, kind = codec.encode_event(e), "events (Avro)"
            records.append((key, value))
            self.sent[kind] += 1
            if e["type"] in ("LineShortClosed", "ReturnReceived"):
                self.sent[e["type"]] += 1
            if rng.random() < cfg.poison_rate or (len(self.poison_sent) < len(POISON_KINDS) and n > 1 and
                                                  rng.random() < 0.2):
                kind = POISON_KINDS[len(self.poison_sent)] if len(self.poison_sent) < len(POISON_KINDS) \
                    else rng.choice(POISON_KINDS)
                raw = poison(kind, rng, len(self.poison_sent), e)
                self.poison_sent.append((kind, raw))
                pkey = key if rng.random() < 0.7 else rng.choice([None, f"junk-{len(self.poison_sent)}".encode()])
                records.append((pkey, raw))
                self.sent["poison"] += 1
        self.clock_ms = max(parse_ts(e["occurred_at"]) for e in work)
        return records

    def unfed(self) -> set[str]:
        """Released orders the warehouse has not started on yet (held for an ERP user's edit included)."""
        if self.tail is None:
            return set()
        with self.tail.lock:
            released = set(self.tail.releases)
        return released - self.fed - self.cancelled_orders

    async def feed(self, topic: str) -> None:
        """Warehouse work for each wave of releases until the drain is over. An order the ERP's
        users change or cancel is held until the source has published the change (then worked
        with its new lines) or the cancellation (then never worked). When nothing new came for
        a while after the ERP's users are done, a telemetry record on every partition closes
        every window (again after each later wave: back orders)."""
        tail = self.tail = ReleaseTail(self.bootstrap, topic)
        tail.start()
        rest = self.erp.direct_rest(2)
        n = 0
        flushed, last_wave = True, time.monotonic()
        held: dict[str, tuple[dict[str, Any], str, asyncio.Task[bool]]] = {}
        edited_at: dict[str, float] = {}
        settings = load(self.cli_env())
        g = settings.governance
        try:
            while not self.stop_feeding:
                ready: list[dict[str, Any]] = []
                for r in tail.take():
                    order_id = r["order_id"]
                    if order_id in self.fed or order_id in held:
                        continue
                    edit, short, returned = self.decide(order_id)
                    self.plans[order_id] = (edit, short, returned)
                    if edit is None:
                        ready.append(r)
                    else:
                        held[order_id] = (r, edit, asyncio.create_task(self.user_edit(rest, edit, r)))
                for order_id, (r, edit, task) in list(held.items()):
                    with tail.lock:
                        changed, cancelled = tail.changed.get(order_id), order_id in tail.cancelled
                    if cancelled:
                        del held[order_id]
                        self.cancelled_orders.add(order_id)
                    elif edit == "change" and changed is not None:
                        del held[order_id]
                        ready.append({**r, "lines": changed["lines"], "changed": True})
                    elif task.done() and not task.result():  # Tryton refused: the order goes on as released
                        del held[order_id]
                        ready.append(r)
                    elif task.done() and time.monotonic() - edited_at.setdefault(order_id, time.monotonic()) > 180:
                        del held[order_id]  # left unworked: the verifier reports it
                        self.say(f"ERP users: the source never published the {edit} of {order_id} (180 s)")
                if ready:
                    n += 1
                    records = self.wave(ready, n)
                    await asyncio.to_thread(produce, self.bootstrap, topic, records)
                    self.fed.update(r["order_id"] for r in ready)
                    self.changed_fed += sum(1 for r in ready if r.get("changed"))
                    flushed, last_wave = False, time.monotonic()
                    self.feed_version += 1
                if self.creation_done and not flushed and not held and time.monotonic() - last_wave >= 10:
                    # One telemetry record on every partition after the last window's end + grace.
                    flush_ms = max(int(time.time() * 1000),
                                   self.clock_ms + int((g.window_size_s + g.window_grace_s + 5) * 1000))
                    flush = watermark_flush(self.cfg.warehouses[0], flush_ms, settings.topics.partitions,
                                            f"{self.prefix}-{n}")
                    await asyncio.to_thread(produce, self.bootstrap, topic,
                                            [(key, orjson.dumps(ev)) for key, ev in flush])
                    self.clock_ms = flush_ms
                    self.sent["telemetry (JSON)"] += len(flush)
                    flushed = True
                    self.feed_version += 1
                if not self.feed_done and self.creation_done and flushed and not held and (
                        set(self.created) <= self.fed | self.cancelled_orders
                        or time.monotonic() - self.creation_done_at > 300):
                    self.feed_done = True
                    self.say(f"warehouse: {n} waves for {len(self.fed)} released orders; "
                             f"{len(set(self.created) - self.fed - self.cancelled_orders)} created orders not released")
                self.feed_flushed = flushed and not held
                await asyncio.sleep(self.cfg.wave_s)
            self.say(f"warehouse: {n} waves for {len(self.fed)} released orders; sent "
                     f"{', '.join(f'{v} {k}' for k, v in sorted(self.sent.items()))}")
        finally:
            tail.stopping.set()
            self.feed_done = True
            for _, _, task in held.values():
                task.cancel()
            await rest.close()

    async def fed_once(self) -> None:
        """Until the warehouse has worked every order the ERP's users entered (or the feeder died)."""
        while not self.feed_done:
            await asyncio.sleep(0.5)

    def progress(self) -> float:
        return len(self.created) / max(1, self.cfg.orders)

    # -- faults --------------------------------------------------------------------------

    def mark(self, name: str, started: float) -> None:
        self.faults.counts[name] += 1
        self.faults.seconds[name] += time.monotonic() - started

    async def kill(self, why: str = "", wait: bool = True) -> None:
        """kill -9 a random running worker and start it again; ``wait=False`` leaves the restart
        running in the background (a kill inside another fault must not hold that fault up)."""
        assert self.pool is not None
        running = [n for n in self.pool.running() if n not in self.killing]
        if not running:
            return
        name = self.rng.choice(running)
        process = self.pool.workers[name].process
        pid = process.pid if process else "?"
        started = time.monotonic()
        self.say(f"(a) kill -9 worker {name} (pid {pid}){why}")
        self.killing.add(name)

        async def restart() -> None:
            try:
                await asyncio.to_thread(self.pool.kill9, name, self.rng.uniform(0, 3))  # type: ignore[union-attr]
                self.say(f"(a) worker {name} restarted and ready {time.monotonic() - started:.0f} s after the kill")
            finally:
                self.killing.discard(name)
                self.mark("(a) kill -9 + restart", started)

        task = asyncio.create_task(restart())
        if wait:
            await task
        else:
            self.background.append(task)

    async def stall(self, why: str = "", wait: bool = True) -> None:
        """(h) SIGSTOP a random running worker past the group's session timeout, then SIGCONT.
        It is evicted meanwhile and its partitions move; back, it must not write anything as
        their owner (a worker that committed after its lease ran out exits with code 75 and is
        restarted: ``WorkerPool.supervise``)."""
        assert self.pool is not None
        running = [n for n in self.pool.running() if n not in self.killing]
        if not running:
            return
        name = self.rng.choice(running)
        session_s = load(self.cli_env()).kafka.session_timeout_s
        seconds = max(self.cfg.stall_s, session_s + 4)
        process = self.pool.workers[name].process
        pid = process.pid if process else "?"
        started = time.monotonic()
        self.say(f"(h) SIGSTOP worker {name} (pid {pid}) for {seconds:.0f} s (session timeout {session_s:g} s){why}")
        self.killing.add(name)

        async def resume() -> None:
            try:
                await asyncio.to_thread(self.pool.stall, name, seconds)  # type: ignore[union-attr]
                self.say(f"(h) SIGCONT worker {name} after {time.monotonic() - started:.0f} s")
            finally:
                self.killing.discard(name)
                self.mark("(h) worker stalled past the session timeout", started)

        task = asyncio.create_task(resume())
        if wait:
            await task
        else:
            self.background.append(task)

    async def outage(self, combo_kill: bool) -> None:
        started = time.monotonic()
        self.erp_up.clear()
        for _ in range(600):  # the ERP's users finish what they are doing
            if self.creating == 0:
                break
            await asyncio.sleep(0.1)
        self.say(f"(b) ERP down: Tryton (pid {self.erp.tryton_pid}) stopped for {self.cfg.outage_s:.0f} s")
        await asyncio.to_thread(self.erp.stop_tryton)
        if combo_kill:
            await asyncio.sleep(self.cfg.outage_s / 3)
            await self.kill(" during the ERP outage", wait=False)
        await asyncio.sleep(max(0.0, self.cfg.outage_s - (time.monotonic() - started)))
        await asyncio.to_thread(self.erp.start_tryton)
        self.erp_up.set()
        self.mark("(b) ERP outage", started)
        self.say(f"(b) ERP up again: Tryton pid {self.erp.tryton_pid}, same port and database "
                 f"(down {time.monotonic() - started:.0f} s)")

    async def storm(self, combo_kill: bool) -> None:
        started = time.monotonic()
        self.say(f"(c) throttling storm: nginx answers 429 to everything for {self.cfg.storm_s:.0f} s")
        await asyncio.to_thread(self.erp.gateway_template, "429")
        if combo_kill:
            await asyncio.sleep(self.cfg.storm_s / 2)
            await self.kill(" during the 429 storm", wait=False)
        await asyncio.sleep(max(0.0, self.cfg.storm_s - (time.monotonic() - started)))
        await asyncio.to_thread(self.erp.gateway_template, "normal")
        self.mark("(c) 429 storm", started)
        self.say("(c) storm over: the gateway's normal quota again")

    async def errors(self, combo_kill: bool, combo_stall: bool = False) -> None:
        """(d): 500s from the gateway, then 500s/hangs/lost answers from the ERP behind it."""
        cfg = self.cfg
        steps: list[tuple[str, Callable[[], None], float, Callable[[ProxyLine], bool] | None]] = [
            ("gateway answers 500 to everything", lambda: self.erp.gateway_template("500"), cfg.errors_s / 3, None),
            ("the ERP answers 500/502/503", lambda: self.erp.proxy_mode("error"), cfg.errors_s * 2 / 3, None),
            (f"the ERP hangs (no answer for {cfg.hold_s:.0f} s)",
             lambda: self.erp.proxy_mode("timeout", hold_s=cfg.hold_s), cfg.errors_s / 2,
             lambda p: p.action == "timeout"),
            ("the ERP commits, then its answer is lost (timeout)",
             lambda: self.erp.proxy_mode("commit-timeout", hold_s=cfg.hold_s), cfg.errors_s / 2,
             lambda p: p.action == "commit-timeout"),
            ("the ERP commits a create, then its answer is lost (timeout)",
             lambda: self.erp.proxy_mode("commit-timeout", hold_s=cfg.hold_s, only=CREATE_CALL), cfg.errors_s / 2,
             lambda p: p.action == "commit-timeout" and p.upstream_status is not None and 200 <= p.upstream_status < 300
             and re.search(CREATE_CALL, f"{p.method} {p.uri}") is not None),
            ("a mix of 500s, hangs and lost answers (40 %)",
             lambda: self.erp.proxy_mode("mixed", p=0.4, hold_s=cfg.hold_s), cfg.errors_s, None)]
        for i, (what, action, seconds, bitten) in enumerate(steps):
            started = time.monotonic()
            self.say(f"(d) {what} for {seconds:.0f} s")
            await asyncio.to_thread(action)
            if combo_kill and i == 3:
                await asyncio.sleep(seconds / 2)
                await self.kill(" while ERP answers are being lost", wait=False)
            if combo_stall and i == 5:
                await self.stall(" during the mix of ERP errors", wait=False)
            await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))
            if bitten is not None:  # a quiet moment: hold the mode until it has bitten once
                since = time.time() - (time.monotonic() - started)
                limit = 3 * seconds if i != 4 else max(3 * seconds, 90.0)  # creates come with new orders
                nudged = False
                while time.monotonic() - started < limit and not any(
                        p.ts >= since and bitten(p) for p in self.proxy_lines()):
                    if i == 4 and not nudged and time.monotonic() - started > seconds + 10:
                        nudged = True  # no create in flight: an ERP user enters one more order
                        await self.late_sale()
                    await asyncio.sleep(1)
            if i == 0:
                await asyncio.to_thread(self.erp.gateway_template, "normal")
            self.mark(f"(d) {what.split(' (')[0]}", started)
        await asyncio.to_thread(self.erp.proxy_mode, "pass")
        self.say("(d) the ERP answers normally again")

    def proxy_lines(self) -> list[ProxyLine]:
        lines: list[ProxyLine] = ops_module("chaos/faultproxy.py").read_log(self.erp.proxy_log)
        return lines

    async def scale(self) -> None:
        """(f) 2 -> 1 -> 2 (a fresh node) -> 1 -> 2, ``scale_step_s`` each, under load."""
        assert self.pool is not None
        started = time.monotonic()
        step = self.cfg.scale_step_s
        self.say("(f) scale 2 -> 1: worker w2 leaves (clean stop)")
        await asyncio.to_thread(self.pool.stop, "w2")
        await asyncio.sleep(step)
        self.say("(f) scale 1 -> 2: a fresh worker w3 (empty store: recovers from the changelog)")
        await asyncio.to_thread(self.pool.start, "w3")
        await asyncio.sleep(step)
        self.say("(f) scale 2 -> 1: w3 leaves")
        await asyncio.to_thread(self.pool.stop, "w3")
        await asyncio.sleep(step)
        await asyncio.to_thread(self.pool.start, "w2")
        self.mark("(f) scale 1 -> 2 -> 1", started)
        self.say("(f) back to 2 workers (w1, w2)")

    def plan(self) -> list[tuple[float, str, Callable[[], Awaitable[None]]]]:
        """(progress threshold, name, action): in turn, some in combination with a kill -9."""
        cfg, rng = self.cfg, self.rng
        combo = cfg.kills >= 4
        steps: list[tuple[float, str, Callable[[], Awaitable[None]]]] = []
        kills_left = cfg.kills
        if cfg.storm_s > 0:
            steps.append((0.12, "storm", lambda: self.storm(combo)))
            kills_left -= combo
        if cfg.scale:
            steps.append((0.25, "scale", self.scale))
        if cfg.outage_s > 0:
            steps.append((0.4, "outage", lambda: self.outage(combo)))
            kills_left -= combo
        stalls_left = cfg.stalls
        if stalls_left > 0:
            steps.append((0.5, "stall", self.stall))
            stalls_left -= 1
        if cfg.errors_s > 0:
            combo_stall = stalls_left > 0
            steps.append((0.6, "errors", lambda: self.errors(combo, combo_stall)))
            kills_left -= combo
            stalls_left -= combo_stall
        for at in sorted(rng.uniform(0.1, 0.9) for _ in range(max(0, stalls_left))):
            steps.append((at, "stall", self.stall))
        if kills_left > 0:
            steps.append((1.01, "kill", lambda: self.kill(" while the backlog drains")))  # after creation
            kills_left -= 1
        for at in sorted(rng.uniform(0.03, 0.97) for _ in range(kills_left)):
            steps.append((at, "kill", self.kill))
        return sorted(steps, key=lambda s: s[0])

    async def inject(self, plan: list[tuple[float, str, Callable[[], Awaitable[None]]]]) -> None:
        for at, name, action in plan:
            while self.progress() < min(at, 1.0) or (at > 1.0 and not self.feed_done):
                await asyncio.sleep(0.5)
            await asyncio.sleep(self.rng.uniform(0, 3))  # a random moment
            await action()
            self.faults.timeline.append(f"{self.say.elapsed:.0f}s {name}")
        await asyncio.gather(*self.background)

    async def supervise(self) -> None:
        assert self.pool is not None and self.source is not None
        while not self.stop_requested:
            await asyncio.to_thread(self.pool.supervise)
            self.source.supervise()
            await asyncio.sleep(1)

    # -- drain and verify ----------------------------------------------------------------

    async def drain(self) -> float:
        """Wait until Tryton shows what the replay of the events so far expects (every order
        confirmed by the warehouse done, every cancelled one cancelled, every stock move and
        customer return), the warehouse has worked every release (back orders included) and no
        new release came for 10 s; returns the seconds waited."""
        started = time.monotonic()
        settings = load(self.cli_env())
        topics, core = settings.topics, settings.governance.core()
        rest = self.erp.direct_rest()
        last, version = "", -1
        confirmed: list[str] = []
        cancelled: list[str] = []
        stock: set[str] = set()
        returns: set[str] = set()
        try:
            while True:
                if version != self.feed_version:  # the warehouse fed more: replay again
                    version = self.feed_version
                    events = await asyncio.to_thread(verify.read_topic, self.bootstrap, topics.events, 2.0)
                    expected, _, statuses = verify.replay_orders(verify.by_partition(events), core)
                    confirmed = sorted({m.body["order_id"] for m in expected if m.type == "ShipmentConfirmed"})
                    cancelled = sorted(o for o, st in statuses.items() if st == "cancelled")
                    stock = {m.milestone_id for m in expected if m.type == "InventoryAdjusted"}
                    returns = {f"{m.body['rma_id']}/{m.body['sku']}" for m in expected if m.type == "ReturnReceived"}
                done, refs = await verify.done_progress(rest, confirmed)
                gone = len(await rest.search(SHIPMENT, [("number", "in", cancelled), ("state", "=", "cancelled")],
                                             ["number"])) if cancelled else 0
                back = {d["reference"] for d in await rest.search(
                    "stock.shipment.out.return", [("reference", "in", sorted(returns)), ("state", "in", ["received", "done"])],
                    ["reference"])} if returns else set()
                rejected = {orjson.loads(r.value).get("milestone_id") for r in await asyncio.to_thread(
                    verify.read_topic, self.bootstrap, topics.erp_dead_letters, 1.0)}
                unfed = self.unfed()
                quiet = time.monotonic() - (self.tail.last_release if self.tail else 0)
                status = (f"{done}/{len(confirmed)} shipments done, {gone}/{len(cancelled)} cancelled, "
                          f"{len(stock & refs)}/{len(stock)} stock moves, {len(back)}/{len(returns)} returns"
                          + (f", {len(unfed)} releases not worked yet" if unfed else "")
                          + (f", {len(rejected)} ERP dead letters" if rejected else ""))
                if (done == len(confirmed) and gone == len(cancelled) and stock <= refs | rejected
                        and len(back) + len(rejected) >= len(returns) and not unfed and self.feed_flushed
                        and version == self.feed_version and quiet >= 10):
                    self.say(f"drained: {status}")
                    break
                if status != last:
                    self.say(f"draining: {status}")
                    last = status
                if time.monotonic() - started > self.cfg.drain_timeout_s:
                    self.say(f"gave up draining after {self.cfg.drain_timeout_s:.0f} s: {status}")
                    break
                await asyncio.sleep(5)
        finally:
            await rest.close()
        await asyncio.sleep(8)  # late duplicates, if any, would land now
        return time.monotonic() - started

    async def gather(self) -> verify.Inputs:
        topics = load(self.cli_env()).topics
        gov = load(self.cli_env()).governance
        read = verify.read_topic
        events, milestones, dead, erp_dead = await asyncio.gather(*(asyncio.to_thread(read, self.bootstrap, t) for t in (
            topics.events, topics.milestones, topics.dead_letters, topics.erp_dead_letters)))
        parts = verify.by_partition(events)
        self.lags = verify.release_lags(events, milestones)
        numbers = set(verify.releases_of(parts)) | set(self.created)
        rest = self.erp.direct_rest()
        try:
            view = await verify.read_tryton(rest, numbers)
        finally:
            await rest.close()
        self.transitions = view.transitions
        proxy = self.proxy_lines()
        nginx = ops_module("nginx/gateway.py").read_access_log(self.erp.access_log)
        return verify.Inputs(
            events=parts, settings=gov.core(),
            milestones_topic=[Milestone.from_dict(codec.decode(r.value)).to_dict() for r in milestones],
            dead_letters=[codec.decode_dead_letter(r.value) for r in dead if r.value[:1] != b"{"],  # not re-drive markers
            erp_dead_letters=[orjson.loads(r.value) for r in erp_dead],
            tryton=view,
            proxy_calls=verify.state_changes((p.method, p.uri, p.upstream_status) for p in proxy),
            nginx_calls=verify.state_changes((n.method, n.uri, n.status) for n in nginx),
            proxy_times=verify.state_change_times((p.arrived, p.ts, p.method, p.uri, p.upstream_status) for p in proxy),
            poison_sent=self.poison_sent, seeds=self.seeds, created=self.created, tracking=tracking_no)

    def report(self, v: verify.Verdict, durations: dict[str, float]) -> str:
        assert self.pool is not None and self.source is not None
        proxy = ops_module("chaos/faultproxy.py").read_log(self.erp.proxy_log)
        nginx = ops_module("nginx/gateway.py").read_access_log(self.erp.access_log)
        actions = Counter(p.action for p in proxy)
        statuses = Counter(n.status for n in nginx)
        fault_rows = [(name, f"{self.faults.counts[name]} x, {self.faults.seconds[name]:.0f} s")
                      for name in sorted(self.faults.counts)]
        sites: Counter[str] = Counter()
        released: set[str] = set()
        if self.tail is not None:
            with self.tail.lock:
                sites.update(r["warehouse_id"] for r in self.tail.releases.values())
                released = set(self.tail.releases)
        rows = [
            ("orders entered in Tryton / released by syncgov source", f"{len(self.created)} / {v.orders_released}"),
            ("  released per warehouse", ", ".join(f"{k} {n}" for k, n in sorted(sites.items()))),
            ("  back orders Tryton made (short picks, changes)", str(len(released - set(self.created)))),
            ("ERP users: orders changed / cancelled before picking",
             f"{self.user_edits['change']} / {self.user_edits['cancel']}"),
            ("warehouse: short picks (LineShortClosed) / returns", f"{self.sent['LineShortClosed']} / "
                                                                    f"{self.sent['ReturnReceived']}"),
            *fault_rows,
            ("(h) stalled workers that fenced themselves (exit 75)", str(len(self.pool.fenced))),
            ("(e) poison records sent", str(sum(v.poison_sent.values()))),
            *[(f"  {k}: sent / dead-lettered", f"{v.poison_sent[k]} / {v.poison_found[k]}") for k in POISON_KINDS],
            ("(g) picks from the v1 (old) writer schema", str(self.sent["old-schema picks (v1 writer)"])),
            ("events sent (source releases + warehouse + poison)", str(v.events_in_topic)),
            ("milestones expected (to the ERP)", str(v.expected)),
            ("milestones posted (Tryton's documents)", str(v.posted)),
            *[(f"  {k}: expected / posted", f"{e} / {p}") for k, (e, p) in v.by_type.items()],
            ("LOST (must be 0)", str(len(v.lost))),
            ("POSTED TWICE (must be 0)", str(len(v.twice))),
            ("OUT OF ORDER (must be 0)", str(len(v.out_of_order))),
            ("orders done once with their tracking number and picked qty",
             f"{v.orders_done}/{v.orders_released - v.orders_cancelled}"),
            ("  of which changed by the ERP / picked short", f"{v.orders_changed} / {v.orders_short}"),
            ("orders cancelled in Tryton as the ERP's users asked", str(v.orders_cancelled)),
            ("released orders the warehouse never worked (must be 0)", str(len(v.orders_unworked))),
            ("poison records in the dead-letter topic with a reason",
             f"{sum(v.poison_found.values())}/{sum(v.poison_sent.values())}"),
            ("unexpected dead letters", str(len(v.unexpected_dead_letters))),
            ("ERP dead letters (the ERP said no)", str(len(v.erp_dead_letters))),
            ("ERP documents no milestone explains", str(len(v.unexplained_documents))),
            ("expected milestones missing on Kafka", str(len(v.missing_in_kafka))),
            ("re-emitted milestone copies (at-least-once)", str(v.milestone_copies)),
            ("longest kill -9 -> worker ready again", f"{max(self.pool.restarts_s, default=0):.0f} s"),
            ("release -> OrderAccepted on Kafka: median / max",
             f"{self.lags[len(self.lags) // 2] if self.lags else 0:.1f} s / {max(self.lags, default=0):.0f} s"),
            ("worker crashes (exits nobody asked for)", str(len(self.pool.exits))),
            ("source crashes (exits nobody asked for)", str(len(self.source.exits))),
            ("ERP requests at the gateway (429 / 5xx)",
             f"{len(nginx)} ({statuses[429]} / {sum(n for s, n in statuses.items() if s >= 500)})"),
            ("ERP requests at the proxy (errors/hangs/lost answers)",
             f"{len(proxy)} ({actions['error']}/{actions['timeout']}/{actions['commit-timeout']})"),
            *[(f"duration: {k}", f"{s:.0f} s") for k, s in durations.items()],
            ("RESULT", "PASS" if v.ok else "FAIL"),
        ]
        self.rows = rows
        lines = [verify.table(rows, "syncgov chaos: faults injected and what the ERP shows")]
        for title, items in (("LOST", v.lost), ("POSTED TWICE", v.twice), ("OUT OF ORDER", v.out_of_order),
                             ("released, never worked", v.orders_unworked), ("poison not dead-lettered", v.poison_missing),
                             ("orders not done right", v.orders_wrong), ("unexpected dead letters", v.unexpected_dead_letters),
                             ("ERP dead letters", v.erp_dead_letters), ("unexplained ERP documents", v.unexplained_documents),
                             ("missing on Kafka", v.missing_in_kafka), ("unexpected milestones", v.unexpected_milestones),
                             ("worker crashes", [f"{e.name} code {e.code} ({e.log})" for e in self.pool.exits]),
                             ("fenced after a stall (expected)", [f"{e.name} code {e.code} at "
                                                                  f"{time.strftime('%H:%M:%S', time.localtime(e.at))}"
                                                                  for e in self.pool.fenced]),
                             ("source crashes", [f"code {e.code} at {time.strftime('%H:%M:%S', time.localtime(e.at))}"
                                                 for e in self.source.exits])):
            if items:
                lines.append(f"\n{title} ({len(items)}):")
                lines += [f"  {item}" for item in items[:25]]
                if len(items) > 25:
                    lines.append(f"  ... and {len(items) - 25} more")
        return "\n".join(lines)

    async def run(self) -> verify.Verdict:
        t0 = time.monotonic()
        await asyncio.to_thread(self.start)
        started = time.monotonic()
        self.erp_up.set()
        plan = self.plan()
        self.say(f"load: {self.cfg.orders} orders; faults in this order: " + ", ".join(
            f"{name}@{min(at, 1.0):.0%}" for at, name, _ in plan))
        supervisor = asyncio.create_task(self.supervise())
        topic = self.topics()["TOPIC_EVENTS"]
        feeder = asyncio.create_task(self.feed(topic))
        try:
            await asyncio.gather(self.create_orders(), self.inject(plan), self.fed_once())
            loaded = time.monotonic() - started
            drained = await self.drain()
        finally:
            self.stop_feeding = True
            self.stop_requested = True
            await asyncio.gather(supervisor, feeder)
        v = verify.judge(await self.gather())
        self.verdict = v
        total = time.monotonic() - t0
        print(self.report(v, {"start-up": started - t0, "load + faults": loaded, "drain": drained,
                              "total": total}), flush=True)
        return v


_RUNNING: list[Chaos] = []


def _terminate(signum: int, frame: object) -> NoReturn:
    """SIGTERM: stop every process of the run first (threads waiting on them give up), then exit."""
    for chaos in _RUNNING:
        chaos.stop()
    raise SystemExit(128 + signum)


def parse_args(argv: list[str] | None) -> ChaosConfig:
    d = ChaosConfig()
    p = argparse.ArgumentParser(prog="python -m app.harness.chaos.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, default=d.orders, help=f"sales entered in Tryton (default {d.orders})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--dir", type=Path, default=d.workdir, help="work dir (emptied first)")
    p.add_argument("--kills", type=int, default=d.kills, help="kill -9 of a random worker, each restarted")
    p.add_argument("--outage-s", type=float, default=d.outage_s, help="ERP stopped this long (0: off)")
    p.add_argument("--storm-s", type=float, default=d.storm_s, help="429 to everything this long (0: off)")
    p.add_argument("--errors-s", type=float, default=d.errors_s, help="500s/timeouts phases this long (0: off)")
    p.add_argument("--no-scale", action="store_true", help="no 1 -> 2 -> 1 scaling")
    p.add_argument("--stalls", type=int, default=d.stalls,
                   help="SIGSTOP a worker past the session timeout, then SIGCONT (the first alone, the second "
                        "during the ERP's errors)")
    p.add_argument("--stall-s", type=float, default=d.stall_s, help="how long a stall lasts (>= session timeout + 4)")
    p.add_argument("--warehouses", default=",".join(d.warehouses), help="sites the sales ship from")
    p.add_argument("--poison-rate", type=float, default=d.poison_rate)
    p.add_argument("--gateway-rate", type=float, default=d.gateway_rate, help="ERP quota at the gateway, r/s")
    p.add_argument("--drain-timeout-s", type=float, default=d.drain_timeout_s)
    p.add_argument("--no-bulk", action="store_true",
                   help="ERP writes one REST call per record (default: Tryton JSON-RPC bulk calls)")
    p.add_argument("--broker", default="embedded",
                   help="'embedded' (Tansu), 'apache' (a single-node Apache Kafka from ops/kafka) or a bootstrap address")
    a = p.parse_args(argv)
    return ChaosConfig(orders=a.orders, seed=a.seed, workdir=a.dir, kills=a.kills, outage_s=a.outage_s,
                       storm_s=a.storm_s, errors_s=a.errors_s, scale=not a.no_scale, poison_rate=a.poison_rate,
                       stalls=a.stalls, stall_s=a.stall_s, warehouses=tuple(w for w in a.warehouses.split(",") if w),
                       gateway_rate=a.gateway_rate, drain_timeout_s=a.drain_timeout_s, bootstrap=a.broker,
                       bulk=not a.no_bulk)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    shutil.rmtree(cfg.workdir, ignore_errors=True)
    cfg.workdir.mkdir(parents=True)
    signal.signal(signal.SIGTERM, _terminate)
    say = Say()
    say(f"syncgov chaos in {cfg.workdir.resolve()} (seed {cfg.seed})")
    chaos = Chaos(cfg, say)
    _RUNNING.append(chaos)
    try:
        verdict = asyncio.run(chaos.run())
    except KeyboardInterrupt:
        return 130
    finally:
        chaos.stop()
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
