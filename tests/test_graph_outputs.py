"""Outputs of service-graph runs (sim/graph_outputs.py, docs/outputs.md *Service graphs*):
per-edge, per-service and per-entry KPIs, the graph window series, the cascade and blast
radius, the entry service's collapse in a graph, and their figures, report section, console
line and files.

Hand-built RunResults check the definitions against brute-force computations; small real
graph runs (deterministic arrivals, constant steps, zero RTT) check exact counts and a known
collapse order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from experiments.console import cascade_line, entry_clients_line, format_summary
from experiments.figures import SERVICES_PANELS, cascade_figure, services_figure, service_success_rate
from experiments.report import render_report_html
from experiments.run_files import GRAPH_RUN_FILES, RUN_FILES, summary_json, write_run_outputs
from sim.engine import run_scenario
from sim.graph_outputs import (
    EDGE_KEYS, ENTRY_CLIENT_KEYS, GRAPH_SUMMARY_KEYS, REQUEST_KPIS, SERVICE_KEYS, SERVICE_WINDOW_SERIES,
    EDGE_WINDOW_SERIES,
)
from sim.outputs import SUMMARY_KEYS, WINDOW_SERIES, _trailing_counts, is_graph_run, summarize
from sim.result import ATTEMPT_COLUMNS, ERROR_CODE, INCOMPLETE, REQUEST_COLUMNS, SUCCESS, FaultWindow, Milestones, RunResult, empty_columns
from sim.scenario_loader import scenario_from_dict
from sim.schema import ERROR_KINDS

PROJECT = Path(__file__).resolve().parents[1]
OUTPUTS_MD = PROJECT / "docs" / "outputs.md"


# ------------------------------------------------------------------ builders


def steps(*items: dict, instances: int = 1, **route: Any) -> dict:
    return {"routes": {"r": {"steps": list(items), **route}}, "instances": instances}


def sleep(d: str) -> dict:
    return {"sleep": d, "distribution": "constant"}


def trace(tmp_path: Path, rows: list[float], name: str = "arrivals.csv") -> dict:
    path = tmp_path / name
    path.write_text("at_s\n" + "".join(f"{t}\n" for t in rows))
    return {"trace": str(path)}


def steady(n: int, start: float = 0.0025, step: float = 0.01) -> list[float]:
    """Arrivals at start + i * step, never on a 0.1 s grid line."""
    return [round(start + step * i, 9) for i in range(n)]


def graph_scenario(services: dict, clients: dict, *, edges: list | None = None, faults: list | None = None,
                   duration: str = "20s", sample_interval: str = "0.1s", **top: Any):
    return scenario_from_dict({"duration": duration, "sample_interval": sample_interval, "services": services,
                               "clients": clients, "edges": edges or [], "faults": faults or [], **top})


def zero_rtt(**kw: Any) -> dict:
    return {"transport": {"rtt": "0s", **kw}}


def hand_built(scenario, client_names: list[str], requests: dict, attempts: dict | None = None, *,
               levels: dict | None = None, milestones: Milestones | None = None,
               counters: dict | None = None) -> RunResult:
    if attempts is None:
        attempts = empty_columns(ATTEMPT_COLUMNS, len(requests["request_id"]))
        for key in ("request_id", "error"):
            attempts[key] = requests[key].copy()
        attempts["start_at"] = requests["arrival_at"].copy()
        attempts["end_at"] = requests["end_at"].copy()
    return RunResult(scenario=scenario, seed=1, replication=0, route_names=["r"], client_names=client_names,
                     requests=requests, attempts=attempts, levels=levels or {},
                     milestones=milestones or Milestones(end_at_s=float(scenario.duration)),
                     counters=counters or {"events": 1.0})


def records(client, arrival_at, end_at, error) -> dict[str, np.ndarray]:
    n = len(arrival_at)
    cols = empty_columns(REQUEST_COLUMNS, n)
    cols["request_id"] = np.arange(1, n + 1, dtype=np.int64)
    cols["client"] = np.asarray(client, dtype=np.int32)
    cols["arrival_at"] = np.asarray(arrival_at, dtype=np.float64)
    cols["end_at"] = np.asarray(end_at, dtype=np.float64)
    cols["error"] = np.asarray(error, dtype=np.int8)
    cols["attempts"] = np.ones(n, np.int16)
    return cols


def chain_scenario(n_services: int = 3, *, duration: str = "20s", **top: Any):
    """s0 -> s1 -> ... (scenario only: for hand-built records)."""
    names = [f"s{i}" for i in range(n_services)]
    services = {s: steps(*([{"call": names[i + 1]}] if i + 1 < n_services else [])) for i, s in enumerate(names)}
    return graph_scenario(services, {"web": {"target": "s0", "load": {"rate_per_s": 0}}}, duration=duration, **top)


def steady_service_traffic(client: int, end_s: float, *, fail_from: float | None = None, fail_until: float = np.inf,
                           latency_s: float = 0.005):
    """100 req/s at 0.0025 + i/100; requests completing in [fail_from, fail_until) fail (http_5xx)."""
    arrival = 0.0025 + np.arange(int(end_s * 100)) / 100.0
    arrival = arrival[arrival < end_s - latency_s]
    end = arrival + latency_s
    failed = np.zeros(len(arrival), bool) if fail_from is None else (end >= fail_from) & (end < fail_until)
    return (np.full(len(arrival), client), arrival, end, np.where(failed, ERROR_CODE["http_5xx"], SUCCESS))


def concat(*parts):
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))


def sampled(end_s: float, step: float = 0.1, **columns: Any) -> dict[str, np.ndarray]:
    """Levels sampled at step, 2 step, ... end; each column a function of the instant or a constant."""
    t = np.round(np.arange(1, int(round(end_s / step)) + 1) * step, 9)
    out = {"time_s": t}
    for name, value in columns.items():
        out[name] = np.asarray([value(x) for x in t] if callable(value) else np.full(len(t), value), dtype=float)
    return out


# ------------------------------------------------------------------ runs shared by several tests


@pytest.fixture(scope="module")
def kill_chain(tmp_path_factory) -> RunResult:
    """The worked example of docs/outputs.md: a -> b -> c, both instances of c killed at 9.95 s
    for good, a's call has on_error: continue."""
    tmp = tmp_path_factory.mktemp("kill_chain")
    scn = graph_scenario(
        {"a": steps({"call": "b", "on_error": "continue"}), "b": steps({"call": "c"}),
         "c": steps(sleep("5ms"), instances=2)},
        {"web": {"target": "a", "load": trace(tmp, steady(2000)), **zero_rtt()}},
        edges=[{"caller": "a", "callee": "b", **zero_rtt()}, {"caller": "b", "callee": "c", **zero_rtt()}],
        faults=[{"kind": "instance_kill", "target": "c", "instance": i, "at": "9.95s"} for i in (0, 1)],
        name="kill-chain")
    return run_scenario(scn, seed=1)


