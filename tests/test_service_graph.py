"""Service graphs: calls between services, instances and load balancing, deadline propagation,
cancellation reaching downstream, instance faults, fan-out, validation and determinism.

Timelines are exact where the model is deterministic (constant steps, traced arrivals,
zero or constant RTT); distributions are checked against their arithmetic.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from sim.engine import run_scenario
from sim.load_balancer import LoadBalancer
from sim.result import ERROR_CODE, SUCCESS
from sim.scenario_error import ScenarioError
from sim.scenario_loader import scenario_from_dict
from timeline import EXACT, approx_all, arrivals, events, instants, run


def graph(services: dict[str, Any], *, client: dict | None = None, edges: list | None = None,
          duration: str = "60s", faults: list | None = None, **top: Any):
    entry = next(iter(services))
    c = {"target": entry, "load": {"rate_per_s": 0}, "transport": {"rtt": "0s"}, **(client or {})}
    return scenario_from_dict({"duration": duration, "sample_interval": "1s", "services": services,
                               "clients": {"c": c}, "edges": edges or [], "faults": faults or [], **top})


def steps(*items: dict, **route: Any) -> dict:
    """A service with one route ``r`` doing ``items``."""
    return {"routes": {"r": {"steps": list(items), **route}}}


def sleep(d: str, **kw: Any) -> dict:
    return {"sleep": d, "distribution": "constant", **kw}


# ------------------------------------------------------------ propagation


def test_sre_example_a_30s_deadline_gives_the_next_hops_23s_and_19s(tmp_path):
    """SRE book ch. 22: a 30 s deadline, 7 s of work, a call, 4 s of work, a call: the callees
    learn 23 s and 19 s (zero RTT, instant callees)."""
    edge = {"transport": {"rtt": "0s"}, "deadline_propagation": True}
    scn = graph({"a": steps(sleep("7s"), {"call": "b"}, sleep("4s"), {"call": "c"}, honours_context=True),
                 "b": steps(), "c": steps()},
                client={"load": arrivals(tmp_path, [0.0]), "deadline_propagation": True,
                        "retry": {"deadline": "30s", "max_attempts": 1}},
                edges=[{"caller": "a", "callee": "b", **edge}, {"caller": "a", "callee": "c", **edge}])
    res = run(scn)
    learnt = events(res, "deadline_learnt")
    assert [t for t, _, _ in learnt] == approx_all([0.0, 7.0, 11.0])
    assert [d for _, _, d in learnt] == approx_all([30.0, 23.0, 19.0])


def test_the_margin_is_kept_back_and_the_callees_own_timeout_can_be_shorter(tmp_path):
    """With a 500 ms margin the callee learns 29.5 s; an edge timeout of 5 s (Client.Timeout)
    caps the deadline it learns at 5 s."""
    scn = graph({"a": steps({"call": "b"}, honours_context=True), "b": steps()},
                client={"load": arrivals(tmp_path, [0.0]), "deadline_propagation": True, "deadline_margin": "500ms",
                        "retry": {"deadline": "30s", "max_attempts": 1}},
                edges=[{"caller": "a", "callee": "b", "deadline_propagation": True,
                        "transport": {"rtt": "0s", "client_timeout": "5s"}}])
    res = run(scn)
    assert [d for _, _, d in events(res, "deadline_learnt")] == approx_all([29.5, 5.0])


def test_without_propagation_each_hop_starts_its_own_clock(tmp_path):
    scn = graph({"a": steps({"call": "b"}, honours_context=True), "b": steps()},
                client={"load": arrivals(tmp_path, [0.0]), "retry": {"deadline": "30s", "max_attempts": 1}})
    assert events(run(scn), "deadline_learnt") == []


def test_an_expired_propagated_deadline_cancels_the_downstream_handler(tmp_path):
    """The callee's context ends at the propagated deadline (3 s): a context-honouring handler's
    pool wait or query is cut; here its call to c is cancelled, and c's handler sees it."""
    edge = {"transport": {"rtt": "0s"}, "deadline_propagation": True}
    scn = graph({"a": steps({"call": "b"}, honours_context=True),
                 "b": steps({"call": "c"}, honours_context=True),
                 "c": steps(sleep("10s"))},
                client={"load": arrivals(tmp_path, [0.0]), "deadline_propagation": True,
                        "retry": {"deadline": "3s", "max_attempts": 1}},
                edges=[{"caller": "a", "callee": "b", **edge}, {"caller": "b", "callee": "c", **edge}])
    res = run(scn)
    cancelled = instants(res, "ctx_cancelled")
    assert cancelled and min(cancelled) == pytest.approx(3.0, abs=EXACT)
    assert res.requests["error"][0] == ERROR_CODE["deadline_exceeded"]


