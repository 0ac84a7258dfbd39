"""Monotonicity properties, at fixed seed and load, in configurations where they provably hold.

Each property draws small configurations (hypothesis, derandomized, when it is installed; a
seeded sampler otherwise), runs each at a ladder of settings with the same seed (common
random numbers: the arrivals, routes and service draws do not depend on the setting), and
checks the property *per request*, which implies the aggregate one.

1. ``client_timeout``: a longer ``client_timeout`` never makes more requests time out.
   Configuration: no retries, handlers of CPU and sleep steps (nothing honours a context, no
   queries), no ``max_conns_per_host``, no TLS, GC off, no memory limit, either no network
   time or ``disable_keep_alives``, fewer requests than ephemeral ports (a timed-out connection
   holds its port 60 s in TIME_WAIT). Proof: a handler never learns of a timeout (its work is
   never cut) and every request dials the same way whatever the timeout (no RTT, or a fresh
   connection each time), so every request reaches and leaves the server at the same instants
   for any timeout, and its latency L is fixed; it times out iff L > T. So the set of requests
   timing out at T2 > T1 is a subset of the set at T1.
2. ``cores``: more cores never raise any request's latency (hence the mean), without faults.
   Configuration: no network time, no client timeouts, no retries, routes of one CPU step
   each (constant or exponential), GC off. The CPU is FCFS over the cores and each request's
   CPU work is drawn when its handler starts, in arrival order, so it is G/G/c FCFS with the
   same arrivals and work: by Kiefer-Wolfowitz's recursion for the sorted workload vector,
   which is monotone, c servers are c + 1 servers one of which never frees up, so every
   customer's wait is at least as long with c (Wolff, *Stochastic Modeling and the Theory of
   Queues*, 1989, §8.1; Kiefer & Wolfowitz, Trans. AMS 78 (1955)).
3. ``fd_limit``: a larger fd limit never makes fd exhaustion (the first EMFILE) earlier.
   Configuration: no database (a DB dial is the other use of fds, and one refused at the
   smaller limit changes the run before any EMFILE). Proof: until the first EMFILE at the
   smaller limit L1 the process never holds L1 fds at an accept, so the runs at L1 and L2 > L1
   are identical up to that instant; the run at L2 holds fewer than L2 fds there.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from experiments.validation.checks import ERROR, FAIL, PASS, Check
from sim.engine import run_scenario
from sim.result import ERROR_CODE
from sim.scenario_loader import scenario_from_dict

SEED = 8_061_994


@dataclass
class PropertyRun:
    examples: list[dict[str, Any]] = field(default_factory=list)    # config, ladder, values
    counterexample: dict[str, Any] | None = None


# ---------------------------------------------------------------- configurations

def timeout_config(rnd: Callable[[str, Any], Any]) -> dict[str, Any]:
    cores = rnd("cores", [1, 2, 4])
    mean_ms = rnd("mean_ms", [2.0, 5.0, 10.0, 20.0])
    rho = rnd("rho", [0.5, 0.8, 0.95, 1.1])
    rtt_ms = rnd("rtt_ms", [0.0, 0.0, 10.0, 40.0])
    steps = [{"cpu": f"{mean_ms}ms", "distribution": rnd("dist", ["exponential", "constant"])}]
    if rnd("sleep", [False, True]):
        steps.insert(0, {"sleep": f"{rnd('sleep_ms', [5.0, 50.0])}ms", "distribution": "exponential"})
    rate = rho * cores / (mean_ms / 1000.0)
    base = mean_ms / 1000.0 * rnd("t_scale", [1.0, 3.0, 10.0])
    ladder = sorted({round(base * f, 6) for f in (1.0, rnd("f2", [1.2, 1.5, 2.0]), 3.0, 6.0)})
    return {"cores": cores, "steps": steps, "rate": rate, "rtt_ms": rtt_ms, "ladder": ladder,
            "duration_s": min(5.0, 1500.0 / rate)}


def timeout_scenario(cfg: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    transport = {"rtt": f"{cfg['rtt_ms']}ms", "client_timeout": f"{timeout_s!r}s",
                 "disable_keep_alives": cfg["rtt_ms"] > 0, "max_idle_conns_per_host": 100_000,
                 "max_idle_conns": 100_000}
    return {"name": "monotone-timeout", "duration": f"{cfg['duration_s']!r}s", "sample_interval": "1s",
            "services": {"s": {"cpu": {"cores": cfg["cores"]}, "routes": {"r": {"steps": cfg["steps"]}}}},
            "clients": {"c": {"target": "s", "load": {"rate_per_s": cfg["rate"]}, "transport": transport}}}


def cores_config(rnd: Callable[[str, Any], Any]) -> dict[str, Any]:
    c1 = rnd("c1", [1, 2, 3])
    mean_ms = rnd("mean_ms", [2.0, 5.0, 10.0])
    rho = rnd("rho", [0.5, 0.8, 0.95])
    routes = {"a": {"steps": [{"cpu": f"{mean_ms}ms", "distribution": rnd("dist_a", ["exponential", "constant"])}]}}
    weights = {"a": 1.0}
    mean_s = mean_ms / 1000.0
    if rnd("two_routes", [False, True]):
        long_ms = mean_ms * rnd("long", [5.0, 20.0])
        routes["b"] = {"steps": [{"cpu": f"{long_ms}ms", "distribution": rnd("dist_b", ["exponential", "constant"])}]}
        weights = {"a": 0.9, "b": 0.1}
        mean_s = 0.9 * mean_s + 0.1 * long_ms / 1000.0
    rate = rho * c1 / mean_s
    return {"routes": routes, "weights": weights, "rate": rate, "ladder": [c1, c1 + 1, c1 + 2, 2 * c1 + 2],
            "duration_s": min(5.0, 1500.0 / rate)}


def cores_scenario(cfg: dict[str, Any], cores: int) -> dict[str, Any]:
    transport = {"rtt": "0s", "max_idle_conns_per_host": 100_000, "max_idle_conns": 100_000}
    return {"name": "monotone-cores", "duration": f"{cfg['duration_s']!r}s", "sample_interval": "1s",
            "services": {"s": {"cpu": {"cores": cores}, "routes": cfg["routes"]}},
            "clients": {"c": {"target": "s", "load": {"rate_per_s": cfg["rate"], "routes": cfg["weights"]},
                              "transport": transport}}}


def fd_config(rnd: Callable[[str, Any], Any]) -> dict[str, Any]:
    rate = rnd("rate", [50.0, 100.0, 200.0])
    hold_ms = rnd("hold_ms", [200.0, 500.0, 1000.0])
    l1 = rnd("l1", [16, 24, 40, 64])
    timeout = rnd("timeout_ms", [0.0, 300.0, 2000.0])
    return {"rate": rate, "hold_ms": hold_ms, "timeout_ms": timeout,
            "keep_alive": rnd("keep_alive", [True, False]), "backlog": rnd("backlog", [16, 4096]),
            "ladder": [l1, l1 + rnd("d2", [1, 4]), l1 + 16, 4 * l1], "duration_s": 5.0}


def fd_scenario(cfg: dict[str, Any], fd_limit: int) -> dict[str, Any]:
    transport = {"rtt": "2ms", "disable_keep_alives": not cfg["keep_alive"]}
    if cfg["timeout_ms"]:
        transport["client_timeout"] = f"{cfg['timeout_ms']}ms"
    return {"name": "monotone-fd", "duration": f"{cfg['duration_s']!r}s", "sample_interval": "1s",
            "services": {"s": {"fd_limit": fd_limit, "server": {"accept_backlog": cfg["backlog"]},
                               "routes": {"r": {"steps": [{"sleep": f"{cfg['hold_ms']}ms",
                                                           "distribution": "exponential"}]}}}},
            "clients": {"c": {"target": "s", "load": {"rate_per_s": cfg["rate"]}, "transport": transport}}}


# ---------------------------------------------------------------- evaluation

def evaluate(prop: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Run ``cfg`` at every setting of its ladder; return the values and the first violation."""
    values, violation = [], None
    previous = None
    for setting in cfg["ladder"]:
        if prop == "client_timeout":
            result = run_scenario(scenario_from_dict(timeout_scenario(cfg, setting)), seed=SEED)
            timed_out = result.requests["error"] == ERROR_CODE["client_timeout"]
            ids = set(result.requests["request_id"][timed_out].tolist())
            values.append(len(ids))
            if previous is not None and not ids <= previous:
                violation = (f"client_timeout {setting:g} s: {len(ids - previous)} requests time out that did "
                             f"not at the shorter timeout ({len(ids)} vs {len(previous)})")
            previous = ids
        elif prop == "cores":
            result = run_scenario(scenario_from_dict(cores_scenario(cfg, setting)), seed=SEED)
            req = result.requests
            done = np.isfinite(req["end_at"])
            latency = np.where(done, req["end_at"] - req["arrival_at"], math.inf)
            values.append(float(np.mean(latency[done])) if done.any() else math.nan)
            if previous is not None:
                worse = latency > previous + 1e-9
                if worse.any() or values[-1] > values[-2] + 1e-12:
                    violation = (f"{setting} cores: {int(worse.sum())} requests slower than with fewer cores; "
                                 f"mean {values[-1]:.6g} s vs {values[-2]:.6g} s")
            previous = latency
        else:
            result = run_scenario(scenario_from_dict(fd_scenario(cfg, setting)), seed=SEED)
            at = result.summary.get("fd_exhausted_at_s")
            values.append(math.inf if at is None else float(at))
            if len(values) > 1 and values[-1] < values[-2]:
                violation = (f"fd_limit {setting}: first EMFILE at {values[-1]:g} s, earlier than "
                             f"{values[-2]:g} s at fd_limit {cfg['ladder'][len(values) - 2]}")
        if violation:
            break
    return {"config": cfg, "values": values, "violation": violation}


