"""`make chaos` / ``python -m app.chaos.run``: the whole pipeline under faults, then the verdict.

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

When every released order is done in Tryton (or ``--drain-timeout-s`` passed) the
verifier (``app.chaos.verify``) compares Tryton's documents with the expected result and
prints the table. Exit code 0 only with 0 lost, 0 posted twice and every poison record in
the dead-letter topic with a reason. Everything lives under ``--dir`` (fresh each run).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any, NoReturn

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from app import codec
from app.broker import EmbeddedBroker
from app.chaos import verify
from app.chaos.faults import POISON_KINDS, ErpSide, Supervised, WorkerPool, encode_old_pick, poison
from app.core.keys import event_key
from app.core.model import Milestone
from app.core.timeutil import format_ts, parse_ts
from app.erp.port import PermanentErpError, TransientErpError
from app.erp.sales import new_order
from app.kafka_io import client_config, create_topics, produce
from app.processes import ops_module
from app.settings import load
from app.simulator.work import tracking_no, warehouse_work, watermark_flush

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = ("Acme Retail", "Globex Stores", "Initech Supplies", "Umbrella Shop")
TELEMETRY = ("ItemScanned", "ToteConveyed")


@dataclass
class ChaosConfig:
    orders: int = 300
    seed: int = 7
    workdir: Path = ROOT / "var" / "chaos"
    bootstrap: str = "embedded"  # as KAFKA_BOOTSTRAP_SERVERS: "embedded" starts a broker for this run
    prefix: str = ""  # app id and topic prefix; empty: "chaos<seed>"
    kills: int = 10
    outage_s: float = 60.0
    storm_s: float = 30.0
    errors_s: float = 30.0
    scale: bool = True
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


@dataclass
class FaultLog:
    """What was injected, when, for how long."""

    counts: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)
    timeline: list[str] = field(default_factory=list)


class ReleaseTail(threading.Thread):
    """Reads the events topic from the start and collects OrderReleased (source erp)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.lock = threading.Lock()
        self.releases: dict[str, dict[str, Any]] = {}
        self.new: list[dict[str, Any]] = []
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
                    if d.get("type") == "OrderReleased" and d.get("source") == "erp":
                        with self.lock:
                            if d["order_id"] not in self.releases:
                                d = {**d, "occurred_at": format_ts(d["occurred_at"])}
                                self.releases[d["order_id"]] = d
                                self.new.append(d)
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
        self.broker: EmbeddedBroker | None = None
        self.bootstrap = cfg.bootstrap
        self.erp = ErpSide(self.workdir / "erp", gateway_rate=cfg.gateway_rate, gateway_burst=cfg.gateway_burst)
        self.pool: WorkerPool | None = None
        self.source: Supervised | None = None
        self.faults = FaultLog()
        self.erp_up = asyncio.Event()
        self.creating = 0
        self.created: list[str] = []
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
        self.background: list[asyncio.Task[None]] = []

    # -- set-up --------------------------------------------------------------------------

    def topics(self) -> dict[str, str]:
        p = self.prefix
        return {"TOPIC_EVENTS": f"{p}.events", "TOPIC_MILESTONES": f"{p}.milestones",
                "TOPIC_EXCEPTIONS": f"{p}.exceptions", "TOPIC_DEAD_LETTERS": f"{p}.dead-letters",
                "TOPIC_ERP_DEAD_LETTERS": f"{p}.erp-dead-letters", "TOPIC_SOURCE_CURSOR": f"{p}.source-cursor",
                "TOPIC_STOCK": f"{p}.stock"}

    def start(self) -> None:
        cfg = self.cfg
        if self.bootstrap in ("", "embedded"):
            self.broker = EmbeddedBroker().start()
            self.bootstrap = self.broker.bootstrap
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
            except Exception as exc:  # noqa: BLE001 - stop the rest whatever happens
                print(f"could not stop the {what}: {exc}", file=sys.stderr, flush=True)

    # -- load: the ERP's users and the warehouse ---------------------------------------------

    async def create_orders(self) -> None:
        cfg = self.cfg
        rest = self.erp.direct_rest(cfg.create_concurrency)
        sem = asyncio.Semaphore(cfg.create_concurrency)
        rng = Random(cfg.seed + 1)
        plans = [([(f"SKU-{n:04d}", rng.randint(1, 3)) for n in rng.sample(range(1, 201), rng.randint(1, 3))],
                  CUSTOMERS[i % len(CUSTOMERS)]) for i in range(cfg.orders)]

        async def one(lines: list[tuple[str, int]], customer: str) -> None:
            async with sem:
                for attempt in range(1, 6):
                    await self.erp_up.wait()
                    self.creating += 1
                    try:
                        ship = await new_order(rest, lines, customer=customer)
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
            await asyncio.gather(*(one(lines, customer) for lines, customer in plans))
        finally:
            await rest.close()
            self.creation_done = True
        self.say(f"ERP users: {len(self.created)} sales entered and processed ({self.create_errors} retried calls)")

    def wave(self, releases: list[dict[str, Any]], n: int) -> list[tuple[bytes | None, bytes]]:
        """The warehouse's records for one wave of releases, with poison and old-schema picks."""
        cfg, rng = self.cfg, self.rng
        seed = cfg.seed * 100_000 + n
        now = int(time.time() * 1000)
        start_ms = max(now, self.clock_ms + 1)
        work = warehouse_work(releases, seed=seed, start_ms=start_ms,
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

    async def feed(self, topic: str) -> None:
        """Warehouse work for each wave of releases until every created order was released and fed."""
        tail = ReleaseTail(self.bootstrap, topic)
        tail.start()
        fed: set[str] = set()
        n = 0
        waiting_since: float | None = None
        try:
            while True:
                new = [r for r in tail.take() if r["order_id"] not in fed]
                if new:
                    n += 1
                    records = self.wave(new, n)
                    await asyncio.to_thread(produce, self.bootstrap, topic, records)
                    fed.update(r["order_id"] for r in new)
                if self.creation_done and set(self.created) <= fed:
                    break
                if self.creation_done:
                    waiting_since = waiting_since or time.monotonic()
                    if not self.erp_up.is_set():
                        waiting_since = time.monotonic()
                    if time.monotonic() - waiting_since > 300:
                        self.say(f"{len(set(self.created) - fed)} created orders never released; feeding stops")
                        break
                await asyncio.sleep(self.cfg.wave_s)
            # A telemetry record on every partition after the last window's end + grace closes every window.
            s = load(self.cli_env())
            g = s.governance
            flush_ms = max(int(time.time() * 1000), self.clock_ms + int((g.window_size_s + g.window_grace_s + 5) * 1000))
            flush = watermark_flush("WH1", flush_ms, s.topics.partitions, self.prefix)
            await asyncio.to_thread(produce, self.bootstrap, topic, [(key, orjson.dumps(ev)) for key, ev in flush])
            self.sent["telemetry (JSON)"] += len(flush)
            self.say(f"warehouse: {n} waves for {len(fed)} released orders; sent "
                     f"{', '.join(f'{v} {k}' for k, v in sorted(self.sent.items()))}")
        finally:
            tail.stopping.set()
            self.feed_done = True

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
        pid = self.pool.workers[name].process.pid if self.pool.workers[name].process else "?"
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

    async def errors(self, combo_kill: bool) -> None:
        """(d): 500s from the gateway, then 500s/hangs/lost answers from the ERP behind it."""
        cfg = self.cfg
        steps = [("gateway answers 500 to everything", lambda: self.erp.gateway_template("500"), cfg.errors_s / 3),
                 ("the ERP answers 500/502/503", lambda: self.erp.proxy_mode("error"), cfg.errors_s * 2 / 3),
                 (f"the ERP hangs (no answer for {cfg.hold_s:.0f} s)",
                  lambda: self.erp.proxy_mode("timeout", hold_s=cfg.hold_s), cfg.errors_s / 2),
                 ("the ERP commits, then its answer is lost (timeout)",
                  lambda: self.erp.proxy_mode("commit-timeout", hold_s=cfg.hold_s), cfg.errors_s / 2),
                 ("a mix of 500s, hangs and lost answers (40 %)",
                  lambda: self.erp.proxy_mode("mixed", p=0.4, hold_s=cfg.hold_s), cfg.errors_s)]
        for i, (what, action, seconds) in enumerate(steps):
            started = time.monotonic()
            self.say(f"(d) {what} for {seconds:.0f} s")
            await asyncio.to_thread(action)
            if combo_kill and i == 3:
                await asyncio.sleep(seconds / 2)
                await self.kill(" while ERP answers are being lost", wait=False)
            await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))
            if i in (2, 3):  # a quiet moment: hold the mode (up to 3x as long) until it has bitten once
                action_name = ("timeout", "commit-timeout")[i - 2]
                since = time.time() - (time.monotonic() - started)
                while (time.monotonic() - started < 3 * seconds and not any(
                        p.action == action_name and p.ts >= since for p in self.proxy_lines())):
                    await asyncio.sleep(1)
            if i == 0:
                await asyncio.to_thread(self.erp.gateway_template, "normal")
            self.mark(f"(d) {what.split(' (')[0]}", started)
        await asyncio.to_thread(self.erp.proxy_mode, "pass")
        self.say("(d) the ERP answers normally again")

    def proxy_lines(self) -> list[Any]:
        return ops_module("chaos/faultproxy.py").read_log(self.erp.proxy_log)

    async def scale(self) -> None:
        """(f) 2 -> 1 -> 2 (a fresh node) -> 1 -> 2, 20 s each, under load."""
        assert self.pool is not None
        started = time.monotonic()
        self.say("(f) scale 2 -> 1: worker w2 leaves (clean stop)")
        await asyncio.to_thread(self.pool.stop, "w2")
        await asyncio.sleep(20)
        self.say("(f) scale 1 -> 2: a fresh worker w3 (empty store: recovers from the changelog)")
        await asyncio.to_thread(self.pool.start, "w3")
        await asyncio.sleep(20)
        self.say("(f) scale 2 -> 1: w3 leaves")
        await asyncio.to_thread(self.pool.stop, "w3")
        await asyncio.sleep(20)
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
        if cfg.errors_s > 0:
            steps.append((0.6, "errors", lambda: self.errors(combo)))
            kills_left -= combo
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
        """Wait until Tryton shows every released order done and every expected stock move;
        returns the seconds waited."""
        started = time.monotonic()
        topics = load(self.cli_env()).topics
        gov = load(self.cli_env()).governance
        events = await asyncio.to_thread(verify.read_topic, self.bootstrap, topics.events)
        parts = verify.by_partition(events)
        expected, _ = verify.replay(parts, verify.core_settings(gov))
        stock = {m.milestone_id for m in expected if m.type == "InventoryAdjusted"}
        released = sorted(verify.releases_of(parts))
        rest = self.erp.direct_rest()
        last = ""
        try:
            while True:
                done, refs = await verify.done_progress(rest, released)
                rejected = {orjson.loads(r.value).get("milestone_id") for r in await asyncio.to_thread(
                    verify.read_topic, self.bootstrap, topics.erp_dead_letters, 1.0)}
                status = (f"{done}/{len(released)} shipments done, {len(stock & refs)}/{len(stock)} stock moves"
                          + (f", {len(rejected)} ERP dead letters" if rejected else ""))
                if done == len(released) and stock <= refs | rejected:
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
        proxy = ops_module("chaos/faultproxy.py").read_log(self.erp.proxy_log)
        nginx = ops_module("nginx/gateway.py").read_access_log(self.erp.access_log)
        return verify.Inputs(
            events=parts, settings=verify.core_settings(gov),
            milestones_topic=[Milestone.from_dict(codec.decode(r.value)).to_dict() for r in milestones],
            dead_letters=[codec.decode_dead_letter(r.value) for r in dead],
            erp_dead_letters=[orjson.loads(r.value) for r in erp_dead],
            tryton=view,
            proxy_calls=verify.state_changes((p.method, p.uri, p.upstream_status) for p in proxy),
            nginx_calls=verify.state_changes((n.method, n.uri, n.status) for n in nginx),
            poison_sent=self.poison_sent, seeds=self.seeds, created=self.created, tracking=tracking_no)

    def report(self, v: verify.Verdict, durations: dict[str, float]) -> str:
        assert self.pool is not None and self.source is not None
        proxy = ops_module("chaos/faultproxy.py").read_log(self.erp.proxy_log)
        nginx = ops_module("nginx/gateway.py").read_access_log(self.erp.access_log)
        actions = Counter(p.action for p in proxy)
        statuses = Counter(n.status for n in nginx)
        fault_rows = [(name, f"{self.faults.counts[name]} x, {self.faults.seconds[name]:.0f} s")
                      for name in sorted(self.faults.counts)]
        rows = [
            ("orders entered in Tryton / released by syncgov source", f"{len(self.created)} / {v.orders_released}"),
            *fault_rows,
            ("(e) poison records sent", str(sum(v.poison_sent.values()))),
            *[(f"  {k}: sent / dead-lettered", f"{v.poison_sent[k]} / {v.poison_found[k]}") for k in POISON_KINDS],
            ("(g) picks from the v1 (old) writer schema", str(self.sent["old-schema picks (v1 writer)"])),
            ("events sent (source releases + warehouse + poison)", str(v.events_in_topic)),
            ("milestones expected (to the ERP)", str(v.expected)),
            ("milestones posted (Tryton's documents)", str(v.posted)),
            *[(f"  {k}: expected / posted", f"{e} / {p}") for k, (e, p) in v.by_type.items()],
            ("LOST (must be 0)", str(len(v.lost))),
            ("POSTED TWICE (must be 0)", str(len(v.twice))),
            ("orders done once with their tracking number", f"{v.orders_done}/{v.orders_released}"),
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
        for title, items in (("LOST", v.lost), ("POSTED TWICE", v.twice), ("poison not dead-lettered", v.poison_missing),
                             ("orders not done right", v.orders_wrong), ("unexpected dead letters", v.unexpected_dead_letters),
                             ("ERP dead letters", v.erp_dead_letters), ("unexplained ERP documents", v.unexplained_documents),
                             ("missing on Kafka", v.missing_in_kafka), ("unexpected milestones", v.unexpected_milestones),
                             ("worker crashes", [f"{e.name} code {e.code} ({e.log})" for e in self.pool.exits]),
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
        try:
            await asyncio.gather(self.create_orders(), self.feed(topic), self.inject(plan))
            loaded = time.monotonic() - started
            drained = await self.drain()
        finally:
            self.stop_requested = True
            await supervisor
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
    p = argparse.ArgumentParser(prog="python -m app.chaos.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, default=d.orders, help=f"sales entered in Tryton (default {d.orders})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--dir", type=Path, default=d.workdir, help="work dir (emptied first)")
    p.add_argument("--kills", type=int, default=d.kills, help="kill -9 of a random worker, each restarted")
    p.add_argument("--outage-s", type=float, default=d.outage_s, help="ERP stopped this long (0: off)")
    p.add_argument("--storm-s", type=float, default=d.storm_s, help="429 to everything this long (0: off)")
    p.add_argument("--errors-s", type=float, default=d.errors_s, help="500s/timeouts phases this long (0: off)")
    p.add_argument("--no-scale", action="store_true", help="no 1 -> 2 -> 1 scaling")
    p.add_argument("--poison-rate", type=float, default=d.poison_rate)
    p.add_argument("--gateway-rate", type=float, default=d.gateway_rate, help="ERP quota at the gateway, r/s")
    p.add_argument("--drain-timeout-s", type=float, default=d.drain_timeout_s)
    a = p.parse_args(argv)
    return ChaosConfig(orders=a.orders, seed=a.seed, workdir=a.dir, kills=a.kills, outage_s=a.outage_s,
                       storm_s=a.storm_s, errors_s=a.errors_s, scale=not a.no_scale, poison_rate=a.poison_rate,
                       gateway_rate=a.gateway_rate, drain_timeout_s=a.drain_timeout_s)


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