# ------------------------------------------------------------ cancellation


@pytest.mark.parametrize("honours", [True, False])
def test_a_caller_giving_up_cancels_downstream_calls_only_when_its_handler_honours_the_context(tmp_path, honours):
    """The entry client times out at 1 s and closes its connection (HTTP/1, zero RTT); a's
    context ends (a GET). If a honours it, its call to b is cancelled at once, b's context ends
    and its 5 s query is abandoned: no work is wasted. If not, the call goes on: b answers at
    5 s and a's handler has worked 4 s for nobody (orphaned work)."""
    scn = graph({"a": steps({"call": "b"}, honours_context=honours),
                 "b": steps({"query": "db.t"}, honours_context=True)},
                client={"load": arrivals(tmp_path, [0.0]), "transport": {"rtt": "0s", "client_timeout": "1s"}},
                edges=[{"caller": "a", "callee": "b", "transport": {"rtt": "0s"}}],
                databases={"db": {"rtt": "0s", "tables": {"t": {"query_time": "5s", "distribution": "constant"}}}},
                duration="10s")
    res = run(scn)
    ends = instants(res, "handler_end")
    if honours:
        assert instants(res, "ctx_cancelled") == approx_all([1.0, 1.0])      # a's, then b's
        assert ends == approx_all([1.0, 1.0])
        assert res.counters["wasted_handler_s"] == pytest.approx(0.0, abs=1e-9)
        assert res.requests["error"][res.requests["client"] == 1][0] == ERROR_CODE["cancelled"]
    else:
        assert ends == approx_all([5.0, 5.0])
        assert res.counters["wasted_handler_s"] == pytest.approx(4.0, abs=1e-9)


# ------------------------------------------------------------ balancing


def test_round_robin_spreads_evenly_over_instances(tmp_path):
    scn = graph({"a": {**steps(), "instances": 4}}, client={"load": arrivals(tmp_path, [0.01 * i for i in range(400)])})
    res = run(scn)
    counts = [res.counters[f"handlers_started.a.{i}"] for i in range(4)]
    assert counts == [100.0] * 4


@pytest.mark.parametrize("kind", ["random", "p2c", "least_request"])
def test_other_balancers_use_every_instance(tmp_path, kind):
    scn = graph({"a": {**steps(sleep("50ms")), "instances": 4}},
                client={"load": arrivals(tmp_path, [0.005 * i for i in range(800)]), "load_balancer": kind})
    res = run(scn)
    counts = np.array([res.counters[f"handlers_started.a.{i}"] for i in range(4)])
    assert counts.sum() == 800
    assert counts.min() > 120             # uniform would give 200 each


def test_p2c_and_least_request_prefer_the_less_loaded_host():
    lb = LoadBalancer("least_request", 3, lambda: 0.5)
    assert lb.pick([5, 1, 3]) == 1
    assert lb.pick([5, 1, 3], usable=[0, 2]) == 2
    draws = iter([0.0, 0.99])           # hosts 0 and 2 drawn
    lb = LoadBalancer("p2c", 3, lambda: next(draws))
    assert lb.pick([4, 0, 2]) == 2
    rr = LoadBalancer("round_robin", 3, lambda: 0.0)
    assert [rr.pick([0, 0, 0]) for _ in range(4)] == [0, 1, 2, 0]
    assert [rr.pick([0, 0, 0], usable=[0, 2]) for _ in range(3)] == [2, 0, 2]


