"""The latency figure and its split at the broker's append time: the whole is measured from the
produce() of the event that completed the milestone (the record whose processing emitted it)
to the milestone; the split (where the broker stamped the events) tells the worker's part from
the sender's, and never carries the target."""
from __future__ import annotations

import math
from typing import Any

import orjson

from app.commands.replay import replay_by_record, replay_partitions
from app.core.model import CoreSettings, Milestone
from benchmarks import run, worker_bench
from tests.integration.streams import simulate


def milestone(mid: str, completing: str | None, kind: str = "OrderPicked") -> tuple[dict[str, Any], str | None]:
    return {"milestone_id": mid, "type": kind, "event_ids": ["evidence"]}, completing


def test_the_latency_runs_from_the_completing_event_and_splits_at_its_append() -> None:
    expected = [milestone("m1", "e2"), milestone("m2", "e3")]
    sent_at = {"e1": 100.0, "e2": 100.5, "e3": 101.0}
    appended = {"e1": 100_900, "e2": 100_520, "e3": 101_050}
    got = {"m1": 100_700, "m2": 101_300}
    out = worker_bench.latency_stats(expected, sent_at, got, appended, windows=1, warmup_s=0)
    (window,) = out["windows"]
    assert window["n"] == 2
    assert window["max_ms"] == 300  # m2: 101.0 s -> 101,300 ms
    assert window["p50_ms"] == 200  # m1: 100.5 s -> 100,700 ms
    assert window["append_p50_ms"] == 180 and window["append_p99_ms"] == 250  # 100,520 -> 100,700; 101,050 -> 101,300
    assert window["send_p50_ms"] == 20 and window["send_p99_ms"] == 50
    assert out["by_type"]["OrderPicked"]["n"] == 2
    assert out["unmatched_milestones"] == 0 and out["negative_latencies"] == 0


def test_a_milestone_never_produced_is_infinite_in_the_whole_and_in_the_workers_part() -> None:
    expected = [milestone("m1", "e1"), milestone("m2", "e2")]
    sent_at = {"e1": 10.0, "e2": 10.1}
    out = worker_bench.latency_stats(expected, sent_at, {"m1": 10_050}, {"e1": 10_010, "e2": 10_110},
                                     windows=1, warmup_s=0)
    (window,) = out["windows"]
    assert window["missing"] == 1 and math.isinf(window["p99_ms"])
    assert math.isinf(window["append_p99_ms"])
    assert window["send_p99_ms"] == 10


def test_without_append_times_there_is_no_split_and_no_split_figure() -> None:
    expected = [milestone("m1", "e1"), milestone("m2", "e2", kind="OrderPacked"), milestone("m3", "unknown"),
                milestone("m4", None)]
    sent_at = {"e1": 10.0, "e2": 10.1}
    out = worker_bench.latency_stats(expected, sent_at, {"m1": 10_050, "m2": 10_180}, {}, windows=1, warmup_s=0)
    (window,) = out["windows"]
    assert "append_p99_ms" not in window and "send_p99_ms" not in window
    assert out["unmatched_milestones"] == 2
    lat = {"rate_per_s": 10_000, "records": 3, "achieved_rate_per_s": 10_000, "seconds": 1, "wait_after_produce_s": 60,
           **out}
    assert [f["id"] for f in run.latency_figures(lat)] == ["latency_p50", "latency_p99"]


def test_the_split_figures_are_info_and_the_target_stays_on_the_whole() -> None:
    expected = [milestone(f"m{i}", f"e{i}") for i in range(6)]
    sent_at = {f"e{i}": 10.0 + i for i in range(6)}
    appended = {f"e{i}": int((10.0 + i) * 1000) + 400 for i in range(6)}  # the sender's part: 400 ms
    got = {f"m{i}": int((10.0 + i) * 1000) + 500 for i in range(6)}  # the whole: 500 ms
    out = worker_bench.latency_stats(expected, sent_at, got, appended, windows=3, warmup_s=0)
    lat = {"rate_per_s": 10_000, "records": 6, "achieved_rate_per_s": 10_000, "seconds": 6, "wait_after_produce_s": 60,
           **out}
    figs = {f["id"]: f for f in run.latency_figures(lat)}
    assert figs["latency_p99"]["target"] == {"op": "<=", "value": 250}
    assert figs["latency_p99"]["verdict"] == "FAIL" and figs["latency_p99"]["median"] == 500
    assert figs["latency_append_p99"]["median"] == 100 and figs["latency_append_p99"]["target"] is None
    assert figs["latency_send_p99"]["median"] == 400 and figs["latency_send_p99"]["target"] is None
    assert {figs[k]["verdict"] for k in ("latency_append_p99", "latency_send_p99")} == {"INFO"}


def test_percentile_is_the_nearest_rank() -> None:
    assert worker_bench.percentile([300.0, 200.0], 50) == 200  # rank ceil(0.5 * 2) = 1 (round(1.5) gave 2)
    assert worker_bench.percentile([float(i) for i in range(1, 101)], 99) == 99
    assert worker_bench.percentile([float(i) for i in range(1, 101)], 100) == 100
    assert worker_bench.percentile([5.0], 1) == 5
    assert math.isnan(worker_bench.percentile([], 50))


def test_each_order_milestone_is_paired_with_the_record_that_emitted_it() -> None:
    parts = [[value for _, value in simulate(orders=60, warehouses=2, seed=1)]]
    by_record = list(replay_by_record(parts, CoreSettings()))
    # the same outputs, in the same order, as the replay the worker's parity is checked against
    assert [o for _, outs in by_record for o in outs] == replay_partitions(parts, CoreSettings())
    emitted_by = {o.milestone_id: raw for raw, outs in by_record for o in outs if isinstance(o, Milestone)}
    paired = worker_bench.completed_by(parts)
    assert [m["milestone_id"] for m, _ in paired] == [
        o.milestone_id for _, outs in by_record for o in outs
        if isinstance(o, Milestone) and o.type in worker_bench.ORDER_MILESTONES]
    for m, completing in paired:
        raw = emitted_by[m["milestone_id"]]
        assert raw is not None and completing is not None and completing == worker_bench.event_id(raw)
        assert orjson.loads(raw)["order_id"] == m["order_id"]
    # the case the evidence got wrong: completed by an event that is not in its evidence (here
    # picks that arrived before their order's release, held until it: the release completes
    # the OrderPicked, whose evidence is the two picks)
    outside = [(m["type"], m["order_id"]) for m, completing in paired if completing not in m["event_ids"]]
    assert outside == [("OrderPicked", "SO0000007")]
