"""`make bench` / `make bench-quick`: every benchmark, one report.

    python -m benchmarks.run --quick      # < 3 min on the 2-core box: 60k-record worker runs (Quix peer once), no ERP, 10k-key recovery
    python -m benchmarks.run --full       # the sizes in docs/benchmarks.md (~40 min)

Writes ``benchmarks/results/latest.json`` (every measurement, conditions, machine) and
``benchmarks/results/latest.md`` (the table), the same as ``quick.*`` or ``full.*`` (the last
run of each mode), and prints the table. ``--only erp,recovery`` re-runs sections and merges
them into the last run of the mode. Each figure is the
median over its repetitions, with the spread (min-max) and its target's PASS/FAIL; a
figure whose correctness check failed (worker milestones != replay, keys missing after
recovery) is a FAIL whatever its speed. Every child process (broker, workers, Tryton,
nginx) is stopped at the end, also on failure or Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"

#: Sizes per mode. Quick keeps the whole run under 3 minutes on 2 cores (the Quix peer's start-up, ~35 s on
#: the embedded broker, runs once), with enough worker records (3 batches of 20k) to time the worker.
MODES: dict[str, dict[str, Any]] = {
    "quick": {
        "core_events": 50_000, "core_reps": 3,
        "worker_records": 60_000, "worker_reps": 2, "peer_reps": 1, "warmup_rounds": 0,
        "scale_records": 0, "scale_reps": 0,
        "latency_rate": 10000, "latency_seconds": 3, "latency_wait_s": 10, "latency_sustainable": False,
        "erp": False,
        "recovery_keys": 10_000, "recovery_reps": 1, "recovery_baseline_reps": 0,
        "brokers": "embedded", "core_build": "native",
    },
    "full": {
        "core_events": 1_000_000, "core_reps": 3,
        "worker_records": 100_000, "worker_reps": 3, "peer_reps": 3, "warmup_rounds": 1,
        "scale_records": 200_000, "scale_reps": 2,
        "latency_rate": 10000, "latency_seconds": 60, "latency_wait_s": 60, "latency_sustainable": True,
        "erp": True,  # the sizes of `make bench-erp` (erp_bench.BENCH_ERP)
        "erp_json": "",  # where the ERP section's erp.json goes ("": benchmarks/results/erp.json)
        "recovery_keys": 1_000_000, "recovery_reps": 3, "recovery_baseline_reps": 3,
        "brokers": "embedded,apache", "core_build": "native",
    },
}
#: Figure ids and names on the embedded broker are the historical ones; on another broker the
#: id gets ``_<broker>`` and the name the broker's label first.
LABELS = {"embedded": "embedded Tansu", "apache": "Apache Kafka"}


def on_broker(figures: list[dict[str, Any]], broker: str) -> list[dict[str, Any]]:
    """The figures of a section run on ``broker``: ids and names marked unless embedded."""
    if broker == "embedded":
        return figures
    for f in figures:
        f["id"] = f"{f['id']}_{broker}"
        f["name"] = f"[{LABELS[broker]}] {f['name']}"
    return figures


# -- report and verdicts (pure; tests/unit/benchmarks/test_bench_report.py) -------------------------------


def summarize(values: Sequence[float | None]) -> dict[str, Any]:
    """Median, min, max and relative half-range of the finite values (inf kept as a value)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return {"n": 0, "median": None, "min": None, "max": None, "spread_pct": None, "values": list(values)}
    med = statistics.median(vals)
    lo, hi = min(vals), max(vals)
    spread = (hi - lo) / 2 / abs(med) * 100 if med not in (0, float("inf"), float("-inf")) and math.isfinite(hi) else None
    return {"n": len(vals), "median": med, "min": lo, "max": hi, "spread_pct": spread, "values": list(values)}


def verdict(value: float | None, target: dict[str, Any] | None, ok: bool = True) -> str:
    """PASS/FAIL against ``{"op": ">=" | "<=" | "==", "value": x}``; INFO without a target.

    A failed correctness check (``ok`` False) or a missing value is a FAIL.
    """
    if target is None:
        return "INFO" if ok else "FAIL"
    if not ok or value is None or (isinstance(value, float) and math.isnan(value)):
        return "FAIL"
    op, want = target["op"], target["value"]
    good = {">=": value >= want, "<=": value <= want, "==": value == want}[op]
    return "PASS" if good else "FAIL"


def figure(fid: str, name: str, values: Sequence[float | None], unit: str, *, target: dict[str, Any] | None = None,
           conditions: str = "", ok: bool = True, note: str = "", fmt: str = "{:,.0f}") -> dict[str, Any]:
    s = summarize(values)
    return {"id": fid, "name": name, "unit": unit, **s, "target": target, "ok": ok,
            "verdict": verdict(s["median"], target, ok), "conditions": conditions, "note": note, "fmt": fmt}


