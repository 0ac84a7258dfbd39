"""The engine against queueing theory: M/M/1 and M/M/c over seeded replications.

A queueing model in stormsim: one service with ``cpu.cores = c`` (FCFS over c cores),
one route whose handler is one exponential CPU step of mean 1/mu, one client with
Poisson arrivals at rate lambda, no network time (``rtt: 0s``), connections that
are always reused, one instance, no retries, GC off. The time a logical request
spends in the system is then the sojourn time of an M/M/c customer.

Method: R replications (same seed, replication index 0..R-1: independent streams,
design.md §5) of one run each; a warm-up of 10% of the run is dropped; the statistic
is computed per replication over the requests that arrived in [warm-up, 0.98 x end)
(selected by arrival time, so the selection does not depend on the outcome, and
long enough before the end that every one of them has finished). The analytic value
must lie inside the two-sided 99% Student-t confidence interval of the R replication
values. No tolerance is added: the runs are long enough for the warm-up bias and the
quantile estimator's O(1/n) bias to be far below the CI half-width (checked by
longer runs: ``-m slow``). The seeds are fixed, so each test is deterministic; the 99%
level bounds the chance that a correct engine was unlucky with the seeds chosen.

Known results used (mean service 1/mu, rho = lambda / (c mu), a = lambda / mu):
- M/M/1: sojourn ~ Exponential(mu - lambda): mean W = 1 / (mu - lambda),
  P50 = W ln 2, P99 = W ln 100.
- M/M/c: P(wait) = Erlang C(c, a); mean wait in queue Wq = C / (c mu - lambda);
  W = Wq + 1/mu. Stormsim records sojourns, not waits, so the check on Wq is the
  check on W - 1/mu: the CI includes the service-time noise (small: sd 1/(mu sqrt n)).
- Little: L = lambda W, with L the time-average of the sampled ``inflight_requests``
  (handlers in flight on the server; with no network time, the requests in the system).
- With a client timeout T and handlers that keep running after the caller has gone,
  the queue is unchanged, so P(client_timeout) = P(sojourn > T) = exp(-(mu - lambda) T).

Cost: ~50 CPU-seconds for the default tests (~25 s with ``pytest -n 2`` on a quiet
2-core machine); the exhaustive grid (~7 CPU-minutes) is ``@pytest.mark.slow``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats

from sim.engine import run_scenario
from sim.result import ERROR_CODE
from sim.scenario_loader import scenario_from_dict

SEED = 20_240_611
CONFIDENCE = 0.99
MEAN_SERVICE_S = 0.010
WARMUP_FRACTION = 0.10
WINDOW_END_FRACTION = 0.98


# ---------------------------------------------------------------- analytic


def erlang_c(c: int, a: float) -> float:
    """P(an arrival waits) in M/M/c with offered load a = lambda/mu < c (Erlang C).

    Through the Erlang B recursion B(k) = a B(k-1) / (k + a B(k-1)), which is stable
    for any c: C = c B / (c - a (1 - B))."""
    if not 0 <= a < c:
        raise ValueError(f"offered load {a} must be in [0, {c})")
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return c * b / (c - a * (1.0 - b))


def mmc_wait_in_queue_s(c: int, rho: float, mean_service_s: float = MEAN_SERVICE_S) -> float:
    mu = 1.0 / mean_service_s
    lam = rho * c * mu
    return erlang_c(c, lam / mu) / (c * mu - lam)


def mmc_sojourn_s(c: int, rho: float, mean_service_s: float = MEAN_SERVICE_S) -> float:
    return mmc_wait_in_queue_s(c, rho, mean_service_s) + mean_service_s


# ------------------------------------------------------------- simulation


def mmc_scenario(c: int, rho: float, customers: int, mean_service_s: float = MEAN_SERVICE_S,
                 client_timeout_s: float = 0.0, sample_interval_s: float = 0.1):
    lam = rho * c / mean_service_s
    duration_s = customers / lam
    transport = {"rtt": "0s", "max_idle_conns_per_host": 100_000, "max_idle_conns": 100_000}
    if client_timeout_s:
        transport["client_timeout"] = f"{client_timeout_s!r}s"
    return scenario_from_dict({
        "name": f"mm{c}-rho{rho}",
        "duration": f"{duration_s!r}s",
        "warmup": f"{duration_s * WARMUP_FRACTION!r}s",
        "sample_interval": f"{sample_interval_s!r}s",
        "services": {"s": {"cpu": {"cores": c},
                           "routes": {"r": {"steps": [{"cpu": f"{mean_service_s!r}s",
                                                       "distribution": "exponential"}]}}}},
        "clients": {"c": {"target": "s", "instances": 1, "load": {"rate_per_s": lam},
                          "transport": transport}},
    }), lam


@dataclass
class Replication:
    mean_sojourn_s: float
    p50_s: float            # from result.summary (the public output)
    p99_s: float
    mean_inflight: float    # time-average of the sampled inflight_requests over the window
    little_gap: float       # |sampled ∫ N dt - Σ sojourns of the window's arrivals| (request-seconds)
    little_bound: float     # what edges and sampling allow for that gap
    level_mismatches: int   # samples where inflight_requests differs from the records' count
    timeout_fraction: float
    n: int


def little_bound(arrival: np.ndarray, end: np.ndarray, a: float, b: float, step: float) -> float:
    """Largest |Σ_k N(t_k) (t_k - t_{k-1}) - Σ_{a <= arrival < b} sojourn| allowed over [a, b]
    (a, b sample instants; end = +inf while in flight).

    - Edges, exact from the records: the window's arrivals still in flight at b run past it
      by Σ (end - b), and the integral holds Σ (min(end, b) - a) of those in flight at a,
      which arrived before the window.
    - Sampling (tests/test_littles_law.py gives the argument): Δ per request clipped at a or b,
      plus 5 σ with σ² = Σ Δ² f (1 - f), f = frac(sojourn / Δ), over the requests inside:
      a request covers floor or ceil(sojourn / Δ) grid points, the latter with probability f
      under a uniform arrival phase (Poisson arrivals, independent of the grid).
    """
    at_a = (arrival < a) & (end > a)
    at_b = (arrival >= a) & (arrival < b) & (end > b)
    edges = float(np.sum(np.minimum(end[at_a], b) - a)) + float(np.sum(end[at_b] - b))
    inside = (arrival >= a) & (end <= b)
    d = end[inside] - arrival[inside]
    frac = d / step - np.floor(d / step)
    sigma = step * math.sqrt(float(np.sum(frac * (1.0 - frac))))
    return edges + step * float(at_a.sum() + at_b.sum()) + 5.0 * sigma


def replicate(c: int, rho: float, customers: int, replications: int, **kwargs) -> list[Replication]:
    scenario, _lam = mmc_scenario(c, rho, customers, **kwargs)
    out = []
    for rep in range(replications):
        result = run_scenario(scenario, seed=SEED, replication=rep)
        assert not result.milestones.truncated
        arrival = result.requests["arrival_at"]
        end = np.where(np.isnan(result.requests["end_at"]), np.inf, result.requests["end_at"])
        t = result.levels["time_s"]
        level = result.levels["inflight_requests"]
        # the window: sample instants a (after the warm-up) and b (well before the end)
        ka, kb = int(WARMUP_FRACTION * len(t)), int(WINDOW_END_FRACTION * len(t))
        a, b = float(t[ka]), float(t[kb])
        window = (arrival >= a) & (arrival < b)
        sojourn = (end - arrival)[window]
        assert np.isfinite(sojourn).all(), "a request of the window had not finished by the end"
        timed_out = result.requests["error"][window] == ERROR_CODE["client_timeout"]
        # pointwise: the sampled level is the number of records with arrival <= t < end
        # (no network time: handlers in flight = requests in the system); ties bracketed
        sorted_arrival, sorted_end = np.sort(arrival), np.sort(end)
        lower = np.searchsorted(sorted_arrival, t, "left") - np.searchsorted(sorted_end, t, "right")
        upper = np.searchsorted(sorted_arrival, t, "right") - np.searchsorted(sorted_end, t, "left")
        integral = float(np.sum(level[ka + 1:kb + 1] * np.diff(t[ka:kb + 1])))
        out.append(Replication(
            mean_sojourn_s=float(sojourn.mean()),
            p50_s=result.summary["p50_ms"] / 1000.0,
            p99_s=result.summary["p99_ms"] / 1000.0,
            mean_inflight=integral / (b - a),
            little_gap=abs(integral - float(sojourn.sum())),
            little_bound=little_bound(arrival, end, a, b, float(np.max(np.diff(t)))),
            level_mismatches=int(np.sum((level < lower) | (level > upper))),
            timeout_fraction=float(timed_out.mean()),
            n=int(window.sum()),
        ))
    return out


def ci(values: list[float] | np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided Student-t confidence interval of the mean of the replication values."""
    x = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.5 + confidence / 2.0, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def check(label: str, values, expected: float, failures: list[str]) -> None:
    lo, hi = ci(values)
    if not lo <= expected <= hi:
        failures.append(f"{label}: analytic {expected:.6g} outside the {CONFIDENCE:.0%} CI "
                        f"[{lo:.6g}, {hi:.6g}] (mean {np.mean(values):.6g} of {len(values)} replications)")