@pytest.fixture(scope="module")
def latency_chain(tmp_path_factory) -> RunResult:
    """a -> b -> c with per-hop timeouts 3 s, 2 s, 1 s; c delayed 5 s from 10 s to 15 s."""
    tmp = tmp_path_factory.mktemp("latency_chain")
    scn = graph_scenario(
        {"a": steps({"call": "b"}), "b": steps({"call": "c"}), "c": steps(sleep("5ms"), instances=2)},
        {"web": {"target": "a", "load": trace(tmp, steady(2000)), **zero_rtt(client_timeout="3s")}},
        edges=[{"caller": "a", "callee": "b", **zero_rtt(client_timeout="2s")},
               {"caller": "b", "callee": "c", **zero_rtt(client_timeout="1s")}],
        faults=[{"kind": "latency", "target": "c", "delay": "5s", "at": "10s", "duration": "5s"}],
        name="latency-chain")
    return run_scenario(scn, seed=1)


# ------------------------------------------------------------------ which runs are graphs


def test_single_service_single_instance_runs_are_unchanged(tmp_path):
    scn = graph_scenario({"api": steps(sleep("5ms"))},
                         {"web": {"target": "api", "load": trace(tmp_path, steady(200)), **zero_rtt()}}, duration="3s")
    res = run_scenario(scn, seed=1)
    assert not is_graph_run(res)
    assert tuple(res.summary) == SUMMARY_KEYS
    assert list(res.windows) == list(WINDOW_SERIES)


def test_graph_runs_append_the_graph_keys_and_series(kill_chain):
    assert is_graph_run(kill_chain)
    assert tuple(kill_chain.summary) == SUMMARY_KEYS + GRAPH_SUMMARY_KEYS
    expected = list(WINDOW_SERIES) + [f"svc.{s}.{k}" for s in "abc" for k in SERVICE_WINDOW_SERIES] \
        + [f"edge.{e}.{k}" for e in ("a->b", "b->c") for k in EDGE_WINDOW_SERIES]
    assert list(kill_chain.windows) == expected
    s = kill_chain.summary
    assert all(tuple(row) == SERVICE_KEYS for row in s["services"].values())
    assert all(tuple(row) == EDGE_KEYS for row in s["edges"].values())
    assert all(tuple(row) == ENTRY_CLIENT_KEYS for row in s["entry_clients"].values())
    json.loads(summary_json(s))          # strict JSON


def test_one_service_with_several_instances_is_a_graph_run(tmp_path):
    scn = graph_scenario({"api": steps(sleep("5ms"), instances=3)},
                         {"web": {"target": "api", "load": trace(tmp_path, steady(300)), **zero_rtt()}}, duration="4s")
    res = run_scenario(scn, seed=1)
    svc = res.summary["services"]["api"]
    assert svc["handlers_by_instance"] == [100, 100, 100] and svc["handlers_started"] == 300
    assert svc["requests"] == 300 and svc["success_rate"] == 1.0 and svc["min_alive"] == 3
    assert res.summary["edges"] == {} and res.summary["cascade"] == [] and res.summary["blast_radius"] == 0


# ------------------------------------------------------------------ the worked example, exactly


def test_worked_example_cascade_and_blast_radius(kill_chain):
    s = kill_chain.summary
    assert s["cascade"] == [
        {"service": "c", "collapsed_at_s": 10.0, "collapse_time_s": 0.05, "cause": "no_live_instance"},
        {"service": "b", "collapsed_at_s": 10.5, "collapse_time_s": 0.55, "cause": "success_rate"},
    ]
    assert s["blast_radius"] == 2 and s["services_collapsed"] == ["c", "b"]
    assert s["services"]["a"]["collapsed_at_s"] is None and s["services"]["a"]["collapse_cause"] is None
    # the window (9.4, 10.4] holds 55 successes of 100 arrivals: not below; (9.5, 10.5] 45: below
    t = kill_chain.windows["time_s"]
    at = np.searchsorted(t, [10.4, 10.5])
    assert kill_chain.windows["svc.b.offered_rps"][at].tolist() == [100.0, 100.0]
    assert kill_chain.windows["svc.b.goodput_rps"][at].tolist() == [55.0, 45.0]


