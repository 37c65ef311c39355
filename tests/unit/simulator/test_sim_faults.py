"""Injected faults: they appear at about their rates, have the intended shape, and only add records."""
from __future__ import annotations

from collections import Counter

import pytest
from sim_support import Run, decode, generate, shape_problems

from app.core.timeutil import parse_ts
from app.simulator.model import AUTHORITY

RATES = {"duplicate": 0.03, "malformed": 0.01, "wrong_source": 0.01, "out_of_order": 0.2, "late": 0.3}
EXECUTION = (b'"PickConfirmed"', b'"LineShortClosed"', b'"PackConfirmed"', b'"ShipmentDispatched"')


@pytest.fixture(scope="module")
def faulty() -> Run:
    return generate("clean", orders=400, seed=11, **RATES)


def _classify(run: Run) -> Counter[str]:
    kinds: Counter[str] = Counter()
    seen: set[bytes] = set()
    for _, raw in run.records:
        d = decode(raw)
        if d is None:
            kinds["undecodable"] += 1
        elif raw in seen:
            kinds["repeat"] += 1
        elif any("not authorized" in p for p in shape_problems(d)):
            kinds["wrong_source"] += 1
        elif shape_problems(d):
            kinds["schema"] += 1
        else:
            kinds["valid"] += 1
        seen.add(raw)
    return kinds


def _first_valid(run: Run) -> list[tuple[dict, bytes]]:
    """Valid, authorized records at their first arrival (redeliveries and fault records left out)."""
    seen: set[bytes] = set()
    out = []
    for _, raw in run.records:
        d = decode(raw)
        if raw not in seen and d is not None and not shape_problems(d):
            out.append((d, raw))
        seen.add(raw)
    return out


def test_record_faults_come_at_their_rates(faulty: Run) -> None:
    kinds = _classify(faulty)
    counts = faulty.sim.counts
    valid = kinds["valid"]
    assert kinds["undecodable"] + kinds["schema"] == counts["malformed"]
    assert kinds["wrong_source"] == counts["wrong_source"]
    assert kinds["repeat"] == counts["duplicates"] + counts["dup_reads"]
    for name in ("duplicate", "malformed", "wrong_source"):
        key = "duplicates" if name == "duplicate" else name
        assert counts[key] / valid == pytest.approx(RATES[name], rel=0.25), name
    assert kinds["undecodable"] > 0 and kinds["schema"] > 0


def test_malformed_copy_comes_just_before_its_valid_twin(faulty: Run) -> None:
    records = [raw for _, raw in faulty.records]
    checked = 0
    for i, raw in enumerate(records[:-1]):
        d = decode(raw)
        if d is not None and shape_problems(d) and not any("not authorized" in p for p in shape_problems(d)):
            twin = decode(records[i + 1])
            assert twin is not None and twin["event_id"] == d["event_id"] and shape_problems(twin) == []
            checked += 1
    assert checked


def test_out_of_order_releases_arrive_after_execution_within_the_hold(faulty: Run) -> None:
    first_exec: dict[str, int] = {}
    watermark = 0
    late_releases = 0
    for d, raw in _first_valid(faulty):
        t = parse_ts(d["occurred_at"])
        if any(x in raw for x in EXECUTION):
            first_exec.setdefault(d["order_id"], t)
        if d["type"] == "OrderReleased" and d["order_id"] in first_exec:
            late_releases += 1
            assert t < first_exec[d["order_id"]] < watermark <= first_exec[d["order_id"]] + 5 * 60_000
        watermark = max(watermark, t)
    changed = {decode(r)["order_id"] for _, r in faulty.records if b'"OrderChanged"' in r or b'"OrderCancelled"' in r}
    eligible = 400 - len(changed)
    assert late_releases == faulty.sim.counts["out_of_order_orders"]
    assert late_releases / eligible == pytest.approx(RATES["out_of_order"], abs=0.06)


def test_late_adjustments_arrive_well_after_their_window_closed(faulty: Run) -> None:
    watermark = 0
    late = on_time = 0
    for d, _ in _first_valid(faulty):
        t = parse_ts(d["occurred_at"])
        if d["type"] == "StockAdjusted" and t < watermark:
            window_end = t - t % 300_000 + 300_000
            assert watermark >= window_end + 60_000 + 2 * 60_000
            late += 1
        elif d["type"] == "StockAdjusted":
            on_time += 1
        watermark = max(watermark, t)
    assert late == faulty.sim.counts["late"]
    assert late / (late + on_time) == pytest.approx(RATES["late"], abs=0.08)


def test_faults_only_add_records(clean_run: Run, faulty: Run) -> None:
    """Same seed: the faulty stream holds exactly the clean stream's records, plus the fault records."""
    assert faulty.sim.counts["late_dropped"] == 0
    clean = {raw for _, raw in clean_run.records}
    kept = {raw for _, raw in faulty.records if (d := decode(raw)) is not None and not shape_problems(d)}
    assert kept == clean


def test_truth_has_one_exception_per_fault(faulty: Run) -> None:
    codes = Counter(m["code"] for m in faulty.truth if m["type"] == "SyncException")
    counts = faulty.sim.counts
    assert codes["SOURCE_NOT_AUTHORIZED"] == counts["wrong_source"]
    assert codes["INVALID_EVENT"] == counts["malformed"] + counts["late"]
    assert set(codes) == {"SOURCE_NOT_AUTHORIZED", "INVALID_EVENT"}
    late = [m for m in faulty.truth if m.get("detail") == "late"]
    assert len(late) == counts["late"] and all(m["order_id"] is None for m in late)
    raw = [m for m in faulty.truth if m["type"] == "SyncException" and m["warehouse_id"] is None]
    assert raw and all(m["event_ids"] == [] and m["occurred_at"] for m in raw)


def test_wrong_source_copy_follows_its_original_with_a_new_id(faulty: Run) -> None:
    previous: dict | None = None
    ids = {d["event_id"] for d, _ in _first_valid(faulty)}
    copies = 0
    for _, raw in faulty.records:
        d = decode(raw)
        if d is not None and d.get("type") in AUTHORITY and d.get("source") not in AUTHORITY[d["type"]]:
            copies += 1
            assert previous is not None and d["event_id"] not in ids
            assert {k: v for k, v in d.items() if k not in ("event_id", "source")} == {
                k: v for k, v in previous.items() if k not in ("event_id", "source")
            }
        previous = d
    assert copies == faulty.sim.counts["wrong_source"]


def test_first_record_is_never_faulty() -> None:
    run = generate("clean", orders=3, seed=1, malformed=0.6, wrong_source=0.4)
    assert shape_problems(decode(run.records[0][1])) == []  # type: ignore[arg-type]
