"""The benchmark report: summaries, verdicts, the markdown table and strict JSON.
Pure functions only; nothing is timed here."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.run import errored, figure, jsonable, render_markdown, skipped, summarize, verdict


def test_summarize_median_range_and_spread() -> None:
    s = summarize([100.0, 120.0, 80.0])
    assert (s["n"], s["median"], s["min"], s["max"]) == (3, 100.0, 80.0, 120.0)
    assert s["spread_pct"] == 20.0  # half the range, relative to the median


def test_summarize_ignores_missing_values_and_keeps_infinity() -> None:
    s = summarize([None, float("nan"), 5.0, float("inf"), 7.0])
    assert s["n"] == 3 and s["median"] == 7.0 and s["max"] == float("inf")
    assert s["spread_pct"] is None  # no finite range with an infinite value
    assert summarize([])["median"] is None


def test_verdicts() -> None:
    at_least = {"op": ">=", "value": 0.10}
    assert verdict(0.10, at_least) == "PASS"
    assert verdict(0.09, at_least) == "FAIL"
    assert verdict(5.0, {"op": "<=", "value": 30}) == "PASS"
    assert verdict(float("inf"), {"op": "<=", "value": 250}) == "FAIL"
    assert verdict(0, {"op": "==", "value": 0}) == "PASS"
    assert verdict(1, {"op": "==", "value": 0}) == "FAIL"
    assert verdict(None, at_least) == "FAIL"
    assert verdict(float("nan"), at_least) == "FAIL"
    assert verdict(123.0, None) == "INFO"


def test_a_fast_wrong_answer_fails() -> None:
    f = figure("ratio", "worker / raw ratio", [0.5, 0.6, 0.7], "", target={"op": ">=", "value": 0.10}, ok=False)
    assert f["median"] == 0.6 and f["verdict"] == "FAIL"
    assert figure("rss", "peak RSS", [100.0], "MiB", ok=False)["verdict"] == "FAIL"


def test_markdown_table_has_every_figure_with_value_spread_target_and_verdict() -> None:
    report = {
        "mode": "quick",
        "started": "2026-11-27 10:00:00 UTC",
        "seconds": 95.0,
        "load_start": "0.5 0.4 0.3",
        "load_end": "1.0 0.8 0.5",
        "machine": {"nproc": 2, "cpu": "AMD EPYC", "ram_gib": 23.5, "python": "3.11.7"},
        "figures": [
            figure("core", "pure core, events/s", [300_000, 310_000, 290_000], "events/s",
                   target={"op": ">=", "value": 250_000}, conditions="1,000,000 events"),
            figure("latency_p99", "latency p99", [float("inf")] * 3, "ms", target={"op": "<=", "value": 250},
                   conditions="a | pipe"),
            skipped("erp", "events per ERP call", "quick mode", {"op": ">=", "value": 100}),
            errored("recovery_cold", "restart to ready", "TimeoutError: x"),
        ],
        "notes": ["quick mode: small sizes"],
    }
    md = render_markdown(report)
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 4
    assert "| pure core, events/s | 300,000 events/s | 290,000–310,000, n=3 (±3%) | >= 250,000 | **PASS** |" in md
    assert "| latency p99 | ∞ ms |" in md and "**FAIL**" in rows[2]
    assert "a / pipe" in rows[2]  # a pipe in a condition does not break the table
    assert "**SKIP**" in rows[3] and "**ERROR**" in rows[4]
    assert "2 × AMD EPYC" in md and "Python 3.11.7" in md and "- quick mode: small sizes" in md


def test_json_is_strict() -> None:
    data = jsonable({"a": [float("inf"), float("nan"), 1.5], "b": {"c": float("-inf")}, 3: "x"})
    assert data == {"a": ["inf", None, 1.5], "b": {"c": "-inf"}, "3": "x"}
    text = json.dumps(data, allow_nan=False)
    assert not math.isnan(json.loads(text)["a"][2])


def test_a_rerun_section_replaces_only_its_figures() -> None:
    from benchmarks.run import merge, unjson

    def report(figs: list[dict], started: str) -> dict:
        return {"mode": "full", "started": started, "load_start": "1", "load_end": "1", "seconds": 10.0,
                "figures": figs, "notes": [], "raw": {}, "sections": {}}

    old = report([figure("core", "core", [1.0], ""), figure("erp_429", "429s", [1.0], "",
                                                            target={"op": "==", "value": 0})], "t0")
    new = report([figure("erp_429", "429s", [0.0], "", target={"op": "==", "value": 0})], "t1")
    merged = merge(unjson(jsonable(old)), new, ["erp"])
    by_id = {f["id"]: f for f in merged["figures"]}
    assert by_id["core"]["median"] == 1.0 and by_id["erp_429"]["verdict"] == "PASS"
    assert [f["id"] for f in merged["figures"]] == ["core", "erp_429", "rss"]
    assert "re-run at t1" in merged["notes"][-1]
    assert unjson(jsonable({"x": [float("inf")]})) == {"x": [float("inf")]}


def test_a_re_run_section_on_another_broker_keeps_that_brokers_other_raw_sections() -> None:
    from benchmarks.run import merge

    def report(raw: dict, started: str) -> dict:
        return {"mode": "full", "started": started, "load_start": "1", "load_end": "1", "seconds": 10.0,
                "figures": [], "notes": [], "raw": raw, "sections": {}}

    def run(mib: float) -> dict:
        return {"worker_vm_hwm_mib": [mib]}

    old = report({"throughput": run(1), "apache": {"throughput": run(2), "recovery": run(3)}}, "t0")
    new = report({"recovery": run(4), "apache": {"recovery": run(5)}}, "t1")
    merged = merge(old, new, ["recovery"])
    assert merged["raw"]["apache"] == {"throughput": run(2), "recovery": run(5)}
    assert merged["raw"]["throughput"] == run(1) and merged["raw"]["recovery"] == run(4)
    rss = next(f for f in merged["figures"] if f["id"] == "rss")
    assert "apache throughput max 2 MiB" in rss["conditions"] and "apache recovery max 5 MiB" in rss["conditions"]


def test_figures_on_apache_kafka_get_their_own_ids_and_sit_next_to_the_embedded_ones() -> None:
    from benchmarks.run import on_broker, section_of, side_by_side

    embedded = [figure("worker", "worker events/s per process (saturation)", [100.0], "events/s"),
                figure("ratio", "worker / raw ratio", [0.05], "", target={"op": ">=", "value": 0.10})]
    apache = on_broker([figure("worker", "worker events/s per process (saturation)", [90.0], "events/s"),
                        figure("ratio", "worker / raw ratio", [0.04], "", target={"op": ">=", "value": 0.10})], "apache")
    assert [f["id"] for f in apache] == ["worker_apache", "ratio_apache"]
    assert apache[0]["name"] == "[Apache Kafka] worker events/s per process (saturation)"
    assert on_broker(list(embedded), "embedded") == embedded  # the historical ids stay
    ordered = side_by_side(embedded + apache)
    assert [f["id"] for f in ordered] == ["worker", "worker_apache", "ratio", "ratio_apache"]
    assert {section_of(f["id"]) for f in ordered} == {"worker"}
    assert section_of("latency_p99_apache") == "latency" and section_of("recovery_cold_apache") == "recovery"


def test_erp_requests_are_counted_by_kind_with_the_records_they_carry() -> None:
    """The ERP bench's breakdown of the gateway's access log: JSON-RPC calls by method and
    ``n``, REST searches by model and the values of their ``in`` domain, and the ERP's busy
    time as the union of the requests' intervals."""
    import base64
    from types import SimpleNamespace

    from benchmarks.erp_bench import breakdown, busy_s, items_of, request_kind

    def line(method: str, uri: str, ts: float = 10.0, took: float = 1.0) -> SimpleNamespace:
        return SimpleNamespace(method=method, uri=uri, ts=ts, request_time_s=took, status=200)

    domain = base64.urlsafe_b64encode(b'[["number","in",["OUT-1","OUT-2","OUT-3"]]]').decode()
    lines = [line("POST", "/erp/rpc/?m=model.stock.shipment.out.pick&n=40", ts=10.0, took=2.0),
             line("POST", "/erp/rpc/?m=model.res.user.warning.create&n=40", ts=11.0, took=2.0),
             line("POST", "/erp/rpc/?m=model.ir.note.create&n=7", ts=20.0, took=1.0),
             line("POST", "/erp/rpc/?m=common.db.login&n=1", ts=21.0, took=0.5),
             line("GET", f"/erp/rest/model/stock.shipment.out?d={domain}&f=state", ts=30.0, took=0.5),
             line("POST", "/erp/rest/model/stock.shipment.out/7/do?f=state", ts=31.0, took=0.5)]
    assert [request_kind(x) for x in lines] == [
        "button stock.shipment.out.pick", "warnings", "create ir.note", "login", "read stock.shipment.out",
        "button stock.shipment.out.do"]
    assert [items_of(x) for x in lines] == [40, 40, 7, 1, 3, 1]
    kinds = breakdown(lines)
    assert kinds["button stock.shipment.out.pick"] == {"requests": 1, "items": 40, "erp_s": 2.0}
    # [8, 10] and [9, 11] overlap: 3 s; then [19, 20], [20.5, 21], [29.5, 30], [30.5, 31]
    assert busy_s(lines) == 3.0 + 1.0 + 0.5 + 0.5 + 0.5


