"""The figures docs/scenarios.md quotes for the service-graph scenarios, one JSON line per seed.

    .venv/bin/python -m experiments.graph_figures cascade-618 --seeds 1 2 3
    .venv/bin/python -m experiments.graph_figures chaos-drills@pod-eviction --window 30,90
    .venv/bin/python -m experiments.graph_figures fanout-tail@hedging --slow 0.5
    .venv/bin/python -m experiments.graph_figures cascade-618 --set edges.1.breaker.kind=none

SCENARIO is a shipped name or a file, optionally ``@VARIANT``; ``--set`` as in
``stormsim run``. Each figure, over the requests of the entry client (the users, client 0)
unless it says otherwise; "by arrival" means the requests that arrived in the interval:

- ``success_rate``, ``p50_ms``, ``p99_ms``: the summary's (every entry request of the run;
  unfinished ones fail);
- ``success_after_trigger``: entry requests arriving from the trigger on;
- ``success_by_minute``: the same by minute after the trigger, by arrival (the last one may be
  shorter; its last seconds hold requests still in flight at the end, which count as failed);
- ``routes_after_trigger``: ``success_after_trigger`` per route of the entry service;
- ``success_in_window`` (``--window A,B``): entry requests arriving in [A, B) s (a drill);
  ``p99_ms_in_window`` (and ``..._by_route``): the P99 latency of those that succeeded;
- ``inventory_p50_ms_first_4s``, ``inventory_p99_ms_first_4s``: attempts on the edges into
  ``inventory`` that started in the 4 s after the trigger (in cascade-618, before the pool
  queue pushes them to the timeout), end - start (finished ones);
- ``retries``: attempt records after the first attempt of their request, over every client
  (the users' and every edge), from the start of the run; ``attempts_per_entry_request``:
  every attempt record (every client) / entry requests;
- ``breaker_first_open_s``: per edge with a breaker that opened, for each caller instance, the
  first transition to open after the trigger, in seconds after it (``None``: never), from
  ``milestones.breaker_transitions``;
- ``breaker_refusals``: per edge, calls that failed ``breaker_open``;
- ``instance_kills``: per service, instances killed (OOM or an ``instance_kill`` fault);
- ``blast_radius``, ``cascade``: the summary's (services collapsed; each as [service,
  seconds after the trigger, cause]);
- ``slow_fraction`` (``--slow S``): finished entry requests slower than S seconds;
  ``extra_attempts``: per edge, attempt records / calls - 1 (hedges and retries).

Runs take what ``stormsim run`` takes without writing its files (~50 s of CPU for
cascade-618, ~30 s for cascade-618-fixed, ~15 s for a drill, ~4 s for fanout-tail).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

import numpy as np

from experiments.catalog import resolve_scenario, split_variant
from sim.engine import run_scenario
from sim.outputs import entry_clients
from sim.result import ERROR_CODE, SUCCESS, RunResult
from sim.scenario_loader import ScenarioError, load_scenario


def _rate(ok: np.ndarray, keep: np.ndarray) -> float | None:
    return round(float(ok[keep].mean()), 4) if keep.any() else None


def figures(result: RunResult, window: tuple[float, float] | None = None,
            slow_s: float | None = None) -> dict:
    req, att = result.requests, result.attempts
    names = result.client_names
    trigger = result.milestones.trigger_at_s or 0.0
    end = result.milestones.end_at_s
    entry = req["client"] == 0
    ok = req["error"] == SUCCESS
    arrival = req["arrival_at"]
    after = entry & (arrival >= trigger)
    out: dict = {"success_rate": result.summary["success_rate"], "p50_ms": result.summary["p50_ms"],
                 "p99_ms": result.summary["p99_ms"], "success_after_trigger": _rate(ok, after)}
    minutes = int(np.ceil((end - trigger) / 60.0))
    out["success_by_minute"] = [_rate(ok, entry & (arrival >= trigger + 60 * k) & (arrival < trigger + 60 * (k + 1)))
                                for k in range(minutes)]
    out["routes_after_trigger"] = {route: _rate(ok, after & (req["route"] == i))
                                   for i, route in enumerate(result.route_names)}
    if window is not None:
        keep = entry & (arrival >= window[0]) & (arrival < window[1])
        out["success_in_window"] = _rate(ok, keep)
        out["failed_in_window"] = int((keep & ~ok).sum())
        out["requests_in_window"] = int(keep.sum())
        took_s = (req["end_at"] - arrival)[keep & ok]
        if len(took_s):
            out["p99_ms_in_window"] = round(float(np.percentile(took_s, 99)) * 1000, 1)
            out["p99_ms_in_window_by_route"] = {
                route: round(float(np.percentile((req["end_at"] - arrival)[keep & ok & (req["route"] == i)], 99)) * 1000, 1)
                for i, route in enumerate(result.route_names) if (keep & ok & (req["route"] == i)).any()}
    by_id = np.argsort(req["request_id"])
    client_of_attempt = req["client"][by_id][np.searchsorted(req["request_id"][by_id], att["request_id"])]
    took = att["end_at"] - att["start_at"]
    into_inventory = np.isin(client_of_attempt, [i for i, n in enumerate(names) if n.endswith("->inventory")])
    first_4s = into_inventory & (att["start_at"] >= trigger) & (att["start_at"] < trigger + 4) & np.isfinite(took)
    if first_4s.any():
        out["inventory_p50_ms_first_4s"] = round(float(np.percentile(took[first_4s], 50)) * 1000, 1)
        out["inventory_p99_ms_first_4s"] = round(float(np.percentile(took[first_4s], 99)) * 1000, 1)
    retry = att["attempt"] > 0
    n_entry = int(entry.sum())
    out["entry_requests"] = n_entry
    out["retries"] = int(retry.sum())
    out["attempts_per_entry_request"] = round(len(att["attempt"]) / n_entry, 3)
    out["retries_by_edge"] = {n: int(c) for n, c in zip(names, np.bincount(client_of_attempt[retry], minlength=len(names)))
                              if c}
    opens: dict[str, dict[int, float | None]] = {}
    for at, client, instance, state in result.milestones.breaker_transitions:
        if client >= entry_clients(result):
            first = opens.setdefault(names[client], {}).setdefault(instance, None)
            if state == "open" and at >= trigger and first is None:
                opens[names[client]][instance] = round(at - trigger, 3)
    out["breaker_first_open_s"] = {edge: sorted(v.values(), key=lambda x: (x is None, x)) for edge, v in opens.items()
                                   if any(x is not None for x in v.values())}
    refused = req["error"] == ERROR_CODE["breaker_open"]
    out["breaker_refusals"] = {n: int(c) for n, c in zip(names, np.bincount(req["client"][refused], minlength=len(names)))
                               if c}
    kills = Counter(service for _, service, _, what in result.milestones.instance_events if what != "restart")
    out["instance_kills"] = dict(sorted(kills.items()))
    if slow_s is not None:
        done = entry & np.isfinite(req["end_at"])
        out["slow_fraction"] = round(float(((req["end_at"] - arrival)[done] > slow_s).mean()), 4)
        out["finished"] = int(done.sum())
        calls = np.bincount(req["client"], minlength=len(names))
        tries = np.bincount(client_of_attempt, minlength=len(names))
        out["extra_attempts"] = {n: round(float(tries[i] / calls[i] - 1), 4) for i, n in enumerate(names)
                                 if i > 0 and calls[i]}
    cascade = result.summary.get("cascade") or []
    out["blast_radius"] = result.summary.get("blast_radius")
    out["cascade"] = [[c["service"], c["collapse_time_s"], c["cause"]] for c in cascade]
    out["events"] = result.summary["events"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE")
    parser.add_argument("--window", help="A,B: success of the entry requests arriving in [A, B) s")
    parser.add_argument("--slow", type=float, help="S: the share of entry requests slower than S s")
    args = parser.parse_args(argv)
    window = None
    if args.window:
        try:
            window = tuple(float(x) for x in args.window.split(","))
        except ValueError:
            window = ()
        if len(window) != 2 or not window[0] < window[1]:
            parser.error(f"--window: expected A,B in seconds with A < B, got {args.window!r}")
    if args.slow is not None and not args.slow > 0:
        parser.error(f"--slow: expected a positive number of seconds, got {args.slow:g}")
    try:
        name, variant = split_variant(args.scenario)
        scenario = load_scenario(resolve_scenario(name), overrides=args.overrides, variant=variant)
    except ScenarioError as exc:
        print(f"graph_figures: error: {exc}", file=sys.stderr)
        return 2
    for seed in args.seeds:
        started = time.process_time()
        result = run_scenario(scenario, seed=seed)
        line = {"scenario": args.scenario, "seed": seed, "set": args.overrides,
                **figures(result, window, args.slow), "cpu_s": round(time.process_time() - started, 1)}
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