def test_worked_example_exact_counts_per_edge_and_service(kill_chain):
    """2000 requests at 100/s; the 1005 arriving from 9.95 s on find no instance of c: refused on
    b -> c, a 502 on a -> b, a success at the entry (a goes on)."""
    s = kill_chain.summary
    ab, bc = s["edges"]["a->b"], s["edges"]["b->c"]
    assert (ab["caller"], ab["callee"], bc["caller"], bc["callee"]) == ("a", "b", "b", "c")
    assert ab["requests"] == bc["requests"] == 2000
    assert ab["successes"] == bc["successes"] == 995
    assert ab["errors"] == {"http_5xx": 1005} and bc["errors"] == {"conn_refused": 1005}
    assert ab["success_rate"] == bc["success_rate"] == 0.4975
    assert ab["offered_rps"] == 100.0 and ab["goodput_rps"] == 49.75
    assert ab["attempts_per_request"] == 1.0 and ab["incomplete"] == 0
    # 1005 of 2000 failed at once (0 ms), the rest took c's 5 ms
    assert bc["p50_ms"] == 0.0 and bc["p99_ms"] == 5.0
    web = s["entry_clients"]["web"]
    assert web["target"] == "a" and web["requests"] == 2000 and web["success_rate"] == 1.0 and web["errors"] == {}
    a, b, c = (s["services"][x] for x in "abc")
    assert (a["entry"], b["entry"], c["entry"]) == (True, False, False)
    assert (a["faulted"], b["faulted"], c["faulted"]) == (False, False, True)
    assert (a["depth"], b["depth"], c["depth"]) == (0, 1, 2)
    assert (a["requests"], b["requests"], c["requests"]) == (2000, 2000, 2000)
    assert c["handlers_by_instance"] == [498, 497] and c["handlers_started"] == 995     # round robin, until the kill
    assert b["handlers_started"] == 2000
    assert c["errors"] == {"conn_refused": 1005} and b["errors"] == {"http_5xx": 1005}
    assert (c["min_alive"], c["alive_at_end"], b["min_alive"]) == (0, 0, 1)
    # window series add up to the summary's counts
    w = kill_chain.windows
    assert w["svc.c.arrivals"].sum() == 2000 and w["svc.c.failures"].sum() == 1005
    assert w["edge.b->c.successes"].sum() == 995 and w["edge.b->c.attempts"].sum() == 2000


def test_in_a_graph_the_entry_process_dies_only_with_its_last_instance(kill_chain):
    """Kills of c do not collapse the entry service a: judged end to end, nothing happened."""
    s = kill_chain.summary
    assert s["crashes"] == 2                 # every instance of every service
    assert s["collapse_at_s"] is None and s["outcome"] == "stable" and s["success_rate"] == 1.0


def test_synchronous_chain_collapses_at_one_instant_deepest_first(latency_chain):
    """c's delay makes b -> c time out after 1 s; b fails its handler (502) and so does a: every
    hop stops succeeding for the requests arriving from 10 s on, so the three collapse at the
    same grid instant (10.6 s: the window (9.6, 10.6] has 40 successes of 100) and are listed
    callee first."""
    s = latency_chain.summary
    assert [(c["service"], c["collapsed_at_s"], c["cause"]) for c in s["cascade"]] == [
        ("c", 10.6, "success_rate"), ("b", 10.6, "success_rate"), ("a", 10.6, "success_rate")]
    assert s["blast_radius"] == 3
    assert s["edges"]["b->c"]["errors"] == {"client_timeout": 500}
    assert s["edges"]["a->b"]["errors"] == {"http_5xx": 500}
    assert s["entry_clients"]["web"]["errors"] == {"http_5xx": 500}
    assert s["edges"]["b->c"]["p99_ms"] == 1000.0 and s["edges"]["b->c"]["successes"] == 1500
    assert s["services"]["c"]["faulted"] and not s["services"]["b"]["faulted"]
    assert s["collapse_at_s"] == 10.6        # the entry's own rule: every request was touched


def test_retries_on_an_edge_show_as_its_attempts_and_on_the_callee(tmp_path):
    """a calls b (on_error continue) then c; b calls c. c answers 503 to everything arriving in
    [1 s, 2 s). a -> c retries up to 3 attempts; b -> c does not. Requests to c: 300 + 300;
    attempts of a -> c: 300 + 2 x 100; handlers on c: 300 + 500."""
    scn = graph_scenario(
        {"a": steps({"call": "b", "on_error": "continue"}, {"call": "c", "on_error": "continue"}),
         "b": steps({"call": "c"}), "c": steps()},
        {"web": {"target": "a", "load": trace(tmp_path, steady(300)), **zero_rtt()}},
        edges=[{"caller": "a", "callee": "b", **zero_rtt()},
               {"caller": "a", "callee": "c", **zero_rtt(), "retry": {"max_attempts": 3}},
               {"caller": "b", "callee": "c", **zero_rtt()}],
        faults=[{"kind": "error_rate", "target": "c", "rate": 1.0, "status": 503, "at": "1s", "duration": "1s"}],
        duration="4s")
    res = run_scenario(scn, seed=1)
    s = res.summary
    ac, bc, ab = s["edges"]["a->c"], s["edges"]["b->c"], s["edges"]["a->b"]
    assert (ac["requests"], ac["successes"], ac["errors"]) == (300, 200, {"http_5xx": 100})
    assert ac["attempts_per_request"] == round(500 / 300, 6)
    assert (bc["requests"], bc["successes"], bc["attempts_per_request"]) == (300, 200, 1.0)
    assert ab["errors"] == {"http_5xx": 100}
    c = s["services"]["c"]
    assert (c["requests"], c["successes"], c["errors"]) == (600, 400, {"http_5xx": 200})
    assert c["attempts_per_request"] == round(800 / 600, 6)
    assert c["handlers_started"] == 800
    assert s["entry_clients"]["web"]["success_rate"] == 1.0
    assert res.windows["edge.a->c.attempts"].sum() == 500
    assert s["services"]["a"]["depth"] == 0 and s["services"]["c"]["depth"] == 1