CONFIGS = {"client_timeout": timeout_config, "cores": cores_config, "fd_limit": fd_config}


def run_property(prop: str, examples: int) -> dict[str, Any]:
    """Draw ``examples`` configurations and evaluate each; with hypothesis, a violation is shrunk."""
    out = PropertyRun()
    make = CONFIGS[prop]
    try:
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st
    except ImportError:          # hypothesis is a test dependency: fall back to a seeded sampler
        rng = random.Random(SEED + len(prop))
        for _ in range(examples):
            res = evaluate(prop, make(lambda _name, options: rng.choice(options)))
            out.examples.append(res)
            if res["violation"]:
                out.counterexample = res
                break
        return {"examples": out.examples, "counterexample": out.counterexample, "engine": "seeded sampler"}

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(st.data())
    def prop_holds(data: Any) -> None:
        cfg = make(lambda name, options: data.draw(st.sampled_from(options), label=name))
        res = evaluate(prop, cfg)
        out.examples.append(res)
        if res["violation"]:
            out.counterexample = res           # the last one recorded is hypothesis's shrunk example
            raise AssertionError(res["violation"])

    try:
        prop_holds()
    except AssertionError:
        pass
    return {"examples": out.examples, "counterexample": out.counterexample, "engine": "hypothesis (derandomized)"}


