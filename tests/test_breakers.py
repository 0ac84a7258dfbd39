"""Reference-semantics tests for sim.breakers, with the sources' own numbers.

Sources: /work/shared/reference/semantics.md §7 (gobreaker, Hystrix, resilience4j,
Sentinel) and /work/shared/scenarios.md S7 (the dual-metric breaker). Exact timelines
with hand-picked clocks, plus a hypothesis property: a half-open breaker never admits
more than its permitted probes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_scenarios import built_policies, doc_examples, scenario_with
from sim.breakers import KINDS, Breaker
from sim.breakers.dual_metric import DualMetricBreaker
from sim.breakers.gobreaker import GoBreaker
from sim.breakers.hystrix import HystrixBreaker
from sim.breakers.resilience4j import Resilience4jBreaker
from sim.breakers.sentinel import SentinelBreaker
from sim.scenario_loader import ScenarioError

CLASSES = {"gobreaker": GoBreaker, "hystrix": HystrixBreaker, "resilience4j": Resilience4jBreaker,
           "sentinel": SentinelBreaker, "dual_metric": DualMetricBreaker}


def call(b: Breaker, now_s: float, success: bool, latency_s: float = 0.01) -> bool:
    """Admit-and-complete at one instant; returns whether it was admitted."""
    if not b.allow(now_s):
        return False
    b.on_result(now_s, success, latency_s, generation=b.generation)
    return True


# ------------------------------------------------------------------ scenario blocks


def breaker_from(block: dict) -> Breaker | None:
    """The breaker sim.policies builds from a client's ``breaker:`` block, loaded as a scenario."""
    return built_policies(scenario_with({"breaker": block}))["breaker"]


def scalars(obj: object) -> dict:
    return {k: v for k, v in vars(obj).items() if isinstance(v, (bool, int, float, str, type(None)))}


@pytest.mark.parametrize("kind", KINDS)
def test_schema_defaults_are_the_reference_defaults(kind: str) -> None:
    b = breaker_from({"kind": kind})
    assert type(b) is CLASSES[kind]
    assert b.state(0.0) == "closed" and b.transitions == []
    assert scalars(b) == scalars(CLASSES[kind]())


def test_kind_none_builds_no_breaker() -> None:
    assert breaker_from({}) is None and breaker_from({"kind": "none"}) is None
    assert set(CLASSES) == set(KINDS)


def test_scenario_durations_become_seconds_and_milliseconds() -> None:
    r = breaker_from({"kind": "resilience4j", "failure_rate_threshold": 50, "sliding_window_type": "count",
                      "sliding_window_size": 100, "minimum_calls": 100, "wait_in_open": "60s",
                      "permitted_calls_in_half_open": 10, "max_wait_in_half_open": "2s"})
    assert isinstance(r, Resilience4jBreaker) and r.wait_in_open_s == 60.0 and r.max_wait_in_half_open_s == 2.0
    g = breaker_from({"kind": "gobreaker", "timeout": "1m30s", "interval": "10s"})
    assert isinstance(g, GoBreaker) and g.timeout_s == 90.0 and g.interval_s == 10.0
    s = breaker_from({"kind": "sentinel", "max_rt": "1200ms", "recovery_timeout": "5s"})
    assert isinstance(s, SentinelBreaker) and s.max_rt_ms == pytest.approx(1200.0) and s.recovery_timeout_s == 5.0
    d = breaker_from({"kind": "dual_metric", "trip_p99_above": "2s", "close_p99_at_most": "1200ms",
                      "probe_batch_size": 4, "probe_results_to_decide": 0})
    assert isinstance(d, DualMetricBreaker)
    assert (d.trip_p99_above_s, d.close_p99_at_most_s, d.probe_results_to_decide) == (2.0, pytest.approx(1.2), 4)
    h = breaker_from({"kind": "hystrix", "sleep_window": "5s", "health_snapshot_interval": "500ms"})
    assert isinstance(h, HystrixBreaker) and (h.sleep_window_s, h.health_snapshot_interval_s) == (5.0, 0.5)