def check_mmc(c: int, rho: float, customers: int, replications: int, percentiles: bool = False) -> None:
    reps = replicate(c, rho, customers, replications)
    mean_s = MEAN_SERVICE_S
    lam = rho * c / mean_s
    w = mmc_sojourn_s(c, rho)
    failures: list[str] = []
    check(f"M/M/{c} rho={rho} mean wait in queue Wq (Erlang C {erlang_c(c, lam * mean_s):.4f})",
          [r.mean_sojourn_s - mean_s for r in reps], mmc_wait_in_queue_s(c, rho), failures)
    if percentiles:  # M/M/1: the sojourn is exponential
        check(f"M/M/{c} rho={rho} mean sojourn", [r.mean_sojourn_s for r in reps], w, failures)
        check(f"M/M/{c} rho={rho} P50 (summary p50_ms)", [r.p50_s for r in reps], w * math.log(2.0), failures)
        check(f"M/M/{c} rho={rho} P99 (summary p99_ms)", [r.p99_s for r in reps], w * math.log(100.0), failures)
    # Little: the sampled level is the records' count at every sample; its time-average
    # agrees with the run's own arrivals x mean sojourn up to edges and sampling; and
    # with the analytic lambda W inside the CI
    for i, r in enumerate(reps):
        if r.level_mismatches:
            failures.append(f"replication {i}: inflight_requests differs from the request records "
                            f"at {r.level_mismatches} samples")
        if r.little_gap > r.little_bound:
            failures.append(f"replication {i}: Little: |∫ N dt - Σ sojourn| = {r.little_gap:.4g} request-s "
                            f"> allowed {r.little_bound:.4g}")
    check(f"M/M/{c} rho={rho} Little: time-average of sampled inflight_requests vs lambda W",
          [r.mean_inflight for r in reps], lam * w, failures)
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------ tests


