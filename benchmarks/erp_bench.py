"""ERP capacity (`make bench-erp`, and `make bench`'s ERP section, both through
``capacity`` with the sizes of ``BENCH_ERP``) against the real Tryton 8.2 behind the real
nginx gateway. Four figures, each with PASS/FAIL: orders taken from released to done per
ERP request and 429s (A), warehouse events per ERP request on the default mix (B), and a
backlog's drain against the quota's floor (C).

A. End-to-end run (requests per milestone type, 429s at the configured quota).
   K orders are created in Tryton directly (not through the gateway: set-up), then the
   real pipeline runs as in tests/integration/test_erp_pipeline.py: ``syncgov source --once``
   publishes their OrderReleased events, the simulator's ``warehouse_work`` adds the
   warehouse's events (scans, picks, conveying, pack, dispatch, stock adjustments) plus a
   restock return for every fourth order, and a ``syncgov worker`` with the ERP sink on
   posts the milestones through nginx with ``ERP_RATE_PER_S``/``ERP_BURST`` = the
   gateway's quota. Every request nginx saw is in its access log; each is attributed to
   a milestone type by its URI (the adapter's calls are fixed per type, docs/erp.md),
   the shipment reads one per order milestone plus one after each ``wait``.

B. Warehouse events per ERP request on the simulator's default mix = events /
   sum over types of (milestones of that type in a replay of the default mix x requests
   per milestone of that class measured: order milestones and returns in A,
   InventoryAdjusted in C). SyncExceptions are never posted (0 requests).

C. Backlog drain: N InventoryAdjusted milestones (real ones from a replay of the default
   mix, one warehouse; cloned under new ids when the replay has fewer) are put on a fresh
   milestones topic at once, as soon as a worker with the sink on reads its (empty)
   partitions (records already there at an assignment would wait ERP_TIMEOUT_S, the
   takeover rule, which is no part of a drain), and it drains them through nginx. Drain
   time = first to last request in the access log; the floor at the quota is
   (requests - burst) / rate (N / quota is the one-request-per-milestone case). 429s are
   counted too, and trytond's CPU seconds meanwhile (one Python process: the ERP's own
   floor, whatever the quota).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.core.ids import milestone_id  # noqa: E402
from app.core.keys import event_key  # noqa: E402
from app.core.timeutil import format_ts  # noqa: E402
from app.erp.client import ErpHttpClient  # noqa: E402
from app.erp.ratelimit import RatePolicy  # noqa: E402
from app.erp.sales import new_order  # noqa: E402
from app.erp.tryton import TrytonRest  # noqa: E402
from app.harness.processes import ops_module  # noqa: E402
from app.kafka import codec  # noqa: E402
from app.kafka.clients import create_topics, produce, read_all  # noqa: E402
from app.kafka.embedded import free_port  # noqa: E402
from app.simulator.work import warehouse_work  # noqa: E402
from benchmarks.worker_bench import (  # noqa: E402
    PARTITIONS,
    Children,
    app_env,
    fresh_dir,
    log,
    machine,
    metric_samples,
)
from tests.integration.streams import replay, simulate  # noqa: E402


class AccessLine(Protocol):
    """A request line of the gateway's access log (``ops/nginx/gateway.py``)."""

    @property
    def ts(self) -> float: ...
    @property
    def status(self) -> int: ...
    @property
    def method(self) -> str: ...
    @property
    def uri(self) -> str: ...
    @property
    def request_time_s(self) -> float: ...


