"""The service-graph scenarios (docs/scenarios.md) load, and show what they exist to show.

- ``cascade-618`` (S8): 17 Go services with Go's defaults; a lock on inventory's stock table
  spreads to browse and cart (stock-cache crash-loops), and end-to-end success falls far
  below the fixed graph's.
- ``cascade-618-fixed``: the write-up's fix contains it: checkout fails (the lock is still
  there) within order's 800 ms budget and without retries, browse and cart do not fail.
- ``chaos-drills``: each drill's survival (entry success rate during the drill) against the
  99.5% release gate: latency injection and slow etcd writes pass, the pod eviction fails
  (the gateway's 5% breaker towards order opens on the refused connections) unless the dead
  pod leaves the balancer at once.
- ``fanout-tail``: 1 - 0.99^100 = 63% of fan-out requests are slow; hedging and waiting for
  the first 95 copies cut that to a few percent or less; the first 99 leave the 26% of
  requests that have two slow copies.

The default checks run shortened copies (``duration`` and fault-timing overrides); the runs
are cached per test process. Full-length runs are marked slow. The module takes ~80 s on one
core.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from conftest import load_shipped
from experiments.catalog import shipped_scenarios
from sim.engine import run_scenario
from sim.result import ERROR_CODE, SUCCESS, RunResult
from sim.scenario_loader import load_scenario

GRAPH_SCENARIOS = ("cascade-618", "cascade-618-fixed", "chaos-drills", "fanout-tail")
RELEASE_GATE = 0.995

# the cascade, shortened: the lock at 20 s, 75 s of it (the shipped run: at 30 s, for 150 s);
# judged on arrivals up to 10 s before the end (later ones are still in flight)
CASCADE_SHORT = ("duration=95s", "faults.0.at=20s")
TRIGGER_SHORT_S, JUDGED_UNTIL_S = 20.0, 85.0
# the drills, shortened: each drill from 10 s to 40 s of a 50 s run (the shipped: 30 s to 90 s of 120 s)
DRILL_AT_S, DRILL_FOR_S, DRILL_RUN_S = 10.0, 30.0, 50.0


@functools.lru_cache(maxsize=None)
def shortened(name: str, variant: str | None = None, overrides: tuple[str, ...] = ()) -> RunResult:
    """A run of a shipped scenario with ``overrides`` (cached; read, never change)."""
    return run_scenario(load_shipped(name, variant, overrides))


def entry(result: RunResult) -> dict[str, np.ndarray]:
    """The request records of the users' requests (the entry client, index 0)."""
    req = result.requests
    keep = req["client"] == 0
    return {k: v[keep] for k, v in req.items()}


def success_rate(result: RunResult, since: float = 0.0, until: float = float("inf"),
                 route: str | None = None) -> float:
    """Entry success rate of the requests that arrived in [since, until), of one route if given."""
    req = entry(result)
    keep = (req["arrival_at"] >= since) & (req["arrival_at"] < until)
    if route is not None:
        keep &= req["route"] == result.route_names.index(route)
    assert keep.any()
    return float((req["error"][keep] == SUCCESS).mean())


def edge_requests(result: RunResult, edge: str) -> dict[str, np.ndarray]:
    req = result.requests
    keep = req["client"] == result.client_names.index(edge)
    return {k: v[keep] for k, v in req.items()}


def edge_attempts(result: RunResult, edge: str) -> dict[str, np.ndarray]:
    ids = edge_requests(result, edge)["request_id"]
    att = result.attempts
    keep = np.isin(att["request_id"], ids)
    return {k: v[keep] for k, v in att.items()}


def retries(result: RunResult) -> int:
    """Attempts after the first, over every client (the users' and every edge)."""
    return int((result.attempts["attempt"] > 0).sum())


# ------------------------------------------------------------------------ loading


