"""Derived outputs of one run: per-window series and the summary (design.md §4).

This module owns the *definitions* of what a run reports. ``summarize`` reads a
``RunResult`` filled by the engine (request and attempt records, sampled levels,
milestones, counters) and fills ``result.windows`` (counts, latency percentiles
and the sliding-window rates of the collapse rule, bucketed on the sampling
grid) and ``result.summary`` (the keys of ``SUMMARY_KEYS``, JSON-serialisable).
Collapse, recovery and the outcome are decided here, nowhere else; a service-graph
run also gets the per-service, per-edge and cascade outputs of ``sim.graph_outputs``
(called from ``summarize``). Everything is
vectorised numpy: a run of millions of requests summarises in well under a
second. docs/outputs.md is the prose version of this module; keep them together.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim.result import ERROR_CODE, INCOMPLETE, SUCCESS, TO_SERVER_PHASES, Milestones, RunResult
from sim.schema import ERROR_KINDS

SUMMARY_KEYS: tuple[str, ...] = (
    "scenario",
    "seed",
    "duration_s",
    "offered_rps",
    "goodput_rps",
    "success_rate",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p999_ms",
    "p99_success_ms",
    "attempts_per_request",
    "incomplete",
    "errors",
    "to_server_mean_ms",
    "to_server_p50_ms",
    "to_server_p99_ms",
    "to_server_pool_wait_fraction",
    "to_server_connect_fraction",
    "to_server_tls_fraction",
    "to_server_backlog_fraction",
    "to_server_flow_wait_fraction",
    "to_server_transit_fraction",
    "attempts_reached_server",
    "attempts_never_reached_server",
    "max_server_connections",
    "max_accept_queue",
    "max_open_fds",
    "max_goroutines",
    "peak_memory_mib",
    "max_cpu_utilization",
    "wasted_work_fraction",
    "trigger_at_s",
    "collapse_at_s",
    "collapse_time_s",
    "recovered_at_s",
    "outcome",
    "faults_end_at_s",
    "goodput_during_fault_rps",
    "healthy_again_at_s",
    "time_to_recover_s",
    "breaker_trips",
    "first_trip_at_s",
    "time_to_trip_s",
    "breakers_closed_at_s",
    "retries_denied",
    "shed_rejected",
    "shed_dropped",
    "crashes",
    "crash_loop",
    "fd_exhausted_at_s",
    "oom_killed_at_s",
    "truncated",
    "truncated_by",
    "events",
    "wall_s",
    "provenance",
)
"""Keys of ``RunResult.summary``, in order (design.md §4 plus run bookkeeping)."""

OUTCOMES: tuple[str, ...] = ("stable", "recovered", "crashed", "metastable", "undecided")

TO_SERVER_PARTS: tuple[tuple[str, str | None], ...] = (
    ("pool_wait", "pool_wait_s"),
    ("connect", "connect_s"),
    ("tls", "tls_s"),
    ("backlog", "backlog_s"),
    ("flow_wait", "flow_wait_s"),
    ("transit", None),
)
"""The six parts of the time before the server sees an attempt: (name, attempt column).
The first five are measured by the engine; ``transit`` is ``to_server_s`` minus their sum."""
assert tuple(column for _, column in TO_SERVER_PARTS[:-1]) == TO_SERVER_PHASES

WINDOW_SERIES: dict[str, str] = {
    "time_s": "Right edge t of the bucket (t - sample_interval, t]; the grid runs from 0 to the "
              "end of the run (the last bucket is shorter when the end is not on the grid).",
    "arrivals": "Logical requests that arrived in the bucket.",
    "successes": "Logical requests that succeeded, by completion time.",
    "failures": "Logical requests that failed (any error kind), by completion time.",
    **{f"failures.{kind}": f"Logical requests that failed with `{kind}`, by completion time."
       for kind in ERROR_KINDS},
    "retries": "Attempt records with attempt > 0 (retries), by attempt start time.",
    "arrivals_untouched": "Arrivals of requests no fault acted on directly.",
    "successes_untouched": "Successes of untouched requests, by completion time.",
    "arrivals_touched": "Arrivals of requests a fault acted on directly.",
    "successes_touched": "Successes of touched requests, by completion time.",
    "p50_ms": "Median latency of the requests completing in the bucket (successes and "
              "failures); NaN if none completed.",
    "p99_ms": "P99 latency of the requests completing in the bucket; NaN if none completed.",
    "reached_server": "Attempts whose request the server's handler got in the bucket, by that instant "
                      "(start_at + to_server_s).",
    "never_reached_server": "Finished attempts that ended without the server ever having their request "
                            "(to_server_s NaN), by attempt end time.",
    "to_server_p50_ms": "Median time before the server saw the request (to_server_s) over the "
                        "`reached_server` attempts of the bucket; NaN if none.",
    "to_server_p99_ms": "P99 of to_server_s over the `reached_server` attempts of the bucket; NaN if none.",
    **{f"to_server_mean_ms.{part}": f"Mean {part.replace('_', ' ')} time (ms) of the `reached_server` attempts "
                                    f"of the bucket" + (" (to_server_s minus the five measured phases)"
                                                        if column is None else f" (`{column}`)")
                                    + "; the six parts sum to their mean to_server_s. NaN if none."
       for part, column in TO_SERVER_PARTS},
    "offered_untouched_rps": "Judged arrivals over the trailing collapse_window (t - collapse_window, t] "
                             "/ collapse_window. Judged = untouched traffic, or all traffic when no "
                             "request of the population is untouched.",
    "goodput_untouched_rps": "Judged successes completing over the trailing collapse_window / "
                             "collapse_window (same judged traffic).",
}
"""Every series of ``RunResult.windows`` with its definition, in order."""

# summary key -> (level column, counter holding the engine's exact peak or None, decimals or None for int)
_LEVEL_PEAKS: tuple[tuple[str, str, str | None, int | None], ...] = (
    ("max_server_connections", "server_connections", "peak_server_connections", None),
    ("max_accept_queue", "accept_queue", "peak_accept_queue", None),
    ("max_open_fds", "open_fds", "peak_open_fds", None),
    ("max_goroutines", "goroutines", "peak_goroutines", None),
    ("peak_memory_mib", "memory_mib", "peak_memory_mib", 3),
    ("max_cpu_utilization", "cpu_utilization", None, 4),
)

_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)
_INSTANT_DECIMALS = 6      # instants and durations in seconds: 1 µs
_MS_DECIMALS = 3           # latencies in ms: 1 µs
_RATE_DECIMALS = 3         # requests per second
_FRACTION_DECIMALS = 6
_GRID_DECIMALS = 9         # grid instants are rounded so 3 * 0.1 is 0.3


def summarize(result: RunResult) -> None:
    """Fill ``result.windows`` and ``result.summary`` from the records and milestones."""
    scenario = result.scenario
    outcome_cfg = scenario.outcome
    milestones = result.milestones
    end_s = float(milestones.end_at_s)
    warmup_s = float(scenario.warmup)
    requests, attempts = entry_records(result)

    arrival_at = np.asarray(requests["arrival_at"], dtype=np.float64)
    end_at = np.asarray(requests["end_at"], dtype=np.float64)
    error = np.asarray(requests["error"], dtype=np.int64)
    touched = np.asarray(requests["touched"], dtype=bool)
    completed = (error != INCOMPLETE) & np.isfinite(end_at)
    success = completed & (error == SUCCESS)

    # ---------------------------------------------------------------- population
    in_population = (arrival_at >= warmup_s) & (arrival_at < end_s)
    n_population = int(in_population.sum())
    latency_s = np.where(completed, end_at - arrival_at, end_s - arrival_at)
    pop_latency_ms = latency_s[in_population] * 1000.0
    pop_success = success[in_population]
    n_success = int(pop_success.sum())
    n_incomplete = int((~completed[in_population]).sum())
    duration_s = max(0.0, end_s - warmup_s)

    # Collapse and recovery are judged on untouched traffic, or on all of it when a
    # fault touches every request of the population.
    judged = ~touched if bool((in_population & ~touched).any()) else np.ones_like(touched)

    # ------------------------------------------------------------------- windows
    grid_s = _grid(end_s, float(scenario.sample_interval))
    windows: dict[str, np.ndarray] = {"time_s": grid_s}
    windows["arrivals"] = _bucket_counts(grid_s, arrival_at)
    windows["successes"] = _bucket_counts(grid_s, end_at[success])
    failed = completed & (error != SUCCESS)
    windows["failures"] = _bucket_counts(grid_s, end_at[failed])
    for kind in ERROR_KINDS:
        windows[f"failures.{kind}"] = _bucket_counts(grid_s, end_at[completed & (error == ERROR_CODE[kind])])
    attempt_no = np.asarray(attempts["attempt"], dtype=np.int64)
    attempt_start = np.asarray(attempts["start_at"], dtype=np.float64)
    windows["retries"] = _bucket_counts(grid_s, attempt_start[attempt_no > 0])
    windows["arrivals_untouched"] = _bucket_counts(grid_s, arrival_at[~touched])
    windows["successes_untouched"] = _bucket_counts(grid_s, end_at[success & ~touched])
    windows["arrivals_touched"] = _bucket_counts(grid_s, arrival_at[touched])
    windows["successes_touched"] = _bucket_counts(grid_s, end_at[success & touched])
    p50_ms, p99_ms = _bucket_percentiles(grid_s, end_at[completed], latency_s[completed] * 1000.0, (50.0, 99.0))
    windows["p50_ms"] = p50_ms
    windows["p99_ms"] = p99_ms
    to_server = _ToServer(attempts)
    windows.update(_to_server_windows(grid_s, attempt_start, to_server))
    window_s = float(outcome_cfg.collapse_window)
    offered_n = _trailing_counts(grid_s, arrival_at[judged], window_s)
    goodput_n = _trailing_counts(grid_s, end_at[success & judged], window_s)
    windows["offered_untouched_rps"] = offered_n / window_s
    windows["goodput_untouched_rps"] = goodput_n / window_s
    result.windows = windows

    # ------------------------------------------------- collapse, recovery, outcome
    trigger_at_s = milestones.trigger_at_s
    if trigger_at_s is None and milestones.faults:
        trigger_at_s = min(f.start_at for f in milestones.faults)
    judge_from_s = trigger_at_s if trigger_at_s is not None else warmup_s + window_s
    kill_from_s = trigger_at_s if trigger_at_s is not None else warmup_s
    hold_s = float(outcome_cfg.collapse_hold)

    collapse_candidates: list[float] = []
    below = (offered_n > 0) & (goodput_n < outcome_cfg.collapse_fraction * offered_n)
    starts_ok = grid_s >= judge_from_s - _eps(judge_from_s)
    k = _first_held(grid_s, below, starts_ok, hold_s, end_s)
    if k is not None:
        collapse_candidates.append(float(grid_s[k]))
    kills = sorted(float(x) for x in milestones.kills)
    graph = is_graph_run(result)
    # the entry process's deaths: its kills; in a graph run, the spans without a live instance
    dead = _sampled_dead_intervals(result.levels, "alive") if graph else _dead_intervals(milestones)
    deaths = [start for start, _ in dead]
    later_deaths = [x for x in deaths if x >= kill_from_s - _eps(kill_from_s)]
    if later_deaths:
        collapse_candidates.append(later_deaths[0])
    collapse_at_s = min(collapse_candidates) if collapse_candidates else None

    recovered_at_s: float | None = None
    if collapse_at_s is not None:
        healthy = (offered_n > 0) & (goodput_n >= outcome_cfg.recovery_fraction * offered_n)
        starts_ok = (grid_s > collapse_at_s + _eps(collapse_at_s)) & _alive_over(grid_s, hold_s, dead)
        k = _first_held(grid_s, healthy, starts_ok, hold_s, end_s)
        recovered_at_s = float(grid_s[k]) if k is not None else None

    # after the faults: how long until the judged traffic is served well again (collapse or not)
    faults_end_at_s = max((float(f.end_at) for f in milestones.faults), default=None)
    healthy_again_at_s: float | None = None
    goodput_during_fault_rps: float | None = None
    if faults_end_at_s is not None and trigger_at_s is not None:
        healthy = (offered_n > 0) & (goodput_n >= outcome_cfg.recovery_fraction * offered_n)
        starts_ok = (grid_s >= faults_end_at_s - _eps(faults_end_at_s)) & _alive_over(grid_s, hold_s, dead)
        k = _first_held(grid_s, healthy, starts_ok, hold_s, end_s)
        healthy_again_at_s = float(grid_s[k]) if k is not None else None
        fault_s = faults_end_at_s - trigger_at_s
        if fault_s > 0:
            ends = end_at[success & in_population]
            n_during = int(((ends >= trigger_at_s) & (ends <= faults_end_at_s)).sum())
            goodput_during_fault_rps = n_during / fault_s
    trips = _breaker_trips(milestones.breaker_transitions, trigger_at_s)

    restarts = sorted(float(x) for x in milestones.restarts)
    crash_loop = any(r < kill for kill in kills for r in restarts)
    outcome = _outcome(collapse_at_s, recovered_at_s, deaths, milestones, end_s, float(outcome_cfg.watch))

    # -------------------------------------------------------------------- summary
    percentiles: list[float | None] = [None] * len(_PERCENTILES)
    if n_population:
        percentiles = [float(v) for v in np.percentile(pop_latency_ms, _PERCENTILES, method="linear")]
    p99_success_ms = None
    if n_success:
        p99_success_ms = float(np.percentile(pop_latency_ms[pop_success], 99.0, method="linear"))

    attempt_ids = np.asarray(attempts["request_id"], dtype=np.int64)
    pop_ids = np.asarray(requests["request_id"], dtype=np.int64)[in_population]
    pop_attempt = np.isin(attempt_ids, pop_ids) if n_population else np.zeros(len(attempt_ids), bool)
    n_pop_attempts = int(pop_attempt.sum())

    pop_error = error[in_population]
    errors = {kind: int((pop_error == ERROR_CODE[kind]).sum()) for kind in ERROR_KINDS}

    counters = result.counters
    handler_s = float(counters.get("handler_s", 0.0))
    wasted_s = float(counters.get("wasted_handler_s", 0.0))

    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": int(result.seed),
        "duration_s": _round(duration_s, _INSTANT_DECIMALS),
        "offered_rps": _round(n_population / duration_s, _RATE_DECIMALS) if duration_s > 0 else 0.0,
        "goodput_rps": _round(n_success / duration_s, _RATE_DECIMALS) if duration_s > 0 else 0.0,
        "success_rate": _round(n_success / n_population, _FRACTION_DECIMALS) if n_population else 0.0,
        "p50_ms": _round(percentiles[0], _MS_DECIMALS),
        "p90_ms": _round(percentiles[1], _MS_DECIMALS),
        "p99_ms": _round(percentiles[2], _MS_DECIMALS),
        "p999_ms": _round(percentiles[3], _MS_DECIMALS),
        "p99_success_ms": _round(p99_success_ms, _MS_DECIMALS),
        "attempts_per_request": _round(n_pop_attempts / n_population, _FRACTION_DECIMALS) if n_population else 0.0,
        "incomplete": n_incomplete,
        "errors": errors,
    }
    summary.update(_to_server_summary(to_server, pop_attempt))
    for key, column, counter, decimals in _LEVEL_PEAKS:
        summary[key] = _peak(result.levels.get(column), counters.get(counter) if counter else None, decimals)
    summary.update({
        "wasted_work_fraction": _round(wasted_s / handler_s, _FRACTION_DECIMALS) if handler_s > 0 else 0.0,
        "trigger_at_s": _round(trigger_at_s, _INSTANT_DECIMALS),
        "collapse_at_s": _round(collapse_at_s, _INSTANT_DECIMALS),
        "collapse_time_s": (_round(collapse_at_s - trigger_at_s, _INSTANT_DECIMALS)
                            if collapse_at_s is not None and trigger_at_s is not None else None),
        "recovered_at_s": _round(recovered_at_s, _INSTANT_DECIMALS),
        "outcome": outcome,
        "faults_end_at_s": _round(faults_end_at_s, _INSTANT_DECIMALS),
        "goodput_during_fault_rps": _round(goodput_during_fault_rps, _RATE_DECIMALS),
        "healthy_again_at_s": _round(healthy_again_at_s, _INSTANT_DECIMALS),
        "time_to_recover_s": (_round(healthy_again_at_s - faults_end_at_s, _INSTANT_DECIMALS)
                              if healthy_again_at_s is not None and faults_end_at_s is not None else None),
        "breaker_trips": trips["trips"],
        "first_trip_at_s": _round(trips["first_trip_at_s"], _INSTANT_DECIMALS),
        "time_to_trip_s": (_round(trips["first_trip_at_s"] - trigger_at_s, _INSTANT_DECIMALS)
                           if trips["first_trip_at_s"] is not None and trigger_at_s is not None else None),
        "breakers_closed_at_s": _round(trips["closed_at_s"], _INSTANT_DECIMALS),
        "retries_denied": int(counters.get("retries_denied", 0)),
        "shed_rejected": int(counters.get("shed_rejected", 0)),
        "shed_dropped": int(counters.get("shed_dropped", 0)),
        "crashes": len(kills),
        "crash_loop": crash_loop,
        "fd_exhausted_at_s": _round(milestones.fd_exhausted_at_s, _INSTANT_DECIMALS),
        "oom_killed_at_s": _round(milestones.oom_killed_at_s, _INSTANT_DECIMALS),
        "truncated": bool(milestones.truncated),
        "truncated_by": milestones.truncated_by,
        "events": int(counters.get("events", 0)),
        "wall_s": _round(float(result.wall_s), 3),
        "provenance": _plain(result.provenance),
    })
    result.summary = {key: summary[key] for key in SUMMARY_KEYS}
    if graph:
        from sim.graph_outputs import graph_outputs     # it builds on this module's helpers
        graph_windows, graph_summary = graph_outputs(result, grid_s, trigger_at_s)
        result.windows.update(graph_windows)
        result.summary.update(graph_summary)


# ------------------------------------------------------------------------ grid


def is_graph_run(result: RunResult) -> bool:
    """A service graph: more than one service, or a service with more than one instance. Such a
    run gets the per-service, per-edge and cascade outputs (sim.graph_outputs), and its entry
    process counts as dead only while the entry service has no live instance."""
    services = result.scenario.services
    return len(services) > 1 or any(int(getattr(cfg, "instances", 1)) > 1 for cfg in services.values())


def entry_clients(result: RunResult) -> int:
    """How many of ``result.client_names`` are load sources (the rest are service-to-service
    edges, named ``caller->callee``)."""
    return sum(1 for name in result.client_names if "->" not in name)


def entry_records(result: RunResult) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The records of the entry requests (from load sources) and of their attempts: the
    population of the summary. Service-to-service calls are judged per edge (docs/outputs.md)."""
    requests = result.requests
    attempts = result.attempts
    n_entry = entry_clients(result)
    if n_entry == len(result.client_names):
        return requests, attempts
    keep = np.asarray(requests["client"]) < n_entry
    requests = {k: v[keep] for k, v in requests.items()}
    keep_attempts = np.isin(attempts["request_id"], requests["request_id"])
    attempts = {k: v[keep_attempts] for k, v in attempts.items()}
    return requests, attempts