def test_several_load_sources_get_their_own_end_to_end_kpis(tmp_path):
    """web -> a -> b and mobile -> b directly; b fails everything in [1 s, 2 s). Requests to b:
    a's calls and mobile's requests."""
    scn = graph_scenario(
        {"a": steps({"call": "b"}), "b": steps(sleep("2ms"))},
        {"web": {"target": "a", "load": trace(tmp_path, steady(300), "web.csv"), **zero_rtt()},
         "mobile": {"target": "b", "load": trace(tmp_path, steady(150, step=0.02), "mobile.csv"), **zero_rtt()}},
        edges=[{"caller": "a", "callee": "b", **zero_rtt()}],
        faults=[{"kind": "error_rate", "target": "b", "rate": 1.0, "status": 503, "at": "1s", "duration": "1s"}],
        duration="4s")
    res = run_scenario(scn, seed=1)
    s = res.summary
    web, mobile = s["entry_clients"]["web"], s["entry_clients"]["mobile"]
    assert (web["target"], web["requests"], web["successes"]) == ("a", 300, 200)
    assert (mobile["target"], mobile["requests"], mobile["successes"]) == ("b", 150, 100)
    assert mobile["p99_ms"] == 2.0
    b = s["services"]["b"]
    assert b["entry"] and b["requests"] == 450 and b["successes"] == 300 and b["depth"] == 0
    assert s["offered_rps"] == 112.5            # the summary: every entry request (450 / 4 s)
    line = entry_clients_line(s)
    assert line.startswith("  entry clients        web -> a: success 66.7%") and "mobile -> b: success 66.7%" in line


# ------------------------------------------------------------------ definitions on hand-built runs


def random_graph_run(seed: int = 3, n: int = 20_000, warmup: str = "1s") -> RunResult:
    """Four services (a -> b, a -> c, b -> d, c -> d; two load sources on a and c), random records
    with every error kind, incomplete requests and retries."""
    services = {"a": steps({"call": "b"}, {"call": "c"}), "b": steps({"call": "d"}), "c": steps({"call": "d"}),
                "d": steps(instances=2)}
    clients = {"web": {"target": "a", "load": {"rate_per_s": 0}}, "batch": {"target": "c", "load": {"rate_per_s": 0}}}
    scn = graph_scenario(services, clients, duration="10s", warmup=warmup)
    names = ["web", "batch", "a->b", "a->c", "b->d", "c->d"]
    rng = np.random.default_rng(seed)
    client = rng.integers(0, len(names), n)
    arrival = np.sort(rng.uniform(0, 10.5, n))
    end = arrival + rng.exponential(0.2, n)
    codes = np.array([SUCCESS] * 20 + [INCOMPLETE] + [ERROR_CODE[k] for k in ERROR_KINDS])
    error = rng.choice(codes, n)
    end[error == INCOMPLETE] = np.nan
    req = records(client, arrival, end, error)
    req["request_id"] = rng.permutation(np.arange(10, 10 + n)).astype(np.int64)      # not sorted
    tries = rng.integers(1, 4, n)
    att = empty_columns(ATTEMPT_COLUMNS, int(tries.sum()))
    att["request_id"] = np.repeat(req["request_id"], tries)
    att["attempt"] = np.concatenate([np.arange(k) for k in tries]).astype(np.int16)
    att["start_at"] = np.repeat(arrival, tries) + att["attempt"] * 0.01
    att["end_at"] = att["start_at"] + 0.01
    columns = ("alive", "cpu_utilization", "inflight_requests", "goroutines", "memory_mib", "server_connections",
               "open_fds")
    levels = sampled(10.0, **{f"svc.{s}.{c}": (lambda t, k=3 * i + j: k + int(round(t * 10)) % 7 / (1 + (j == 1)))
                              for i, s in enumerate("abcd") for j, c in enumerate(columns)})
    counters = {"events": 1.0, **{f"handlers_started.{s}.{i}": 10.0 + i for s in "abcd"
                                  for i in range(2 if s == "d" else 1)}}
    return hand_built(scn, names, req, att, levels=levels, counters=counters,
                      milestones=Milestones(end_at_s=10.0))


def brute_kpis(res: RunResult, mask: np.ndarray) -> dict[str, Any]:
    req, att = res.requests, res.attempts
    end_s, warm = 10.0, float(res.scenario.warmup)
    pop = mask & (req["arrival_at"] >= warm) & (req["arrival_at"] < end_s)
    n = int(pop.sum())
    ok = int((pop & (req["error"] == SUCCESS)).sum())
    done = req["error"] != INCOMPLETE
    lat = np.where(done, req["end_at"] - req["arrival_at"], end_s - req["arrival_at"])[pop] * 1000.0
    n_att = int(np.isin(att["request_id"], req["request_id"][pop]).sum())
    errors = {k: int((req["error"][pop] == ERROR_CODE[k]).sum()) for k in ERROR_KINDS}
    return {
        "requests": n, "successes": ok, "offered_rps": round(n / 9.0, 3), "goodput_rps": round(ok / 9.0, 3),
        "success_rate": round(ok / n, 6), "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3), "attempts_per_request": round(n_att / n, 6),
        "incomplete": int((pop & ~done).sum()), "errors": {k: v for k, v in errors.items() if v},
    }