def _throughput(worker: list[float], quix: list[dict]) -> dict:  # type: ignore[type-arg]
    return {"worker_events_per_s": worker, "worker_cpu_us_per_event": [10.0] * len(worker), "quix": quix}


def test_the_quix_peer_row_and_the_worker_to_quix_ratio_per_repetition() -> None:
    from benchmarks.run import quix_figures

    runs = [{"events_per_s": 100.0, "cpu_us_per_event": 30.0, "ok": True, "detail": "x"}]
    quix, ratio, cpu = quix_figures(_throughput([250.0, 300.0], runs), True, "same")
    assert quix["median"] == 100.0 and quix["verdict"] == "INFO"
    assert ratio["values"] == [2.5] and ratio["verdict"] == "PASS"  # only the repetition the peer ran in
    assert cpu["values"] == [3.0]
    _, below, _ = quix_figures(_throughput([150.0], runs), True, "same")
    assert below["verdict"] == "FAIL"
    _, wrong_peer, _ = quix_figures(_throughput([250.0], [{**runs[0], "ok": False, "detail": "2 missing"}]), True, "")
    assert wrong_peer["verdict"] == "FAIL" and "2 missing" in quix_figures(
        _throughput([250.0], [{**runs[0], "ok": False, "detail": "2 missing"}]), True, "")[0]["note"]