class Stack:
    """Tryton + the nginx gateway in a work dir, stopped by ``children``."""

    def __init__(self, children: Children, workdir: Path, rate: float, burst: int) -> None:
        run = ops_module("erp/run.py")
        gateway = ops_module("nginx/gateway.py")
        self.gateway_ops = gateway
        server = run.start(workdir / "tryton", free_port())
        children.add(lambda: run.stop_pid(server.pid))
        gw = gateway.start(workdir / "nginx", free_port(), server.base_url.removeprefix("http://"),
                           rate_per_s=rate, burst=burst, retry_after_s=1)
        children.add(lambda: gateway.stop_pid(gw.pid))
        self.tryton_pid = server.pid
        self.tryton_url = server.base_url
        self.gateway_url = gw.base_url
        self.database = server.database
        self.key = server.key_file.read_text().strip()
        self.access_log = gw.access_log
        self.rate = rate
        self.burst = burst

    def direct_rest(self) -> TrytonRest:
        client = ErpHttpClient(
            self.tryton_url, policy=RatePolicy(rate_per_s=200, burst=50, max_in_flight=8), timeout_s=60,
            auth_header=("Authorization", f"bearer {self.key}"), secret=self.key)
        return TrytonRest(client, self.database)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "ERP_SINK_ENABLED": "true",
            "ERP_ADAPTER": "tryton",
            "ERP_BASE_URL": self.gateway_url,
            "ERP_DATABASE": self.database,
            "ERP_API_KEY": self.key,
            "ERP_RATE_PER_S": str(self.rate),
            "ERP_BURST": str(self.burst),
            "ERP_TIMEOUT_S": "30",
            # JSON-RPC bulk writes: the template database's admin user
            "ERP_RPC_LOGIN": "admin",
            "ERP_RPC_PASSWORD": "admin",
            # The reconciler reads the ERP on its own quota share (RECONCILE_RATE_PER_S); it is
            # no part of the sink's figures, so it does not run during a measurement.
            "RECONCILE_INTERVAL_S": "86400",
            **extra,
        }

    def erp_cpu_s(self) -> float:
        """CPU seconds trytond (one Python process: at most one core's worth of work at a
        time) has used so far, from /proc."""
        fields = Path(f"/proc/{self.tryton_pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_lines(self) -> list[AccessLine]:
        """The access log once it has settled (nginx logs after answering)."""
        size = -1
        while self.access_log.exists() and size != self.access_log.stat().st_size:
            size = self.access_log.stat().st_size
            time.sleep(0.3)
        lines: list[AccessLine] = self.gateway_ops.read_access_log(self.access_log)
        return lines


async def create_orders(rest: TrytonRest, k: int, seed: int) -> list[dict[str, Any]]:
    """K sales confirmed and processed in Tryton (direct): their customer shipments."""
    rng = random.Random(seed)
    codes = [f"SKU-{i:04d}" for i in range(1, 201)]
    shipments = []
    for _ in range(k):
        lines = [(sku, rng.randint(1, 3)) for sku in rng.sample(codes, rng.choice((1, 1, 2, 2, 3, 4)))]
        shipments.append(await new_order(rest, lines))
    return shipments


async def shipment_states(rest: TrytonRest, ids: list[int]) -> dict[int, str]:
    found = await rest.search("stock.shipment.out", [("id", "in", ids)], ["state"])
    return {s["id"]: s["state"] for s in found}


# -- access-log attribution -------------------------------------------------------------------

_MODEL = re.compile(r"^/[^/]+/rest/model/([^/?]+)(?:/(\d+))?(?:/([a-z_]+))?")


def _domain(uri: str) -> str:
    m = re.search(r"[?&]d=([^&]+)", uri)
    if not m:
        return ""
    raw = m.group(1).replace("%3D", "=")
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except ValueError:
        return ""


def attribute(lines: list[AccessLine]) -> dict[str, Any]:
    """Requests by milestone type from the gateway's access log lines (see the module docstring)."""
    per: Counter[str] = Counter()
    reads = waits = 0
    source = other = 0
    last_button: dict[str, str] = {}
    puts: list[tuple[str, int]] = []  # (shipment id, index) of shipment writes, attributed afterwards
    for i, line in enumerate(lines):
        m = _MODEL.match(line.uri)
        if not m:
            other += 1
            continue
        model, rid, button = m.groups()
        if model == "stock.shipment.out" and line.method == "GET" and rid is None:
            if "write_date" in _domain(line.uri):
                source += 1
            else:
                reads += 1
        elif model == "stock.shipment.out" and line.method == "PUT" and rid:
            puts.append((rid, i))
        elif model == "stock.shipment.out" and button:
            if button == "wait":
                waits += 1
                per["OrderPicked"] += 1
            elif button in ("assign_force", "pick"):
                per["OrderPicked"] += 1
            elif button == "pack":
                per["OrderPacked"] += 1
            elif button == "do":
                per["ShipmentConfirmed"] += 1
            last_button.setdefault(rid or "", button)
        elif model == "ir.note":
            per["OrderAccepted"] += 1
        elif model.startswith("stock.shipment.internal") or model == "product.product":
            per["InventoryAdjusted"] += 1
        elif model.startswith("stock.shipment.out.return"):
            per["ReturnReceived"] += 1
        elif model == "stock.location":
            # warehouse/bin lookups (cached per adapter): InventoryAdjusted, or a return's warehouse
            per["InventoryAdjusted" if "lost_found" in line.uri or "code" in _domain(line.uri) else "ReturnReceived"] += 1
        elif model == "res.user":
            other += 1  # get_preferences, once per adapter
        else:
            other += 1
    # A shipment write before that shipment's `pick` sets picked quantities (OrderPicked);
    # after it, the tracking number (ShipmentConfirmed).
    pick_at: dict[str, int] = {}
    for i, line in enumerate(lines):
        m = _MODEL.match(line.uri)
        if m and m.group(1) == "stock.shipment.out" and m.group(3) == "pick":
            pick_at.setdefault(m.group(2), i)
    for rid, i in puts:
        per["OrderPicked" if i < pick_at.get(rid, 1 << 60) else "ShipmentConfirmed"] += 1
    return {"by_type": dict(per), "shipment_reads": reads, "waits": waits, "source": source, "other": other}


def per_milestone(attr: dict[str, Any], posted: dict[str, float]) -> dict[str, float]:
    """Requests per posted milestone of each type; shipment reads: one per order milestone
    (its first read, also for a return's read of the order) + one after each `wait`."""
    req = dict(attr["by_type"])
    req["OrderPicked"] = req.get("OrderPicked", 0) + attr["waits"]  # the re-read after `wait`
    for kind in ("OrderAccepted", "OrderPicked", "OrderPacked", "ShipmentConfirmed", "ReturnReceived"):
        req[kind] = req.get(kind, 0) + posted.get(kind, 0)
    return {k: req.get(k, 0) / n for k, n in posted.items() if n}


def erp_calls(worker: Any) -> dict[str, dict[str, float]]:
    """{milestone type: {outcome: count}} from the worker's syncgov_erp_calls_total."""
    out: dict[str, dict[str, float]] = {}
    for labels, value in metric_samples(worker, "syncgov_erp_calls_total").items():
        m = re.match(r'\{milestone_type="([^"]+)",outcome="([^"]+)"\}', labels)
        if m:
            out.setdefault(m.group(1), {})[m.group(2)] = value
    return out


def wait_sink(worker: Any, expected: int, timeout_s: float, settle_s: float = 3.0) -> dict[str, dict[str, float]]:
    """Wait until the sink has an outcome for ``expected`` milestones and nothing moves for settle_s."""
    deadline = time.monotonic() + timeout_s
    last, since = -1.0, time.monotonic()
    calls: dict[str, dict[str, float]] = {}
    while time.monotonic() < deadline:
        calls = erp_calls(worker)
        done = sum(v for outcomes in calls.values() for o, v in outcomes.items()
                   if o in ("posted", "already_done", "skipped", "permanent_error"))
        if done != last:
            last, since = done, time.monotonic()
        elif done >= expected and time.monotonic() - since >= settle_s:
            return calls
        time.sleep(0.5)
    raise TimeoutError(f"ERP sink handled {last:.0f} of {expected} milestones within {timeout_s}s: {calls}")


# -- A: end to end ----------------------------------------------------------------------------


def end_to_end(bootstrap: str, children: Children, stack: Stack, orders: int, tag: str) -> dict[str, Any]:
    rest = stack.direct_rest()
    loop = asyncio.new_event_loop()
    try:
        t = time.perf_counter()
        created = loop.run_until_complete(create_orders(rest, orders, seed=5))
        log(f"erp: {orders} orders created in Tryton in {time.perf_counter() - t:.1f}s")
        numbers = {s["number"] for s in created}
        app_id = f"{tag}-e2e"
        env = app_env(app_id, f"{app_id}.events", TOPIC_SOURCE_CURSOR=f"{app_id}.source-cursor",
                      WINDOW_SIZE_S="10", WINDOW_GRACE_S="1", WORKER_IDLE_PARTITION_S="5", **stack.env())
        create_topics(bootstrap, [f"{app_id}.events"], PARTITIONS)
        before = len(stack.log_lines())
        worker = children.worker(bootstrap, fresh_dir(app_id), env)
        src_env = {**os.environ, **worker.env, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
        subprocess.run([sys.executable, "-m", "app.cli", "source", "--once"], env=src_env, check=True, timeout=300,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        releases = [codec.decode(r.value) for r in read_all(bootstrap, f"{app_id}.events")]
        releases = [r for r in releases if r["type"] == "OrderReleased" and r["order_id"] in numbers]
        start = max(r["occurred_at"] for r in releases) + 1000
        work = warehouse_work(releases, seed=3, start_ms=start)
        returns = []
        clock = start + 200 * (len(work) + 1)  # warehouse_work advances 200 ms per event
        for n, rel in enumerate(sorted(releases, key=lambda r: r["order_id"])[::4]):
            line = rel["lines"][0]
            returns.append({"event_id": f"ret-{rel['order_id']}", "type": "ReturnReceived",
                            "occurred_at": format_ts(clock + 1000 * (n + 1)), "source": "wms",
                            "warehouse_id": rel["warehouse_id"], "rma_id": f"RMA-{rel['order_id']}",
                            "order_id": rel["order_id"], "sku": line["sku"], "qty": 1, "disposition": "restock"})
        flush = {"event_id": "flush", "type": "ItemScanned", "occurred_at": format_ts(clock + 1000 * (len(returns) + 30)),
                 "source": "wms", "warehouse_id": releases[0]["warehouse_id"], "barcode": "X", "location": "DOCK",
                 "device_id": "bench"}
        events = [*work, *returns, flush]
        produce(bootstrap, f"{app_id}.events", [(event_key(e), orjson.dumps(e)) for e in events])
        n_events = len(releases) + len(events)
        # the sink's milestones: everything the worker emitted on the milestones topic
        deadline = time.monotonic() + 60
        expected = 0
        while time.monotonic() < deadline:
            emitted = {k: v for k, v in metric_samples(worker, "syncgov_milestones_total").items()
                       if "SyncException" not in k}
            expected = int(sum(emitted.values()))
            if expected >= 4 * len(releases):
                break
            time.sleep(0.5)
        t = time.perf_counter()
        calls = wait_sink(worker, expected, timeout_s=max(120, 3 * 12 * orders / stack.rate))
        sink_s = time.perf_counter() - t
        states = loop.run_until_complete(shipment_states(rest, [s["id"] for s in created]))
        worker.stop()
    finally:
        loop.run_until_complete(rest.close())
        loop.close()
    lines = stack.log_lines()[before:]
    attr = attribute(lines)
    posted = {k: v.get("posted", 0) for k, v in calls.items()}
    not_posted = {k: {o: n for o, n in v.items() if o != "posted"} for k, v in calls.items()}
    statuses = Counter(line.status for line in lines)
    return {
        "orders": orders,
        "events": n_events,
        "milestones_to_sink": expected,
        "sink_outcomes": calls,
        "not_posted": {k: v for k, v in not_posted.items() if v},
        "shipments_done": sum(1 for s in states.values() if s == "done"),
        "requests": len(lines),
        "requests_by_status": {str(k): v for k, v in sorted(statuses.items())},
        "throttled_429": statuses.get(429, 0),
        "attribution": attr,
        "requests_per_milestone": per_milestone(attr, posted),
        "events_per_erp_call_this_flow": n_events / max(1, len(lines) - attr["source"]),
        "seconds_waiting_for_sink": round(sink_s, 1),
        "mean_request_time_s": round(sum(x.request_time_s for x in lines) / max(1, len(lines)), 4),
    }


# -- B: events per ERP call on the default mix ------------------------------------------------


def default_mix(orders: int) -> dict[str, Any]:
    """Events and milestones by type of the default mix (4 warehouses), by replay."""
    stream = simulate(orders=orders, warehouses=4, seed=7)
    parts: dict[bytes, list[bytes]] = {}
    for key, value in stream:
        parts.setdefault(key, []).append(value)
    kinds = Counter(m["type"] for m in replay(list(parts.values())))
    return {"orders": orders, "events": len(stream), "milestones": dict(kinds)}


# -- C: backlog drain -------------------------------------------------------------------------


def adjustments(n: int, salt: str) -> list[dict[str, Any]]:
    """N real InventoryAdjusted milestones of one warehouse, under ids new to the ERP (``salt``):
    the adapter finds an adjustment by its milestone id, so a repeated id would be a cheap
    acknowledgement instead of a posting. The new ids have the form of real ones (32 hex
    digits, ``app.core.ids``): how many ids one batched read carries depends on their length."""
    stream = simulate(orders=min(4500, max(100, int(n * 4.5))), warehouses=1, seed=9)  # ~1,000 real ones
    found = [m for m in replay([[v for _, v in stream]]) if m["type"] == "InventoryAdjusted"]
    out = []
    for i in range(n):
        m = dict(found[i % len(found)])
        m["milestone_id"] = milestone_id(m["milestone_id"], salt, str(i))
        out.append(m)
    return out


def drain(bootstrap: str, children: Children, stack: Stack, n: int, tag: str) -> dict[str, Any]:
    app_id = f"{tag}-drain"
    milestones = adjustments(n, salt=tag)
    topic = f"{app_id}.milestones"
    create_topics(bootstrap, [topic, f"{app_id}.events"], PARTITIONS)
    time.sleep(max(1.0, (stack.burst + 1) / stack.rate))  # the gateway forgets earlier requests
    before = len(stack.log_lines())
    data_dir = fresh_dir(app_id)
    worker = children.worker(bootstrap, data_dir, app_env(app_id, f"{app_id}.events", **stack.env()))
    # The backlog lands once the sink reads its (empty) partitions: records already there at an
    # assignment wait ERP_TIMEOUT_S (the takeover rule, docs/erp.md), which is no part of a drain.
    deadline = time.monotonic() + 120
    while "ERP sink reads milestones partitions" not in worker.log_file.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the ERP sink of {app_id} did not take its partitions; see {worker.log_file}")
        time.sleep(0.2)
    cpu_before = stack.erp_cpu_s()
    produce(bootstrap, topic, [(f"{m['warehouse_id']}|{m['sku']}|{m['location']}|{i}".encode(),
                                codec.encode_milestone(m)) for i, m in enumerate(milestones)])
    calls = wait_sink(worker, n, timeout_s=max(300, 12 * n / stack.rate))
    erp_cpu = stack.erp_cpu_s() - cpu_before
    worker.stop()
    lines = stack.log_lines()[before:]
    statuses = Counter(line.status for line in lines)
    # The drain proper starts at its first ERP call for a milestone (the worker's start-up
    # requests, login and preferences, are not part of it).
    work = [i for i, line in enumerate(lines) if "stock.shipment.internal" in line.uri]
    if work:
        lines = lines[work[0]:]
    first, last = lines[0], lines[-1]
    took = last.ts - (first.ts - first.request_time_s)
    floor = max(0, len(lines) - stack.burst) / stack.rate
    return {
        "milestones": n,
        "sink_outcomes": calls,
        "posted": calls.get("InventoryAdjusted", {}).get("posted", 0),
        "requests": len(lines),
        "requests_per_milestone": len(lines) / n,
        "throttled_429": statuses.get(429, 0),
        "requests_by_status": {str(k): v for k, v in sorted(statuses.items())},
        "drain_s": took,
        "floor_at_quota_s": floor,
        "n_over_quota_s": n / stack.rate,
        "ratio_to_floor": took / floor if floor else float("nan"),
        "achieved_requests_per_s": len(lines) / took if took else float("nan"),
        "erp_busy_s": round(busy_s(lines), 1),
        "erp_cpu_s": round(erp_cpu, 1),
        "ratio_to_erp_cpu": took / erp_cpu if erp_cpu else float("nan"),
        "requests_by_kind": breakdown(lines),
        "mean_request_time_s": round(sum(x.request_time_s for x in lines) / max(1, len(lines)), 4),
    }


# -- ERP capacity figures (make bench-erp) ------------------------------------------------

#: The sizes of `make bench-erp` and of `make bench`'s ERP section (one measurement, one report).
BENCH_ERP: dict[str, Any] = {"orders": 120, "drain_n": 10_000, "reps": 2, "drain_reps": 1, "rate": 10.0, "burst": 5,
                             "mix_orders": 1000}

TARGETS = {"orders_per_request": (">=", 2.0), "events_per_request": (">=", 100.0), "quota_violations": ("<=", 0),
           "drain_vs_floor": ("<=", 1.1)}


def request_class(line: Any) -> str:
    """What a gateway request was for: source, order, return, inventory or overhead (login,
    preferences). JSON-RPC requests name their method in ``?m=``; REST ones their model."""
    uri = line.uri
    if "/rpc/" in uri:
        m = re.search(r"[?&]m=([^&]+)", uri)
        method = m.group(1) if m else ""
        if method.startswith("common.db.login"):
            return "overhead"
        model = method[len("model."):].rsplit(".", 1)[0] if method.startswith("model.") else ""
    else:
        m = _MODEL.match(uri)
        model = m.group(1) if m else ""
        if model == "stock.shipment.out" and line.method == "GET" and "write_date" in _domain(uri):
            return "source"
    if model.startswith("stock.shipment.out.return"):
        return "return"
    if model in ("stock.shipment.internal", "product.product", "stock.location", "stock.move"):
        return "inventory"
    if model in ("stock.shipment.out", "ir.note", "res.user.warning"):
        return "order"
    return "overhead"


def request_kind(line: Any) -> str:
    """A gateway request by what it did: ``read <model>`` (REST search), ``create <model>``,
    ``write <model>``, ``button <model>.<name>`` (REST or JSON-RPC), ``warnings`` (answered
    ahead of a bulk button), ``login``, ``preferences``, ``source`` (the release feed)."""
    uri = line.uri
    if "/rpc/" in uri:
        m = re.search(r"[?&]m=([^&]+)", uri)
        method = urllib.parse.unquote(m.group(1)) if m else ""
        if method.startswith("common.db.login"):
            return "login"
        if method == "model.res.user.warning.create":
            return "warnings"
        model, _, name = method[len("model."):].rpartition(".")
        if name in ("create", "write"):
            return f"{name} {model}"
        return f"button {model}.{name}"
    m = _MODEL.match(uri)
    if not m:
        return "other"
    model, rid, button = m.groups()
    if model == "res.user" and button == "get_preferences":
        return "preferences"
    if line.method == "GET" and rid is None:
        if model == "stock.shipment.out" and "write_date" in _domain(uri):
            return "source"
        return f"read {model}"
    if line.method == "POST" and rid is None:
        return f"create {model}"
    if line.method == "PUT":
        return f"write {model}"
    return f"button {model}.{button}" if button else f"{line.method} {model}"


def items_of(line: Any) -> int:
    """Records a request worked on: JSON-RPC names them in ``?n=``; a REST search counts the
    values of its ``in`` domain; any other REST call is one record."""
    m = re.search(r"[?&]n=(\d+)", line.uri)
    if m:
        return int(m.group(1))
    domain = _domain(line.uri)
    m = re.search(r'"in",\s*(\[[^\]]*\])', domain)
    if m:
        try:
            return max(1, len(json.loads(m.group(1))))
        except ValueError:
            return 1
    return 1


def breakdown(lines: list[Any]) -> dict[str, Any]:
    """Requests by kind: count, records worked on, seconds the ERP spent (gateway times)."""
    out: dict[str, dict[str, float]] = {}
    for line in lines:
        kind = request_kind(line)
        row = out.setdefault(kind, {"requests": 0, "items": 0, "erp_s": 0.0})
        row["requests"] += 1
        row["items"] += items_of(line)
        row["erp_s"] = round(row["erp_s"] + line.request_time_s, 3)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["requests"]))


def busy_s(lines: list[Any]) -> float:
    """Seconds during which the ERP had at least one request of ``lines`` in hand (union of
    the requests' [start, end] intervals as the gateway timed them)."""
    spans = sorted((line.ts - line.request_time_s, line.ts) for line in lines)
    total, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def verdict(name: str, value: float) -> str:
    op, target = TARGETS[name]
    ok = value >= target if op == ">=" else value <= target
    return "PASS" if ok else "FAIL"


def spread(values: list[float]) -> dict[str, Any]:
    return {"runs": [round(v, 3) for v in values], "min": round(min(values), 3), "max": round(max(values), 3),
            "median": round(sorted(values)[len(values) // 2], 3)}


def capacity(bootstrap: str, children: Children, *, orders: int, drain_n: int, reps: int, rate: float, burst: int,
             mix_orders: int, tag: str, drain_reps: int | None = None) -> dict[str, Any]:
    """The four ERP capacity figures against real Tryton behind nginx, ``reps`` runs each."""
    stack = Stack(children, fresh_dir(f"{tag}-erp"), rate, burst)
    runs, drains = [], []
    for rep in range(reps):
        time.sleep(max(1.0, (burst + 1) / rate))
        before = len(stack.log_lines())
        e2e = end_to_end(bootstrap, children, stack, orders, f"{tag}-{rep}")
        lines = stack.log_lines()[before:]
        by_class = Counter(request_class(line) for line in lines)
        sink_requests = len(lines) - by_class["source"]
        e2e["requests_by_class"] = dict(by_class)
        e2e["requests_by_kind"] = breakdown(lines)
        e2e["sink_requests"] = sink_requests
        e2e["orders_per_request"] = e2e["shipments_done"] / max(1, sink_requests)
        e2e["orders_per_request_incl_source"] = e2e["shipments_done"] / max(1, len(lines))
        runs.append(e2e)
        log(f"erp capacity e2e {rep + 1}/{reps}: {e2e['shipments_done']}/{orders} done with {sink_requests} sink "
            f"requests ({e2e['orders_per_request']:.2f} orders/request), {e2e['throttled_429']} x 429, {dict(by_class)}")
    n_drains = reps if drain_reps is None else drain_reps
    for rep in range(n_drains):
        d = drain(bootstrap, children, stack, drain_n, f"{tag}-d{rep}")
        lines_busy = d["mean_request_time_s"] * d["requests"]
        d["erp_request_s_sum"] = round(lines_busy, 1)
        drains.append(d)
        log(f"erp capacity drain {rep + 1}/{n_drains}: {drain_n} milestones, {d['requests']} requests in "
            f"{d['drain_s']:.1f}s (floor {d['floor_at_quota_s']:.1f}s, x{d['ratio_to_floor']:.2f}), "
            f"{d['throttled_429']} x 429, ERP busy {d['erp_busy_s']:.0f}s, Tryton CPU {d['erp_cpu_s']:.0f}s, "
            f"request time summed {lines_busy:.0f}s")
    # Requests per milestone of each class, from the runs: order milestones (accepted, picked,
    # packed, confirmed) and returns from the end-to-end runs, InventoryAdjusted from the drains.
    order_kinds = ("OrderAccepted", "OrderPicked", "OrderPacked", "ShipmentConfirmed")

    def posted(run: dict[str, Any], kinds: tuple[str, ...]) -> float:
        total: float = sum(run["sink_outcomes"].get(k, {}).get(o, 0) for k in kinds for o in ("posted", "already_done"))
        return total

    per_events = []
    mix = default_mix(mix_orders)
    for i, run in enumerate(runs):
        d = drains[min(i, len(drains) - 1)]
        cls = run["requests_by_class"]
        r_order = (cls.get("order", 0) + cls.get("overhead", 0)) / max(1, posted(run, order_kinds))
        r_return = cls.get("return", 0) / max(1, posted(run, ("ReturnReceived",)))
        r_inv = d["requests"] / max(1, d["milestones"])
        cost = {**{k: r_order for k in order_kinds}, "ReturnReceived": r_return, "InventoryAdjusted": r_inv,
                "SyncException": 0.0}
        calls = sum(n * cost.get(k, r_order) for k, n in mix["milestones"].items())
        run["requests_per_milestone_class"] = {"order": round(r_order, 4), "return": round(r_return, 4),
                                               "inventory_adjusted": round(r_inv, 4)}
        per_events.append(mix["events"] / calls if calls else float("inf"))
    opr = [r["orders_per_request"] for r in runs]
    violations = [r["throttled_429"] for r in runs] + [d["throttled_429"] for d in drains]
    ratios = [d["ratio_to_floor"] for d in drains]
    figures = {
        "orders_per_request": {"value": round(sorted(opr)[0], 3), "spread": spread(opr),
                               "how": "shipments taken from released (waiting) to done / ERP requests the sink made "
                                      "(gateway access log, source polls excluded), worst run"},
        "events_per_request": {"value": round(sorted(per_events)[0], 2), "spread": spread(per_events),
                               "how": f"default mix ({mix['events']} events, {mix_orders} orders, 4 warehouses) / "
                                      "sum over milestone types of (milestones x requests per milestone measured: "
                                      "order types and returns in the end-to-end runs, InventoryAdjusted in the "
                                      "drains), worst run"},
        "quota_violations": {"value": int(sum(violations)), "spread": spread([float(v) for v in violations]),
                             "how": "429s answered by the gateway over every run (end-to-end and drains)"},
        "drain_vs_floor": {"value": round(sorted(ratios)[-1], 3), "spread": spread(ratios),
                           "how": f"backlog of {drain_n:,} InventoryAdjusted milestones"
                                  f"{'' if drain_n >= 10_000 else ' (10,000 asked)'}: first to last gateway request "
                                  "/ ((requests - burst) / rate), worst run"},
    }
    for name, fig in figures.items():
        fig["target"] = f"{TARGETS[name][0]} {TARGETS[name][1]}"
        fig["verdict"] = verdict(name, fig["value"])
    # Why a drain takes what it takes: the quota floor above, and the ERP's own work (trytond is
    # one Python process: its CPU seconds during the drain are a floor no client can beat).
    cpu = [d["ratio_to_erp_cpu"] for d in drains]
    diagnostics = {
        "drain_vs_erp_cpu": {"value": round(sorted(cpu)[-1], 3), "spread": spread(cpu),
                             "how": "drain time / CPU seconds trytond used meanwhile, worst run (1.0: the ERP "
                                    "worked all the time; the quota was not the limit)"},
        "drain_erp_cpu_floor_vs_quota_floor": {
            "value": round(max(d["erp_cpu_s"] / max(d["floor_at_quota_s"], 1e-9) for d in drains), 3),
            "how": "trytond CPU seconds / the quota floor, worst run (> 1.1: drain_vs_floor <= 1.1 is out of "
                   "reach of any client of this ERP)"},
    }
    return {"figures": figures, "diagnostics": diagnostics, "gateway_rate_per_s": rate, "gateway_burst": burst,
            "orders": orders,
            "drain_milestones": drain_n, "reps": reps, "end_to_end": runs, "drain": drains,
            "default_mix": mix}


def main(argv: list[str] | None = None) -> int:
    d = BENCH_ERP
    parser = argparse.ArgumentParser(
        description="ERP capacity against real Tryton behind nginx: orders and events per ERP request, "
                    "429s, backlog drain against the quota's floor")
    parser.add_argument("--orders", type=int, default=d["orders"], help="orders in each end-to-end run")
    parser.add_argument("--drain", type=int, default=d["drain_n"], help="InventoryAdjusted milestones in the backlog")
    parser.add_argument("--reps", type=int, default=d["reps"], help="end-to-end runs")
    parser.add_argument("--drain-reps", type=int, default=d["drain_reps"], help="drains")
    parser.add_argument("--rate", type=float, default=d["rate"], help="the gateway's (and the sink's) requests/s")
    parser.add_argument("--burst", type=int, default=d["burst"])
    parser.add_argument("--mix-orders", type=int, default=d["mix_orders"], help="orders of the default mix")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"machine": machine()}
    with Children() as children:
        bootstrap = children.broker().bootstrap
        out["erp_capacity"] = capacity(bootstrap, children, orders=args.orders, drain_n=args.drain,
                                       reps=args.reps, rate=args.rate, burst=args.burst,
                                       mix_orders=args.mix_orders, tag=f"ec{int(time.time())}",
                                       drain_reps=args.drain_reps)
    text = report(out, args.out)
    print(text)
    for name, f in out["erp_capacity"]["figures"].items():
        print(f"{name}: {f['value']} (target {f['target']}) {f['verdict']}  spread {f['spread']}", file=sys.stderr)
    for name, f in out["erp_capacity"]["diagnostics"].items():
        print(f"{name}: {f['value']} ({f['how']})", file=sys.stderr)
    return 0


def report(out: dict[str, Any], path: Path | None) -> str:
    """The JSON of ``benchmarks/results/erp.json`` (the capacity run with its four verdicts on
    top), written to ``path`` too; `make bench`'s ERP section writes the same file."""
    figures = out["erp_capacity"]["figures"]
    out.update({name: {"value": f["value"], "target": f["target"], "verdict": f["verdict"]}
                for name, f in figures.items()})
    text = json.dumps(out, indent=2, default=str)
    if path:
        path.write_text(text + "\n")
    return text

if __name__ == "__main__":
    sys.exit(main())