def test_unknown_settings_and_kinds_are_rejected_by_the_loader() -> None:
    with pytest.raises(ScenarioError, match="nope"):
        scenario_with({"breaker": {"kind": "hystrix", "nope": 1}})
    with pytest.raises(ScenarioError, match="envoy"):
        scenario_with({"breaker": {"kind": "envoy"}})
    with pytest.raises(ScenarioError, match="max_rt_ms"):
        scenario_with({"breaker": {"kind": "sentinel", "max_rt_ms": 1200}})


def test_yaml_examples_in_the_policy_doc_load_and_build() -> None:
    """Every YAML example of docs/policies/breakers.md loads as a scenario and builds its breaker."""
    built = set()
    for block in doc_examples("breakers.md"):
        scenario = scenario_with(block)
        breaker = built_policies(scenario)["breaker"]
        kind = scenario.clients["web"].breaker.kind
        assert isinstance(breaker, CLASSES[kind])
        built.add(kind)
    assert built == set(KINDS)


# ------------------------------------------------------------------ gobreaker


def test_gobreaker_defaults() -> None:
    b = GoBreaker()
    assert b.max_requests == 1 and b.timeout_s == 60.0 and b.interval_s == 0.0


def test_gobreaker_trips_on_sixth_consecutive_failure() -> None:
    b = GoBreaker()
    for i in range(5):
        assert call(b, float(i), False)
        assert b.state(float(i)) == "closed"
    assert call(b, 5.0, False)
    assert b.state(5.0) == "open" and b.transitions == [(5.0, "open")]
    assert not b.allow(6.0)


def test_gobreaker_success_resets_consecutive_failures_and_interval_zero_never_clears() -> None:
    b = GoBreaker()
    for i in range(5):
        call(b, float(i), False)
    call(b, 5.0, True)
    for i in range(5):
        call(b, 6.0 + i, False)
    assert b.state(11.0) == "closed"
    assert b.counts.total_failures == 10          # Interval 0: never cleared while closed
    call(b, 1000.0, False)
    assert b.state(1000.0) == "open"


def test_gobreaker_ignores_results_from_an_older_generation() -> None:
    b = GoBreaker()
    assert b.allow(0.0)
    stale = b.generation
    for i in range(6):
        call(b, 1.0 + i * 0.1, False)
    assert b.state(2.0) == "open"
    b.on_result(2.0, True, 0.1, generation=stale)          # admitted while closed
    assert b.state(2.0) == "open"
    # half-open after Timeout (strictly after expiry); a stale success must not close it
    assert b.state(1.5 + 60.0) == "open"
    assert b.allow(1.5 + 60.0 + 0.001)
    probe = b.generation
    b.on_result(61.6, True, 0.1, generation=stale)
    assert b.state(61.6) == "half_open"
    b.on_result(61.6, True, 0.1, generation=probe)
    assert b.state(61.6) == "closed"


def test_gobreaker_half_open_closes_after_max_requests_consecutive_successes() -> None:
    b = GoBreaker(max_requests=3, timeout_s=10.0)
    for i in range(6):
        call(b, 0.0, False)
    assert b.state(10.0) == "open"             # expiry must be strictly before now
    t = 10.5
    assert b.state(t) == "half_open"           # lazy: on the next check
    gens = []
    for _ in range(3):
        assert b.allow(t)
        gens.append(b.generation)
    assert not b.allow(t)                      # ErrTooManyRequests
    b.on_result(t, True, 0.1, gens[0])
    b.on_result(t, True, 0.1, gens[1])
    assert b.state(t) == "half_open"
    b.on_result(t, True, 0.1, gens[2])
    assert b.state(t) == "closed"
    assert [s for _, s in b.transitions] == ["open", "half_open", "closed"]