TITLES = {
    "client_timeout": ("A longer client timeout never increases the client timeouts",
                       "the set of requests failing with client_timeout, over a ladder of 4 client_timeout values",
                       "T2 > T1 => timed_out(T2) is a subset of timed_out(T1)"),
    "cores": ("More server cores never raise latency (no faults)",
              "each request's latency and the mean latency, over a ladder of 4 core counts",
              "c2 > c1 => latency_i(c2) <= latency_i(c1) for every request i"),
    "fd_limit": ("A larger fd limit never makes fd exhaustion earlier",
                 "fd_exhausted_at_s (first EMFILE; never = +inf), over a ladder of 4 fd limits",
                 "L2 > L1 => fd_exhausted_at(L2) >= fd_exhausted_at(L1)"),
}


def property_check(prop: str, outcome: dict[str, Any]) -> Check:
    title, compared, reference = TITLES[prop]
    examples = outcome["examples"]
    ce = outcome["counterexample"]
    n_runs = sum(len(e["values"]) for e in examples)
    params = {"property": prop, "examples": len(examples), "runs": n_runs, "engine": outcome["engine"],
              "curves": [{"ladder": e["config"]["ladder"][:len(e["values"])], "values": e["values"]}
                         for e in examples],
              "counterexample": ce}
    if not examples:
        return Check(id=f"monotonicity.{prop}", section="monotonicity", family="Monotonicity", title=title,
                     compared=compared, reference=reference, source="experiments/validation/monotonicity.py",
                     status=ERROR, detail="no example ran", params=params)
    if prop == "fd_limit":
        hit = sum(1 for e in examples if math.isfinite(e["values"][0]))
        extra = f"; the smallest limit ran out of fds in {hit} of them"
    else:
        extra = ""
    detail = (f"violated: {ce['violation']} (configuration {ce['config']})" if ce else
              f"{len(examples)} configurations x their ladder ({n_runs} runs), never violated{extra}")
    return Check(id=f"monotonicity.{prop}", section="monotonicity", family="Monotonicity", title=title,
                 compared=compared, reference=reference,
                 source="proof in experiments/validation/monotonicity.py; design.md §8 (monotonicity checks)",
                 status=FAIL if ce else PASS, detail=detail, estimate=float(len(examples)), params=params)