@pytest.mark.parametrize("name", GRAPH_SCENARIOS)
def test_scenario_is_shipped_and_every_variant_loads(name):
    path = shipped_scenarios()[name]
    base = load_scenario(path)
    assert base.name == name and base.description
    assert len(base.services) > 1 and base.edges
    for variant in base.variants:
        scenario = load_scenario(path, variant=variant)
        assert scenario.name == name
        assert scenario != base, f"{name}@{variant} changes nothing"


def test_cascade_is_17_go_services_with_gos_defaults_on_every_edge():
    s = load_shipped("cascade-618")
    assert len(s.services) == 17
    assert all(2 <= svc.instances <= 3 for svc in s.services.values())
    assert not any(route.honours_context for svc in s.services.values() for route in svc.routes.values())
    for edge in s.edges:
        assert edge.transport.client_timeout == 10.0
        assert edge.retry.max_attempts == 3 and edge.retry.backoff == "none"
        assert not edge.deadline_propagation and edge.breaker.kind == "none"
    # every call has its edge (none falls back to an edge without the 10 s timeout)
    calls = {(name, step.call.split(".")[0]) for name, svc in s.services.items()
             for route in svc.routes.values() for step in route.steps if step.call}
    assert calls == {(e.caller, e.callee) for e in s.edges}
    reserve = next(e for e in s.edges if (e.caller, e.callee) == ("order", "inventory"))
    assert reserve.retry.retry_non_idempotent          # the non-idempotent reservation is retried
    lock, = s.faults
    assert lock.kind == "db_lock" and lock.target == "trade.stock" and lock.lock_wait == 8.0


def test_the_fixed_graph_is_the_write_ups_table():
    s = load_shipped("cascade-618-fixed")
    base = load_shipped("cascade-618")
    assert s.services.keys() == base.services.keys() and s.faults == base.faults
    assert all(route.honours_context for svc in s.services.values() for route in svc.routes.values())
    edges = {(e.caller, e.callee): e for e in s.edges}
    assert edges.keys() == {(e.caller, e.callee) for e in base.edges}
    inv = edges["order", "inventory"]
    assert inv.transport.client_timeout == 0.8 and inv.deadline_propagation and inv.retry.max_attempts == 1
    auth = edges["user-centre", "auth"]
    assert auth.transport.client_timeout == 0.2 and auth.deadline_propagation
    assert auth.retry.max_attempts > 1 and auth.retry.backoff == "exponential"
    assert all(e.deadline_propagation for e in s.edges) and s.clients["app"].deadline_propagation
    thresholds = {key: e.breaker.failure_rate_threshold for key, e in edges.items()}
    assert all(e.breaker.kind == "resilience4j" and e.breaker.permitted_calls_in_half_open == 3 for e in s.edges)
    assert set(thresholds.values()) == {5.0, 15.0}
    assert thresholds["order", "inventory"] == thresholds["gateway", "order"] == 5.0       # core
    assert thresholds["gateway", "search"] == thresholds["stock-cache", "inventory"] == 15.0   # edge services


# ------------------------------------------------------------------- S8: the cascade


def cascade(fixed: bool = False) -> RunResult:
    return shortened("cascade-618-fixed" if fixed else "cascade-618", None, CASCADE_SHORT)


def test_cascade_spreads_beyond_checkout_and_the_fix_contains_it():
    base, fixed = cascade(), cascade(fixed=True)
    t, end = TRIGGER_SHORT_S, JUDGED_UNTIL_S
    assert success_rate(base, until=t) > 0.99 and success_rate(fixed, until=t) > 0.99
    # from half a minute into the lock the base is down to about a third (the write-up: 31%)
    b, f = success_rate(base, since=t + 30, until=end), success_rate(fixed, since=t, until=end)
    assert b < 0.45, b
    assert f > 0.7, f
    assert f - b > 0.3
    for route in ("browse", "cart"):      # untouched by the lock
        assert success_rate(base, since=t + 30, until=end, route=route) < 0.5
        assert success_rate(fixed, since=t, until=end, route=route) > 0.99
    for result in (base, fixed):          # the lock lasts: no reservation goes through
        assert success_rate(result, since=t + 10, until=end, route="checkout") < 0.1
    assert success_rate(base, since=t, until=end, route="orders") > 0.99     # history never waits on inventory