def test_random_balancer_frequencies_match_uniform():
    rng = np.random.default_rng(1)
    lb = LoadBalancer("random", 5, lambda: float(rng.random()))
    counts = Counter(lb.pick([0] * 5) for _ in range(50_000))
    assert max(abs(v / 50_000 - 0.2) for v in counts.values()) < 0.01


# ------------------------------------------------------------ instance faults


def test_instance_kill_and_restart_timeline(tmp_path):
    """Instance 1 of two is evicted at 1 s and back 2 s later; requests to it meanwhile fail to
    connect (the others keep serving); it serves again after 3 s."""
    rows = [0.1 * i for i in range(50)]
    scn = graph({"a": {**steps(), "instances": 2}}, client={"load": arrivals(tmp_path, rows)},
                faults=[{"kind": "instance_kill", "target": "a", "instance": 1, "at": "1s", "duration": "2s"}],
                duration="5s")
    res = run(scn)
    assert instants(res, "instance_killed") == approx_all([1.0])
    assert res.milestones.restarts == approx_all([3.0])
    assert [(round(t, 9), svc, i, what) for t, svc, i, what in res.milestones.instance_events] == [
        (1.0, "a", 1, "evicted"), (3.0, "a", 1, "restart")]
    req = res.requests
    failed_at = req["arrival_at"][req["error"] != SUCCESS]
    assert len(failed_at) > 0 and failed_at.min() >= 1.0 - EXACT and failed_at.max() < 3.0
    assert (req["error"][req["arrival_at"] >= 3.05] == SUCCESS).all()


def test_cpu_throttle_slows_cpu_work_by_its_factor(tmp_path):
    scn = graph({"a": steps({"cpu": "10ms"})}, client={"load": arrivals(tmp_path, [0.5, 1.5, 2.5])},
                faults=[{"kind": "cpu_throttle", "target": "a", "factor": 3, "at": "1s", "duration": "1s"}],
                duration="3s")
    res = run(scn)
    lat = res.requests["end_at"] - res.requests["arrival_at"]
    assert lat == pytest.approx([0.010, 0.030, 0.010], abs=1e-9)


def test_a_partitioned_edge_times_out_its_calls(tmp_path):
    scn = graph({"a": steps({"call": "b"}), "b": steps()},
                client={"load": arrivals(tmp_path, [0.5, 1.5, 2.5])},
                edges=[{"caller": "a", "callee": "b", "transport": {"rtt": "0s", "client_timeout": "200ms"}}],
                faults=[{"kind": "partition", "target": "a->b", "at": "1s", "duration": "1s"}], duration="3s")
    res = run(scn)
    entry = res.requests["client"] == 0
    assert list(res.requests["error"][entry]) == [SUCCESS, SUCCESS + 0 if False else res.requests["error"][entry][1], SUCCESS]
    assert res.requests["error"][entry][1] != SUCCESS


# ------------------------------------------------------------ fan-out


def test_fanout_waits_for_all_or_the_first_k(tmp_path):
    """10 copies, one of which takes 1 s (instance 9 of 10 is slow): waiting for all takes 1 s;
    waiting for the first 9 returns at once and cancels the slow copy."""
    def scn(wait: int):
        return graph({"a": steps({"call": "b", "fanout": 10, "fanout_wait": wait}, honours_context=True),
                      "b": {**steps(), "instances": 10}},
                     client={"load": arrivals(tmp_path, [0.0])},
                     edges=[{"caller": "a", "callee": "b", "transport": {"rtt": "0s"}}],
                     faults=[{"kind": "latency", "target": "b", "instance": 9, "delay": "1s"}], duration="3s")
    all_ = run(scn(0))
    assert all_.requests["end_at"][0] == pytest.approx(1.0, abs=EXACT)
    first9 = run(scn(9))
    assert first9.requests["end_at"][0] == pytest.approx(0.0, abs=EXACT)
    cancelled = first9.requests["error"] == ERROR_CODE["cancelled"]
    assert cancelled.sum() == 1


