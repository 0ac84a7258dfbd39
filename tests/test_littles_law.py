"""Little's law on every shipped scenario, client side, from a run's own outputs.

The formulation holds exactly in the model and is checkable from what a run
returns. A logical request is in the system from its ``arrival_at`` until its
``end_at`` (NaN: still in flight at the end of the run), and the sampled level
``client_inflight`` counts exactly those requests. So, for any window [a, b]:

    integral over [a, b] of N(t) dt  =  sum over requests of |[arrival, end) ∩ [a, b]|

(L = lambda W in its sample-path form: the left side / (b - a) is the time-average
number in the system, the right side / (b - a) is the arrival rate times the mean
time in system, both clipped to the window). It holds whatever happens inside: retries,
timeouts, a server killed by OOM. Two checks per scenario:

1. Pointwise: at every sample instant t, the sampled ``client_inflight`` equals the
   number of records with arrival <= t < end. Exact; a request arriving or ending at
   the very instant of a sample may be counted either way, so the check brackets
   ties (lower count with strict inequalities, upper count with inclusive ones).
2. Little's law over three windows (the whole run; before the first fault; from the
   first fault to the end), with a and b sample instants. The left side comes from
   the samples (right-endpoint sum: N(t_k) x (t_k - t_{k-1})); the right side is exact
   from the records. The only allowed difference is the sampling error, bounded by
     Δ x (requests clipped at a or b)  +  5 σ,
   where Δ is the largest gap between samples. Why: a request inside the window is
   counted at the grid points it covers; with an arrival phase uniform against the grid
   (Poisson arrivals), a request of length d is covered by floor(d/Δ) or ceil(d/Δ)
   points, the latter with probability frac(d/Δ) = f, so its error has mean 0 and
   variance Δ² f (1 - f). Requests whose ends fall on the same instant (a kill resets
   every connection at once) have correlated errors, so their standard deviations are
   added within such a group before squaring: σ² = Σ_groups (Σ_i Δ sqrt(f_i (1 - f_i)))²,
   an upper bound whatever the correlation inside a group. A request clipped at an end
   of the window has a one-sided error of at most Δ, hence the first term. 5 σ is a
   two-sided normal tail of ~6e-7 per check.

The server-side level (``inflight_requests``) is not checked here: a kill drops its
handlers without a record, so its integral is not recoverable from the outputs
(tests/test_queueing.py checks it where it is: M/M/c, no kills).

Scenario files are globbed at test time (others add them), each with its variants;
runs longer than ``MAX_DURATION_S`` are shortened with a ``duration`` override.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from conftest import run_shipped
from experiments.catalog import shipped_scenarios
from sim.engine import run_scenario
from sim.result import RunResult
from sim.scenario_loader import load_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "experiments" / "scenarios"
MAX_DURATION_S = 60.0
Z = 5.0


def scenario_paths() -> list[Path]:
    return sorted(SCENARIOS.glob("*.yaml"))


def scenario_cases() -> list[tuple[Path, str | None]]:
    """Every scenario file, then each of its variants."""
    cases: list[tuple[Path, str | None]] = []
    for path in scenario_paths():
        cases.append((path, None))
        cases.extend((path, variant) for variant in load_scenario(path).variants)
    return cases


def case_id(case: tuple[Path, str | None]) -> str:
    path, variant = case
    return path.stem if variant is None else f"{path.stem}@{variant}"


def run_case(path: Path, variant: str | None) -> RunResult:
    """A run at the scenario's own seed; shipped scenarios come from the per-process cache of
    tests/conftest.py (shared with the golden and determinism tests; read-only)."""
    scenario = load_scenario(path, variant=variant)
    if scenario.duration > MAX_DURATION_S:
        return run_scenario(load_scenario(path, overrides=[f"duration={MAX_DURATION_S:g}s"], variant=variant))
    shipped = shipped_scenarios()
    if path.stem in shipped and Path(shipped[path.stem]).resolve() == path.resolve():
        return run_shipped(path.stem, variant)
    return run_scenario(scenario)


def in_system(result: RunResult) -> tuple[np.ndarray, np.ndarray]:
    """(arrival, end) of every logical request; end = +inf while still in flight at the end."""
    arrival = np.asarray(result.requests["arrival_at"], dtype=float)
    end = np.asarray(result.requests["end_at"], dtype=float)
    return arrival, np.where(np.isnan(end), np.inf, end)


def counts_at(arrival: np.ndarray, end: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) number of requests in the system at each instant of t, ties bracketed:
    lower = #{arrival < t < end}, upper = #{arrival <= t <= end}."""
    a = np.sort(arrival)
    e = np.sort(end)
    lower = np.searchsorted(a, t, side="left") - np.searchsorted(e, t, side="right")
    upper = np.searchsorted(a, t, side="right") - np.searchsorted(e, t, side="left")
    return lower, upper


def clipped_time(arrival: np.ndarray, end: np.ndarray, a: float, b: float) -> np.ndarray:
    return np.clip(np.minimum(end, b) - np.maximum(arrival, a), 0.0, None)