def test_erlang_c_closed_forms() -> None:
    for rho in (0.1, 0.5, 0.9):
        assert erlang_c(1, rho) == pytest.approx(rho)                          # M/M/1: P(wait) = rho
        assert erlang_c(2, 2 * rho) == pytest.approx(2 * rho ** 2 / (1 + rho))  # M/M/2
    # textbook value: c = 8, a = 7.2 (rho = 0.9), against the direct formula
    a, c = 7.2, 8
    top = a ** c / math.factorial(c) * c / (c - a)
    direct = top / (sum(a ** k / math.factorial(k) for k in range(c)) + top)
    assert erlang_c(c, a) == pytest.approx(direct, rel=1e-12)
    assert mmc_wait_in_queue_s(1, 0.5) == pytest.approx(0.010)   # rho/(mu - lambda) = 0.5/50


@pytest.mark.parametrize(("rho", "customers"), [(0.5, 20_000), (0.8, 40_000)])
def test_mm1_sojourn_mean_and_percentiles(rho: float, customers: int) -> None:
    check_mmc(1, rho, customers, replications=10, percentiles=True)


@pytest.mark.parametrize(("c", "rho", "customers"), [(2, 0.5, 20_000), (2, 0.8, 40_000), (8, 0.9, 40_000)])
def test_mmc_wait_in_queue_erlang_c(c: int, rho: float, customers: int) -> None:
    check_mmc(c, rho, customers, replications=10)


def test_mm1_client_timeout_fraction() -> None:
    """Handlers ignore their context, so a timeout leaves the queue as it is:
    P(client_timeout) = P(sojourn > T) = exp(-(mu - lambda) T); here T = 2 W, e^-2."""
    rho, w = 0.5, mmc_sojourn_s(1, 0.5)
    reps = replicate(1, rho, 10_000, 10, client_timeout_s=2.0 * w)
    failures: list[str] = []
    check("M/M/1 rho=0.5 P(client_timeout) with T = 2 W", [r.timeout_fraction for r in reps],
          math.exp(-2.0), failures)
    assert not failures, "\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("rho", [0.5, 0.7, 0.8, 0.9])
@pytest.mark.parametrize("c", [1, 2, 4, 8])
def test_mmc_grid(c: int, rho: float) -> None:
    """Every (c, rho): Erlang C and Little, plus percentiles for c = 1; 10 x 100,000 customers."""
    check_mmc(c, rho, 100_000, replications=10, percentiles=(c == 1))