def test_cascade_stock_cache_crash_loops_and_inventory_calls_time_out():
    base = cascade()
    assert base.levels["svc.stock-cache.alive"].min() == 0           # every instance dead at once
    assert base.milestones.kills and min(base.milestones.kills) > TRIGGER_SHORT_S
    att = edge_attempts(base, "order->inventory")
    late = att["start_at"] >= TRIGGER_SHORT_S
    timed_out = att["error"][late] == ERROR_CODE["client_timeout"]
    assert timed_out.mean() > 0.3
    assert np.nanmax(att["end_at"][late] - att["start_at"][late]) == pytest.approx(10.0, abs=0.01)
    assert base.summary["wasted_work_fraction"] > 0.2     # handlers that ignore their context


def test_the_fix_keeps_order_within_800ms_without_retries_and_its_breaker_reacts_in_about_a_second():
    base, fixed = cascade(), cascade(fixed=True)
    att = edge_attempts(fixed, "order->inventory")
    assert np.nanmax(att["end_at"] - att["start_at"]) <= 0.8 + 0.002
    assert (att["attempt"] == 0).all()
    assert retries(fixed) < 0.05 * retries(base)
    # the breaker's reaction: its first refusal comes ~1 s after the lock (the 800 ms timeout,
    # then 5 failures of the last 100 calls), not the write-up's 217 ms
    req = edge_requests(fixed, "order->inventory")
    refused = req["arrival_at"][req["error"] == ERROR_CODE["breaker_open"]]
    assert 0.8 < refused.min() - TRIGGER_SHORT_S < 1.6
    assert fixed.summary["wasted_work_fraction"] < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_full_cascade_holds_about_a_third_from_its_second_minute(seed):
    """The shipped runs (~30 s and ~16 s each): docs/scenarios.md's table."""
    base = run_scenario(load_shipped("cascade-618"), seed=seed)
    fixed = run_scenario(load_shipped("cascade-618-fixed"), seed=seed)
    t, end = base.milestones.trigger_at_s, base.milestones.end_at_s
    assert 0.25 < success_rate(base, since=t + 60, until=end - 10) < 0.35
    assert 0.45 < success_rate(base, since=t, until=t + 60) < 0.55
    assert 0.74 < success_rate(fixed, since=t, until=end - 10) < 0.77


# ------------------------------------------------------------------- S8: chaos drills


def drill(variant: str | None) -> RunResult:
    overrides = (f"duration={DRILL_RUN_S:g}s", f"faults.0.at={DRILL_AT_S:g}s", f"faults.0.duration={DRILL_FOR_S:g}s")
    return shortened("chaos-drills", variant, overrides)


def survival(result: RunResult) -> float:
    """Entry success rate of the requests that arrived during the drill."""
    return success_rate(result, since=DRILL_AT_S, until=DRILL_AT_S + DRILL_FOR_S)


def test_each_drill_is_one_fault_on_the_fixed_graph():
    fixed = load_shipped("cascade-618-fixed")
    kinds = {}
    for variant in (None, *load_shipped("chaos-drills").variants):
        s = load_shipped("chaos-drills", variant)
        assert s.services == fixed.services and s.clients == fixed.clients
        fault, = s.faults
        kinds[variant] = fault.kind
    assert kinds == {None: "latency", "pod-eviction": "instance_kill", "slow-etcd": "db_lock",
                     "pod-eviction-ejected": "instance_kill"}


@pytest.mark.parametrize("variant, passes", [(None, True), ("slow-etcd", True),
                                             ("pod-eviction", False), ("pod-eviction-ejected", True)])