def sampling_bound(arrival: np.ndarray, end: np.ndarray, a: float, b: float, step: float) -> float:
    """Δ x (requests clipped at a or b) + Z σ (see the module docstring)."""
    overlaps = (arrival < b) & (end > a)
    clipped = overlaps & ((arrival <= a) | (end >= b))
    inside = overlaps & ~clipped
    d = end[inside] - arrival[inside]
    frac = d / step - np.floor(d / step)
    sd = step * np.sqrt(frac * (1.0 - frac))
    # group by end instant: errors of requests ending together may be fully correlated
    _, group = np.unique(end[inside], return_inverse=True)
    group_sd = np.bincount(group, weights=sd) if len(sd) else np.zeros(0)
    sigma = math.sqrt(float(np.sum(group_sd ** 2)))
    return step * float(clipped.sum()) + Z * sigma


def windows(result: RunResult) -> list[tuple[str, int, int]]:
    """(label, index of a, index of b) in the sample times."""
    t = result.levels["time_s"]
    last = len(t) - 1
    out = [("whole run", 0, last)]
    trigger = result.milestones.trigger_at_s
    if trigger is not None:
        k = int(np.searchsorted(t, trigger, side="right")) - 1   # last sample at or before the trigger
        if 0 < k < last:
            out.append(("before the first fault", 0, k))
            out.append(("from the first fault", k, last))
    return out


# two drills on the same 17-service graph as chaos-drills and @pod-eviction, which stay in the
# default run (~20 s of CPU each): these two run in the slow set
SLOW_CASES = {"chaos-drills@slow-etcd", "chaos-drills@pod-eviction-ejected"}


def default_cases() -> list:
    return [pytest.param(case, id=case_id(case), marks=pytest.mark.slow if case_id(case) in SLOW_CASES else ())
            for case in scenario_cases()]


@pytest.mark.parametrize("case", default_cases())
def test_littles_law_client_side(case: tuple[Path, str | None]) -> None:
    path, variant = case
    result = run_case(path, variant)
    assert not result.milestones.truncated, f"{case_id(case)}: run truncated by {result.milestones.truncated_by}"
    arrival, end = in_system(result)
    assert len(arrival) > 0, f"{case_id(case)}: no logical requests"
    t = np.asarray(result.levels["time_s"], dtype=float)
    level = np.asarray(result.levels["client_inflight"], dtype=float)
    assert len(t) >= 2 and len(level) == len(t)

    # 1. pointwise: the sampled level is the records' count at every sample instant
    lower, upper = counts_at(arrival, end, t)
    bad = np.flatnonzero((level < lower) | (level > upper))
    assert bad.size == 0, (
        f"{case_id(case)}: client_inflight disagrees with the request records at {bad.size} of {len(t)} "
        f"samples; first at t={t[bad[0]]:.6f}: sampled {level[bad[0]]:g}, records say "
        f"{lower[bad[0]]}..{upper[bad[0]]}")

    # 2. Little's law over windows, up to the sampling error
    step = float(np.max(np.diff(np.concatenate([[0.0], t]))))
    widths = np.diff(t)
    failures = []
    for label, ka, kb in windows(result):
        a, b = float(t[ka]), float(t[kb])
        lhs = float(np.sum(level[ka + 1:kb + 1] * widths[ka:kb]))      # ∫ N dt from the samples
        rhs = float(np.sum(clipped_time(arrival, end, a, b)))         # Σ clipped time in system
        bound = sampling_bound(arrival, end, a, b, step) + 1e-9 * max(1.0, rhs)
        line = (f"{label} [{a:.1f}, {b:.1f}] s: mean in system from levels {lhs / (b - a):.4f}, "
                f"from records {rhs / (b - a):.4f}, difference {abs(lhs - rhs) / (b - a):.4f} "
                f"> allowed {bound / (b - a):.4f}")
        if abs(lhs - rhs) > bound:
            failures.append(line)
    assert not failures, f"{case_id(case)}: " + "; ".join(failures)


def test_there_are_scenarios_to_check() -> None:
    assert scenario_paths(), f"no scenario files in {SCENARIOS}"


def test_sampling_bound_catches_a_wrong_level() -> None:
    """The bound is tight enough to matter: a level off by one request on average fails."""
    rng = np.random.default_rng(3)
    arrival = np.cumsum(rng.exponential(0.01, 20_000))          # 100/s for ~200 s
    end = arrival + rng.exponential(0.05, arrival.size)          # 50 ms in system
    step = 0.1
    t = np.arange(1, int(arrival[-1] / step)) * step
    lower, upper = counts_at(arrival, end, t)
    assert np.array_equal(lower, upper)                          # no ties with continuous times
    a, b = float(t[0]), float(t[-1])
    rhs = float(np.sum(clipped_time(arrival, end, a, b)))
    lhs = float(np.sum(lower[1:] * np.diff(t)))
    bound = sampling_bound(arrival, end, a, b, step)
    assert abs(lhs - rhs) <= bound
    assert abs((lower[1:] + 1) @ np.diff(t) - rhs) > bound       # one extra request in flight: caught
