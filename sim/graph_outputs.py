"""Outputs of a service-graph run: per service, per edge, per entry client, and the cascade.

``sim.outputs.summarize`` calls ``graph_outputs`` for a graph run (more than one service,
or a service with more than one instance; ``sim.outputs.is_graph_run``). It adds window
series (``svc.<service>.*``, ``edge.<caller->callee>.*``) to ``result.windows`` and the
keys of ``GRAPH_SUMMARY_KEYS`` to ``result.summary``, after the keys every run has. The
definitions are in docs/outputs.md (*Service graphs*); keep the two together.

Everything is grouped numpy: one pass per statistic over every record, grouped by client
(entry clients and edges) or by the service a request was sent to, so a run of millions
of records over dozens of services costs a few sorts, not a loop over services.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from sim.outputs import (
    _FRACTION_DECIMALS, _GRID_DECIMALS, _INSTANT_DECIMALS, _MS_DECIMALS, _RATE_DECIMALS,
    _eps, _first_held, _round, _sorted_group_percentiles, _trailing_counts_sorted, entry_clients,
)
from sim.result import ERROR_CODE, INCOMPLETE, SUCCESS, RunResult
from sim.schema import ERROR_KINDS

GRAPH_SUMMARY_KEYS: tuple[str, ...] = (
    "entry_clients",
    "services",
    "edges",
    "cascade",
    "blast_radius",
    "services_collapsed",
)
"""Keys a graph run's summary has after ``sim.outputs.SUMMARY_KEYS``, in order."""

REQUEST_KPIS: tuple[str, ...] = (
    "requests", "successes", "offered_rps", "goodput_rps", "success_rate", "p50_ms", "p99_ms",
    "attempts_per_request", "incomplete", "errors",
)
"""The KPIs of a group of logical requests (an entry client, an edge, the requests to a service)."""

SERVICE_PEAKS: tuple[tuple[str, str, int | None], ...] = (
    # (key, level column suffix, decimals or None for int)
    ("max_cpu_utilization", "cpu_utilization", 4),
    ("max_inflight_requests", "inflight_requests", None),
    ("max_goroutines", "goroutines", None),
    ("peak_memory_mib", "memory_mib", 3),
    ("max_server_connections", "server_connections", None),
    ("max_open_fds", "open_fds", None),
)
SERVICE_KEYS: tuple[str, ...] = (
    "instances", "entry", "faulted", "depth", "handlers_started", "handlers_by_instance",
    *REQUEST_KPIS, *(key for key, _, _ in SERVICE_PEAKS), "min_alive", "alive_at_end",
    "collapsed_at_s", "collapse_cause",
)
"""Keys of each entry of ``summary["services"]``, in order."""
EDGE_KEYS: tuple[str, ...] = ("caller", "callee", *REQUEST_KPIS, "breaker_trips", "time_to_trip_s")
ENTRY_CLIENT_KEYS: tuple[str, ...] = ("target", *REQUEST_KPIS)
CASCADE_KEYS: tuple[str, ...] = ("service", "collapsed_at_s", "collapse_time_s", "cause")
COLLAPSE_CAUSES: tuple[str, ...] = ("no_live_instance", "success_rate")

SERVICE_WINDOW_SERIES: dict[str, str] = {
    "arrivals": "Requests to the service (see *Requests to a service*) that arrived in the bucket.",
    "successes": "Requests to the service that succeeded, by completion time.",
    "failures": "Requests to the service that failed (any kind), by completion time.",
    "p50_ms": "Median latency of the requests to the service completing in the bucket; NaN if none.",
    "p99_ms": "P99 latency of the requests to the service completing in the bucket; NaN if none.",
    "offered_rps": "Requests to the service arriving in the trailing window (t - collapse_window, t] "
                   "/ collapse_window: what its collapse rule reads.",
    "goodput_rps": "Successes of requests to the service completing in the trailing window / "
                   "collapse_window.",
}
"""Window series of each service, named ``svc.<service>.<series>``."""
EDGE_WINDOW_SERIES: dict[str, str] = {
    "arrivals": "Logical requests of the edge's client processes that arrived in the bucket.",
    "successes": "Those that succeeded, by completion time.",
    "failures": "Those that failed (any kind), by completion time.",
    "attempts": "Attempt records of the edge's requests, by attempt start time (retries and hedges "
                "included: attempts / arrivals is the edge's retry amplification).",
    "p99_ms": "P99 latency of the edge's requests completing in the bucket; NaN if none.",
}
"""Window series of each edge, named ``edge.<caller->callee>.<series>``."""