def _eps(x_s: float) -> float:
    """Tolerance for comparing instants that went through float arithmetic."""
    return 1e-9 * max(1.0, abs(x_s))


def _grid(end_s: float, step_s: float) -> np.ndarray:
    """Right edges 0, step, 2 step, ... up to end; end itself is appended when off the grid."""
    n_steps = max(0, math.floor(end_s / step_s + 1e-9))
    grid_s = np.round(np.arange(n_steps + 1, dtype=np.float64) * step_s, _GRID_DECIMALS)
    if end_s - grid_s[-1] > _eps(end_s):
        grid_s = np.append(grid_s, end_s)
    return grid_s


def _bucket_counts(grid_s: np.ndarray, at_s: np.ndarray) -> np.ndarray:
    """Events per bucket (grid[k-1], grid[k]]; events after the last edge are dropped."""
    at_s = at_s[np.isfinite(at_s)]
    index = np.searchsorted(grid_s, at_s, side="left")
    return np.bincount(index, minlength=len(grid_s) + 1)[: len(grid_s)].astype(np.int64)


def _trailing_counts(grid_s: np.ndarray, at_s: np.ndarray, window_s: float) -> np.ndarray:
    """Events in (t - window, t] for every grid instant t."""
    return _trailing_counts_sorted(grid_s, np.sort(at_s[np.isfinite(at_s)]), window_s)