def test_gobreaker_any_half_open_failure_reopens() -> None:
    b = GoBreaker(max_requests=3, timeout_s=10.0)
    for _ in range(6):
        call(b, 0.0, False)
    assert b.allow(11.0) and b.allow(11.0)
    g = b.generation
    b.on_result(11.0, True, 0.1, g)
    b.on_result(11.0, False, 0.1, g)
    assert b.state(11.0) == "open"
    assert not b.allow(20.0)
    assert b.state(21.5) == "half_open"


# ------------------------------------------------------------------ Hystrix


def test_hystrix_needs_twenty_requests_in_the_window() -> None:
    b = HystrixBreaker()
    for i in range(19):
        call(b, 0.01 * i, False)
    assert b.state(5.0) == "closed"            # 19 failures, 100 %, below the volume
    b2 = HystrixBreaker()
    for i in range(20):
        call(b2, 0.01 * i, False)
    assert b2.state(0.6) == "open"


def test_hystrix_trips_only_at_a_health_snapshot() -> None:
    b = HystrixBreaker()
    for i in range(20):
        call(b, 0.6 + 0.001 * i, False)        # the 20th failure at 0.619 s
    assert b.state(0.62) == "closed"
    assert b.allow(0.99)                        # still admitting for up to 500 ms
    assert b.state(0.999) == "closed"
    assert b.state(1.0) == "open"
    assert b.transitions == [(1.0, "open")]


def test_hystrix_error_percentage_threshold_is_inclusive() -> None:
    b = HystrixBreaker()
    for i in range(20):
        call(b, 0.01 * i, i % 2 == 0)           # 10 of 20 errors = 50 %
    assert b.state(0.5) == "open"
    b2 = HystrixBreaker()
    for i in range(20):
        call(b2, 0.01 * i, i < 11)              # 9 of 20 errors = 45 %
    assert b2.state(5.0) == "closed"


def test_hystrix_single_probe_after_sleep_window() -> None:
    b = HystrixBreaker()
    for i in range(20):
        call(b, 0.01 * i, False)
    assert b.state(0.5) == "open"
    assert not b.allow(5.5)                     # sleep window: now > opened + 5 s
    assert b.state(5.6) == "open"               # lazy until a request arrives
    assert b.allow(5.6)
    assert b.state(5.6) == "half_open"
    assert not any(b.allow(5.6 + 0.01 * i) for i in range(50))
    b.on_result(6.0, False, 1.0)
    assert b.state(6.0) == "open"
    assert not b.allow(10.9) and b.allow(11.01)
    b.on_result(11.1, True, 0.05)
    assert b.state(11.1) == "closed"
    # the metrics stream was reset: one failure does not trip
    call(b, 11.2, False)
    assert b.state(12.0) == "closed"


def test_hystrix_old_buckets_roll_out() -> None:
    b = HystrixBreaker()
    for i in range(15):
        call(b, 0.1 + 0.01 * i, False)          # bucket [0, 1)
    for i in range(10):
        call(b, 10.1 + 0.01 * i, False)         # at 10.5 the window is [1, 11): 10 requests
    assert b.state(10.5) == "closed"


# ------------------------------------------------------------------ resilience4j


def test_resilience4j_defaults() -> None:
    b = Resilience4jBreaker()
    assert (b.failure_rate_threshold, b.slow_call_rate_threshold, b.slow_call_duration_threshold_s,
            b.wait_in_open_s, b.permitted_calls_in_half_open, b.minimum_calls,
            b.sliding_window_size, b.sliding_window_type) == (50, 100, 60, 60, 10, 100, 100, "count")


def test_resilience4j_trips_on_the_call_reaching_minimum_not_before() -> None:
    b = Resilience4jBreaker(sliding_window_size=10, minimum_calls=10, wait_in_open_s=5.0)
    for i in range(9):
        call(b, float(i), False)                # 100 % failures, 9 < minimum 10
        assert b.state(float(i)) == "closed"
    call(b, 9.0, False)
    assert b.state(9.0) == "open" and b.transitions == [(9.0, "open")]


