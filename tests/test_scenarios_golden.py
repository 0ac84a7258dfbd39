"""Golden runs of the shipped scenarios, the S1 calibration targets, and the fix/no-fix story.

1. Golden figures: each shipped scenario and variant, at its default seed, must give
   exactly the figures in ``tests/golden/<scenario>.json`` (the model is deterministic).
2. S1 calibration (shared/scenarios.md) on seed-collapse, seeds 1..5.
3. The story the seed variants tell: which settings really bound the hold and which
   only look like they do; slowloris with and without ReadHeaderTimeout.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SHIPPED_CASES, SHIPPED_IDS, load_shipped, run_shipped
from sim.result import ERROR_CODE

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


def _load_regenerate():
    spec = importlib.util.spec_from_file_location("golden_regenerate", GOLDEN_DIR / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


regenerate = _load_regenerate()

HOW_TO_REGENERATE = (
    f"If the change is intended, regenerate the golden files with `{regenerate.REGENERATE}` "
    "and say in a sentence of the commit message why the golden figures changed.")


# ------------------------------------------------------------------ 1. golden figures


def test_every_shipped_scenario_has_a_golden_file_and_nothing_else_does():
    assert regenerate.golden_cases() == SHIPPED_CASES
    expected = {regenerate.golden_path(*case).name for case in SHIPPED_CASES}
    present = {p.name for p in GOLDEN_DIR.glob("*.json")}
    assert present == expected, (
        f"missing: {sorted(expected - present)}, stale: {sorted(present - expected)}. " + HOW_TO_REGENERATE)


@pytest.mark.parametrize("name, variant", SHIPPED_CASES, ids=SHIPPED_IDS)
def test_golden_figures(name, variant):
    path = regenerate.golden_path(name, variant)
    assert path.exists(), f"{path} is missing. " + HOW_TO_REGENERATE
    golden = json.loads(path.read_text(encoding="utf-8"))
    scenario = load_shipped(name, variant)
    assert golden["seed"] == scenario.seed, f"{path.name} was made with seed {golden['seed']}, " \
                                            f"the scenario's default is now {scenario.seed}. " + HOW_TO_REGENERATE
    result = run_shipped(name, variant)
    assert_fault_windows_within_the_run(result)
    actual = regenerate.golden_figures(result.summary)
    expected = golden["figures"]
    diffs = [f"  {key}: golden {expected.get(key)!r}, now {actual.get(key)!r}"
             for key in sorted(set(expected) | set(actual)) if expected.get(key) != actual.get(key)]
    assert not diffs, (f"{regenerate.case_id(name, variant)} at seed {scenario.seed} no longer matches "
                       f"{path.relative_to(GOLDEN_DIR.parent.parent)}:\n" + "\n".join(diffs) + "\n"
                       + HOW_TO_REGENERATE)


def assert_fault_windows_within_the_run(result) -> None:
    end = result.milestones.end_at_s
    if not result.scenario.faults:      # a fault-free scenario (the transport ones): nothing to place
        assert result.milestones.faults == [] and result.milestones.trigger_at_s is None
        return
    for window in result.milestones.faults:
        assert 0 <= window.start_at <= window.end_at <= end + 1e-9, window
    assert result.milestones.trigger_at_s == min(w.start_at for w in result.milestones.faults)


def test_golden_figures_round_as_documented():
    summary = dict(run_shipped("seed-collapse").summary)
    summary.update(peak_memory_mib=352.5449, p99_ms=13553.5001, success_rate=0.376449, collapse_at_s=None)
    figures = regenerate.golden_figures(summary)
    assert list(figures) == list(regenerate.FIGURES)
    assert figures["peak_memory_mib"] == 352.5
    assert figures["p99_ms"] == 13554 and isinstance(figures["p99_ms"], int)
    assert figures["success_rate"] == 0.3764
    assert figures["collapse_at_s"] is None
    assert json.loads(regenerate.dumps({"figures": figures}))["figures"] == figures


# ------------------------------------------------------------------ 2. S1 calibration


BASELINE = "seed-collapse"
CALIBRATION_SEEDS = [1, 2, 3, 4, 5]


@pytest.mark.parametrize("seed", CALIBRATION_SEEDS)
def test_s1_calibration_targets(seed):
    result = run_shipped(BASELINE, seed=seed)
    summary, levels = result.summary, result.levels
    trigger = summary["trigger_at_s"]
    assert trigger == 20.0
    # ~120 established connections before the trigger (60 clients x MaxIdleConnsPerHost 2)
    before = (levels["time_s"] > trigger - 5.0) & (levels["time_s"] <= trigger)
    assert before.sum() >= 45
    established = float(np.mean(levels["server_connections"][before]))
    assert 110 <= established <= 130, f"seed {seed}: {established:.1f} connections before the trigger"
    # >= 3,500 at the peak
    assert summary["max_server_connections"] >= 3500
    # the fds run out (EMFILE at accept), after the trigger
    assert summary["fd_exhausted_at_s"] is not None and summary["fd_exhausted_at_s"] > trigger
    assert summary["max_open_fds"] == result.scenario.services["api"].fd_limit
    # OOM kill 17 s +/- 3 s after the trigger
    assert summary["oom_killed_at_s"] is not None
    assert 14.0 <= summary["oom_killed_at_s"] - trigger <= 20.0, summary["oom_killed_at_s"]
    assert summary["outcome"] == "crashed" and summary["crashes"] == 1
    # CPU near saturation before death
    assert summary["max_cpu_utilization"] >= 0.95
    alive = levels["time_s"] < summary["oom_killed_at_s"]
    assert float(np.max(levels["cpu_utilization"][alive])) >= 0.95
    # the untouched routes collapse too, before the OOM kill
    assert summary["collapse_at_s"] is not None
    assert trigger <= summary["collapse_at_s"] < summary["oom_killed_at_s"]
    untouched_ok = (~result.requests["touched"] & (result.requests["error"] == 0)
                    & (result.requests["arrival_at"] > summary["collapse_at_s"]))
    offered = ~result.requests["touched"] & (result.requests["arrival_at"] > summary["collapse_at_s"])
    assert untouched_ok.sum() < 0.5 * offered.sum()


# ------------------------------------------------------------------ 3. the story


FD_LIMIT = 4096


def test_write_up_fix_crashes_like_the_baseline():
    """Four server timeouts (seed-server-timeouts): WriteTimeout cancels nothing."""
    base = run_shipped(BASELINE).summary
    fix = run_shipped("seed-server-timeouts")
    summary = fix.summary
    assert summary["outcome"] == "crashed"
    assert summary["fd_exhausted_at_s"] is not None and summary["oom_killed_at_s"] is not None
    assert summary["max_open_fds"] == base["max_open_fds"] == FD_LIMIT
    assert abs(summary["fd_exhausted_at_s"] - base["fd_exhausted_at_s"]) <= 3.0
    assert abs(summary["oom_killed_at_s"] - base["oom_killed_at_s"]) <= 3.0
    assert summary["max_server_connections"] >= 3500
    # every slow response is lost: report attempts that outlive WriteTimeout end in EOF ...
    attempts = fix.attempts
    eof = attempts["error"] == ERROR_CODE["eof"]
    assert eof.any()
    assert np.all(attempts["end_at"][eof] - attempts["start_at"][eof] >= 10.0)    # WriteTimeout
    assert not (run_shipped(BASELINE).attempts["error"] == ERROR_CODE["eof"]).any()
    # ... and no report that arrived after the trigger succeeds
    requests = fix.requests
    report = np.asarray(fix.route_names)[requests["route"]] == "report"
    after = requests["arrival_at"] >= summary["trigger_at_s"]
    assert not np.any(report & after & (requests["error"] == 0))


def test_short_client_timeout_with_handlers_ignoring_context_crashes():
    summary = run_shipped("seed-client-timeout-ignored").summary
    assert summary["outcome"] == "crashed"
    assert summary["oom_killed_at_s"] is not None and summary["fd_exhausted_at_s"] is not None
    assert summary["errors"]["client_timeout"] > 0
    assert summary["wasted_work_fraction"] > 0.1          # abandoned handlers keep running
    # with retries it adds load: more attempts per request than the baseline
    assert summary["attempts_per_request"] >= run_shipped(BASELINE).summary["attempts_per_request"]


@pytest.mark.parametrize("name", ["seed-db-deadline", "seed-client-timeout", "seed-timeouthandler"])
def test_fixes_that_bound_the_hold_do_not_crash(name):
    summary = run_shipped(name).summary
    assert summary["outcome"] in ("stable", "recovered"), summary["outcome"]
    assert summary["crashes"] == 0 and summary["oom_killed_at_s"] is None
    assert summary["fd_exhausted_at_s"] is None
    assert summary["max_open_fds"] < FD_LIMIT
    assert summary["truncated"] is False
    assert summary["success_rate"] > run_shipped(BASELINE).summary["success_rate"]


def test_read_header_timeout_cuts_slowloris_goroutines():
    without = run_shipped("slowloris").summary
    with_timeout = run_shipped("slowloris", "read-header-timeout").summary
    assert without["max_goroutines"] - with_timeout["max_goroutines"] >= 100
    assert with_timeout["max_server_connections"] < without["max_server_connections"]
    # the legitimate traffic is fine either way
    assert without["outcome"] == with_timeout["outcome"] == "stable"
    assert with_timeout["success_rate"] >= 0.999


# ------------------------------------------------------------------ fault windows


def test_touched_routes_name_service_and_route():
    """FaultWindow.touched_routes holds "service/route" names (shaped for service graphs)."""
    result = run_shipped(BASELINE)
    window = result.milestones.faults[0]
    assert window.touched_routes == ("api/report",)