def _trailing_counts_sorted(grid_s: np.ndarray, at_s: np.ndarray, window_s: float) -> np.ndarray:
    """``_trailing_counts`` of finite instants already in ascending order."""
    lower_s = np.round(grid_s - window_s, _GRID_DECIMALS)
    upto = np.searchsorted(at_s, grid_s, side="right")
    before = np.searchsorted(at_s, lower_s, side="right")
    return (upto - before).astype(np.int64)


def _bucket_percentiles(grid_s: np.ndarray, at_s: np.ndarray, values: np.ndarray,
                        percents: tuple[float, ...]) -> list[np.ndarray]:
    """Per-bucket percentiles of ``values`` (numpy 'linear' method); NaN for empty buckets."""
    n_buckets = len(grid_s)
    keep = np.isfinite(at_s)
    index = np.searchsorted(grid_s, at_s[keep], side="left")
    values = values[keep]
    inside = index < n_buckets
    return _grouped_percentiles(index[inside], values[inside], n_buckets, percents)


def _grouped_percentiles(index: np.ndarray, values: np.ndarray, n_groups: int,
                         percents: tuple[float, ...]) -> list[np.ndarray]:
    """Percentiles of ``values`` per group ``index`` (0 <= index < n_groups), numpy's
    'linear' method exactly; NaN for empty groups."""
    # Sort by (group, value) in one pass: complex numbers sort by real part, then by
    # imaginary part, and a group index is exact as a float (twice as fast as lexsort).
    ordered = np.sort(np.asarray(index).astype(np.float64) + 1j * np.asarray(values, dtype=np.float64))
    index, values = ordered.real.astype(np.int64), ordered.imag
    counts = np.bincount(index, minlength=n_groups)[:n_groups]
    return _sorted_group_percentiles(values, counts, percents)