def test_resilience4j_threshold_is_inclusive_and_minimum_capped_by_window() -> None:
    b = Resilience4jBreaker(sliding_window_size=10, minimum_calls=100)   # minimum -> 10
    assert b.minimum_calls == 10
    for i in range(9):
        call(b, float(i), i >= 5)               # 5 failures, 4 successes
    assert b.state(8.0) == "closed"
    call(b, 9.0, True)                          # 10 calls, 5 failed = 50 % >= 50
    assert b.state(9.0) == "open"


def test_resilience4j_slow_call_is_strictly_greater() -> None:
    b = Resilience4jBreaker(sliding_window_size=4, minimum_calls=4,
                            slow_call_duration_threshold_s=2.0, slow_call_rate_threshold=100)
    for i in range(4):
        call(b, float(i), True, latency_s=2.0)  # exactly the threshold: not slow
    assert b.state(4.0) == "closed"
    for i in range(4):
        call(b, 4.0 + i, True, latency_s=2.001)
    assert b.state(8.0) == "open"


def test_resilience4j_time_based_window() -> None:
    b = Resilience4jBreaker(sliding_window_type="time", sliding_window_size=10, minimum_calls=5)
    for i in range(4):
        call(b, 0.5 + i * 0.1, False)
    call(b, 11.0, False)                        # the first four have left the 10 s window
    assert b.state(11.0) == "closed"
    for i in range(4):
        call(b, 11.1 + i * 0.1, False)
    assert b.state(11.5) == "open"


def test_resilience4j_half_open_is_lazy_and_admits_exactly_permitted_calls() -> None:
    b = Resilience4jBreaker(sliding_window_size=10, minimum_calls=10, wait_in_open_s=60.0,
                            permitted_calls_in_half_open=3)
    for i in range(10):
        call(b, 0.0, False)
    assert b.state(0.0) == "open"
    assert not b.allow(60.0)                    # isAfter: strictly after the wait
    assert b.state(100.0) == "open"             # lazy: no transition without a request
    admitted = [b.allow(100.0) for _ in range(10)]
    assert admitted == [True] * 3 + [False] * 7
    assert b.transitions[-1] == (100.0, "half_open")
    b.on_result(100.1, True, 0.1)
    b.on_result(100.2, True, 0.1)
    assert b.state(100.2) == "half_open"        # fresh window, minimum min(10, 3) = 3
    b.on_result(100.3, False, 0.1)              # 1/3 = 33 % < 50 %
    assert b.state(100.3) == "closed"


def test_resilience4j_half_open_failures_reopen() -> None:
    b = Resilience4jBreaker(sliding_window_size=10, minimum_calls=10, permitted_calls_in_half_open=2)
    for _ in range(10):
        call(b, 0.0, False)
    assert b.allow(61.0) and b.allow(61.0) and not b.allow(61.0)
    b.on_result(61.1, True, 0.1)
    b.on_result(61.2, False, 0.1)               # 1/2 = 50 % >= 50 %
    assert b.state(61.2) == "open"
    assert not b.allow(121.2) and b.allow(121.3)


# ------------------------------------------------------------------ Sentinel


def test_sentinel_slow_ratio_one_probe() -> None:
    b = SentinelBreaker(grade="slow_ratio", max_rt_ms=500, slow_ratio_threshold=0.5,
                        recovery_timeout_s=10.0)
    for i in range(4):
        call(b, 0.1 * i, True, latency_s=1.0)   # 4 slow: below min request amount 5
    assert b.state(0.5) == "closed"
    call(b, 0.5, True, latency_s=1.0)
    assert b.state(0.5) == "open"
    assert not b.allow(10.4)
    assert b.allow(10.5)                        # now >= nextRetryTimestamp
    assert b.state(10.5) == "half_open"
    assert not any(b.allow(10.5 + 0.01 * i) for i in range(20))
    b.on_result(10.8, True, 0.6)                # probe RT 600 ms > 500: reopen
    assert b.state(10.8) == "open"
    assert b.allow(20.8)
    b.on_result(20.9, True, 0.5)                # RT == limit: not slow, close
    assert b.state(20.9) == "closed"


