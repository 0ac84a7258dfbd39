"""Tests of sim.outputs: every summary definition, the window series, collapse,
recovery and outcome, on hand-built RunResults whose answers are known exactly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from sim.outputs import OUTCOMES, SUMMARY_KEYS, WINDOW_SERIES, summarize
from sim.result import (
    ATTEMPT_COLUMNS,
    ERROR_CODE,
    INCOMPLETE,
    REQUEST_COLUMNS,
    SUCCESS,
    FaultWindow,
    Milestones,
    RunResult,
    empty_columns,
)
from sim.schema import ERROR_KINDS, OutcomeConfig, Scenario

PROJECT = Path(__file__).resolve().parents[1]
DESIGN_MD = PROJECT.parent / "shared" / "design.md"
OUTPUTS_MD = PROJECT / "docs" / "outputs.md"

LEVEL_COLUMNS = (
    "time_s", "alive", "server_connections", "accept_queue", "open_fds", "goroutines",
    "memory_mib", "cpu_utilization", "gc_fraction", "inflight_requests", "inflight.<route>",
    "db_in_use.<db>", "db_waiters.<db>", "client_connections", "client_inflight",
    "shed_admitted", "shed_queue_length", "breakers_open", "breakers_half_open", "retry_budget_left",
    "throttle_reject_probability", "retries_outstanding", "client_ports_time_wait", "h2_streams_open",
)


# ------------------------------------------------------------------ builders


def make_requests(arrival_at, end_at, error, touched=None, attempts=None) -> dict[str, np.ndarray]:
    n = len(arrival_at)
    cols = empty_columns(REQUEST_COLUMNS, n)
    cols["request_id"] = np.arange(n, dtype=np.int64)
    cols["arrival_at"] = np.asarray(arrival_at, dtype=np.float64)
    cols["end_at"] = np.asarray(end_at, dtype=np.float64)
    cols["error"] = np.asarray(error, dtype=np.int8)
    cols["touched"] = np.zeros(n, bool) if touched is None else np.asarray(touched, dtype=bool)
    cols["attempts"] = np.ones(n, np.int16) if attempts is None else np.asarray(attempts, np.int16)
    return cols


def first_attempts(requests: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One attempt record per request: attempt 0, same times and error."""
    n = len(requests["request_id"])
    cols = empty_columns(ATTEMPT_COLUMNS, n)
    cols["request_id"] = requests["request_id"].copy()
    cols["start_at"] = requests["arrival_at"].copy()
    cols["end_at"] = requests["end_at"].copy()
    cols["error"] = requests["error"].copy()
    return cols


def make_result(requests, *, end_s=10.0, warmup_s=0.0, sample_interval_s=0.1, attempts=None,
                levels=None, milestones=None, counters=None, outcome=None, provenance=None) -> RunResult:
    scenario = Scenario(name="synthetic", duration=end_s, warmup=warmup_s,
                        sample_interval=sample_interval_s, outcome=outcome or OutcomeConfig())
    if milestones is None:
        milestones = Milestones(end_at_s=end_s)
    return RunResult(
        scenario=scenario, seed=7, replication=0, route_names=["a", "b"], client_names=["web"],
        requests=requests, attempts=first_attempts(requests) if attempts is None else attempts,
        levels=levels or {}, milestones=milestones, counters=counters or {"events": 1234.0},
        wall_s=0.5, provenance=provenance or {"stormsim": "0.1.0", "seed": 7})


def steady_traffic(end_s: float, *, fail_between=(), touched_every: int = 0,
                   rate_per_s: float = 100.0, latency_s: float = 0.005):
    """Arrivals at 0.0025 + i/rate (never on a 0.1 s grid line), each completing after
    ``latency_s``; a request whose completion falls in one of the ``fail_between``
    [start, stop) intervals fails with http_5xx, every other one succeeds."""
    arrival_at = 0.0025 + np.arange(int(end_s * rate_per_s)) / rate_per_s
    arrival_at = arrival_at[arrival_at < end_s - latency_s]
    end_at = arrival_at + latency_s
    failed = np.zeros(len(arrival_at), bool)
    for start, stop in fail_between:
        failed |= (end_at >= start) & (end_at < stop)
    error = np.where(failed, ERROR_CODE["http_5xx"], SUCCESS)
    touched = np.zeros(len(arrival_at), bool)
    if touched_every:
        touched[::touched_every] = True
    return make_requests(arrival_at, end_at, error, touched)


def fault(start_s: float, end_s: float) -> FaultWindow:
    return FaultWindow(kind="db_lock", start_at=start_s, end_at=end_s, target="orders.items",
                       touched_routes=("a",))


def summarized(result: RunResult) -> dict:
    summarize(result)
    return result.summary


# ------------------------------------------------------ summary definitions