def _sorted_group_percentiles(values: np.ndarray, counts: np.ndarray,
                              percents: tuple[float, ...]) -> list[np.ndarray]:
    """Percentiles per group of ``values`` laid out group after group (``counts`` of each),
    ascending within each group; numpy's 'linear' method exactly, NaN for empty groups."""
    n_groups = len(counts)
    starts = np.cumsum(counts) - counts
    filled = counts > 0
    out: list[np.ndarray] = []
    for percent in percents:
        series = np.full(n_groups, np.nan)
        q = percent / 100.0
        n = counts[filled].astype(np.float64)
        virtual = n * q - q                      # numpy's 'linear' virtual index: (n - 1) q
        lo = np.floor(virtual).astype(np.int64)
        gamma = virtual - lo
        hi = np.minimum(lo + 1, counts[filled] - 1)
        a = values[starts[filled] + lo]
        b = values[starts[filled] + hi]
        diff = b - a
        series[filled] = np.where(gamma >= 0.5, b - diff * (1.0 - gamma), a + diff * gamma)
        out.append(series)
    return out


# --------------------------------------------------- time before the server sees it


class _ToServer:
    """The attempt records' time-to-server columns, read one part at a time (a storm has
    millions of attempts: no six float64 copies at once).

    ``span`` is ``to_server_s`` in float64 (NaN if the server never had the request),
    ``reached`` where it is not NaN, ``ended`` the finished attempts (not in flight at the
    end). ``part(name, mask)`` is the part of TO_SERVER_PARTS over the attempts of
    ``mask`` (a subset of ``reached``), in float64 seconds; ``transit`` is derived."""

    def __init__(self, attempts: dict[str, np.ndarray]) -> None:
        self.attempts = attempts
        self.n = len(attempts["request_id"])
        self.span = self._column("to_server_s", np.nan, None)
        self.reached = np.isfinite(self.span)
        self.ended = np.asarray(attempts["error"], dtype=np.int64) != INCOMPLETE
        self.end_at = np.asarray(attempts["end_at"], dtype=np.float64)

    def _column(self, name: str, fill: float, mask: np.ndarray | None) -> np.ndarray:
        values = self.attempts.get(name)
        if values is None:          # records made before these columns existed
            return np.full(self.n if mask is None else int(mask.sum()), fill)
        values = np.asarray(values)
        return (values if mask is None else values[mask]).astype(np.float64)

    def part(self, name: str, mask: np.ndarray) -> np.ndarray:
        column = dict(TO_SERVER_PARTS)[name]
        if column is not None:
            return self._column(column, 0.0, mask)
        transit = self.span[mask]
        for phase in TO_SERVER_PHASES:
            transit -= self._column(phase, 0.0, mask)
        return transit