def skipped(fid: str, name: str, why: str, target: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": fid, "name": name, "unit": "", "n": 0, "median": None, "min": None, "max": None,
            "spread_pct": None, "values": [], "target": target, "ok": True, "verdict": "SKIP",
            "conditions": why, "note": "", "fmt": "{}"}


def errored(fid: str, name: str, error: str, target: dict[str, Any] | None = None) -> dict[str, Any]:
    f = skipped(fid, name, "", target)
    f.update(verdict="ERROR", ok=False, note=error)
    return f


def fmt_value(f: dict[str, Any], v: float | None) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "-∞"
    fmt: str = f.get("fmt", "{:,.0f}")
    return fmt.format(v)


def fmt_target(t: dict[str, Any] | None, f: dict[str, Any]) -> str:
    if t is None:
        return "–"
    return f"{t['op']} {fmt_value(f, t['value'])}"


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# Benchmark results ({report['mode']})",
        "",
        f"{report['started']} · {m['nproc']} × {m['cpu']} · {m['ram_gib']} GiB RAM · Python {m['python']} · "
        f"load average at start {report.get('load_start', '?')}, at end {report.get('load_end', '?')} · "
        f"{report.get('seconds', 0):.0f} s",
        "",
        "| figure | value (median) | spread (min–max, n) | target | verdict | conditions |",
        "|---|---|---|---|---|---|",
    ]
    for f in report["figures"]:
        value = fmt_value(f, f["median"]) + (f" {f['unit']}" if f["median"] is not None and f["unit"] else "")
        if f["n"]:
            spread = f"{fmt_value(f, f['min'])}–{fmt_value(f, f['max'])}, n={f['n']}"
            if f["spread_pct"] is not None and f["n"] > 1:
                spread += f" (±{f['spread_pct']:.0f}%)"
        else:
            spread = "–"
        cond = f["conditions"] + (f" — {f['note']}" if f["note"] else "")
        lines.append(f"| {f['name']} | {value} | {spread} | {fmt_target(f['target'], f)} | **{f['verdict']}** | "
                     f"{cond.replace('|', '/')} |")
    if report.get("notes"):
        lines += ["", *[f"- {n}" for n in report["notes"]]]
    return "\n".join(lines) + "\n"


def jsonable(obj: Any) -> Any:
    """inf -> "inf", nan -> None, recursively (strict JSON)."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def unjson(obj: Any) -> Any:
    """The inverse of :func:`jsonable` for infinities ("inf" -> inf)."""
    if obj == "inf":
        return float("inf")
    if obj == "-inf":
        return float("-inf")
    if isinstance(obj, dict):
        return {k: unjson(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unjson(v) for v in obj]
    return obj


# -- the sections ------------------------------------------------------------------------------


def core_section(cfg: dict[str, Any], raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Figures 1-2 from benchmarks/bench_core.py, run as a subprocess per repetition."""
    script = ROOT / "benchmarks" / "bench_core.py"
    names = ("pure core, events/s", "replay end to end, events/s")
    targets = ({"op": ">=", "value": 250_000}, {"op": ">=", "value": 100_000})
    if not script.exists():
        return [skipped("core", names[0], "benchmarks/bench_core.py does not exist", targets[0]),
                skipped("replay", names[1], "benchmarks/bench_core.py does not exist", targets[1])]
    def once(env: dict[str, str]) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "core.json"
            proc = subprocess.run([sys.executable, str(script), "--events", str(cfg["core_events"]),
                                   "--json-out", str(out)], capture_output=True, text=True, timeout=1800, env=env)
            if proc.returncode != 0 or not out.exists():
                raise RuntimeError(f"bench_core exited {proc.returncode}: {proc.stderr[-800:]}")
            result: dict[str, Any] = json.loads(out.read_text())
            return result

    runs, plain = [], []
    native = bool(os.environ.get(CORE_BUILD_ENV))
    for rep in range(cfg["core_reps"]):
        runs.append(once(dict(os.environ)))
        log(f"core rep {rep + 1}/{cfg['core_reps']} ({runs[-1].get('core_build', 'python')}): core "
            f"{runs[-1]['core']['events_per_s']:,}/s, replay {runs[-1]['replay']['events_per_s']:,}/s")
        if native:  # the same sources as plain Python, alternating, for comparison
            plain.append(once({k: v for k, v in os.environ.items() if k != CORE_BUILD_ENV}))
            log(f"core rep {rep + 1}/{cfg['core_reps']} (python): core {plain[-1]['core']['events_per_s']:,}/s")
    raw["core"] = runs
    raw["core_python"] = plain
    ev = cfg["core_events"]
    ok_replay = all(r["replay"].get("exit_code", 0) == 0 for r in runs)
    cond = f"{ev:,} generated events (bench_core's own stream), one process, {len(runs)} runs"
    build = (f"the core compiled by mypyc ({CORE_BUILD_ENV}, ops/build_core.py)" if native
             else "the core as plain Python")
    cond += f"; {build}"
    return [
        figure("core", names[0], [r["core"]["events_per_s"] for r in runs], "events/s", target=targets[0],
               conditions=cond + "; decoded events through Engine.process_event, under the worker's GC policy "
               "(app/runtime/heap.py)",
               note=f"{statistics.median(r['core']['events_per_cpu_s'] for r in runs):,.0f} events per CPU s"
               + _default_gc_note(runs) + _plain_note(plain)),
        figure("replay", names[1], [r["replay"]["events_per_s"] for r in runs], "events/s", target=targets[1],
               conditions=cond + "; NDJSON file -> milestones file (run_replay)", ok=ok_replay),
    ]