def test_population_excludes_warmup_and_arrivals_at_or_after_the_end():
    req = make_requests(
        arrival_at=[0.5, 1.99, 2.0, 3.0, 9.0, 10.0, 10.5],
        end_at=[0.6, 2.1, 2.5, 3.2, 9.1, np.nan, np.nan],
        error=[0, 0, 0, ERROR_CODE["http_5xx"], 0, INCOMPLETE, INCOMPLETE])
    s = summarized(make_result(req, end_s=10.0, warmup_s=2.0))
    # population: arrivals 2.0, 3.0, 9.0 (>= warm-up, < end)
    assert s["duration_s"] == 8.0
    assert s["offered_rps"] == pytest.approx(3 / 8.0)
    assert s["goodput_rps"] == pytest.approx(2 / 8.0)
    assert s["success_rate"] == pytest.approx(2 / 3, abs=1e-6)
    assert s["incomplete"] == 0
    assert s["errors"]["http_5xx"] == 1


def test_incomplete_requests_count_with_their_censored_age():
    req = make_requests(arrival_at=[1.0, 7.0], end_at=[1.010, np.nan], error=[SUCCESS, INCOMPLETE])
    s = summarized(make_result(req, end_s=10.0))
    assert s["incomplete"] == 1
    assert s["success_rate"] == 0.5
    lat_ms = np.array([10.0, 3000.0])
    assert s["p50_ms"] == pytest.approx(np.percentile(lat_ms, 50), abs=1e-3)
    assert s["p999_ms"] == pytest.approx(np.percentile(lat_ms, 99.9), abs=1e-3)
    assert s["p99_success_ms"] == pytest.approx(10.0, abs=1e-3)


def test_percentiles_are_numpy_linear_over_the_population():
    rng = np.random.default_rng(3)
    arrival = np.sort(rng.uniform(0, 9, 1001))
    lat_s = rng.exponential(0.05, 1001)
    error = np.where(rng.random(1001) < 0.2, ERROR_CODE["client_timeout"], SUCCESS)
    s = summarized(make_result(make_requests(arrival, arrival + lat_s, error), end_s=10.0))
    lat_ms = lat_s * 1000.0
    for key, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("p999_ms", 99.9)):
        assert s[key] == pytest.approx(np.percentile(lat_ms, q, method="linear"), abs=1e-3)
    ok = error == SUCCESS
    assert s["p99_success_ms"] == pytest.approx(np.percentile(lat_ms[ok], 99), abs=1e-3)


def test_empty_population_gives_none_percentiles_and_zero_rates():
    req = make_requests(arrival_at=[0.5], end_at=[0.6], error=[SUCCESS])
    s = summarized(make_result(req, end_s=10.0, warmup_s=1.0))
    assert s["offered_rps"] == 0.0 and s["goodput_rps"] == 0.0 and s["success_rate"] == 0.0
    assert s["attempts_per_request"] == 0.0
    for key in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "p99_success_ms"):
        assert s[key] is None
    assert s["outcome"] == "stable"
    json.dumps(s)


def test_attempts_per_request_counts_attempt_records_of_the_population():
    req = make_requests(arrival_at=[0.5, 2.0, 3.0], end_at=[0.7, 2.5, 3.5], error=[0, 0, 0],
                        attempts=[3, 2, 1])
    att = empty_columns(ATTEMPT_COLUMNS, 6)
    att["request_id"] = np.array([0, 0, 0, 1, 1, 2])
    att["attempt"] = np.array([0, 1, 2, 0, 1, 0])
    att["start_at"] = np.array([0.5, 0.55, 0.65, 2.0, 2.2, 3.0])
    att["end_at"] = att["start_at"] + 0.05
    s = summarized(make_result(req, end_s=10.0, warmup_s=1.0, attempts=att))
    assert s["attempts_per_request"] == pytest.approx(3 / 2)   # requests 1 and 2: 2 + 1 attempts


def test_errors_dict_has_every_kind_even_at_zero():
    kinds = ["client_timeout", "client_timeout", "eof", "http_4xx"]
    req = make_requests(arrival_at=[1, 2, 3, 4, 5], end_at=[1.5, 2.5, 3.5, 4.5, 5.5],
                        error=[ERROR_CODE[k] for k in kinds] + [SUCCESS])
    s = summarized(make_result(req))
    assert list(s["errors"]) == list(ERROR_KINDS)
    assert s["errors"] == {k: {"client_timeout": 2, "eof": 1, "http_4xx": 1}.get(k, 0) for k in ERROR_KINDS}
    assert all(type(v) is int for v in s["errors"].values())


def test_wasted_work_fraction_and_zero_handler_time():
    req = make_requests([1.0], [1.1], [SUCCESS])
    s = summarized(make_result(req, counters={"events": 10.0, "handler_s": 8.0, "wasted_handler_s": 2.0}))
    assert s["wasted_work_fraction"] == 0.25
    s = summarized(make_result(req, counters={"events": 10.0}))
    assert s["wasted_work_fraction"] == 0.0