def _to_server_windows(grid_s: np.ndarray, start_at: np.ndarray, ts: _ToServer) -> dict[str, np.ndarray]:
    """The to-server window series (WINDOW_SERIES), bucketed by the instant the server had the request."""
    reached = ts.reached
    span_s = ts.span[reached]
    seen_at = start_at[reached] + span_s
    n_buckets = len(grid_s)
    index = np.searchsorted(grid_s, seen_at, side="left")      # bucket (grid[k-1], grid[k]]
    inside = index < n_buckets
    index = index[inside]
    counts = np.bincount(index, minlength=n_buckets)[:n_buckets]
    out: dict[str, np.ndarray] = {"reached_server": counts.astype(np.int64)}
    out["never_reached_server"] = _bucket_counts(grid_s, ts.end_at[ts.ended & ~reached])
    p50, p99 = _bucket_percentiles(grid_s, seen_at, span_s * 1000.0, (50.0, 99.0))
    out["to_server_p50_ms"], out["to_server_p99_ms"] = p50, p99
    filled = counts > 0
    for part, _ in TO_SERVER_PARTS:
        values = ts.part(part, reached)[inside]
        total_ms = np.bincount(index, weights=values, minlength=n_buckets)[:n_buckets] * 1000.0
        mean_ms = np.full(n_buckets, np.nan)
        mean_ms[filled] = total_ms[filled] / counts[filled]
        out[f"to_server_mean_ms.{part}"] = mean_ms
    return out


