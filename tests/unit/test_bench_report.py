"""The benchmark report: summaries, verdicts, the markdown table and strict JSON.
Pure functions only; nothing is timed here."""
from __future__ import annotations

import json
import math

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