def test_level_maxima_take_the_engine_exact_peak_when_larger():
    t = np.arange(0, 10.01, 0.1)
    levels = {"time_s": t, "alive": np.ones_like(t), "server_connections": np.full_like(t, 5.0),
              "accept_queue": np.zeros_like(t), "open_fds": np.full_like(t, 9.0),
              "goroutines": np.full_like(t, 11.0), "memory_mib": np.full_like(t, 40.25),
              "cpu_utilization": np.linspace(0, 0.8, len(t))}
    levels["server_connections"][50] = 17.0
    counters = {"events": 1.0, "peak_server_connections": 12.0, "peak_open_fds": 30.0,
                "peak_memory_mib": 41.5}
    s = summarized(make_result(make_requests([1.0], [1.1], [0]), levels=levels, counters=counters))
    assert s["max_server_connections"] == 17          # sampled peak is larger
    assert s["max_open_fds"] == 30                    # exact peak between samples is larger
    assert s["max_goroutines"] == 11
    assert s["max_accept_queue"] == 0
    assert s["peak_memory_mib"] == 41.5
    assert s["max_cpu_utilization"] == pytest.approx(0.8)
    assert type(s["max_server_connections"]) is int


def test_summary_keys_order_and_json_types():
    prov = {"stormsim": "0.1.0", "seed": np.int64(7), "hash": "abc", "shape": (1, 2)}
    req = steady_traffic(10.0)
    s = summarized(make_result(req, provenance=prov))
    assert tuple(s) == SUMMARY_KEYS
    text = json.dumps(s, allow_nan=False)
    assert json.loads(text)["provenance"] == {"stormsim": "0.1.0", "seed": 7, "hash": "abc", "shape": [1, 2]}
    assert s["scenario"] == "synthetic" and s["seed"] == 7 and s["events"] == 1234 and s["wall_s"] == 0.5


def test_summarize_is_deterministic():
    a = make_result(steady_traffic(30.0, fail_between=[(10.0, 30.0)]), end_s=30.0,
                    milestones=Milestones(trigger_at_s=9.0, faults=[fault(9.0, 12.0)], end_at_s=30.0))
    b = make_result(steady_traffic(30.0, fail_between=[(10.0, 30.0)]), end_s=30.0,
                    milestones=Milestones(trigger_at_s=9.0, faults=[fault(9.0, 12.0)], end_at_s=30.0))
    summarize(a)
    summarize(b)
    assert json.dumps(a.summary) == json.dumps(b.summary)
    for key in a.windows:
        np.testing.assert_array_equal(a.windows[key], b.windows[key])


# ------------------------------------------------------------------- windows