def _to_server_summary(ts: _ToServer, in_population: np.ndarray) -> dict[str, Any]:
    """The to_server_* summary keys over the attempts of population requests."""
    reached = in_population & ts.reached
    n_reached = int(reached.sum())
    summary: dict[str, Any] = {
        "to_server_mean_ms": None, "to_server_p50_ms": None, "to_server_p99_ms": None,
        **{f"to_server_{part}_fraction": None for part, _ in TO_SERVER_PARTS},
        "attempts_reached_server": n_reached,
        "attempts_never_reached_server": int((in_population & ts.ended & ~ts.reached).sum()),
    }
    if not n_reached:
        return summary
    span_s = ts.span[reached]
    p50, p99 = np.percentile(span_s * 1000.0, (50.0, 99.0), method="linear")
    summary["to_server_mean_ms"] = _round(float(np.mean(span_s)) * 1000.0, _MS_DECIMALS)
    summary["to_server_p50_ms"] = _round(float(p50), _MS_DECIMALS)
    summary["to_server_p99_ms"] = _round(float(p99), _MS_DECIMALS)
    total_s = float(np.sum(span_s))
    if total_s > 0:
        for part, _ in TO_SERVER_PARTS:
            share = _round(float(np.sum(ts.part(part, reached))) / total_s, _FRACTION_DECIMALS)
            summary[f"to_server_{part}_fraction"] = None if share is None else share + 0.0   # no -0.0
    return summary


