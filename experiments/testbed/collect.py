"""From what a testbed run wrote to a ``RunResult``, summarised exactly as a simulated run is.

The load generator's records become the request and attempt records (times relative to
the run's start instant t0, error kinds as ``sim.result`` codes); the server's handler
events give each attempt's ``to_server_s`` (start of the attempt to the handler having the
request), the handler time and the time spent after the caller had gone (wasted work),
and which requests waited on a locked table (touched); the server's stats lines and the
harness's ``/proc`` samples become the level columns on the sampling grid; accept errors
give ``fd_exhausted_at_s`` and the watchdog's kill the OOM milestones. ``sim.outputs.summarize``
then derives the window series and the summary, so every key means what docs/outputs.md
says, measured instead of modelled.

Not measured (left at the "nothing happened" value, or absent): the TLS, backlog and
flow-control phases of the time before the server (no TLS, no HTTP/2; the accept-queue
wait is inside the connect time as the client sees it), ``gc_fraction``, ``events``.
Testbed-only level columns: ``tcp_established`` and ``tcp_close_wait`` (sockets on the
server's port, what ``ss`` counts), ``db_querying.<route>`` (handlers inside a query),
``accept_errors`` (failed accepts so far, EMFILE and others); ``memory_mib`` is the resident set size.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict

import numpy as np

from experiments.testbed.run import RawRun
from sim.outputs import summarize
from sim.provenance import provenance
from sim.result import (ATTEMPT_COLUMNS, ERROR_CODE, INCOMPLETE, REQUEST_COLUMNS, SUCCESS, FaultWindow, Milestones,
                        RunResult, empty_columns)
from sim.schema import Scenario

UNCLASSIFIED_AS = "conn_reset"
"""Error kind given to a client error the load generator could not classify (counted in the
``testbed_unclassified_errors`` counter and warned about: it means the classifier needs a rule)."""


def _code(kind: str, unclassified: list[str]) -> int:
    if kind == "success":
        return SUCCESS
    if kind == "incomplete":
        return INCOMPLETE
    if kind in ERROR_CODE:
        return ERROR_CODE[kind]
    unclassified.append(kind)
    return ERROR_CODE[UNCLASSIFIED_AS]


def _read_records(raw: RawRun) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    requests, attempts, levels = [], [], []
    with open(raw.files["records"], encoding="ascii", errors="replace") as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "R":
                requests.append(parts)
            elif parts[0] == "A":
                attempts.append(parts)
            elif parts[0] == "C":
                levels.append(parts)
    return requests, attempts, levels


def _read_events(raw: RawRun):
    stats, per_route, starts, ends, locked, accept_errors, kills = [], [], {}, {}, set(), [], []
    try:
        fh = open(raw.files["events"], encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return stats, per_route, starts, ends, locked, accept_errors, kills
    with fh:
        for line in fh:
            parts = line.split(" ", 3)
            tag = parts[0]
            try:
                if tag == "S":
                    stats.append([int(x) for x in line.split()[1:]])
                elif tag == "P":
                    per_route.append([int(x) for x in line.split()[1:]])
                elif tag == "H":
                    starts[parts[1]] = int(parts[2])
                elif tag == "E":
                    ends[parts[1]] = int(parts[2])
                elif tag == "L":
                    locked.add(parts[1].split(".")[0])
                elif tag == "X":
                    accept_errors.append((int(parts[1]), line))
                elif tag == "K":
                    kills.append(int(parts[1]))
            except (IndexError, ValueError):
                continue      # a line cut by the kill
    return stats, per_route, starts, ends, locked, accept_errors, kills


def collect(raw: RawRun, scenario: Scenario, seed: int, extra_provenance: dict | None = None) -> RunResult:
    """The ``RunResult`` of one testbed run (``scenario`` in its testbed form), summarised."""
    t0 = raw.t0_ns
    service_name, svc = next(iter(scenario.services.items()))
    route_names = list(svc.routes)
    client_names = list(scenario.clients)
    end_s = scenario.duration
    step_s = scenario.sample_interval
    req_rows, att_rows, client_levels = _read_records(raw)
    stats, per_route, h_start, h_end, locked, accept_errors, kills = _read_events(raw)
    unclassified: list[str] = []

    def rel(ns: str | int) -> float:
        v = int(ns)
        return (v - t0) / 1e9 if v > 0 else math.nan

    # ---------------------------------------------------------------- faults, touched
    windows: list[FaultWindow] = []
    touching: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for fault in scenario.faults:
        if fault.at >= end_s:
            continue
        stop = min(fault.at + fault.duration, end_s) if fault.duration > 0 else end_s
        touched = []
        if fault.kind == "db_lock":
            touched = [r for r, rc in svc.routes.items() if any(st.query == fault.target for st in rc.steps)]
        windows.append(FaultWindow(fault.kind, fault.at, stop, fault.target,
                                   tuple(f"{service_name}/{r}" for r in touched)))
        for r in touched:
            touching[r].append((fault.at, stop))
    windows.sort(key=lambda w: w.start_at)

    # ---------------------------------------------------------------- requests
    n = len(req_rows)
    reqs = empty_columns(REQUEST_COLUMNS, n)
    for i, p in enumerate(req_rows):
        # R id client instance route arrival end kind attempts
        rid, route, arrival = int(p[1]), int(p[4]), rel(p[5])
        reqs["request_id"][i] = rid
        reqs["client"][i] = int(p[2])
        reqs["route"][i] = route
        reqs["arrival_at"][i] = arrival
        reqs["end_at"][i] = rel(p[6]) if p[7] != "incomplete" else math.nan
        reqs["error"][i] = _code(p[7], unclassified)
        reqs["attempts"][i] = int(p[8])
        name = route_names[route]
        reqs["touched"][i] = (p[1] in locked
                              or any(a <= arrival < b for a, b in touching.get(name, ())))
    order = np.argsort(reqs["request_id"], kind="stable")
    reqs = {k: v[order] for k, v in reqs.items()}

    # ---------------------------------------------------------------- attempts
    m = len(att_rows)
    atts = empty_columns(ATTEMPT_COLUMNS, m)
    atts["to_server_s"][:] = np.nan
    handler_s = wasted_s = 0.0
    for i, p in enumerate(att_rows):
        # A id n start end kind status new_conn connect_ns pool_wait_ns
        att_id = f"{p[1]}.{p[2]}"
        start = rel(p[3])
        end = rel(p[4]) if p[5] != "incomplete" else math.nan
        atts["request_id"][i] = int(p[1])
        atts["attempt"][i] = int(p[2])
        atts["start_at"][i] = start
        atts["end_at"][i] = end
        atts["error"][i] = _code(p[5], unclassified)
        atts["new_conn"][i] = p[7] == "true"
        atts["connect_s"][i] = int(p[8]) / 1e9
        atts["pool_wait_s"][i] = int(p[9]) / 1e9
        if att_id in h_start:
            atts["to_server_s"][i] = max(rel(h_start[att_id]) - start, 0.0)
        if att_id in h_start and att_id in h_end:
            began, done = rel(h_start[att_id]), rel(h_end[att_id])
            handler_s += done - began
            if not math.isnan(end) and end < done:
                wasted_s += done - max(began, end)

    # ---------------------------------------------------------------- levels
    k = int(round(end_s / step_s))
    grid = np.arange(1, k + 1) * step_s
    s = raw.samples
    alive = np.asarray(s["alive"][:k], dtype=float)
    levels: dict[str, np.ndarray] = {"time_s": grid, "alive": alive}
    by_slot: dict[int, list[int]] = {}
    for row in stats:
        slot = int(round((row[0] - t0) / 1e9 / step_s))
        if 1 <= slot <= k:
            by_slot[slot] = row
    # S t goroutines conns peak_conns inflight heap_alloc heap+stack rss db_open db_in_use accept_errors gcs
    stat_cols = {"goroutines": 1, "server_connections": 2, "inflight_requests": 4, "live_heap_mib": 5,
                 "db_in_use": 9, "accept_errors": 10}
    peak_conns = max((row[3] for row in stats), default=0)
    cols = {name: np.full(k, np.nan) for name in stat_cols}
    for slot, row in by_slot.items():
        for name, j in stat_cols.items():
            cols[name][slot - 1] = row[j]
    for name in cols:     # a slot whose stats line is missing (a late tick) takes the previous one
        col = cols[name]
        last = 0.0
        for j in range(k):
            if math.isnan(col[j]):
                col[j] = last if alive[j] else 0.0
            last = col[j]
        col[alive == 0] = 0.0
    levels["server_connections"] = cols["server_connections"]
    levels["accept_queue"] = np.asarray(s["accept_queue"][:k], dtype=float)
    levels["open_fds"] = np.asarray(s["open_fds"][:k], dtype=float)
    levels["goroutines"] = cols["goroutines"]
    rss = np.asarray(s["rss_b"][:k], dtype=float) / 1048576.0
    levels["memory_mib"] = rss
    levels["live_heap_mib"] = cols["live_heap_mib"] / 1048576.0
    cpu = np.asarray(s["cpu_s"][:k], dtype=float)
    prev = np.concatenate([[np.nan], cpu[:-1]])
    util = (cpu - prev) / (svc.cpu.cores * step_s)
    util[0] = cpu[0] / (svc.cpu.cores * step_s) if not math.isnan(cpu[0]) else 0.0
    levels["cpu_utilization"] = np.clip(np.nan_to_num(util, nan=0.0), 0.0, None)
    levels["inflight_requests"] = cols["inflight_requests"]
    # P t inflight_by_route... querying_by_route...: the sim's inflight.<route>, and the testbed's
    # db_querying.<route> (handlers of the route inside a query, holding a DB connection)
    n_routes = len(route_names)
    by_route = np.full((k, 2 * n_routes), np.nan)
    for row in per_route:
        slot = int(round((row[0] - t0) / 1e9 / step_s))
        if 1 <= slot <= k and len(row) == 1 + 2 * n_routes:
            by_route[slot - 1] = row[1:]
    for j in range(2 * n_routes):
        col = by_route[:, j]
        last = 0.0
        for i in range(k):
            if math.isnan(col[i]):
                col[i] = last if alive[i] else 0.0
            last = col[i]
        col[alive == 0] = 0.0
    for j, name in enumerate(route_names):
        levels[f"inflight.{name}"] = by_route[:, j]
    dbs = sorted({st.query.split(".", 1)[0] for rc in svc.routes.values() for st in rc.steps if st.query})
    if len(dbs) == 1:
        levels[f"db_in_use.{dbs[0]}"] = cols["db_in_use"]
    client_conns = np.zeros(k)
    client_inflight = np.zeros(k)
    for p in client_levels:
        slot = int(round((int(p[1]) - t0) / 1e9 / step_s))
        if 1 <= slot <= k:
            client_conns[slot - 1] = float(p[2])
            client_inflight[slot - 1] = float(p[3])
    levels["client_connections"] = client_conns
    levels["client_inflight"] = client_inflight
    levels["tcp_established"] = np.asarray(s["tcp_established"][:k], dtype=float)
    levels["tcp_close_wait"] = np.asarray(s["tcp_close_wait"][:k], dtype=float)
    levels["accept_errors"] = cols["accept_errors"]
    if dbs:
        for j, name in enumerate(route_names):
            levels[f"db_querying.{name}"] = by_route[:, n_routes + j]

    # ---------------------------------------------------------------- milestones, counters
    emfile = [at for at, line in accept_errors if "too many open files" in line]
    kill_at = rel(kills[0]) if kills else None
    died_other = raw.server_exit is not None and not kills
    milestones = Milestones(
        trigger_at_s=windows[0].start_at if windows else None, faults=windows,
        kills=[kill_at] if kill_at is not None else [],
        fd_exhausted_at_s=rel(min(emfile)) if emfile else None,
        oom_killed_at_s=kill_at, end_at_s=end_s,
        alive_at_end=raw.server_exit is None, restart_pending=False)
    if died_other:
        warnings.warn(f"tbserver exited during the run (status {raw.server_exit}) at about "
                      f"{raw.server_died_at_s:.1f} s, not by the OOM watchdog; see {raw.files['server_stderr']}")
        milestones.kills = [raw.server_died_at_s or end_s]
    last = stats[-1] if stats else []
    cpu_stretch = last[13] / last[12] if len(last) > 16 and last[12] > 0 else None
    timer_over_ms = (last[15] - last[14]) / last[16] / 1e6 if len(last) > 16 and last[16] > 0 else None
    counters = {
        "events": 0.0, "handler_s": handler_s, "wasted_handler_s": wasted_s,
        "peak_server_connections": float(peak_conns),
        "accept_errors": float(len(accept_errors)), "testbed_unclassified_errors": float(len(unclassified)),
        "testbed_wall_s": raw.wall_s,
    }
    # how the machine treated the handler work: wall / nominal time of the CPU steps (above 1:
    # other work on the cores), and the mean lateness of the DB timers (Go 1.19's timers sleep
    # in epoll_wait, whose timeout is in whole milliseconds)
    if cpu_stretch is not None:
        counters["testbed_cpu_stretch"] = cpu_stretch
    if timer_over_ms is not None:
        counters["testbed_db_timer_late_ms"] = timer_over_ms
    if unclassified:
        sample = sorted(set(unclassified))[:3]
        warnings.warn(f"{len(unclassified)} client errors the load generator could not classify (counted as "
                      f"{UNCLASSIFIED_AS}): {sample}")
    result = RunResult(scenario=scenario, seed=seed, replication=0, route_names=route_names,
                       client_names=client_names, requests=reqs, attempts=atts, levels=levels,
                       milestones=milestones, counters=counters, wall_s=raw.wall_s)
    result.provenance = provenance(scenario, seed, 0)
    result.provenance["testbed"] = {
        "t0_unix_ns": t0, "cpu_stretch": None if cpu_stretch is None else round(cpu_stretch, 3),
        "db_timer_late_ms": None if timer_over_ms is None else round(timer_over_ms, 3),
        "unclassified_errors": len(unclassified), **(extra_provenance or {})}
    summarize(result)
    return result