def test_drill_survival_against_the_release_gate(variant, passes):
    result = drill(variant)
    rate = survival(result)
    assert success_rate(result, until=DRILL_AT_S) > 0.999       # calm before the drill
    assert (rate >= RELEASE_GATE) == passes, rate


def test_pod_eviction_fails_the_gate_through_the_gateways_breaker_not_the_dead_pod():
    result = drill("pod-eviction")
    req = edge_requests(result, "gateway->order")
    refused = (req["error"] == ERROR_CODE["breaker_open"]).sum()
    dead_pod = (req["error"] == ERROR_CODE["conn_refused"]).sum()
    assert refused > 20 * max(dead_pod, 1)
    assert success_rate(result, since=DRILL_AT_S, until=DRILL_AT_S + DRILL_FOR_S, route="browse") == 1.0


# ------------------------------------------------------------------- the tail at scale

SLOW_S = 0.5
FANOUT_SHORT = ("duration=40s",)


def slow_fraction(result: RunResult) -> tuple[float, int]:
    """Share of the users' requests (finished) slower than 500 ms, and how many finished."""
    req = entry(result)
    done = np.isfinite(req["end_at"])
    return float(((req["end_at"] - req["arrival_at"])[done] > SLOW_S).mean()), int(done.sum())


def test_fanout_to_100_makes_63_percent_of_requests_slow():
    slow, n = slow_fraction(shortened("fanout-tail", None, FANOUT_SHORT))
    expected = 1 - 0.99 ** 100
    assert abs(slow - expected) < 4 * (expected * (1 - expected) / n) ** 0.5, slow


@pytest.mark.parametrize("variant, at_most", [("hedging", 0.04), ("first-95", 0.01)])
def test_hedging_and_the_first_k_cut_the_tail(variant, at_most):
    slow, _ = slow_fraction(shortened("fanout-tail", variant, FANOUT_SHORT))
    assert slow < at_most, slow


def test_hedging_costs_about_the_hedged_share_of_extra_leaf_calls():
    result = shortened("fanout-tail", "hedging", FANOUT_SHORT)
    att = edge_attempts(result, "root->leaf")
    extra = (att["attempt"] > 0).mean()
    # a hedge goes when a call is still out after 10 ms: the 1% slow ones, and the e^-4.75 of
    # the fast ones (2 ms exponential plus the 0.5 ms round trip)
    assert 0.01 < extra < 0.025, extra


def test_waiting_for_99_of_100_leaves_the_requests_with_two_slow_copies():
    slow, n = slow_fraction(shortened("fanout-tail", "first-99", FANOUT_SHORT))
    p = 0.01
    expected = 1 - (1 - p) ** 100 - 100 * p * (1 - p) ** 99      # two slow copies or more
    assert abs(slow - expected) < 4 * (expected * (1 - expected) / n) ** 0.5, slow


# ------------------------------------------------------------------- the docs' figures script


def test_graph_figures_script_prints_one_line_per_seed_and_rejects_bad_input(capsys):
    from experiments import graph_figures
    assert graph_figures.main(["fanout-tail", "--set", "duration=5s", "--slow", "0.5", "--window", "1,4",
                               "--seeds", "1", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["seed"] for line in lines] == [1, 2]
    for line in lines:
        assert line["attempts_per_entry_request"] == 101.0            # 100 leaf calls per user request
        assert 0.0 <= line["slow_fraction"] <= 1.0 and line["finished"] <= line["entry_requests"]
        assert line["requests_in_window"] > 0 and line["blast_radius"] == 0
    assert lines[0] != lines[1]
    assert graph_figures.main(["fanout-tail", "--set", "duration=5parsecs"]) == 2
    assert "duration" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        graph_figures.main(["fanout-tail", "--window", "4,1"])
    assert exit_info.value.code == 2