# ------------------------------------------------------ collapse and recovery


def _first_held(grid_s: np.ndarray, condition: np.ndarray, may_start: np.ndarray,
                hold_s: float, end_s: float) -> int | None:
    """First grid index k allowed by ``may_start`` from which ``condition`` holds at every
    grid instant in [grid[k], grid[k] + hold], that stretch ending no later than the run."""
    n = len(grid_s)
    fits = grid_s + hold_s <= end_s + _eps(end_s)
    candidates = np.flatnonzero(may_start & fits & condition)
    if candidates.size == 0:
        return None
    last = np.searchsorted(grid_s, grid_s[candidates] + hold_s + _eps(end_s), side="right") - 1
    broken = np.flatnonzero(~condition)
    next_break = np.searchsorted(broken, candidates, side="left")
    first_break = np.where(next_break < broken.size, broken[np.minimum(next_break, broken.size - 1)], n)
    held = first_break > last
    if not held.any():
        return None
    return int(candidates[np.argmax(held)])


def _dead_intervals(milestones: Milestones) -> list[tuple[float, float]]:
    """[kill, following restart) for every kill; the restart is +inf if none followed."""
    restarts = sorted(milestones.restarts)
    intervals = []
    for kill in sorted(milestones.kills):
        following = [r for r in restarts if r > kill]
        intervals.append((float(kill), float(following[0]) if following else math.inf))
    return intervals