def _plain_note(plain: list[dict[str, Any]]) -> str:
    """The same pass with the core as plain Python (no build), run alternately."""
    if not plain:
        return ""
    rates = [r["core"]["events_per_s"] for r in plain]
    return f"; the same sources as plain Python: {statistics.median(rates):,.0f}/s ({min(rates):,}–{max(rates):,})"


CORE_BUILD_ENV = "GOVERNANCE_CORE_BUILD"


def use_core_build(kind: str) -> dict[str, Any] | None:
    """``native``: build the mypyc core if stale (ops/build_core.py) and set GOVERNANCE_CORE_BUILD for
    every process the bench starts (bench_core, workers, the Quix peer: all run the same core);
    ``python``: unset it. Returns the build's manifest, or None."""
    if kind == "python":
        os.environ.pop(CORE_BUILD_ENV, None)
        return None
    if kind != "native":
        raise ValueError(f"core_build={kind!r}: native or python")
    sys.path.insert(0, str(ROOT / "ops"))
    import build_core

    out = ROOT / "build" / "core-native"
    manifest = None if build_core.is_current(out) else build_core.build(out, quiet=False)
    os.environ[CORE_BUILD_ENV] = str(out)
    if manifest is None:
        manifest = json.loads((out / "manifest.json").read_text())
    return {"dir": str(out), "mypyc": manifest.get("mypyc"), "compiled": manifest.get("compiled")}


def _default_gc_note(runs: list[dict[str, Any]]) -> str:
    """The same pass under Python's default collector thresholds (bench_core runs both)."""
    rates = [r["gc"]["core_events_per_s_with_python_defaults"] for r in runs if "gc" in r]
    return f"; {statistics.median(rates):,.0f}/s under Python's default GC" if rates else ""


#: The issue's targets for the worker against the raw consumer and the Quix Streams peer.
RAW_RATIO_TARGET = 0.30
QUIX_RATIO_TARGET = 2.0


def worker_section(cfg: dict[str, Any], raw: dict[str, Any], bootstrap: str, children: Any,
                   tag: str, broker: str = "embedded") -> list[dict[str, Any]]:
    from benchmarks import worker_bench as wb

    tp = wb.throughput(bootstrap, children, cfg["worker_records"], cfg["worker_reps"], tag,
                       peer_reps=cfg["peer_reps"], warmup=int(cfg.get("warmup_rounds", 0)))
    raw["throughput"] = tp
    ok = all(p["ok"] for p in tp["parity"])
    parity = "milestones = replay in every repetition" if ok else \
        "; ".join(p["detail"] for p in tp["parity"] if not p["ok"])
    cond = (f"default mix, {tp['records']:,} JSON records (~{tp['mean_record_bytes']:.0f} B), {tp['warehouses']} "
            f"warehouses, {tp['partitions']} partitions, {LABELS[broker]}, 1 worker process, RocksDB, ERP sink off; "
            f"{len(tp['worker_events_per_s'])} repetitions, raw, Quix and worker alternating"
            + (f", after {tp['warmup_rounds']} untimed warm-up round(s) of the peer and the worker on the same broker"
               if tp.get("warmup_rounds") else ""))
    figs = [
        figure("worker", "worker events/s per process (saturation)", tp["worker_events_per_s"], "events/s",
               conditions=cond, ok=ok,
               note=f"{statistics.median(tp['worker_cpu_us_per_event']):,.0f} µs worker CPU per event; {parity}"),
        figure("raw", "raw confluent-kafka consumer events/s (same topic, same run)", tp["raw_events_per_s"],
               "events/s", conditions="consume(1000) + orjson.loads + dict update per record, all partitions assigned",
               note=f"{statistics.median(tp['raw_cpu_us_per_event']):,.1f} µs CPU per event"),
    ]
    figs += quix_figures(tp, ok, parity)
    figs.append(figure("ratio", "worker / raw ratio", tp["ratios"], "", target={"op": ">=", "value": RAW_RATIO_TARGET},
                       ok=ok, conditions="per repetition (worker and raw of the same repetition)", note=parity,
                       fmt="{:.3f}"))
    return figs