def test_sentinel_ratio_is_strictly_greater_and_one_bucket_interval() -> None:
    b = SentinelBreaker(grade="error_ratio", error_ratio_threshold=0.5)
    for i in range(10):
        call(b, 0.05 * i, i % 2 == 0)           # 5/10 = 0.5, not > 0.5
    assert b.state(0.5) == "closed"
    for i in range(5):
        call(b, 0.9 + 0.01 * i, True)
    for i in range(4):
        call(b, 1.0 + 0.01 * i, False)          # new 1 s bucket: 4 requests < 5
    assert b.state(1.1) == "closed"
    call(b, 1.1, False)
    assert b.state(1.1) == "open"


def test_sentinel_error_count_and_slow_ratio_one() -> None:
    b = SentinelBreaker(grade="error_count", error_count_threshold=5)
    for i in range(5):
        call(b, 0.01 * i, False)
    assert b.state(0.1) == "closed"             # 5 is not > 5
    call(b, 0.1, False)
    assert b.state(0.1) == "open"
    r = SentinelBreaker(grade=0, max_rt_ms=100, slow_ratio_threshold=1.0)
    for i in range(5):
        call(r, 0.01 * i, True, latency_s=0.2)  # ratio == threshold == 1.0 trips
    assert r.state(0.1) == "open"


# ------------------------------------------------------------------ dual metric (S7)


def bad_window(b: DualMetricBreaker, start_s: float) -> None:
    for i in range(10):
        call(b, start_s + 0.05 * i, i >= 2)     # 80 % success < 90 %


def test_dual_metric_needs_three_consecutive_bad_windows() -> None:
    b = DualMetricBreaker()
    bad_window(b, 0.0)
    bad_window(b, 1.0)
    for i in range(10):
        call(b, 2.0 + 0.05 * i, True)           # good window breaks the streak
    bad_window(b, 3.0)
    bad_window(b, 4.0)
    assert b.state(5.5) == "closed"
    call(b, 5.1, True, latency_s=2.5)           # P99 > 2,000 ms: third bad window
    assert b.state(5.9) == "closed"
    assert b.state(6.0) == "open"
    assert b.transitions == [(6.0, "open")]
    assert not b.allow(30.0)


def test_dual_metric_open_time_doubles_and_probes_close_it() -> None:
    b = DualMetricBreaker()
    for w in range(3):
        bad_window(b, float(w))
    assert b.state(3.0) == "open"
    assert b.state(62.9) == "open"
    assert b.state(63.0) == "half_open"         # 60 s x 2^0
    assert [b.allow(63.0) for _ in range(5)] == [True] * 3 + [False] * 2
    g = b.generation
    b.on_result(63.2, True, 0.1, g)
    b.on_result(63.3, False, 0.1, g)            # 2/3 < 95 %: reopen, n = 1
    assert b.state(63.3) == "open"
    assert b.state(63.3 + 119.9) == "open"
    assert b.state(63.3 + 120.0) == "half_open"  # 60 s x 2^1
    t = 183.3
    assert [b.allow(t) for _ in range(4)] == [True, True, True, False]
    g = b.generation
    b.on_result(t + 0.1, True, 1.3, g)          # P99 1.3 s > 1.2 s: reopen, n = 2
    b.on_result(t + 0.1, True, 0.1, g)
    b.on_result(t + 0.1, True, 0.1, g)
    assert b.state(t + 0.1) == "open"
    t2 = t + 0.1 + 240.0                          # 60 s x 2^2
    assert b.state(t2 - 0.01) == "open" and b.state(t2) == "half_open"
    for _ in range(3):
        assert b.allow(t2)
    g = b.generation
    b.on_result(t2 + 1, True, 1.2, g)
    b.on_result(t2 + 1, True, 0.1, g)
    b.on_result(t2 + 1, True, 0.1, g)
    assert b.state(t2 + 1) == "closed" and b.n_reopenings == 0