def test_a_peer_that_did_not_run_is_an_error_not_a_crash() -> None:
    from benchmarks.run import quix_figures

    figs = quix_figures(_throughput([250.0], [{"error": "RuntimeError: no venv"}]), True, "")
    assert [f["verdict"] for f in figs] == ["ERROR", "ERROR"]
    assert "no venv" in figs[1]["note"]


def test_scale_out_is_not_applicable_on_too_few_cores_but_a_wrong_answer_still_fails() -> None:
    from benchmarks.run import scale_figure

    sc = {"records": 1000, "one_events_per_s": [100.0], "two_events_per_s": [120.0], "ratios": [1.2],
          "parity": [{"ok": True, "detail": ""}], "cores": 2}
    assert scale_figure(sc)["verdict"] == "N/A"
    assert "2 cores" in scale_figure(sc)["note"]
    assert scale_figure({**sc, "cores": 8})["verdict"] == "FAIL"
    assert scale_figure({**sc, "cores": 8, "ratios": [1.8]})["verdict"] == "PASS"
    assert scale_figure({**sc, "parity": [{"ok": False, "detail": "3 missing"}]})["verdict"] == "FAIL"


def test_pyspy_top_shares_inclusive_and_self() -> None:
    from benchmarks.pyspy_top import summarize as top

    lines = ["MainThread;run (a/x.py:1);work (a/y.py:2) 3", "MainThread;run (a/x.py:1) 1", "garbage"]
    total, inclusive, own = top(lines)
    assert total == 4
    assert inclusive["run (a/x.py)"] == 4 and inclusive["work (a/y.py)"] == 3
    assert own["work (a/y.py)"] == 3 and own["run (a/x.py)"] == 1