def quix_figures(tp: dict[str, Any], worker_ok: bool, parity: str) -> list[dict[str, Any]]:
    """The Quix Streams peer's row and the worker / Quix ratio (per repetition)."""
    runs = tp.get("quix") or []
    good = [q for q in runs if "events_per_s" in q]
    errors = [q["error"] for q in runs if "error" in q]
    target = {"op": ">=", "value": QUIX_RATIO_TARGET}
    if not good:
        why = "; ".join(errors) or "the peer did not run"
        return [errored("quix", "Quix Streams 3.28.1 peer events/s (same topic, same run)", why),
                errored("ratio_quix", "worker / Quix ratio", why, target)]
    quix_ok = all(q["ok"] for q in good) and not errors
    qparity = "milestones = replay in every repetition" if quix_ok else \
        "; ".join([*(q["detail"] for q in good if not q["ok"]), *errors])
    # the peer runs in the first repetitions (quick mode: only the first); each against the worker of its repetition
    ratios = [w / q["events_per_s"] for w, q in zip(tp["worker_events_per_s"], runs, strict=False) if "events_per_s" in q]
    cpu_ratios = [q["cpu_us_per_event"] / w for w, q in zip(tp["worker_cpu_us_per_event"], runs, strict=False) if "events_per_s" in q]
    guarantee = ", ".join(sorted({q.get("processing_guarantee", "at-least-once") for q in good}))
    return [
        figure("quix", "Quix Streams 3.28.1 peer events/s (same topic, same run)", [q["events_per_s"] for q in good],
               "events/s", ok=quix_ok,
               conditions="benchmarks/quix_peer.py in .venv-quix: syncgov's app.core per input partition, order "
                          "states and dedup keys in Quix's per-key RocksDB state (changelog on), milestones / "
                          "dead letters / stock forwards and marks to topics, inventory stage on the stock topic; "
                          f"Quix's processing guarantee {guarantee}, the worker's (exactly-once where the worker "
                          "runs with Kafka transactions)",
               note=f"{statistics.median(q['cpu_us_per_event'] for q in good):,.0f} µs CPU per event; {qparity}"),
        figure("ratio_quix", "worker / Quix ratio", ratios, "", target=target, ok=worker_ok and quix_ok,
               conditions="per repetition (worker and Quix of the same repetition)", note=parity, fmt="{:.2f}"),
        figure("ratio_quix_cpu", "Quix CPU µs per event / worker CPU µs per event", cpu_ratios, "",
               conditions="per repetition; CPU time of each process over its timed interval (less sensitive to "
                          "the machine's load than events/s)", fmt="{:.2f}"),
    ]


def scale_section(cfg: dict[str, Any], raw: dict[str, Any], bootstrap: str, children: Any,
                  tag: str, broker: str = "embedded") -> list[dict[str, Any]]:
    """Two worker processes of one group against one, on the same input (fresh topics)."""
    if not cfg["scale_records"]:
        return [skipped("scale", "two workers / one worker (events/s)", "quick mode: no scale-out run; `make bench`",
                        {"op": ">=", "value": 1.7})]
    from benchmarks import worker_bench as wb

    sc = wb.scale(bootstrap, children, cfg["scale_records"], cfg["scale_reps"], tag)
    raw["scale"] = sc
    return [scale_figure(sc, broker)]


def scale_figure(sc: dict[str, Any], broker: str = "embedded") -> dict[str, Any]:
    """Two workers / one per repetition; N/A (not FAIL) on a machine with too few cores to show it."""
    name = "two workers / one worker (events/s)"
    ok = all(p["ok"] for p in sc["parity"])
    parity = "2-worker milestones = replay in every repetition" if ok else \
        "; ".join(p["detail"] for p in sc["parity"] if not p["ok"])
    cores = sc["cores"] or 0
    # two workers, the broker and the producer: fewer than 4 cores cannot show a 1.7 x scale-out
    can_show = cores >= 4
    f = figure("scale", name, sc["ratios"], "×", target={"op": ">=", "value": 1.7}, ok=ok, fmt="{:.2f}",
               conditions=(f"{sc['records']:,} default-mix records produced at full speed once the workers are "
                           f"ready; {LABELS[broker]}, 4 partitions; one worker "
                           f"{', '.join(f'{x:,.0f}' for x in sc['one_events_per_s'])}/s, two workers "
                           f"{', '.join(f'{x:,.0f}' for x in sc['two_events_per_s'])}/s; {cores} cores"),
               note=parity + ("" if can_show else
                              f"; this machine has {cores} cores for two workers, the broker and the producer: "
                              "it cannot show a 1.7 × scale-out (verdict N/A)"))
    if not can_show and f["verdict"] == "FAIL" and ok:
        f["verdict"] = "N/A"
    return f