def test_windows_bucket_right_closed_on_the_sampling_grid():
    req = make_requests(
        arrival_at=[0.0, 0.1, 0.15, 0.2, 0.25, 0.3],
        end_at=[0.05, 0.3, 0.2, 0.45, np.nan, 0.31],
        error=[SUCCESS, SUCCESS, ERROR_CODE["eof"], ERROR_CODE["client_timeout"], INCOMPLETE, SUCCESS],
        touched=[False, True, False, False, False, True])
    att = first_attempts(req)
    retry = empty_columns(ATTEMPT_COLUMNS, 1)
    retry["request_id"][:] = 2
    retry["attempt"][:] = 1
    retry["start_at"][:] = 0.2
    att = {k: np.concatenate([att[k], retry[k]]) for k in att}
    result = make_result(req, end_s=0.5, attempts=att)
    summarize(result)
    w = result.windows
    np.testing.assert_allclose(w["time_s"], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    # bucket (t - 0.1, t]: an arrival at 0.1 belongs to the bucket keyed 0.1
    assert w["arrivals"].tolist() == [1, 1, 2, 2, 0, 0]
    assert w["successes"].tolist() == [0, 1, 0, 1, 1, 0]     # completions 0.05, 0.3, 0.31
    assert w["failures"].tolist() == [0, 0, 1, 0, 0, 1]       # 0.2 (eof), 0.45 (timeout)
    assert w["failures.eof"].tolist() == [0, 0, 1, 0, 0, 0]
    assert w["failures.client_timeout"].tolist() == [0, 0, 0, 0, 0, 1]
    assert w["failures.http_5xx"].sum() == 0
    assert w["retries"].tolist() == [0, 0, 1, 0, 0, 0]
    assert w["arrivals_touched"].tolist() == [0, 1, 0, 1, 0, 0]
    assert w["arrivals_untouched"].tolist() == [1, 0, 2, 1, 0, 0]
    assert w["successes_touched"].tolist() == [0, 0, 0, 1, 1, 0]      # 0.3 and 0.31
    assert w["successes_untouched"].tolist() == [0, 1, 0, 0, 0, 0]    # 0.05
    # latency of completions in (0.3, 0.4]: 0.31 - 0.3 = 10 ms
    assert w["p50_ms"][4] == pytest.approx(10.0)
    assert np.isnan(w["p50_ms"][0]) and np.isnan(w["p99_ms"][0])
    assert w["p99_ms"][1] == pytest.approx(50.0)
    assert set(w) == set(WINDOW_SERIES)
    assert list(w) == list(WINDOW_SERIES)


def test_window_grid_ends_at_an_off_grid_end():
    req = make_requests([0.05, 0.33], [0.06, 0.34], [SUCCESS, SUCCESS])
    result = make_result(req, end_s=0.35)
    summarize(result)
    np.testing.assert_allclose(result.windows["time_s"], [0.0, 0.1, 0.2, 0.3, 0.35])
    assert result.windows["successes"].tolist() == [0, 1, 0, 0, 1]


def test_window_percentiles_match_numpy_per_bucket():
    rng = np.random.default_rng(11)
    arrival = np.sort(rng.uniform(0, 4.5, 3000))
    lat = rng.lognormal(-3, 1, 3000)
    end = arrival + lat
    keep = end < 5.0
    req = make_requests(arrival[keep], end[keep], np.zeros(keep.sum(), int))
    result = make_result(req, end_s=5.0, sample_interval_s=0.5)
    summarize(result)
    grid = result.windows["time_s"]
    for k in range(1, len(grid)):
        in_bucket = (end[keep] > grid[k - 1]) & (end[keep] <= grid[k])
        lat_ms = lat[keep][in_bucket] * 1000
        for key, q in (("p50_ms", 50), ("p99_ms", 99)):
            expected = np.percentile(lat_ms, q) if lat_ms.size else np.nan
            np.testing.assert_allclose(result.windows[key][k], expected, rtol=1e-12)


def test_sliding_window_rates_over_the_trailing_collapse_window():
    req = steady_traffic(5.0, touched_every=4)
    result = make_result(req, end_s=5.0, outcome=OutcomeConfig(collapse_window=0.5))
    summarize(result)
    w = result.windows
    k = int(np.flatnonzero(np.isclose(w["time_s"], 2.0))[0])
    # 50 arrivals in (1.5, 2.0], a quarter of them touched: 37 or 38 untouched
    untouched = ~req["touched"]
    expected = np.sum(untouched & (req["arrival_at"] > 1.5) & (req["arrival_at"] <= 2.0)) / 0.5
    assert w["offered_untouched_rps"][k] == pytest.approx(expected)
    assert w["goodput_untouched_rps"][k] == pytest.approx(expected)


# -------------------------------------------------------------------- collapse


COLLAPSE = OutcomeConfig(collapse_window=1.0, collapse_fraction=0.5, collapse_hold=2.0,
                         recovery_fraction=0.9, watch=30.0)


def test_goodput_drop_collapses_at_the_first_held_instant():
    # 100 req/s; successes stop at 10.0. Trailing goodput over (t - 1, t] is (11 - t) * 100,
    # offered 100: below half first at t = 10.6 (at 10.5 it is exactly half, not below).
    req = steady_traffic(40.0, fail_between=[(10.0, 40.0)])
    ms = Milestones(trigger_at_s=9.0, faults=[fault(9.0, 40.0)], end_at_s=40.0)
    s = summarized(make_result(req, end_s=40.0, milestones=ms, outcome=COLLAPSE))
    assert s["trigger_at_s"] == 9.0
    assert s["collapse_at_s"] == pytest.approx(10.6)
    assert s["collapse_time_s"] == pytest.approx(1.6)
    assert s["recovered_at_s"] is None


def test_a_drop_shorter_than_the_hold_is_not_a_collapse():
    # below from 10.6 to 11.9 (successes resume at 11.5; at 12.0 goodput is half again): 1.3 s < 2 s
    req = steady_traffic(40.0, fail_between=[(10.0, 11.5)])
    ms = Milestones(trigger_at_s=9.0, faults=[fault(9.0, 11.5)], end_at_s=40.0)
    s = summarized(make_result(req, end_s=40.0, milestones=ms, outcome=COLLAPSE))
    assert s["collapse_at_s"] is None
    assert s["collapse_time_s"] is None
    assert s["outcome"] == "stable"


def test_a_drop_held_exactly_the_hold_time_collapses():
    # successes resume at 12.2: below at every grid instant of [10.6, 12.6], i.e. for exactly 2 s
    req = steady_traffic(40.0, fail_between=[(10.0, 12.2)])
    ms = Milestones(trigger_at_s=9.0, faults=[fault(9.0, 12.2)], end_at_s=40.0)
    s = summarized(make_result(req, end_s=40.0, milestones=ms, outcome=COLLAPSE))
    assert s["collapse_at_s"] == pytest.approx(10.6)
    # successes resume at 12.1: below over [10.6, 12.5] only, 1.9 s
    req = steady_traffic(40.0, fail_between=[(10.0, 12.1)])
    s = summarized(make_result(req, end_s=40.0, milestones=ms, outcome=COLLAPSE))
    assert s["collapse_at_s"] is None


def test_a_longer_drop_collapses_then_recovers():
    # successes stop at 10.0 and resume at 13.5: below at 10.6 .. 13.9 (> 2 s)
    req = steady_traffic(40.0, fail_between=[(10.0, 13.5)])
    ms = Milestones(trigger_at_s=9.0, faults=[fault(9.0, 13.5)], end_at_s=40.0)
    s = summarized(make_result(req, end_s=40.0, milestones=ms, outcome=COLLAPSE))
    assert s["collapse_at_s"] == pytest.approx(10.6)
    # healthy again (>= 90 of 100 in the trailing second) from 13.5 + 0.9 = 14.4
    assert s["recovered_at_s"] == pytest.approx(14.4)
    assert s["outcome"] == "recovered"


def test_a_drop_before_the_trigger_is_not_judged():
    req = steady_traffic(40.0, fail_between=[(2.0, 8.0)])
    ms = Milestones(trigger_at_s=20.0, faults=[fault(20.0, 25.0)], end_at_s=40.0)
    s = summarized(make_result(req, end_s=40.0, milestones=ms, outcome=COLLAPSE))
    assert s["collapse_at_s"] is None and s["outcome"] == "stable"


def test_a_drop_too_close_to_the_end_to_hold_is_not_a_collapse():
    req = steady_traffic(12.0, fail_between=[(10.0, 12.0)])
    ms = Milestones(trigger_at_s=9.0, faults=[fault(9.0, 12.0)], end_at_s=12.0)
    s = summarized(make_result(req, end_s=12.0, milestones=ms, outcome=COLLAPSE))
    assert s["collapse_at_s"] is None   # below from 10.6, but 10.6 + 2 s is past the end


def test_a_kill_is_a_collapse_at_the_kill_instant():
    # killed at 20.37 (goodput still fine), restarted at 22.0, successes again from 22.0
    req = steady_traffic(40.0, fail_between=[(20.37, 22.0)])
    ms = Milestones(trigger_at_s=15.0, faults=[fault(15.0, 21.0)], kills=[20.37], restarts=[22.0],
                    oom_killed_at_s=20.37, end_at_s=40.0)
    s = summarized(make_result(req, end_s=40.0, milestones=ms, outcome=COLLAPSE))
    assert s["collapse_at_s"] == pytest.approx(20.37)
    assert s["collapse_time_s"] == pytest.approx(5.37)
    assert s["oom_killed_at_s"] == pytest.approx(20.37)
    assert s["crashes"] == 1 and s["crash_loop"] is False
    # 90 successes in the trailing second at 22.9
    assert s["recovered_at_s"] == pytest.approx(22.9)
    assert s["outcome"] == "recovered"


def test_a_kill_before_the_trigger_is_not_the_collapse():
    req = steady_traffic(40.0)
    ms = Milestones(trigger_at_s=15.0, faults=[fault(15.0, 16.0)], kills=[5.0], restarts=[5.05],
                    end_at_s=40.0)
    s = summarized(make_result(req, end_s=40.0, milestones=ms, outcome=COLLAPSE))
    assert s["collapse_at_s"] is None and s["crashes"] == 1


def test_without_a_fault_collapse_is_judged_after_warmup_plus_window():
    req = steady_traffic(40.0, fail_between=[(0.0, 40.0)])
    s = summarized(make_result(req, end_s=40.0, warmup_s=5.0, outcome=COLLAPSE))
    assert s["trigger_at_s"] is None
    assert s["collapse_at_s"] == pytest.approx(6.0)
    assert s["collapse_time_s"] is None
    assert s["outcome"] == "metastable"   # no fault left to wait for: vacuously every fault ended


def test_zero_offered_is_no_evidence_of_collapse():
    # nothing arrives between 10 and 20: goodput 0 of offered 0 is not below
    req = steady_traffic(40.0)
    keep = (req["arrival_at"] < 10.0) | (req["arrival_at"] >= 20.0)
    req = {k: v[keep] for k, v in req.items()}
    ms = Milestones(trigger_at_s=9.0, faults=[fault(9.0, 20.0)], end_at_s=40.0)
    s = summarized(make_result(req, end_s=40.0, milestones=ms, outcome=COLLAPSE))
    assert s["collapse_at_s"] is None


# -------------------------------------------------------- touched and untouched


def test_collapse_is_judged_on_untouched_traffic():
    # every touched request fails from 10 s on; untouched traffic is healthy: no collapse
    req = steady_traffic(40.0, touched_every=2)
    late = req["end_at"] >= 10.0
    req["error"][req["touched"] & late] = ERROR_CODE["client_timeout"]
    ms = Milestones(trigger_at_s=9.0, faults=[fault(9.0, 40.0)], end_at_s=40.0)
    result = make_result(req, end_s=40.0, milestones=ms, outcome=COLLAPSE)
    s = summarized(result)
    assert s["success_rate"] < 0.8
    assert s["collapse_at_s"] is None and s["outcome"] == "stable"
    # the collapse series carry untouched traffic only
    k = int(np.flatnonzero(np.isclose(result.windows["time_s"], 30.0))[0])
    assert result.windows["offered_untouched_rps"][k] == pytest.approx(50.0)
    assert result.windows["goodput_untouched_rps"][k] == pytest.approx(50.0)


def test_a_fault_touching_everything_is_judged_on_all_traffic():
    req = steady_traffic(40.0, fail_between=[(10.0, 40.0)])
    req["touched"][:] = True
    ms = Milestones(trigger_at_s=9.0, faults=[fault(9.0, 40.0)], end_at_s=40.0)
    result = make_result(req, end_s=40.0, milestones=ms, outcome=COLLAPSE)
    s = summarized(result)
    assert s["collapse_at_s"] == pytest.approx(10.6)
    assert result.windows["arrivals_untouched"].sum() == 0
    assert result.windows["offered_untouched_rps"].max() == pytest.approx(100.0)


def test_untouched_requests_only_during_warmup_still_mean_all_traffic():
    req = steady_traffic(40.0, fail_between=[(10.0, 40.0)])
    req["touched"][req["arrival_at"] >= 5.0] = True
    ms = Milestones(trigger_at_s=9.0, faults=[fault(9.0, 40.0)], end_at_s=40.0)
    s = summarized(make_result(req, end_s=40.0, warmup_s=5.0, milestones=ms, outcome=COLLAPSE))
    assert s["collapse_at_s"] == pytest.approx(10.6)


# ---------------------------------------------------------------- recovery


def test_recovery_needs_the_process_alive_over_the_hold():
    # goodput looks healthy from 14.4 on, but the process is killed at 15.0 and back at 16.0;
    # the first instant alive for the whole [t, t + 2] and healthy throughout is 16.9.
    req = steady_traffic(40.0, fail_between=[(10.0, 13.5), (15.0, 16.0)])
    ms = Milestones(trigger_at_s=9.0, faults=[fault(9.0, 13.5)], kills=[15.0], restarts=[16.0],
                    end_at_s=40.0)
    s = summarized(make_result(req, end_s=40.0, milestones=ms, outcome=COLLAPSE))
    assert s["collapse_at_s"] == pytest.approx(10.6)
    assert s["recovered_at_s"] == pytest.approx(16.9)
    assert s["outcome"] == "recovered"


def test_recovery_uses_alive_even_when_goodput_is_fine():
    # the engine's records say fine, but a kill without restart leaves the process dead
    req = steady_traffic(40.0, fail_between=[(10.0, 13.5)])
    ms = Milestones(trigger_at_s=9.0, faults=[fault(9.0, 13.5)], kills=[14.0], end_at_s=40.0,
                    alive_at_end=False)
    s = summarized(make_result(req, end_s=40.0, milestones=ms, outcome=COLLAPSE))
    assert s["recovered_at_s"] is None
    assert s["outcome"] == "crashed"


# ------------------------------------------------------------------ outcomes


def outcome_of(fail_between, *, end_s=60.0, fault_end_s=12.0, kills=(), restarts=(), alive=True):
    req = steady_traffic(end_s, fail_between=fail_between)
    ms = Milestones(trigger_at_s=9.0, faults=[fault(9.0, fault_end_s)], kills=list(kills),
                    restarts=list(restarts), end_at_s=end_s, alive_at_end=alive)
    return summarized(make_result(req, end_s=end_s, milestones=ms, outcome=COLLAPSE))


def test_outcome_stable():
    s = outcome_of([])
    assert s["outcome"] == "stable" and s["collapse_at_s"] is None


def test_outcome_recovered():
    s = outcome_of([(10.0, 14.0)])
    assert s["outcome"] == "recovered"
    assert s["collapse_at_s"] == pytest.approx(10.6) and s["recovered_at_s"] == pytest.approx(14.9)


def test_outcome_crashed():
    s = outcome_of([(20.37, 60.0)], kills=[20.37], alive=False)
    assert s["outcome"] == "crashed"
    assert s["collapse_at_s"] == pytest.approx(20.37) and s["crashes"] == 1


def test_outcome_metastable():
    # the fault ended at 12 s, 48 s before the end (watch 30 s); goodput never came back
    s = outcome_of([(10.0, 60.0)], fault_end_s=12.0)
    assert s["outcome"] == "metastable" and s["recovered_at_s"] is None


def test_outcome_metastable_needs_every_fault_over_watch_before_the_end():
    s = outcome_of([(10.0, 60.0)], fault_end_s=30.0)     # 30 s before the end: just enough
    assert s["outcome"] == "metastable"
    s = outcome_of([(10.0, 60.0)], fault_end_s=31.0)
    assert s["outcome"] == "undecided"


def test_outcome_undecided_when_the_fault_lasts_to_the_end():
    s = outcome_of([(10.0, 60.0)], fault_end_s=60.0)
    assert s["outcome"] == "undecided"


def test_crash_loop_alive_at_the_end_is_metastable():
    # killed at 20, 25, 30; restarted 2 s after each; never recovers; alive at the end
    s = outcome_of([(10.0, 60.0)], kills=[20.0, 25.0, 30.0], restarts=[22.0, 27.0, 32.0])
    assert s["crashes"] == 3 and s["crash_loop"] is True
    assert s["collapse_at_s"] == pytest.approx(10.6)
    assert s["outcome"] == "metastable"


def test_crash_loop_that_looked_recovered_between_kills_is_not_recovered():
    # goodput fine while up (restarts every 5 s); recovery is seen between kills, but a kill after it
    fail = [(20.0, 22.0), (30.0, 32.0), (40.0, 42.0)]
    s = outcome_of(fail, kills=[20.0, 30.0, 40.0], restarts=[22.0, 32.0, 42.0], fault_end_s=15.0)
    assert s["collapse_at_s"] == pytest.approx(20.0)
    assert s["recovered_at_s"] == pytest.approx(22.9)
    assert s["crash_loop"] is True
    assert s["outcome"] == "metastable"


def test_crash_loop_dead_at_the_end_is_crashed():
    s = outcome_of([(20.0, 22.0), (30.0, 60.0)], kills=[20.0, 30.0], restarts=[22.0], alive=False)
    assert s["crash_loop"] is True and s["outcome"] == "crashed"


def test_every_outcome_value_is_covered():
    assert set(OUTCOMES) == {"stable", "recovered", "crashed", "metastable", "undecided"}


def test_truncation_and_milestones_pass_through():
    req = steady_traffic(10.0)
    ms = Milestones(end_at_s=7.5, truncated=True, truncated_by="events", fd_exhausted_at_s=3.25)
    s = summarized(make_result(req, end_s=10.0, milestones=ms))
    assert s["truncated"] is True and s["truncated_by"] == "events"
    assert s["fd_exhausted_at_s"] == 3.25
    assert s["duration_s"] == 7.5
    # arrivals at or after the (truncated) end are outside the population
    assert s["offered_rps"] == pytest.approx(np.sum(req["arrival_at"] < 7.5) / 7.5, abs=1e-3)


# ------------------------------------------------------------ contract and docs


POLICY_KEYS = ("faults_end_at_s", "goodput_during_fault_rps", "healthy_again_at_s", "time_to_recover_s",
               "breaker_trips", "first_trip_at_s", "time_to_trip_s", "breakers_closed_at_s",
               "retries_denied", "shed_rejected", "shed_dropped")
"""Our additions for comparing resilience policies (docs/outputs.md), not in design.md §4."""
TO_SERVER_KEYS = ("to_server_mean_ms", "to_server_p50_ms", "to_server_p99_ms", "to_server_pool_wait_fraction",
                  "to_server_connect_fraction", "to_server_tls_fraction", "to_server_backlog_fraction",
                  "to_server_flow_wait_fraction", "to_server_transit_fraction", "attempts_reached_server",
                  "attempts_never_reached_server")
"""Our additions: the time before the server sees an attempt (docs/outputs.md), not in design.md §4."""
EXTRA_KEYS = ("scenario", "seed", "duration_s", "max_accept_queue", "events", "wall_s", "provenance",
              *POLICY_KEYS, *TO_SERVER_KEYS)


def design_table_keys() -> list[str]:
    text = DESIGN_MD.read_text(encoding="utf-8")
    section = text.split("## 4.", 1)[1].split("\n## ", 1)[0]
    keys: list[str] = []
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            keys += re.findall(r"`([a-z0-9_]+)`", first_cell)
    return keys


@pytest.mark.skipif(not DESIGN_MD.exists(), reason="design.md lives outside the project")
def test_summary_keys_match_design_md_section_4():
    design = design_table_keys()
    assert design, "no keys parsed from design.md §4"
    assert set(SUMMARY_KEYS) == set(design) | set(EXTRA_KEYS)
    # the design's keys appear in the design's order
    assert [k for k in SUMMARY_KEYS if k in design] == design
    assert SUMMARY_KEYS[-3:] == ("events", "wall_s", "provenance")


def test_summary_keys_are_the_agreed_list():
    assert SUMMARY_KEYS == (
        "scenario", "seed", "duration_s", "offered_rps", "goodput_rps", "success_rate",
        "p50_ms", "p90_ms", "p99_ms", "p999_ms", "p99_success_ms", "attempts_per_request",
        "incomplete", "errors", *TO_SERVER_KEYS, "max_server_connections", "max_accept_queue", "max_open_fds",
        "max_goroutines", "peak_memory_mib", "max_cpu_utilization", "wasted_work_fraction",
        "trigger_at_s", "collapse_at_s", "collapse_time_s", "recovered_at_s", "outcome",
        *POLICY_KEYS, "crashes", "crash_loop", "fd_exhausted_at_s", "oom_killed_at_s", "truncated",
        "truncated_by", "events", "wall_s", "provenance")


def test_window_series_cover_every_error_kind():
    for kind in ERROR_KINDS:
        assert f"failures.{kind}" in WINDOW_SERIES


def test_docs_mention_every_summary_key_window_series_and_level_column():
    text = OUTPUTS_MD.read_text(encoding="utf-8")
    names = list(SUMMARY_KEYS) + list(WINDOW_SERIES) + list(LEVEL_COLUMNS) + list(ERROR_KINDS) + list(OUTCOMES)
    missing = [name for name in names if f"`{name}`" not in text]
    assert not missing, f"docs/outputs.md does not mention: {missing}"
    for output_file in ("summary.json", "timeseries.csv", "requests.parquet", "attempts.parquet", "report.html"):
        assert output_file in text


# ------------------------------------------------------- policy comparison keys


def test_healthy_again_is_judged_from_the_end_of_the_faults_without_a_collapse():
    """Failures between 3 s and 3.5 s (too short to collapse with H = 2 s); the fault window
    is [2 s, 3 s]. Healthy again: the first grid instant t >= 3 s with goodput >= 90% of the
    offered rate over (u - 1 s, u] for every u in [t, t + 2 s]. Failures complete until
    3.5 s, so the trailing window is healthy again from u with 0.9 x 100 successes: the
    window (u - 1, u] must hold >= 90 of its 100 arrivals' completions; the 50 failures
    leave it from u = 3.5 + 1 - 0.1 = 4.4 s on: 4.4 s is the first such u (the 0.1 s
    slack is the 10 failures the rule tolerates)."""
    milestones = Milestones(end_at_s=10.0, trigger_at_s=2.0, faults=[fault(2.0, 3.0)])
    s = summarized(make_result(steady_traffic(10.0, fail_between=[(3.0, 3.5)]), milestones=milestones))
    assert s["collapse_at_s"] is None and s["outcome"] == "stable"
    assert s["faults_end_at_s"] == 3.0
    assert s["healthy_again_at_s"] == pytest.approx(4.4)
    assert s["time_to_recover_s"] == pytest.approx(1.4)
    # successes completing in [2, 3]: 100 rps, all succeed then
    assert s["goodput_during_fault_rps"] == pytest.approx(100.0, abs=1.0)


def test_no_faults_means_no_fault_keys():
    s = summarized(make_result(steady_traffic(5.0)))
    for key in ("faults_end_at_s", "goodput_during_fault_rps", "healthy_again_at_s", "time_to_recover_s",
                "first_trip_at_s", "time_to_trip_s", "breakers_closed_at_s"):
        assert s[key] is None, key
    assert s["breaker_trips"] == 0 and s["retries_denied"] == 0
    assert s["shed_rejected"] == 0 and s["shed_dropped"] == 0


def test_breaker_trip_keys_follow_the_transitions_of_every_client_process():
    """Two processes: process 0 trips at 2.4 s (after the 2 s trigger), process 1 at 2.6 s;
    a trip at 1.0 s (before the trigger) counts as a trip but not as the first. The last
    breaker to close again does so at 9.0 s: breakers_closed_at_s = 9.0."""
    transitions = [(1.0, 0, 1, "open"), (1.5, 0, 1, "half_open"), (1.6, 0, 1, "closed"),
                   (2.4, 0, 0, "open"), (2.6, 0, 1, "open"), (7.4, 0, 0, "half_open"),
                   (7.5, 0, 0, "closed"), (8.0, 0, 1, "half_open"), (9.0, 0, 1, "closed")]
    milestones = Milestones(end_at_s=10.0, trigger_at_s=2.0, faults=[fault(2.0, 6.0)],
                            breaker_transitions=transitions)
    s = summarized(make_result(steady_traffic(10.0), milestones=milestones,
                               counters={"events": 1.0, "retries_denied": 12.0, "shed_rejected": 3.0}))
    assert s["breaker_trips"] == 3
    assert s["first_trip_at_s"] == 2.4
    assert s["time_to_trip_s"] == pytest.approx(0.4)
    assert s["breakers_closed_at_s"] == 9.0
    assert s["retries_denied"] == 12 and s["shed_rejected"] == 3 and s["shed_dropped"] == 0


def test_a_breaker_still_open_at_the_end_leaves_breakers_closed_at_null():
    transitions = [(2.4, 0, 0, "open"), (7.4, 0, 0, "half_open"), (7.5, 0, 0, "closed"), (8.0, 0, 0, "open")]
    milestones = Milestones(end_at_s=10.0, trigger_at_s=2.0, faults=[fault(2.0, 6.0)],
                            breaker_transitions=transitions)
    s = summarized(make_result(steady_traffic(10.0), milestones=milestones))
    assert s["breaker_trips"] == 2
    assert s["breakers_closed_at_s"] is None