def test_pyspy_groups_take_the_first_matching_group() -> None:
    from benchmarks.pyspy_top import OTHER, grouped

    lines = ["run;commit_all;send_writes;x 5", "run;decode_and_run;Engine.process_event (app/core/engine.py:9) 3",
             "run;idle 2", "run;GovernanceStage._run_partition (app/stages/governance.py:160) 7",
             "run;GovernanceStage._run_partition (app/stages/governance.py:160);decode_input (app/kafka/codec.py:470) 4"]
    total, groups = grouped(lines)
    assert total == 21
    assert groups[OTHER] == 2 and sum(groups.values()) == 21
    assert groups["core: Engine.process_event"] == 3
    # the compiled core's time is the loop's own; what the loop calls goes to its group
    assert groups["core (compiled) and the per-record loop: GovernanceStage._run_partition's own time"] == 7
    assert groups["decode: codec.decode_input"] == 4


def test_the_full_reports_erp_rows_are_bench_erps_figures(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`make bench` reports the ERP section with `make bench-erp`'s own measurement (same
    sizes, same four figures, the verdict on the worst run), not a second, older one."""
    from benchmarks import erp_bench as eb
    from benchmarks.run import erp_section

    asked: dict[str, object] = {}

    def capacity(*_: object, **kw: object) -> dict[str, object]:
        asked.update(kw)
        figs = {"orders_per_request": (2.4, [2.4, 2.7], "PASS"), "events_per_request": (203.0, [203.0, 207.0], "PASS"),
                "quota_violations": (0, [0.0, 0.0, 0.0], "PASS"), "drain_vs_floor": (3.6, [3.6], "FAIL")}
        return {"figures": {k: {"value": v, "spread": {"runs": runs}, "verdict": ver, "target": "t"}
                            for k, (v, runs, ver) in figs.items()},
                "diagnostics": {"drain_erp_cpu_floor_vs_quota_floor": {"value": 2.7}},
                "drain": [{"drain_s": 338.0, "requests": 935}], "end_to_end": [{"requests": 50}, {"requests": 51}]}

    monkeypatch.setattr(eb, "capacity", capacity)
    raw: dict[str, object] = {}
    rows = erp_section({"erp": True, "erp_json": str(tmp_path / "erp.json")}, raw, "b", None, "t")
    assert {k: asked[k] for k in ("orders", "drain_n", "reps", "drain_reps")} == {
        k: eb.BENCH_ERP[k] for k in ("orders", "drain_n", "reps", "drain_reps")}
    by_id = {r["id"]: r for r in rows}
    assert [by_id[i]["verdict"] for i in ("erp_orders_per_request", "erp_events_per_request", "erp_429", "erp_drain")] \
        == ["PASS", "PASS", "PASS", "FAIL"]
    assert by_id["erp_drain"]["values"] == [3.6] and "338 s for 935 requests" in by_id["erp_drain"]["conditions"]
    assert by_id["erp_429"]["target"] == {"op": "==", "value": 0} and "erp" in raw
    written = json.loads((tmp_path / "erp.json").read_text())  # the file `make bench-erp` writes
    assert written["drain_vs_floor"] == {"value": 3.6, "target": "t", "verdict": "FAIL"}
    assert written["erp_capacity"]["drain"] == [{"drain_s": 338.0, "requests": 935}] and "machine" in written
    quick = erp_section({"erp": False}, {}, "b", None, "t")
    assert [r["verdict"] for r in quick] == ["SKIP"] * 4