def latency_figures(lat: dict[str, Any], sustainable: bool = False, broker: str = "embedded") -> list[dict[str, Any]]:
    w = lat["windows"]
    o = lat["overall"]
    censored = o["missing"]
    rate = lat["rate_per_s"]
    cond = (f"{lat['records']:,} default-mix records paced at {rate:,.0f}/s (achieved {lat['achieved_rate_per_s']:,.0f}/s) "
            f"for {lat['seconds']:.0f} s, 4 partitions, 1 worker, {LABELS[broker]}; produce() wall time of the completing event -> "
            f"milestone CreateTime; order milestones only; {len(w)} consecutive windows after 1 s warm-up")
    note = (f"{o['n']} milestones; {censored} not produced {lat['wait_after_produce_s']:.0f} s after the last "
            f"record (counted as ∞)" if censored else f"{o['n']} milestones, all matched")
    prefix = f"latency at {rate:,.0f}/s" + (" (sustainable rate, info)" if sustainable else "")
    target = None if sustainable else {"op": "<=", "value": 250}
    suffix = "_sustainable" if sustainable else ""
    figs = [
        figure("latency_p50" + suffix, f"{prefix} p50", [x["p50_ms"] for x in w],
               "ms", conditions=cond, note=note),
        figure("latency_p99" + suffix, f"{prefix} p99", [x["p99_ms"] for x in w],
               "ms", target=target, conditions="same run", note=note),
    ]
    if w and all("append_p99_ms" in x for x in w):  # the broker stamped the events (LogAppendTime)
        split = ("same run, split at the broker's append time of the completing event (the events topic "
                 "has LogAppendTime): the target is on the whole, end to end")
        figs += [
            figure("latency_append_p99" + suffix, f"{prefix} p99, broker append -> milestone (the worker's part)",
                   [x["append_p99_ms"] for x in w], "ms", conditions=split + "; the worker's fetch, batch, core and write"),
            figure("latency_send_p99" + suffix, f"{prefix} p99, produce() -> broker append (the sender's part)",
                   [x["send_p99_ms"] for x in w], "ms",
                   conditions=split + "; the load generator's client and the broker's produce path"),
        ]
    return figs


def latency_section(cfg: dict[str, Any], raw: dict[str, Any], bootstrap: str, children: Any,
                    tag: str, broker: str = "embedded") -> list[dict[str, Any]]:
    from benchmarks import worker_bench as wb

    lat = wb.latency(bootstrap, children, cfg["latency_rate"], cfg["latency_seconds"], tag,
                     wait_s=cfg["latency_wait_s"])
    raw["latency"] = lat
    figs = latency_figures(lat, broker=broker)
    if cfg["latency_sustainable"] and raw.get("throughput"):
        sustainable = max(50, round(0.5 * statistics.median(raw["throughput"]["worker_events_per_s"]), -1))
        low = wb.latency(bootstrap, children, sustainable, 30, f"{tag}s", wait_s=cfg["latency_wait_s"])
        raw["latency_sustainable"] = low
        figs += latency_figures(low, sustainable=True, broker=broker)
    return figs


def erp_section(cfg: dict[str, Any], raw: dict[str, Any], bootstrap: str, children: Any,
                tag: str) -> list[dict[str, Any]]:
    """The ERP capacity figures of `make bench-erp` (``erp_bench.capacity``, the same sizes):
    one measurement, one set of names, whichever command ran it; it rewrites
    ``benchmarks/results/erp.json`` as `make bench-erp` does."""
    from benchmarks import erp_bench as eb
    from benchmarks import worker_bench as wb

    rows = (("erp_orders_per_request", "ERP: orders released to done per ERP request", "orders_per_request",
             "{:.2f}"),
            ("erp_events_per_request", "ERP: warehouse events per ERP request (default mix)", "events_per_request",
             "{:,.0f}"),
            ("erp_429", "ERP: quota violations (gateway 429s)", "quota_violations", "{:,.0f}"),
            ("erp_drain", "ERP: backlog drain / the quota's floor", "drain_vs_floor", "{:.2f}"))
    if not cfg["erp"]:
        why = "quick mode: no ERP (Tryton + nginx); run `make bench` or `make bench-erp`"
        return [skipped(fid, name, why, _erp_target(key)) for fid, name, key, _ in rows]
    sizes = eb.BENCH_ERP
    cap = eb.capacity(bootstrap, children, orders=sizes["orders"], drain_n=sizes["drain_n"], reps=sizes["reps"],
                      rate=sizes["rate"], burst=sizes["burst"], mix_orders=sizes["mix_orders"], tag=tag,
                      drain_reps=sizes["drain_reps"])
    raw["erp"] = cap
    eb.report({"machine": wb.machine(), "erp_capacity": cap}, Path(cfg.get("erp_json") or RESULTS / "erp.json"))
    drains, runs = cap["drain"], cap["end_to_end"]
    quota = f"gateway {sizes['rate']:g} r/s burst {sizes['burst']} = ERP_RATE_PER_S/ERP_BURST, bulk mode on"
    cpu = cap["diagnostics"]["drain_erp_cpu_floor_vs_quota_floor"]["value"]
    took = ", ".join(f"{d['drain_s']:.0f} s for {d['requests']} requests" for d in drains)
    conditions = {
        "orders_per_request": f"{sizes['orders']} orders end to end, {len(runs)} runs; {quota}",
        "events_per_request": f"default mix of {sizes['mix_orders']:,} orders x requests per milestone measured",
        "quota_violations": f"every run (end to end and drains): {sum(r['requests'] for r in runs + drains):,} requests",
        "drain_vs_floor": (f"{sizes['drain_n']:,} InventoryAdjusted, {len(drains)} drain(s): "
                           f"{took}; Tryton's own CPU {cpu:.2f} x the floor (above 1.1: out of reach of any client)"),
    }
    out = []
    for fid, name, key, fmt in rows:
        fig = cap["figures"][key]
        f = figure(fid, name, fig["spread"]["runs"], "", target=_erp_target(key), conditions=conditions[key],
                   note=f"verdict on the worst run ({fig['value']}), as in benchmarks/results/erp.json", fmt=fmt)
        f["verdict"] = fig["verdict"]
        out.append(f)
    return out