def test_dual_metric_probe_batches_every_30_s_and_stragglers_ignored() -> None:
    b = DualMetricBreaker()
    assert b.allow(0.0)
    stale = b.generation
    for w in range(3):
        bad_window(b, float(w))
    assert b.state(63.0) == "half_open"
    assert [b.allow(63.0) for _ in range(4)] == [True, True, True, False]
    b.on_result(64.0, True, 0.1, generation=stale)   # a straggler is not a probe
    assert b.state(64.0) == "half_open"
    assert not b.allow(92.9)
    assert [b.allow(93.0) for _ in range(4)] == [True, True, True, False]


# ------------------------------------------------------------------ property: half-open never admits all traffic


def probe_limit(b: Breaker, stint_start_s: float, now_s: float) -> int:
    if isinstance(b, GoBreaker):
        return b.max_requests
    if isinstance(b, Resilience4jBreaker):
        return b.permitted_calls_in_half_open
    if isinstance(b, DualMetricBreaker):
        n_batches = int((now_s - stint_start_s) // b.probe_interval_s) + 1
        return b.probe_batch_size * n_batches
    return 1                                      # Hystrix, Sentinel


BREAKERS = {
    "gobreaker": lambda: GoBreaker(max_requests=3, timeout_s=2.0),
    "hystrix": lambda: HystrixBreaker(request_volume_threshold=5, sleep_window_s=2.0),
    "resilience4j": lambda: Resilience4jBreaker(sliding_window_size=5, minimum_calls=5,
                                                wait_in_open_s=2.0, permitted_calls_in_half_open=4),
    "resilience4j_time": lambda: Resilience4jBreaker(sliding_window_type="time", sliding_window_size=3,
                                                     minimum_calls=3, wait_in_open_s=2.0,
                                                     permitted_calls_in_half_open=4),
    "sentinel": lambda: SentinelBreaker(grade="error_ratio", error_ratio_threshold=0.3,
                                        recovery_timeout_s=2.0),
    "dual_metric": lambda: DualMetricBreaker(base_open_s=2.0, probe_interval_s=1.0),
}

steps = st.lists(st.tuples(st.floats(0.0, 0.7), st.booleans(), st.booleans(), st.floats(0.0, 3.0)),
                 min_size=1, max_size=300)


@pytest.mark.parametrize("name", sorted(BREAKERS))
@settings(max_examples=60, deadline=None)
@given(seq=steps)
def test_half_open_never_exceeds_permitted_probes(name: str,
                                                  seq: list[tuple[float, bool, bool, float]]) -> None:
    b = BREAKERS[name]()
    now_s = 0.0
    pending: list[tuple[float, int, float]] = []       # (completes at, generation, latency)
    admitted_in_stint: dict[int, int] = {}
    for dt_s, complete_one, success, latency_s in seq:
        now_s += dt_s
        if complete_one and pending:
            _, gen, lat = pending.pop(0)
            b.on_result(now_s, success, lat, generation=gen)
        if b.allow(now_s):
            pending.append((now_s + latency_s, b.generation, latency_s))
            if b.state(now_s) == "half_open":
                stint = len(b.transitions)
                admitted_in_stint[stint] = admitted_in_stint.get(stint, 0) + 1
                stint_start_s = b.transitions[-1][0]
                assert admitted_in_stint[stint] <= probe_limit(b, stint_start_s, now_s)
        assert b.state(now_s) in ("closed", "open", "half_open")
    times = [t for t, _ in b.transitions]
    assert times == sorted(times)
    assert all(s1 != s2 for (_, s1), (_, s2) in zip(b.transitions, b.transitions[1:]))