def test_grouped_kpis_match_a_brute_force_per_group():
    res = random_graph_run()
    summarize(res)
    s = res.summary
    client = res.requests["client"]
    for i, name in enumerate(res.client_names):
        row = s["entry_clients"][name] if i < 2 else s["edges"][name]
        assert {k: row[k] for k in REQUEST_KPIS} == brute_kpis(res, client == i), name
    to = {"a": [0, -1], "b": [2], "c": [1, 3], "d": [4, 5]}
    for svc, clients in to.items():
        row = s["services"][svc]
        assert {k: row[k] for k in REQUEST_KPIS} == brute_kpis(res, np.isin(client, clients)), svc
    assert s["services"]["d"]["handlers_by_instance"] == [10, 11] and s["services"]["d"]["handlers_started"] == 21
    levels = res.levels
    assert s["services"]["b"]["max_goroutines"] == int(levels["svc.b.goroutines"].max())
    assert s["services"]["b"]["max_cpu_utilization"] == round(float(levels["svc.b.cpu_utilization"].max()), 4)
    assert s["services"]["c"]["min_alive"] == int(levels["svc.c.alive"].min())
    assert s["services"]["c"]["alive_at_end"] == int(levels["svc.c.alive"][-1])
    assert s["services"]["c"]["depth"] == 0 and s["services"]["d"]["depth"] == 1 and s["services"]["b"]["depth"] == 1