def _erp_target(key: str) -> dict[str, Any]:
    from benchmarks import erp_bench as eb

    op, value = eb.TARGETS[key]
    return {"op": "==" if (op, value) == ("<=", 0) else op, "value": value}


def recovery_section(cfg: dict[str, Any], raw: dict[str, Any], bootstrap: str, children: Any,
                     tag: str, broker: str = "embedded") -> list[dict[str, Any]]:
    from benchmarks import recovery_bench as rb

    rec = rb.recovery(bootstrap, children, cfg["recovery_keys"], cfg["recovery_reps"], tag,
                      baseline_reps=cfg["recovery_baseline_reps"])
    raw["recovery"] = rec
    ok = all(n == rec["expected_keys"] for n in rec["recovered_keys"])
    keys = rec["keys"]
    cond = (f"{keys:,} order keys (+4 meta; the worker adds a fence per partition) produced to the changelog ({rec['changelog']['bytes'] / 2**20:.0f} MiB, "
            f"batched as the worker writes it, meta record alone last), 4 partitions, 1 worker, fresh process each, "
            f"{LABELS[broker]}")
    kept = f"{'/'.join(f'{n:,}' for n in rec['recovered_keys'])} of {rec['expected_keys']:,} keys in RocksDB after recovery"
    note_target = "" if keys >= 1_000_000 else f"target is for 1M keys; this run has {keys:,}"
    figs = [
        figure("recovery_cold", "restart to ready, empty data dir (full changelog recovery)", rec["cold_ready_s"], "s",
               target={"op": "<=", "value": 30}, conditions=cond + "; spawn -> /readyz 200", ok=ok,
               note="; ".join(x for x in (kept, note_target) if x), fmt="{:.1f}"),
        figure("recovery_warm", "restart to ready, data dir kept", rec["warm_ready_s"], "s",
               target={"op": "<=", "value": 30}, conditions="same state; RocksDB and its offsets kept", fmt="{:.1f}"),
    ]
    if rec["first_event_after_cold_ready_s"]:
        figs.append(figure("recovery_first_event", "after cold ready: first event per partition processed",
                           rec["first_event_after_cold_ready_s"], "s",
                           conditions="1 PickConfirmed per partition for a stored order, produced at ready (orders "
                                      "load lazily: read from RocksDB when their event arrives); each repetition",
                           fmt="{:.2f}"))
    if rec["empty_state_ready_s"]:
        figs.append(figure("startup_empty", "start to ready with no state (floor)", rec["empty_state_ready_s"], "s",
                           conditions="empty changelog, empty data dir", fmt="{:.1f}"))
    return figs


def rss_figure(raw: dict[str, Any]) -> dict[str, Any]:
    parts: list[tuple[str, float | None]] = []  # (run, peak MiB)
    for broker, sub in [("embedded", raw), *((b, raw[b]) for b in LABELS if b != "embedded" and raw.get(b))]:
        tag = "" if broker == "embedded" else f"{broker} "
        if sub.get("throughput"):
            parts += [(f"{tag}throughput", v) for v in sub["throughput"]["worker_vm_hwm_mib"]]
        for key in ("latency", "latency_sustainable"):
            if sub.get(key):
                parts.append((f"{tag}{key}", sub[key]["worker_vm_hwm_mib"]))
        if sub.get("recovery"):
            parts += [(f"{tag}recovery", v) for v in sub["recovery"]["worker_vm_hwm_mib"]]
    values = [v for _, v in parts if v is not None]
    by: dict[str, float] = {}
    for k, v in parts:
        if v is not None:
            by[k] = max(by.get(k, 0), v)
    f = figure("rss", "peak RSS per worker process (VmHWM)", values, "MiB",
               conditions="; ".join(f"{k} max {v:.0f} MiB" for k, v in by.items()), fmt="{:,.0f}")
    if values:
        f["median"] = max(values)  # the figure is the peak, not a median
        f["spread_pct"] = None
        f["note"] = "value = the highest VmHWM of any worker; spread over all worker processes"
    return f