def _sampled_dead_intervals(levels: dict[str, np.ndarray], column: str) -> list[tuple[float, float]]:
    """[first sample with no live instance, next sample with one) from a sampled level of live
    instances (the end is +inf if none followed); none if the level is missing."""
    alive = levels.get(column)
    times = levels.get("time_s")
    if alive is None or times is None or not len(alive):
        return []
    n = min(len(alive), len(times))
    times = np.round(np.asarray(times[:n], dtype=np.float64), _GRID_DECIMALS)
    down = np.asarray(alive[:n], dtype=np.float64) <= 0
    edges = np.flatnonzero(np.diff(np.concatenate(([0], down.astype(np.int8), [0]))))
    intervals = []
    for start, stop in zip(edges[::2], edges[1::2]):
        intervals.append((float(times[start]), float(times[stop]) if stop < n else math.inf))
    return intervals


def _alive_over(grid_s: np.ndarray, hold_s: float, dead: list[tuple[float, float]]) -> np.ndarray:
    """True where the process is alive over the whole of [grid[k], grid[k] + hold]: no dead
    interval [kill, following restart) meets it."""
    alive = np.ones(len(grid_s), dtype=bool)
    for kill_s, restart_s in dead:
        alive &= ~((kill_s <= grid_s + hold_s) & (restart_s > grid_s))
    return alive


def _outcome(collapse_at_s: float | None, recovered_at_s: float | None, deaths: list[float],
             milestones: Milestones, end_s: float, watch_s: float) -> str:
    """stable | recovered | crashed | metastable | undecided (docs/outputs.md, Outcome)."""
    if not milestones.alive_at_end and not milestones.restart_pending:
        return "crashed"
    if collapse_at_s is None:
        return "stable"
    if recovered_at_s is not None and not any(k > recovered_at_s for k in deaths):
        return "recovered"
    faults_over = all(f.end_at <= end_s - watch_s + _eps(end_s) for f in milestones.faults)
    return "metastable" if faults_over else "undecided"


# -------------------------------------------------------------------- breakers


def _breaker_trips(transitions: list[tuple[float, int, int, str]], trigger_at_s: float | None) -> dict[str, Any]:
    """Trips (transitions to open, every client process), the first trip at or after the
    trigger (any, without faults), and the first instant after it at which every breaker
    that had left closed is closed again (None if some never closed)."""
    from_s = trigger_at_s if trigger_at_s is not None else -math.inf
    trips = [at for at, _, _, state in transitions if state == "open"]
    first = next((at for at in trips if at >= from_s - _eps(from_s if math.isfinite(from_s) else 0.0)), None)
    closed_at: float | None = None
    if first is not None:
        not_closed: set[tuple[int, int]] = set()
        for at, client, instance, state in transitions:
            key = (client, instance)
            if state in ("closed", "gone"):      # gone: its process died (an edge's caller)
                not_closed.discard(key)
                if at >= first and not not_closed:
                    closed_at = at
            else:
                not_closed.add(key)
                closed_at = None
        if not_closed:
            closed_at = None
    return {"trips": len(trips), "first_trip_at_s": first, "closed_at_s": closed_at}


# --------------------------------------------------------------------- values


def _round(value: float | None, decimals: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), decimals)


def _peak(column: np.ndarray | None, exact_peak: float | None, decimals: int | None) -> int | float | None:
    """Max of a sampled level column, or the engine's exact peak if larger."""
    candidates: list[float] = []
    if column is not None and np.size(column) and np.isfinite(column).any():
        candidates.append(float(np.nanmax(column)))
    if exact_peak is not None and math.isfinite(float(exact_peak)):
        candidates.append(float(exact_peak))
    if not candidates:
        return None
    peak = max(candidates)
    return int(round(peak)) if decimals is None else round(peak, decimals)


def _plain(value: Any) -> Any:
    """The same value made of JSON types (numpy scalars and arrays, tuples unwrapped)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value