_N_CODES = len(ERROR_KINDS) + 2        # INCOMPLETE (-1), SUCCESS (0), the kinds (1..)


def graph_outputs(result: RunResult, grid_s: np.ndarray,
                  trigger_at_s: float | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The window series and summary keys of a graph run (docs/outputs.md, *Service graphs*)."""
    scenario = result.scenario
    outcome_cfg = scenario.outcome
    end_s = float(result.milestones.end_at_s)
    warmup_s = float(scenario.warmup)
    duration_s = max(0.0, end_s - warmup_s)
    services = list(scenario.services)
    names = list(result.client_names)
    n_entry = entry_clients(result)
    targets = client_targets(result)
    client_service = np.array([services.index(t) if t in services else -1 for t in targets], dtype=np.int64)

    rec = _Records(result, grid_s, warmup_s, end_s)
    n_services = len(services)
    # the service each request was sent to; n_services for a client whose target is unknown
    service_of = np.where(client_service >= 0, client_service, n_services)[rec.client] \
        if len(rec.client) else np.zeros(0, np.int64)

    # ------------------------------------------------------------- KPIs per group
    per_client = rec.kpis(rec.client, len(names), duration_s)
    per_service = rec.kpis(service_of, n_services + 1, duration_s)

    # ------------------------------------------------------------- window series
    n_buckets = len(grid_s)
    windows: dict[str, np.ndarray] = {}
    window_s = float(outcome_cfg.collapse_window)
    arrivals = rec.bucket_counts(service_of, rec.arrival_bucket, None, n_services)
    successes = rec.bucket_counts(service_of, rec.end_bucket, rec.success, n_services)
    failures = rec.bucket_counts(service_of, rec.end_bucket, rec.failed, n_services)
    p50, p99 = rec.bucket_percentiles(service_of, n_services, (50.0, 99.0))
    offered_n = rec.trailing_counts(grid_s, service_of, rec.arrival_at, n_services, window_s)
    goodput_n = rec.trailing_counts(grid_s, service_of[rec.success], rec.end_at[rec.success],
                                    n_services, window_s)
    for i, svc in enumerate(services):
        prefix = f"svc.{svc}."
        windows[prefix + "arrivals"] = arrivals[i]
        windows[prefix + "successes"] = successes[i]
        windows[prefix + "failures"] = failures[i]
        windows[prefix + "p50_ms"] = p50[i]
        windows[prefix + "p99_ms"] = p99[i]
        windows[prefix + "offered_rps"] = offered_n[i] / window_s
        windows[prefix + "goodput_rps"] = goodput_n[i] / window_s
    edge_ids = list(range(n_entry, len(names)))
    if edge_ids:
        n_clients = len(names)
        e_arrivals = rec.bucket_counts(rec.client, rec.arrival_bucket, None, n_clients)
        e_successes = rec.bucket_counts(rec.client, rec.end_bucket, rec.success, n_clients)
        e_failures = rec.bucket_counts(rec.client, rec.end_bucket, rec.failed, n_clients)
        e_attempts = rec.bucket_counts(rec.attempt_client, rec.attempt_bucket, None, n_clients)
        (e_p99,) = rec.bucket_percentiles(rec.client, n_clients, (99.0,))
        for i in edge_ids:
            prefix = f"edge.{names[i]}."
            windows[prefix + "arrivals"] = e_arrivals[i]
            windows[prefix + "successes"] = e_successes[i]
            windows[prefix + "failures"] = e_failures[i]
            windows[prefix + "attempts"] = e_attempts[i]
            windows[prefix + "p99_ms"] = e_p99[i]
    assert all(len(v) == n_buckets for v in windows.values())

    # ------------------------------------------------------------- collapse per service
    judge_from_s = trigger_at_s if trigger_at_s is not None else warmup_s + window_s
    dead_from_s = trigger_at_s if trigger_at_s is not None else warmup_s
    hold_s = float(outcome_cfg.collapse_hold)
    may_start = grid_s >= judge_from_s - _eps(judge_from_s)
    levels = result.levels
    single = len(services) == 1
    collapse: dict[str, tuple[float, str] | None] = {}
    for i, svc in enumerate(services):
        candidates: list[tuple[float, str]] = []
        below = (offered_n[i] > 0) & (goodput_n[i] < outcome_cfg.collapse_fraction * offered_n[i])
        k = _first_held(grid_s, below, may_start, hold_s, end_s)
        if k is not None:
            candidates.append((float(grid_s[k]), "success_rate"))
        dead_at = _first_dead_sample(levels, _level(svc, "alive", single), dead_from_s)
        if dead_at is not None:
            candidates.append((dead_at, "no_live_instance"))
        # the earlier instant; at a tie, losing every instance is the cause named
        collapse[svc] = min(candidates, key=lambda c: (c[0], COLLAPSE_CAUSES.index(c[1]))) if candidates else None

    # ------------------------------------------------------------- summary
    depth = _depths(services, targets[:n_entry], names[n_entry:])
    faulted = _faulted(result, services)
    entry_targets = set(targets[:n_entry])
    service_summary: dict[str, Any] = {}
    for i, svc in enumerate(services):
        cfg = scenario.services[svc]
        n_instances = int(getattr(cfg, "instances", 1))
        by_instance = [result.counters.get(f"handlers_started.{svc}.{j}") for j in range(n_instances)]
        handlers = [int(v) for v in by_instance if v is not None]
        alive = levels.get(_level(svc, "alive", single))
        entry: dict[str, Any] = {
            "instances": n_instances,
            "entry": svc in entry_targets,
            "faulted": svc in faulted,
            "depth": depth.get(svc),
            "handlers_started": sum(handlers) if len(handlers) == n_instances else None,
            "handlers_by_instance": handlers if len(handlers) == n_instances else None,
            **per_service[i],
        }
        for key, column, decimals in SERVICE_PEAKS:
            entry[key] = _sampled_peak(levels.get(_level(svc, column, single)), decimals)
        entry["min_alive"] = int(np.nanmin(alive)) if alive is not None and len(alive) else None
        entry["alive_at_end"] = int(alive[-1]) if alive is not None and len(alive) else None
        hit = collapse[svc]
        entry["collapsed_at_s"] = _round(hit[0], _INSTANT_DECIMALS) if hit else None
        entry["collapse_cause"] = hit[1] if hit else None
        service_summary[svc] = {key: entry[key] for key in SERVICE_KEYS}

    order = sorted((svc for svc in services if collapse[svc] is not None),
                   key=lambda svc: (collapse[svc][0], -_depth_key(depth.get(svc)), services.index(svc)))
    cascade = []
    for svc in order:
        at_s, cause = collapse[svc]
        cascade.append({
            "service": svc,
            "collapsed_at_s": _round(at_s, _INSTANT_DECIMALS),
            "collapse_time_s": _round(at_s - trigger_at_s, _INSTANT_DECIMALS) if trigger_at_s is not None else None,
            "cause": cause,
        })
    summary: dict[str, Any] = {
        "entry_clients": {names[i]: {"target": targets[i], **per_client[i]} for i in range(n_entry)},
        "services": service_summary,
        "edges": {names[i]: {"caller": names[i].split("->", 1)[0], "callee": targets[i], **per_client[i],
                             **_edge_breaker(result, i, trigger_at_s)}
                  for i in edge_ids},
        "cascade": cascade,
        "blast_radius": len(cascade),
        "services_collapsed": [c["service"] for c in cascade],
    }
    return windows, {key: summary[key] for key in GRAPH_SUMMARY_KEYS}


# ---------------------------------------------------------------------- records


class _Records:
    """The request and attempt columns a graph summary reads, each derived once: bucket
    indexes on the window grid, and one ordering of the requests by latency that every
    percentile reuses (grouping it afterwards is a stable radix sort on small integers)."""

    def __init__(self, result: RunResult, grid_s: np.ndarray, warmup_s: float, end_s: float) -> None:
        req, att = result.requests, result.attempts
        n_buckets = len(grid_s)
        self.n_buckets = n_buckets
        self.client = np.asarray(req["client"], dtype=np.int64)
        self.arrival_at = np.asarray(req["arrival_at"], dtype=np.float64)
        self.end_at = np.asarray(req["end_at"], dtype=np.float64)
        error = np.asarray(req["error"], dtype=np.int64)
        self.code_index = error + 1                       # INCOMPLETE -> 0, SUCCESS -> 1, kinds -> 2..
        self.completed = (error != INCOMPLETE) & np.isfinite(self.end_at)
        self.success = self.completed & (error == SUCCESS)
        self.failed = self.completed & (error != SUCCESS)
        self.in_population = (self.arrival_at >= warmup_s) & (self.arrival_at < end_s)
        # latency as the summary defines it: the censored age for a request unfinished at the end
        self.latency_ms = np.where(self.completed, self.end_at - self.arrival_at, end_s - self.arrival_at) * 1000.0
        self.by_latency = np.argsort(self.latency_ms)
        # bucket (grid[k-1], grid[k]] of each arrival and completion; n_buckets = outside the grid
        self.arrival_bucket = _buckets(grid_s, self.arrival_at)
        self.end_bucket = _buckets(grid_s, self.end_at)
        # each attempt's request, by id (the engine sorts requests by id; hand-made records may not be)
        ids = np.asarray(req["request_id"], dtype=np.int64)
        att_ids = np.asarray(att["request_id"], dtype=np.int64)
        self.attempt_request = np.full(len(att_ids), -1, dtype=np.int64)
        if len(ids) and len(att_ids):
            order = None if np.all(ids[1:] > ids[:-1]) else np.argsort(ids, kind="stable")
            sorted_ids = ids if order is None else ids[order]
            pos = np.minimum(np.searchsorted(sorted_ids, att_ids), len(ids) - 1)
            found = sorted_ids[pos] == att_ids
            if order is not None:
                pos = order[pos]
            self.attempt_request[found] = pos[found]
        found = self.attempt_request >= 0
        self.attempt_client = np.full(len(att_ids), -1, dtype=np.int64)
        self.attempt_client[found] = self.client[self.attempt_request[found]]
        self.attempt_in_population = np.zeros(len(att_ids), dtype=bool)
        self.attempt_in_population[found] = self.in_population[self.attempt_request[found]]
        self.attempt_bucket = _buckets(grid_s, np.asarray(att["start_at"], dtype=np.float64))

    def kpis(self, group: np.ndarray, n_groups: int, duration_s: float) -> list[dict[str, Any]]:
        """REQUEST_KPIS of every group over the population."""
        pop = self.in_population
        g = group[pop]
        n = np.bincount(g, minlength=n_groups)[:n_groups]
        ok = np.bincount(g[self.success[pop]], minlength=n_groups)[:n_groups]
        incomplete = np.bincount(g[~self.completed[pop]], minlength=n_groups)[:n_groups]
        codes = np.bincount(g * _N_CODES + self.code_index[pop], minlength=n_groups * _N_CODES)
        codes = codes[: n_groups * _N_CODES].reshape(n_groups, _N_CODES)
        # percentiles: group the population (a radix sort), then numpy's own percentile per group
        order = np.argsort(g.astype(np.uint16) if n_groups <= 1 << 16 else g, kind="stable")
        latency_ms = self.latency_ms[pop][order]
        bounds = np.concatenate(([0], np.cumsum(n)))
        p50 = np.full(n_groups, np.nan)
        p99 = np.full(n_groups, np.nan)
        for i in np.flatnonzero(n):
            p50[i], p99[i] = np.percentile(latency_ms[bounds[i]:bounds[i + 1]], (50.0, 99.0), method="linear")
        a_group = group[self.attempt_request[self.attempt_in_population]]
        n_attempts = np.bincount(a_group, minlength=n_groups)[:n_groups]
        out = []
        for i in range(n_groups):
            total = int(n[i])
            errors = {kind: int(codes[i, ERROR_CODE[kind] + 1]) for kind in ERROR_KINDS
                      if codes[i, ERROR_CODE[kind] + 1]}
            out.append({
                "requests": total,
                "successes": int(ok[i]),
                "offered_rps": _round(total / duration_s, _RATE_DECIMALS) if duration_s > 0 else 0.0,
                "goodput_rps": _round(int(ok[i]) / duration_s, _RATE_DECIMALS) if duration_s > 0 else 0.0,
                "success_rate": _round(int(ok[i]) / total, _FRACTION_DECIMALS) if total else None,
                "p50_ms": _round(float(p50[i]), _MS_DECIMALS),
                "p99_ms": _round(float(p99[i]), _MS_DECIMALS),
                "attempts_per_request": _round(int(n_attempts[i]) / total, _FRACTION_DECIMALS) if total else None,
                "incomplete": int(incomplete[i]),
                "errors": errors,
            })
        return out

    def percentiles(self, mask: np.ndarray, keys: list[tuple[np.ndarray, int]],
                    percents: tuple[float, ...]) -> list[np.ndarray]:
        """Latency percentiles of the requests of ``mask`` grouped by ``keys`` (most significant
        first, each (per-request key, number of values)); arrays of shape (n1, n2, ...)."""
        shape = tuple(n for _, n in keys)
        index = self.by_latency[mask[self.by_latency]]
        for key, n in reversed(keys):                       # LSD: least significant key first
            k = key[index]
            k = k.astype(np.uint16) if n <= 1 << 16 else k
            index = index[np.argsort(k, kind="stable")]      # radix sort for 16-bit keys
        flat = np.zeros(len(index), dtype=np.int64)
        for key, n in keys:
            flat = flat * n + key[index]
        counts = np.bincount(flat, minlength=int(np.prod(shape)))[: int(np.prod(shape))]
        series = _sorted_group_percentiles(self.latency_ms[index], counts, percents)
        return [s.reshape(shape) for s in series]

    def bucket_counts(self, group: np.ndarray, bucket: np.ndarray, mask: np.ndarray | None,
                      n_groups: int) -> np.ndarray:
        """Events per (group, bucket) for the records of ``mask`` (all if None): shape
        (n_groups, n_buckets). Events outside the grid, or of a negative group, are dropped."""
        nb = self.n_buckets
        keep = (bucket < nb) & (group >= 0) & (group < n_groups)
        if mask is not None:
            keep &= mask
        flat = group[keep] * nb + bucket[keep]
        return np.bincount(flat, minlength=n_groups * nb)[: n_groups * nb].reshape(n_groups, nb).astype(np.int64)

    def bucket_percentiles(self, group: np.ndarray, n_groups: int,
                           percents: tuple[float, ...]) -> list[np.ndarray]:
        """Per (group, bucket) percentiles of the latency of the requests completing in the bucket."""
        keep = self.completed & (self.end_bucket < self.n_buckets) & (group >= 0) & (group < n_groups)
        return self.percentiles(keep, [(group, n_groups), (self.end_bucket, self.n_buckets)], percents)

    @staticmethod
    def trailing_counts(grid_s: np.ndarray, group: np.ndarray, at_s: np.ndarray, n_groups: int,
                        window_s: float) -> np.ndarray:
        """``sim.outputs._trailing_counts`` for each group 0..n_groups-1 (events sorted once)."""
        keep = np.isfinite(at_s) & (group >= 0) & (group < n_groups)
        group, at_s = group[keep], at_s[keep]
        order = np.arange(len(at_s)) if np.all(at_s[1:] >= at_s[:-1]) else np.argsort(at_s)
        g = group[order]
        order = order[np.argsort(g.astype(np.uint16) if n_groups <= 1 << 16 else g, kind="stable")]
        group, at_s = group[order], at_s[order]
        bounds = np.searchsorted(group, np.arange(n_groups + 1), side="left")
        out = np.zeros((n_groups, len(grid_s)), dtype=np.int64)
        for i in range(n_groups):
            out[i] = _trailing_counts_sorted(grid_s, at_s[bounds[i]:bounds[i + 1]], window_s)
        return out


def _buckets(grid_s: np.ndarray, at_s: np.ndarray) -> np.ndarray:
    """The bucket (grid[k-1], grid[k]] of each instant; len(grid) for NaN or past the grid."""
    index = np.searchsorted(grid_s, at_s, side="left")
    index[~np.isfinite(at_s)] = len(grid_s)
    return index.astype(np.int64)


# ---------------------------------------------------------------------- helpers


def client_targets(result: RunResult) -> list[str]:
    """The service each of ``result.client_names`` sends to: a load source's ``target`` (the
    first service if it names none), an edge's callee."""
    services = list(result.scenario.services)
    n_entry = entry_clients(result)
    out = []
    for i, name in enumerate(result.client_names):
        if i >= n_entry:
            out.append(name.split("->", 1)[1])
        else:
            cfg = result.scenario.clients.get(name)
            out.append(getattr(cfg, "target", "") or (services[0] if services else ""))
    return out


