"""Convergence: how an estimate and its confidence interval settle as replications grow.

A sweep reports each cell's mean over R replications with a Student-t interval (95% by
default, experiments/sweep_summary.py). How many replications a sweep needs depends on the
metric and the scenario: this section runs R replications of a storm scenario (replication
indexes 0..R-1 at the scenario's seed, as a sweep does) and shows, for r = 2..R, the mean of
the first r and its 95% half-width, for P99 latency and time to collapse; and the same for
the M/M/1 P99 of the queueing section (its replications, reused). Each is an ``info`` check
(no verdict) whose detail says how many replications give a half-width of 10% of the mean,
extrapolated as n = (t s / (0.1 mean))^2 from the R replications' spread s.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from experiments.catalog import shipped_scenarios
from experiments.validation.checks import INFO, Check, t_interval
from sim.engine import run_scenario
from sim.scenario_loader import load_scenario

SWEEP_CONFIDENCE = 0.95
TARGET_RELATIVE_HALF_WIDTH = 0.10
METRICS = {"p99_ms": "P99 latency (ms)", "collapse_time_s": "time to collapse (s)",
           "goodput_during_fault_rps": "goodput during the faults (req/s)"}


def run_replication(name: str, variant: str | None, replication: int) -> dict[str, Any]:
    scenario = load_scenario(shipped_scenarios()[name], variant=variant)
    result = run_scenario(scenario, replication=replication)
    out: dict[str, Any] = {k: result.summary.get(k) for k in METRICS}
    out["outcome"] = result.summary.get("outcome")
    out["wall_s"] = result.wall_s
    return out


def table(values: list[float], confidence: float = SWEEP_CONFIDENCE) -> list[dict[str, float]]:
    rows = []
    for r in range(2, len(values) + 1):
        mean, lo, hi, half = t_interval(values[:r], confidence)
        rows.append({"replications": r, "mean": mean, "low": lo, "high": hi, "half_width": half,
                     "relative_half_width": half / abs(mean) if mean else math.nan})
    return rows


def needed(values: list[float], target: float = TARGET_RELATIVE_HALF_WIDTH,
           confidence: float = SWEEP_CONFIDENCE) -> int | None:
    """Replications for a half-width of ``target`` x mean, from these values' spread."""
    x = np.asarray(values, float)
    if len(x) < 2 or not x.mean():
        return None
    s = float(x.std(ddof=1))
    if s == 0:
        return 2
    from scipy import stats
    n = 2
    while n < 100_000:
        if stats.t.ppf(0.5 + confidence / 2, n - 1) * s / math.sqrt(n) <= target * abs(float(x.mean())):
            return n
        n += 1 if n < 100 else n // 10
    return None


def metric_check(label: str, key: str, metric: str, values: list[float | None], source: str,
                 extra: dict[str, Any] | None = None) -> Check:
    present = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    rows = table(present)
    n_needed = needed(present)
    last = rows[-1] if rows else None
    missing = len(values) - len(present)
    if last is None:
        detail = f"{len(present)} of {len(values)} replications have a value: no interval"
    else:
        detail = (f"after {last['replications']} replications: {last['mean']:.4g} +/- {last['half_width']:.3g} "
                  f"({100 * last['relative_half_width']:.1f}% of the mean, {SWEEP_CONFIDENCE:.0%} CI); "
                  f"+/-10% needs about {n_needed if n_needed is not None else 'many'} replications")
        if missing:
            detail += f"; {missing} replications had none (e.g. no collapse)"
    return Check(id=f"convergence.{label}.{key}", section="convergence", family="Convergence",
                 title=f"{label}: {metric} as replications grow", compared=f"{metric}, mean of the first r replications",
                 reference=f"Student-t {SWEEP_CONFIDENCE:.0%} half-width, as experiments/sweep_summary.py reports it",
                 source=source, status=INFO, estimate=last["mean"] if last else None,
                 ci_low=last["low"] if last else None, ci_high=last["high"] if last else None,
                 replications=len(values), detail=detail,
                 params={"rows": rows, "values": values, "needed_for_10pct": n_needed, **(extra or {})})


def scenario_checks(name: str, variant: str | None, reps: list[dict[str, Any]]) -> list[Check]:
    label = name if variant is None else f"{name}@{variant}"
    outcomes: dict[str, int] = {}
    for r in reps:
        outcomes[str(r.get("outcome"))] = outcomes.get(str(r.get("outcome")), 0) + 1
    return [metric_check(label, key, metric, [r.get(key) for r in reps],
                         f"experiments/scenarios/{name}.yaml, replications 0..{len(reps) - 1}",
                         {"outcomes": outcomes})
            for key, metric in METRICS.items() if any(r.get(key) is not None for r in reps)]