def test_graph_window_series_match_a_brute_force_per_bucket():
    res = random_graph_run(n=6000, warmup="0s")
    summarize(res)
    w, req = res.windows, res.requests
    grid = w["time_s"]
    client = req["client"]
    to = {"a": [0], "b": [2], "c": [1, 3], "d": [4, 5]}

    def buckets(at):
        at = at[np.isfinite(at)]
        return np.array([((at > lo) & (at <= hi)).sum() for lo, hi in zip(np.r_[-np.inf, grid[:-1]], grid)])

    def bucket_p99(mask):
        done = mask & (req["error"] != INCOMPLETE)
        end, lat = req["end_at"][done], (req["end_at"] - req["arrival_at"])[done] * 1000.0
        out = []
        for lo, hi in zip(np.r_[-np.inf, grid[:-1]], grid):
            inside = (end > lo) & (end <= hi)
            out.append(np.percentile(lat[inside], 99) if inside.any() else np.nan)
        return np.array(out)

    ok = req["error"] == SUCCESS
    failed = (req["error"] != SUCCESS) & (req["error"] != INCOMPLETE)
    for svc, clients in to.items():
        mine = np.isin(client, clients)
        assert np.array_equal(w[f"svc.{svc}.arrivals"], buckets(req["arrival_at"][mine]))
        assert np.array_equal(w[f"svc.{svc}.successes"], buckets(req["end_at"][mine & ok]))
        assert np.array_equal(w[f"svc.{svc}.failures"], buckets(req["end_at"][mine & failed]))
        np.testing.assert_allclose(w[f"svc.{svc}.p99_ms"], bucket_p99(mine), rtol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(w[f"svc.{svc}.offered_rps"],
                                      _trailing_counts(grid, req["arrival_at"][mine], 1.0) / 1.0)
        np.testing.assert_array_equal(w[f"svc.{svc}.goodput_rps"],
                                      _trailing_counts(grid, req["end_at"][mine & ok], 1.0) / 1.0)
    for i, edge in enumerate(res.client_names[2:], start=2):
        mine = client == i
        assert np.array_equal(w[f"edge.{edge}.arrivals"], buckets(req["arrival_at"][mine]))
        assert np.array_equal(w[f"edge.{edge}.failures"], buckets(req["end_at"][mine & failed]))
        ids = req["request_id"][mine]
        starts = res.attempts["start_at"][np.isin(res.attempts["request_id"], ids)]
        assert np.array_equal(w[f"edge.{edge}.attempts"], buckets(starts))
        np.testing.assert_allclose(w[f"edge.{edge}.p99_ms"], bucket_p99(mine), rtol=1e-12, equal_nan=True)


def collapse_run(parts, *, n_services: int = 3, levels=None, faults=(10.0, 30.0), end_s: float = 30.0,
                 warmup: str = "0s") -> dict[str, Any]:
    scn = chain_scenario(n_services, duration=f"{end_s}s", warmup=warmup)
    names = ["web"] + [f"s{i}->s{i + 1}" for i in range(n_services - 1)]
    client, arrival, end, error = concat(*parts)
    order = np.argsort(arrival, kind="stable")
    req = records(client[order], arrival[order], end[order], error[order])
    milestones = Milestones(end_at_s=end_s)
    if faults:
        milestones.trigger_at_s = faults[0]
        milestones.faults = [FaultWindow("latency", faults[0], faults[1], f"s{n_services - 1}",
                                         (f"s{n_services - 1}/r",))]
    res = hand_built(scn, names, req, levels=levels, milestones=milestones)
    summarize(res)
    return res.summary


def test_success_rate_rule_needs_the_whole_hold():
    """s1's requests fail from 10.0 s to 12.1 s (below from 10.6 to 12.5: 1.9 s < H) - no collapse;
    s2's from 10.0 s on - collapse at 10.6 s."""
    s = collapse_run([steady_service_traffic(0, 30.0), steady_service_traffic(1, 30.0, fail_from=10.0, fail_until=12.1),
                      steady_service_traffic(2, 30.0, fail_from=10.0)])
    assert s["services"]["s1"]["collapsed_at_s"] is None
    assert s["services"]["s2"]["collapsed_at_s"] == 10.6
    assert s["cascade"] == [{"service": "s2", "collapsed_at_s": 10.6, "collapse_time_s": 0.6, "cause": "success_rate"}]
    assert s["blast_radius"] == 1 and s["services_collapsed"] == ["s2"]


def test_cascade_is_ordered_by_instant_then_deepest_first_then_scenario_order():
    """s0 and s1 fail from 20 s, s3 from 10 s, s2 from 20 s: s3 first; s0, s1, s2 tie at 20.6 s and
    are listed s2, s1, s0 (deepest first)."""
    s = collapse_run([steady_service_traffic(0, 40.0, fail_from=20.0), steady_service_traffic(1, 40.0, fail_from=20.0),
                      steady_service_traffic(2, 40.0, fail_from=20.0), steady_service_traffic(3, 40.0, fail_from=10.0)],
                     n_services=4, end_s=40.0)
    assert [(c["service"], c["collapsed_at_s"]) for c in s["cascade"]] == [
        ("s3", 10.6), ("s2", 20.6), ("s1", 20.6), ("s0", 20.6)]
    assert s["blast_radius"] == 4


def test_no_live_instance_rule_reads_the_sampled_level_and_wins_a_tie():
    """s1 has no live instance in the samples from 12.0 s to 13.9 s (back at 14.0 s); s2 from 10.6 s
    on, the very instant its success rate collapses: the cause is no_live_instance."""
    levels = sampled(30.0, **{"svc.s0.alive": 1.0, "svc.s1.alive": lambda t: 0.0 if 12.0 <= t < 14.0 else 2.0,
                              "svc.s2.alive": lambda t: 0.0 if t >= 10.6 else 1.0})
    s = collapse_run([steady_service_traffic(0, 30.0), steady_service_traffic(1, 30.0),
                      steady_service_traffic(2, 30.0, fail_from=10.0)], levels=levels)
    assert [(c["service"], c["collapsed_at_s"], c["cause"]) for c in s["cascade"]] == [
        ("s2", 10.6, "no_live_instance"), ("s1", 12.0, "no_live_instance")]
    assert s["services"]["s1"]["min_alive"] == 0 and s["services"]["s1"]["alive_at_end"] == 2


def test_before_the_trigger_nothing_collapses_and_without_faults_judging_starts_after_warmup():
    early = [steady_service_traffic(0, 30.0), steady_service_traffic(1, 30.0, fail_from=2.0, fail_until=8.0),
             steady_service_traffic(2, 30.0)]
    s = collapse_run(early)                           # trigger at 10 s: the stretch at 2.6 s is too early
    assert s["services"]["s1"]["collapsed_at_s"] is None
    s = collapse_run(early, faults=None)
    assert s["services"]["s1"]["collapsed_at_s"] == 2.6 and s["cascade"][0]["collapse_time_s"] is None
    s = collapse_run(early, faults=None, warmup="3s")   # judged from warmup + W = 4 s on
    assert s["services"]["s1"]["collapsed_at_s"] == 4.0


def test_a_service_no_one_calls_does_not_collapse_for_lack_of_traffic():
    s = collapse_run([steady_service_traffic(0, 30.0), steady_service_traffic(1, 30.0)])
    assert s["services"]["s2"]["requests"] == 0 and s["services"]["s2"]["success_rate"] is None
    assert s["services"]["s2"]["p99_ms"] is None and s["services"]["s2"]["errors"] == {}
    assert s["services"]["s2"]["collapsed_at_s"] is None and s["blast_radius"] == 0


def test_entry_collapse_in_a_graph_follows_the_entry_service_only():
    """Kills elsewhere (milestones) do not collapse the entry; its own level 'alive' reaching 0 at
    the 15.0 s sample does, and it is alive again from 18.0 s."""
    traffic = [steady_service_traffic(0, 30.0), steady_service_traffic(1, 30.0), steady_service_traffic(2, 30.0)]
    scn = chain_scenario(3, duration="30s")
    client, arrival, end, error = concat(*traffic)
    order = np.argsort(arrival, kind="stable")
    req = records(client[order], arrival[order], end[order], error[order])
    milestones = Milestones(end_at_s=30.0, trigger_at_s=10.0, kills=[11.0, 15.0], restarts=[12.0, 18.0],
                            faults=[FaultWindow("instance_kill", 10.0, 30.0, "s2", ("s2/r",))])
    levels = sampled(30.0, alive=lambda t: 0.0 if 15.0 <= t < 18.0 else 1.0)
    res = hand_built(scn, ["web", "s0->s1", "s1->s2"], req, levels=levels, milestones=milestones)
    summarize(res)
    assert res.summary["collapse_at_s"] == 15.0 and res.summary["crashes"] == 2
    assert res.summary["recovered_at_s"] == pytest.approx(18.0)
    assert res.summary["outcome"] == "recovered"
    res.levels = sampled(30.0, alive=1.0)
    summarize(res)
    assert res.summary["collapse_at_s"] is None and res.summary["outcome"] == "stable"


def test_summarising_a_large_graph_run_counts_every_request():
    """A million requests over 17 services and 16 edges (1.2 M attempts) are summarised, every one
    counted once. (Its cost, about 0.7 s on an idle machine, is a benchmark figure, not a test:
    docs/performance.md.)"""
    n_services, n = 17, 1_000_000
    names = [f"s{i}" for i in range(n_services)]
    scn = graph_scenario({s: steps(*([{"call": names[i + 1]}] if i + 1 < n_services else []), instances=3)
                          for i, s in enumerate(names)}, {"web": {"target": "s0", "load": {"rate_per_s": 0}}},
                         duration="600s")
    rng = np.random.default_rng(1)
    arrival = np.sort(rng.uniform(0, 600, n))
    end = arrival + rng.exponential(0.05, n)
    req = records(rng.integers(0, n_services, n), arrival, end, np.where(rng.random(n) < 0.1, 9, 0))
    ids = np.sort(rng.integers(1, n + 1, int(n * 1.2)))
    att = empty_columns(ATTEMPT_COLUMNS, len(ids))
    att["request_id"], att["start_at"] = ids, arrival[ids - 1]
    res = hand_built(scn, ["web"] + [f"{names[i]}->{names[i + 1]}" for i in range(n_services - 1)], req, att)
    summarize(res)
    assert sum(row["requests"] for row in res.summary["services"].values()) == n


# ------------------------------------------------------------------ figures, report, console, files


def test_services_figure_draws_a_line_per_service_and_marks_each_collapse(kill_chain):
    fig = services_figure(kill_chain)
    y_axes = [key for key in fig.layout.to_plotly_json() if key.startswith("yaxis")]
    assert len(y_axes) == len(SERVICES_PANELS) == 4
    assert fig.layout.yaxis2.type == "log"
    rate_lines = [t for t in fig.data if t.yaxis in (None, "y") and t.mode == "lines" and t.name in ("a", "b", "c")]
    assert [t.name for t in rate_lines] == ["a", "b", "c"]
    b_rate = service_success_rate(kill_chain, "b")
    t = kill_chain.windows["time_s"]
    assert b_rate[np.searchsorted(t, 10.5)] == pytest.approx(0.45)
    collapse_lines = [s for s in fig.layout.shapes if (s.name or "").startswith("collapse:")]
    assert sorted({s.name for s in collapse_lines}) == ["collapse:b", "collapse:c"]
    assert len(collapse_lines) == 2 * 4
    assert {s.x0 for s in collapse_lines if s.name == "collapse:c"} == {10.0}
    markers = {t.name: (t.x[0], t.marker.symbol) for t in fig.data if t.mode == "markers"}
    assert markers == {"c collapsed": (10.0, "x"), "b collapsed": (10.5, "diamond")}
    alive = [t for t in fig.data if t.yaxis == "y3" and t.name == "c"]
    assert alive and min(alive[0].y) == 0


def test_cascade_figure_orders_services_by_collapse(kill_chain, latency_chain):
    fig = cascade_figure(kill_chain)
    assert list(fig.layout.yaxis.categoryarray) == ["a", "b", "c"]      # bottom to top: c on top
    points = [(t.name, t.x[0]) for t in fig.data if t.mode == "markers+text"]
    assert points == [("c", 10.0), ("b", 10.5)]
    assert "blast radius 2 of 3" in fig.layout.title.text
    bars = [t for t in fig.data if (t.name or "").endswith("below 0.5")]
    assert {t.name.split(":")[0] for t in bars} == {"b", "c"}
    fig = cascade_figure(latency_chain)
    assert [t.name for t in fig.data if t.mode == "markers+text"] == ["c", "b", "a"]


def test_console_has_the_cascade_line(kill_chain, latency_chain):
    assert cascade_line(kill_chain.summary) == "  cascade              c 10.0 s -> b 10.5 s; blast radius 2 of 3"
    assert cascade_line(latency_chain.summary) == \
        "  cascade              c 10.6 s -> b 10.6 s -> a 10.6 s; blast radius 3 of 3"
    text = format_summary(kill_chain, "/tmp/x")
    assert "  cascade              c 10.0 s -> b 10.5 s; blast radius 2 of 3" in text
    assert "services.csv, edges.csv" in text
    assert entry_clients_line(kill_chain.summary) is None        # one load source: the summary says it all
    calm = dict(kill_chain.summary, cascade=[], blast_radius=0)
    assert cascade_line(calm) == "  cascade              no service collapsed; blast radius 0 of 3"


def test_report_has_a_services_section_for_graph_runs_only(kill_chain, tmp_path):
    page = render_report_html(kill_chain)
    assert '<h2 id="services">Services</h2>' in page
    assert 'id="cascade"' in page and 'id="services-figure"' in page
    assert "c 10.0 s -&gt; b 10.5 s; blast radius 2 of 3" in page
    assert '<table class="edges">' in page and "<code>b-&gt;c</code>" in page
    assert '<table class="services">' in page and '<table class="entry-clients">' in page
    kpi = page.split("<h2>Key results</h2>", 1)[1].split("<h2>", 1)[0]
    assert "blast_radius" not in kpi and "services_collapsed" not in kpi
    scn = graph_scenario({"api": steps()}, {"web": {"target": "api", "load": trace(tmp_path, steady(50)), **zero_rtt()}},
                         duration="1s")
    single = render_report_html(run_scenario(scn, seed=1))
    assert 'id="services"' not in single


def test_run_files_of_a_graph_run(kill_chain, tmp_path):
    paths = write_run_outputs(kill_chain, tmp_path)
    assert set(paths) == set(RUN_FILES) | set(GRAPH_RUN_FILES)
    services = pd.read_csv(tmp_path / "services.csv")
    assert services["service"].tolist() == ["a", "b", "c"]
    assert services["requests"].tolist() == [2000, 2000, 2000]
    assert services["errors.conn_refused"].tolist() == [0, 0, 1005]
    assert services["handlers_by_instance"].astype(str).tolist() == ["2000", "2000", "498 497"]
    assert services["collapse_cause"].fillna("").tolist() == ["", "success_rate", "no_live_instance"]
    edges = pd.read_csv(tmp_path / "edges.csv")
    assert edges["edge"].tolist() == ["a->b", "b->c"] and edges["errors.http_5xx"].tolist() == [1005, 0]
    requests = pd.read_parquet(tmp_path / "requests.parquet")
    assert requests.columns[:4].tolist() == ["request_id", "client", "service", "route"]
    assert requests.groupby("client", observed=True)["service"].first().to_dict() == {"web": "a", "a->b": "b", "b->c": "c"}
    attempts = pd.read_parquet(tmp_path / "attempts.parquet")
    assert "service" in attempts.columns
    series = pd.read_csv(tmp_path / "timeseries.csv")
    assert {"svc.b.goodput_rps", "edge.b->c.attempts", "svc.c.alive"} <= set(series.columns)
    assert json.loads((tmp_path / "summary.json").read_text())["blast_radius"] == 2


def test_request_routes_are_named_in_the_service_they_were_sent_to(tmp_path):
    """The entry service has one route; the callee two: the callee's route names label its requests
    (an index into the entry's routes would be out of range or wrong)."""
    rows = [(0.1 * i, "home") for i in range(10)]
    path = tmp_path / "arrivals.csv"
    path.write_text("at_s,route\n" + "".join(f"{t},{r}\n" for t, r in rows))
    scn = graph_scenario({"front": {"routes": {"home": {"steps": [{"call": "back.write"}]}}},
                          "back": {"routes": {"read": {"steps": []}, "write": {"steps": []}}}},
                         {"web": {"target": "front", "load": {"trace": str(path)}, **zero_rtt()}}, duration="2s")
    res = run_scenario(scn, seed=1)
    write_run_outputs(res, tmp_path / "out")
    frame = pd.read_parquet(tmp_path / "out" / "requests.parquet")
    assert frame.groupby("service", observed=True)["route"].unique().map(list).to_dict() == \
        {"front": ["home"], "back": ["write"]}


def test_a_single_run_written_over_a_graph_run_removes_the_graph_files(kill_chain, tmp_path):
    write_run_outputs(kill_chain, tmp_path)
    scn = graph_scenario({"api": steps()}, {"web": {"target": "api", "load": trace(tmp_path, steady(20)), **zero_rtt()}},
                         duration="1s")
    paths = write_run_outputs(run_scenario(scn, seed=1), tmp_path)
    assert set(paths) == set(RUN_FILES)
    assert not (tmp_path / "services.csv").exists() and not (tmp_path / "edges.csv").exists()


def test_docs_define_every_graph_key_and_series():
    text = OUTPUTS_MD.read_text(encoding="utf-8")
    section = text.split("## Service graphs", 1)[1].split("\n## ", 1)[0]
    names = [*GRAPH_SUMMARY_KEYS, *REQUEST_KPIS, *SERVICE_KEYS, *EDGE_KEYS, "collapse_time_s", "no_live_instance",
             *(f"svc.<S>.{k}" for k in SERVICE_WINDOW_SERIES), *(f"edge.<caller->callee>.{k}" for k in EDGE_WINDOW_SERIES)]
    missing = [name for name in names if f"`{name}`" not in section and name not in ("p50_ms", "p99_ms")]
    assert not missing, f"docs/outputs.md *Service graphs* does not define: {missing}"
    assert "`p50_ms` `p99_ms`" in section
    for name in ("services.csv", "edges.csv"):
        assert name in text


def _breaker_edge_run(tmp_path: Path, kill_a0_at: str | None = None) -> RunResult:
    """web -> a (2 instances, round robin: even arrivals to a0, odd to a1) -> b, 100 req/s at
    0.0025 + i/100; b fails everything in [1 s, 2 s). Each a process's breaker towards b
    (gobreaker: the 6th consecutive failure trips it; half-open 1.505 s later, lazily) trips at
    its 6th failure (a0: 1.1025 s, a1: 1.1125 s), and at its first call after 2.6075 s (a0) or
    2.6175 s (a1) goes half-open, lets the call through and closes (a0: 2.6225 s, a1: 2.6325 s)."""
    faults = [{"kind": "error_rate", "target": "b", "rate": 1.0, "status": 503, "at": "1s", "duration": "1s"}]
    if kill_a0_at is not None:
        faults.append({"kind": "instance_kill", "target": "a", "instance": 0, "at": kill_a0_at, "duration": "2s"})
    scn = graph_scenario(
        {"a": steps({"call": "b"}, instances=2), "b": steps()},
        {"web": {"target": "a", "load": trace(tmp_path, steady(400)), **zero_rtt()}},
        edges=[{"caller": "a", "callee": "b", **zero_rtt(),
                "breaker": {"kind": "gobreaker", "timeout": "1.505s"}}],
        faults=faults, duration="4s")
    return run_scenario(scn, seed=1)


def test_edge_breakers_are_in_the_outputs_per_edge_and_in_the_totals(tmp_path):
    res = _breaker_edge_run(tmp_path)
    s = res.summary
    assert [(round(at, 9), res.client_names[c], i, state) for at, c, i, state in res.milestones.breaker_transitions] == [
        (1.1025, "a->b", 0, "open"), (1.1125, "a->b", 1, "open"),
        (2.6225, "a->b", 0, "half_open"), (2.6225, "a->b", 0, "closed"),     # lazy: at the first call after
        (2.6325, "a->b", 1, "half_open"), (2.6325, "a->b", 1, "closed")]
    edge = s["edges"]["a->b"]
    assert (edge["breaker_trips"], edge["time_to_trip_s"]) == (2, 0.1025)
    assert (s["breaker_trips"], s["first_trip_at_s"], s["breakers_closed_at_s"]) == (2, 1.1025, 2.6325)
    assert s["edges"]["a->b"]["errors"]["breaker_open"] > 0
    opened = res.levels["breakers_open"]
    assert opened.max() == 2 and opened[-1] == 0


def test_an_edge_breaker_that_dies_open_with_its_caller_does_not_hold_the_all_closed_instant(tmp_path):
    """a0 is killed at 1.5 s with its breaker open (back at 3.5 s, a new process, closed): the
    breakers are all closed once a1's closes."""
    res = _breaker_edge_run(tmp_path, kill_a0_at="1.5s")
    gone = [(round(at, 9), i) for at, c, i, state in res.milestones.breaker_transitions if state == "gone"]
    assert gone == [(1.5, 0)]
    s = res.summary
    assert (s["breaker_trips"], s["breakers_closed_at_s"]) == (2, 2.6325)
    assert s["edges"]["a->b"]["breaker_trips"] == 2