def _level(service: str, column: str, single_service: bool) -> str:
    """The level column of ``column`` for ``service``: ``svc.<service>.<column>``, or the
    unprefixed process column when the run has one service (the engine writes no prefixed ones)."""
    return column if single_service else f"svc.{service}.{column}"


def _first_dead_sample(levels: dict[str, np.ndarray], column: str, from_s: float) -> float | None:
    """The first sampling instant at or after ``from_s`` at which the level is 0 (no live instance)."""
    alive = levels.get(column)
    times = levels.get("time_s")
    if alive is None or times is None:
        return None
    n = min(len(alive), len(times))
    times = np.round(np.asarray(times[:n], dtype=np.float64), _GRID_DECIMALS)
    hits = np.flatnonzero((np.asarray(alive[:n], dtype=np.float64) <= 0) & (times >= from_s - _eps(from_s)))
    return float(times[hits[0]]) if hits.size else None


def _sampled_peak(column: np.ndarray | None, decimals: int | None) -> int | float | None:
    if column is None or not np.size(column) or not np.isfinite(column).any():
        return None
    peak = float(np.nanmax(column))
    return int(round(peak)) if decimals is None else round(peak, decimals)


def _depths(services: list[str], entry_targets: list[str], edges: list[str]) -> dict[str, int]:
    """Hops from the nearest entry service along the edges (breadth first); services no entry
    service reaches are left out."""
    callees: dict[str, list[str]] = {}
    for edge in edges:
        caller, callee = edge.split("->", 1)
        callees.setdefault(caller, []).append(callee)
    depth = {svc: 0 for svc in entry_targets if svc in services}
    queue = deque(depth)
    while queue:
        svc = queue.popleft()
        for callee in callees.get(svc, ()):
            if callee not in depth:
                depth[callee] = depth[svc] + 1
                queue.append(callee)
    return depth


def _depth_key(depth: int | None) -> float:
    return -math.inf if depth is None else float(depth)


def _edge_breaker(result: RunResult, client: int, trigger_at_s: float | None) -> dict[str, Any]:
    """The breakers of one edge (one per caller process): trips to open, and the first trip at or
    after the trigger (any, without faults) in seconds after the trigger (None if none)."""
    trips = [at for at, c, _, state in result.milestones.breaker_transitions if c == client and state == "open"]
    from_s = trigger_at_s if trigger_at_s is not None else -math.inf
    after = [at for at in trips if at >= from_s]
    first = min(after) - (trigger_at_s or 0.0) if after else None
    return {"breaker_trips": len(trips), "time_to_trip_s": _round(first, _INSTANT_DECIMALS)}


def _faulted(result: RunResult, services: list[str]) -> set[str]:
    """Services a fault names as its target or whose routes it touches directly."""
    out: set[str] = set()
    for window in result.milestones.faults:
        if window.target in services:
            out.add(window.target)
        for route in window.touched_routes:
            svc = route.split("/", 1)[0]
            if svc in services:
                out.add(svc)
    return out