def test_tail_at_scale_fanout_to_100_makes_most_requests_slow(tmp_path):
    """Each leaf is slow (1 s) 1% of the time; a request fanning out to 100 leaves waits for the
    slowest: 1 - 0.99^100 = 63.4% of requests are slow."""
    n = 2000
    scn = graph({"root": steps({"call": "leaf", "fanout": 100}),
                 "leaf": {**steps(sleep("1s", probability=0.01)), "instances": 100}},
                client={"load": arrivals(tmp_path, [0.5 * i for i in range(n)])}, duration=f"{n * 0.5 + 5}s")
    res = run_scenario(scn, seed=7)
    entry = res.requests["client"] == 0
    lat = (res.requests["end_at"] - res.requests["arrival_at"])[entry]
    slow = float((lat > 0.5).mean())
    expected = 1 - 0.99 ** 100
    stderr = (expected * (1 - expected) / n) ** 0.5
    assert abs(slow - expected) < 4 * stderr


# ------------------------------------------------------------ validation, totals, determinism


def test_unknown_callee_and_cycles_are_rejected_with_the_path():
    with pytest.raises(ScenarioError, match="services.a.routes.r.steps.0.call"):
        graph({"a": steps({"call": "nope"})})
    with pytest.raises(ScenarioError, match="cycle"):
        graph({"a": steps({"call": "b"}), "b": steps({"call": "a"})})
    graph({"a": steps({"call": "b"}), "b": steps({"call": "a", "probability": 0.0})}, allow_cycles=True)


def test_per_service_request_counts_add_up(tmp_path):
    """Every entry request makes one call to b and two to c (one direct, one via b)."""
    scn = graph({"a": steps({"call": "b"}, {"call": "c"}), "b": steps({"call": "c"}), "c": steps()},
                client={"load": arrivals(tmp_path, [0.01 * i for i in range(100)])}, duration="3s")
    res = run(scn)
    names = res.client_names
    by_client = Counter(names[i] for i in res.requests["client"])
    assert by_client == {"c": 100, "a->b": 100, "a->c": 100, "b->c": 100}
    assert res.counters["handlers_started.c.0"] == 200.0
    assert (res.requests["error"] == SUCCESS).all()


def test_many_services_same_seed_same_records(tmp_path):
    services = {f"s{i}": {**steps({"cpu": "1ms", "distribution": "exponential"},
                                  *([{"call": f"s{i + 1}"}] if i < 5 else [])), "instances": 2}
                for i in range(6)}
    scn = graph(services, client={"load": {"rate_per_s": 200}, "load_balancer": "p2c"}, duration="5s")
    a, b = run_scenario(scn, seed=3), run_scenario(scn, seed=3)
    for k in a.requests:
        assert np.array_equal(a.requests[k], b.requests[k], equal_nan=True)
    assert a.counters["events"] == b.counters["events"]


def test_outlier_detection_ejects_a_sick_instance_and_returns_it_after_the_ejection_time(tmp_path):
    """Instance 2 of 5 answers 503 to everything. Round robin sends it every 5th request; its 5th
    consecutive 5xx (request 23) ejects it (max_ejection_percent 20 allows one of 5); from then
    on the balancer skips it, until the sweep after 30 s returns it."""
    rows = [0.1 * i for i in range(400)]
    scn = graph({"a": {**steps(), "instances": 5}},
                client={"load": arrivals(tmp_path, rows),
                        "outlier_detection": {"enabled": True, "max_ejection_percent": 20, "interval": "1s"}},
                faults=[{"kind": "error_rate", "target": "a", "instance": 2, "rate": 1.0, "status": 503}],
                duration="41s")
    res = run(scn)
    ejected = events(res, "outlier_ejected")
    assert [(round(t, 6), host, why) for t, host, why in ejected][:1] == [(2.2, 2, "consecutive_5xx")]
    failed_at = res.requests["arrival_at"][res.requests["error"] != SUCCESS]
    assert len(failed_at[failed_at < 2.25]) == 5
    # ejected at 2.2 s for 30 s: returned by the first sweep at or after 32.2 s (33 s)
    assert not ((failed_at > 2.25) & (failed_at < 33.0)).any()
    assert ((failed_at >= 33.0)).any()