# -- orchestration -----------------------------------------------------------------------------


def side_by_side(figures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each figure followed by its twins on other brokers (``<id>_<broker>``)."""
    ids = {f["id"] for f in figures}
    twins = {f"{f['id']}_{b}" for f in figures for b in LABELS if b != "embedded"}
    out: list[dict[str, Any]] = []
    for f in figures:
        if f["id"] in twins and f["id"].rsplit("_", 1)[0] in ids:
            continue  # placed after its embedded twin
        out.append(f)
        out += [g for b in LABELS if b != "embedded" for g in figures if g["id"] == f"{f['id']}_{b}"]
    return out



def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


SECTIONS = ("core", "worker", "scale", "latency", "erp", "recovery")
#: Figure ids of each section (by prefix), to replace a section's figures on a re-run.
SECTION_IDS = {"core": ("core", "replay"), "worker": ("worker", "raw", "quix", "ratio", "broker"), "scale": ("scale",), "latency": ("latency",),
               "erp": ("erp",), "recovery": ("recovery", "startup")}


def section_of(fid: str) -> str | None:
    for name, prefixes in SECTION_IDS.items():
        if any(fid == p or fid.startswith(p + "_") or (fid.startswith(p) and fid[len(p):].isdigit()) for p in prefixes):
            return name
    return None


def merge(previous: dict[str, Any], fresh: dict[str, Any], only: Sequence[str]) -> dict[str, Any]:
    """``previous`` with the sections in ``only`` replaced by ``fresh``'s (figures, raw data, timings)."""
    out = dict(previous)
    keep = [f for f in previous["figures"] if section_of(f["id"]) not in only and f["id"] != "rss"]
    new = [f for f in fresh["figures"] if section_of(f["id"]) in only]
    order = {name: i for i, name in enumerate(SECTIONS)}
    out["figures"] = sorted(keep + new, key=lambda f: order.get(section_of(f["id"]) or "", len(SECTIONS)))
    out["raw"] = {**previous.get("raw", {})}
    for key, value in fresh["raw"].items():
        before = out["raw"].get(key)
        if key in LABELS and isinstance(before, dict) and isinstance(value, dict):
            out["raw"][key] = {**before, **value}  # another broker's sections: only the re-run ones replaced
        else:
            out["raw"][key] = value
    out["sections"] = {**previous.get("sections", {}), **fresh["sections"]}
    out["notes"] = [*previous.get("notes", []),
                    f"sections {', '.join(only)} re-run at {fresh['started']} (load {fresh['load_start']} -> "
                    f"{fresh['load_end']}, {fresh['seconds']:.0f} s) and merged into this report"]
    out["figures"].append(rss_figure(out["raw"]))
    return out


def run(mode: str, overrides: dict[str, Any] | None = None, only: Sequence[str] = SECTIONS) -> dict[str, Any]:
    from benchmarks import worker_bench as wb

    cfg = {**MODES[mode], **(overrides or {})}
    started = time.perf_counter()
    report: dict[str, Any] = {"mode": mode, "config": cfg, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                              "machine": wb.machine(), "load_start": load(), "figures": [], "notes": [],
                              "raw": {}, "sections": {}}
    raw = report["raw"]
    report["core_build"] = use_core_build(str(cfg.get("core_build", "native")))
    tag = f"bench{int(time.time())}"

    def section(name: str, fn: Callable[[], list[dict[str, Any]]], fallback: list[tuple[str, str]],
                broker: str = "embedded") -> None:
        if name not in only:
            return
        key = name if broker == "embedded" else f"{name}_{broker}"
        t = time.perf_counter()
        load0 = load()
        try:
            report["figures"] += on_broker(fn(), broker)
        except Exception as exc:
            log(f"{key} failed: {exc!r}")
            traceback.print_exc()
            report["figures"] += on_broker(
                [errored(fid, fname, f"{type(exc).__name__}: {str(exc)[:300]}") for fid, fname in fallback], broker)
        report["sections"][key] = {"seconds": round(time.perf_counter() - t, 1), "load_start": load0,
                                   "load_end": load()}
        log(f"{key} done in {time.perf_counter() - t:.0f}s")

    section("core", lambda: core_section(cfg, raw), [("core", "pure core, events/s"),
                                                      ("replay", "replay end to end, events/s")])
    brokers = [b.strip() for b in str(cfg["brokers"]).split(",") if b.strip()]
    unknown = set(brokers) - set(LABELS)
    if unknown:
        raise ValueError(f"unknown broker(s) {sorted(unknown)}; one of {', '.join(LABELS)}")
    # One broker at a time, each with the same sections: the figures side by side, ids of a
    # broker other than the embedded one suffixed with it (``worker_apache``, ...).
    for i, broker in enumerate(brokers):
        if not set(only) - {"core"}:
            break
        sub = raw if broker == "embedded" else raw.setdefault(broker, {})
        btag = tag if broker == "embedded" else f"{tag}{broker[:1]}"
        with wb.Children() as children:
            b = children.broker(broker)
            bootstrap = b.bootstrap
            log(f"{LABELS[broker]} at {bootstrap} (serving {children.broker_started_s[bootstrap]:.1f}s after spawn)")
            section("worker", lambda: worker_section(cfg, sub, bootstrap, children, btag, broker),
                    [("ratio", "worker / raw ratio")], broker)
            section("scale", lambda: scale_section(cfg, sub, bootstrap, children, btag, broker),
                    [("scale", "two workers / one worker (events/s)")], broker)
            section("latency", lambda: latency_section(cfg, sub, bootstrap, children, btag, broker),
                    [("latency_p99", f"latency at {cfg['latency_rate']}/s p99")], broker)
            if i == 0:  # the ERP figures do not depend on the broker: measured once
                section("erp", lambda: erp_section(cfg, sub, bootstrap, children, btag),
                        [("erp_orders_per_request", "ERP figures")], broker)
            section("recovery", lambda: recovery_section(cfg, sub, bootstrap, children, btag, broker),
                    [("recovery_cold", "restart to ready, empty data dir")], broker)
            peak = wb.vm_hwm_mb(b.process.pid) if b.process else None
            sub["broker"] = {"impl": broker, "started_s": children.broker_started_s[bootstrap], "vm_hwm_mib": peak}
            if "worker" in only:
                report["figures"] += on_broker([
                    figure("broker_startup", "broker spawn to serving", [children.broker_started_s[bootstrap]], "s",
                           conditions=f"{LABELS[broker]} on 127.0.0.1, fresh storage"
                                      + (", KRaft single node, -Xmx512m (ops/kafka/run.py)" if broker == "apache" else ""),
                           fmt="{:.1f}"),
                    figure("broker_rss", "broker peak RSS (VmHWM)", [peak], "MiB",
                           conditions=f"{LABELS[broker]} after this broker's sections", fmt="{:,.0f}"),
                ], broker)
    report["figures"] = side_by_side(report["figures"])
    report["figures"].append(rss_figure(raw))
    if mode == "quick":
        report["notes"].append(
            f"quick mode: {cfg['worker_records']:,} records per worker repetition, {cfg['latency_seconds']} s of "
            f"paced input, {cfg['recovery_keys']:,} recovery keys ({cfg['recovery_reps']} repetition), bench_core on "
            f"{cfg['core_events']:,} events, no ERP; `make bench` for the real sizes")
    report["load_end"] = load()
    report["seconds"] = time.perf_counter() - started
    return report


def write(report: dict[str, Any], out_dir: Path = RESULTS) -> str:
    """latest.{json,md} (the last run, whatever its mode) and <mode>.{json,md} (the last run of that mode)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = render_markdown(report)
    text = json.dumps(jsonable(report), indent=2) + "\n"
    for name in ("latest", report["mode"]):
        (out_dir / f"{name}.json").write_text(text)
        (out_dir / f"{name}.md").write_text(md)
    return md


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="small sizes, < 3 min")
    group.add_argument("--full", action="store_true", help="the documented sizes (default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a size, e.g. --set worker_records=200000")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", help=f"comma-separated sections to (re-)run ({', '.join(SECTIONS)}); "
                                       "their figures replace those in results/<mode>.json, the last run of that mode")
    args = parser.parse_args(argv)
    only = tuple(x.strip() for x in args.only.split(",")) if args.only else SECTIONS
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; one of {', '.join(SECTIONS)}")
    mode = "quick" if args.quick else "full"
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in MODES[mode]:
            parser.error(f"unknown size {key!r}; one of {', '.join(MODES[mode])}")
        current = MODES[mode][key]
        overrides[key] = (value.lower() in ("1", "true", "yes")) if isinstance(current, bool) else type(current)(value)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)  # so the finally blocks stop every child
    report = run(mode, overrides, only)
    previous = args.out / f"{mode}.json"
    if args.only and previous.exists():
        report = merge(unjson(json.loads(previous.read_text())), report, only)
    md = write(report, args.out)
    print(md)
    failed = [f["name"] for f in report["figures"] if f["verdict"] == "ERROR"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
