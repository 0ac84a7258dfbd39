"""Envoy outlier detection (sim.outlier_detection): exact timelines with Envoy's own numbers.

Sources: envoyproxy/envoy ``source/common/upstream/outlier_detection_impl.cc`` (counters,
``ejectHost``, ``onIntervalTimer``, ``successRateEjectionThreshold`` with its worked example
{50, 100, 100, 100, 100} -> mean 90, stdev 20, threshold 52), ``router.cc`` (what is
reported), the arch overview ``outlier.rst``, PRs #27909 / #34796 (the max-ejection cap).
Defaults: semantics.md §7 "Outlier detection defaults". Sweeps run at multiples of the
10 s interval, as the engine calls them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.outlier_detection import (CONSECUTIVE_5XX, CONSECUTIVE_GATEWAY_FAILURE, FAILURE_PERCENTAGE, KIND_CODES,
                                   SUCCESS_RATE, OutlierDetector, envoy_code)
from sim.policies import make_outlier_detector
from sim.schema import ERROR_KINDS, OutlierDetectionConfig

U = 0.5   # an enforcement draw; enforcement 100 % ejects for any u in [0, 1)


def config(**changes) -> OutlierDetectionConfig:
    return dataclasses.replace(OutlierDetectionConfig(enabled=True), **changes)


def fail(d: OutlierDetector, now: float, host: int, n: int = 1, status: int = 500, u: float = U) -> list:
    return [d.on_result(now, host, False, status, "http_5xx", u) for _ in range(n)]


def ok(d: OutlierDetector, now: float, host: int, n: int = 1) -> None:
    for _ in range(n):
        d.on_result(now, host, True, 200, None, U)


def sweeps(d: OutlierDetector, start: float, end: float, draws=lambda: U) -> None:
    """Every sweep at k x interval in [start, end]."""
    k = int(round(start / d.interval))
    while k * d.interval <= end + 1e-9:
        d.sweep(k * d.interval, draws)
        k += 1


# ------------------------------------------------------------------ settings and factory


def test_defaults_are_envoys_and_the_factory_builds_only_when_enabled():
    c = OutlierDetectionConfig()
    assert (c.consecutive_5xx, c.interval, c.base_ejection_time, c.max_ejection_time, c.max_ejection_percent) == \
        (5, 10.0, 30.0, 300.0, 10.0)
    assert (c.enforcing_consecutive_5xx, c.enforcing_consecutive_gateway_failure, c.enforcing_success_rate,
            c.enforcing_failure_percentage) == (100.0, 0.0, 100.0, 0.0)
    assert (c.success_rate_minimum_hosts, c.success_rate_request_volume, c.success_rate_stdev_factor) == (5, 100, 1.9)
    assert (c.failure_percentage_threshold, c.failure_percentage_minimum_hosts,
            c.failure_percentage_request_volume) == (85.0, 5, 50)
    assert make_outlier_detector(c, 3) is None          # enabled: false (a Go client has none)
    d = make_outlier_detector(config(), 3)
    assert isinstance(d, OutlierDetector) and d.n_hosts == 3 and d.healthy_hosts() == [0, 1, 2]
    assert d.always_eject_one_host is False and d.panic_threshold == 50.0


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="max_ejection_time"):
        OutlierDetector(config(base_ejection_time=600.0), 3)   # Envoy: DetectorImpl::create refuses it
    with pytest.raises(ValueError, match="n_hosts"):
        OutlierDetector(config(), 0)
    d = OutlierDetector(config(), 2)
    with pytest.raises(ValueError, match="out of range"):
        d.on_result(0.0, 2, True, 200, None, U)
    with pytest.raises(ValueError, match="unknown error kind"):
        d.on_result(0.0, 0, False, 0, "nope", U)


# ------------------------------------------------------------------ consecutive failures


def test_five_consecutive_5xx_eject_at_the_fifth():
    d = OutlierDetector(config(), 10)
    assert fail(d, 1.0, 3, 4) == [None] * 4 and not d.is_ejected(3)
    assert d.consecutive(3) == (4, 0)
    assert fail(d, 1.5, 3) == [CONSECUTIVE_5XX]                     # inline, not at the sweep
    assert d.is_ejected(3) and d.ejected_count() == 1
    assert d.ejections == [(1.5, 3, CONSECUTIVE_5XX)]
    assert d.healthy_hosts() == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert d.consecutive(3) == (0, 0)                                # reset after the attempt
    assert d.stats["ejections_detected_consecutive_5xx"] == 1 == d.stats["ejections_enforced_consecutive_5xx"]


def test_a_success_in_between_resets_the_count():
    d = OutlierDetector(config(), 10)
    fail(d, 0.0, 0, 4)
    ok(d, 0.1, 0)
    assert d.consecutive(0) == (0, 0)
    fail(d, 0.2, 0, 4)
    assert not d.is_ejected(0)
    fail(d, 0.3, 0)
    assert d.is_ejected(0)


def test_a_4xx_is_a_success_for_outlier_detection():
    d = OutlierDetector(config(), 10)
    fail(d, 0.0, 0, 4)
    d.on_result(0.1, 0, True, 404, "http_4xx", U)    # Envoy: anything but 5xx resets both counters
    fail(d, 0.2, 0, 4)
    assert not d.is_ejected(0)


def test_a_non_gateway_5xx_resets_only_the_gateway_count():
    d = OutlierDetector(config(enforcing_consecutive_gateway_failure=100.0, consecutive_5xx=10), 10)
    fail(d, 0.0, 0, 4, status=503)
    assert d.consecutive(0) == (4, 4)
    fail(d, 0.1, 0, 1, status=500)
    assert d.consecutive(0) == (5, 0)
    assert fail(d, 0.2, 0, 5, status=502)[-1] == CONSECUTIVE_GATEWAY_FAILURE
    assert d.ejections == [(0.2, 0, CONSECUTIVE_GATEWAY_FAILURE)]


def test_gateway_detection_is_checked_first_and_a_second_check_gets_a_fresh_draw():
    # the 5th 503 makes both counters reach 5: gateway (enforcing 50 %) then 5xx (enforcing 100 %)
    d = OutlierDetector(config(enforcing_consecutive_gateway_failure=50.0), 10)
    assert fail(d, 0.0, 0, 5, status=503, u=0.25)[-1] == CONSECUTIVE_GATEWAY_FAILURE
    assert d.consecutive(0) == (5, 0)      # the 5xx detection was dropped: the host was already ejected
    c = config(enforcing_consecutive_gateway_failure=50.0, enforcing_consecutive_5xx=50.0)
    d = OutlierDetector(c, 10)
    # 0.7 >= 0.5: gateway not enforced; the 5xx check gets (0.7 - 0.5) / 0.5 = 0.4 < 0.5: enforced
    assert fail(d, 0.0, 0, 5, status=503, u=0.7)[-1] == CONSECUTIVE_5XX
    assert d.stats["ejections_detected_consecutive_gateway_failure"] == 1
    d = OutlierDetector(c, 10)
    assert fail(d, 0.0, 0, 5, status=503, u=0.9)[-1] is None      # 0.9, then 0.8: neither enforced
    assert d.consecutive(0) == (0, 0)


def test_the_rescaled_draw_gives_independent_enforcement():
    # gateway 50 %, 5xx 50 %: P(ejected) = 1 - 0.5 x 0.5 = 0.75, as with two independent draws
    c = config(enforcing_consecutive_gateway_failure=50.0, enforcing_consecutive_5xx=50.0)
    grid = (np.arange(1000) + 0.5) / 1000
    ejected = 0
    for u in grid:
        d = OutlierDetector(c, 10)
        fail(d, 0.0, 0, 5, status=503, u=float(u))
        ejected += d.is_ejected(0)
    assert ejected == 750


def test_enforcement_zero_never_ejects_but_still_detects():
    c = config(enforcing_consecutive_5xx=0.0, enforcing_consecutive_gateway_failure=0.0,
               enforcing_success_rate=0.0, enforcing_failure_percentage=0.0, max_ejection_percent=100.0)
    d = OutlierDetector(c, 5)
    for t in range(1, 31):
        for h in range(5):
            for _ in range(120):
                d.on_result(t * 10.0 - 5.0, h, h != 0, 200 if h else 503, None if h else "http_5xx", 0.0)
        d.sweep(t * 10.0, lambda: 0.0)
    assert d.ejections == [] and d.ejected_count() == 0 and d.healthy_hosts() == [0, 1, 2, 3, 4]
    assert d.stats["ejections_detected_consecutive_5xx"] == 30 * 120 // 5
    assert d.stats["ejections_detected_consecutive_gateway_failure"] == 30 * 120 // 5
    assert d.stats["ejections_detected_failure_percentage"] == 30
    assert d.stats["ejections_enforced_total"] == 0


def test_enforcement_percentage_compares_the_draw():
    c = config(enforcing_consecutive_5xx=30.0)
    d = OutlierDetector(c, 10)
    assert fail(d, 0.0, 0, 5, u=0.3)[-1] is None                   # 0.3 is not < 0.30
    assert d.consecutive(0) == (0, 0)                               # reset anyway: five more are needed
    assert fail(d, 0.0, 0, 5, u=0.2999)[-1] == CONSECUTIVE_5XX


# ------------------------------------------------------------------ what counts as a failure


def test_every_error_kind_has_a_mapping():
    assert set(KIND_CODES) == set(ERROR_KINDS)


@pytest.mark.parametrize("kind", ["conn_refused", "conn_reset", "eof", "dial_timeout", "tls_timeout", "stream_reset",
                                  "client_timeout", "response_header_timeout", "deadline_exceeded",
                                  "addr_unavailable"])
def test_local_origin_failures_are_gateway_failures(kind):
    code = envoy_code(False, 0, kind)
    assert code in (503, 504)          # LocalOriginConnectFailed -> 503, LocalOriginTimeout -> 504
    d = OutlierDetector(config(enforcing_consecutive_gateway_failure=100.0), 10)
    for _ in range(5):
        d.on_result(0.0, 1, False, 0, kind, U)
    assert d.ejections == [(0.0, 1, CONSECUTIVE_GATEWAY_FAILURE)]


@pytest.mark.parametrize("kind", ["breaker_open", "throttled", "edge_overflow", "budget_exhausted", "cancelled"])
def test_policy_refusals_and_lost_hedges_report_nothing(kind):
    d = OutlierDetector(config(), 10)
    fail(d, 0.0, 0, 4)
    for _ in range(10):
        assert d.on_result(0.0, 0, False, 0, kind, U) is None
    assert d.consecutive(0) == (4, 0) and d._total[0] == 4
    fail(d, 0.0, 0)
    assert d.is_ejected(0)


def test_the_status_decides_when_there_is_one():
    assert envoy_code(False, 200, "client_timeout") == 200   # headers arrived; the body timed out: not reported again
    assert envoy_code(False, 503, "http_5xx") == 503
    assert envoy_code(True, 0, None) == 200
    with pytest.raises(ValueError):
        envoy_code(False, 0, None)


# ------------------------------------------------------------------ ejection time and return


def test_ejection_lasts_30s_then_60s_and_ends_at_the_first_sweep_after():
    d = OutlierDetector(config(), 10)
    fail(d, 1.0, 0, 5)
    assert d.ejected_until(0) == 31.0
    sweeps(d, 10.0, 30.0)
    assert d.is_ejected(0)                                # 29 s < 30 s at the 30 s sweep
    d.sweep(40.0, lambda: U)
    assert not d.is_ejected(0) and d.unejections == [(40.0, 0)]
    assert d.consecutive(0) == (0, 0) and d.backoff(0) == 1
    fail(d, 41.0, 0, 5)                                   # again before the next sweep could decay the backoff
    assert d.backoff(0) == 2 and d.ejection_time(0) == 60.0 and d.ejected_until(0) == 101.0
    sweeps(d, 50.0, 100.0)
    assert d.is_ejected(0)
    d.sweep(110.0, lambda: U)
    assert not d.is_ejected(0)
    assert d.ejections == [(1.0, 0, CONSECUTIVE_5XX), (41.0, 0, CONSECUTIVE_5XX)]
    assert d.unejections == [(40.0, 0), (110.0, 0)]


def test_a_sweep_exactly_at_the_end_returns_the_host():
    d = OutlierDetector(config(), 10)
    fail(d, 10.0, 0, 5)
    d.sweep(20.0, lambda: U)
    d.sweep(30.0, lambda: U)
    assert d.is_ejected(0)
    d.sweep(40.0, lambda: U)                              # 30 s <= 40 - 10
    assert not d.is_ejected(0)


def test_backoff_caps_at_max_ejection_time_and_decays_one_per_healthy_interval():
    d = OutlierDetector(config(), 10)
    t, times = 0.5, []
    for _ in range(13):
        fail(d, t, 0, 5)
        times.append(d.ejection_time(0))
        back = d.ejected_until(0)
        t = 10.0 * int(back // 10.0 + (0 if back % 10.0 == 0 else 1))   # the first sweep at or after it
        d.sweep(t, lambda: U)
        assert not d.is_ejected(0)
        t += 0.5
    assert times == [30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 210.0, 240.0, 270.0, 300.0, 300.0, 300.0, 300.0]
    assert d.backoff(0) == 11                # grows while backoff x 30 < 300 + 30
    back_at = t - 0.5
    d.sweep(back_at + 10.0, lambda: U)       # healthy for a whole interval: one step down
    assert d.backoff(0) == 10
    for k in range(2, 12):
        d.sweep(back_at + 10.0 * k, lambda: U)
    assert d.backoff(0) == 0
    fail(d, back_at + 115.0, 0, 5)
    assert d.ejection_time(0) == 30.0


def test_the_backoff_does_not_decay_at_the_sweep_that_returns_the_host():
    d = OutlierDetector(config(), 10)
    fail(d, 0.0, 0, 5)
    d.sweep(30.0, lambda: U)
    assert not d.is_ejected(0) and d.backoff(0) == 1      # returned now: not yet healthy for an interval
    d.sweep(40.0, lambda: U)
    assert d.backoff(0) == 0


def test_an_ejected_host_keeps_counting_but_is_not_ejected_again():
    d = OutlierDetector(config(), 10)
    fail(d, 0.0, 0, 5)
    fail(d, 0.1, 0, 7)                  # in-flight attempts ending after the ejection
    assert d.consecutive(0) == (7, 0)   # at 5 the detection was dropped and nothing reset
    assert len(d.ejections) == 1 and d.stats["ejections_detected_consecutive_5xx"] == 1
    d.sweep(30.0, lambda: U)
    assert d.consecutive(0) == (0, 0)   # the return clears the counters


# ------------------------------------------------------------------ max_ejection_percent


def test_max_ejection_percent_with_10_hosts_allows_1():
    d = OutlierDetector(config(), 10)
    for h in range(4):
        fail(d, 1.0, h, 5)
    assert d.ejections == [(1.0, 0, CONSECUTIVE_5XX)] and d.ejected_count() == 1
    assert d.stats["ejections_overflow"] == 3
    assert d.consecutive(1) == (0, 0)   # an overflowed detection still resets its counter
    d = OutlierDetector(config(), 20)
    for h in range(4):
        fail(d, 1.0, h, 5)
    assert d.ejected_count() == 2       # 100 x 2 / 20 <= 10


def test_fewer_than_10_hosts_at_10_percent_eject_nothing_unless_always_eject_one_host():
    # Envoy since PR #27909: 100 x (0 + 1) / 5 = 20 > 10, no ejection; PR #34796 added always_eject_one_host
    d = OutlierDetector(config(), 5)
    fail(d, 1.0, 0, 5)
    assert d.ejected_count() == 0 and d.stats["ejections_overflow"] == 1
    d = OutlierDetector(config(), 5, always_eject_one_host=True)
    fail(d, 1.0, 0, 5)
    fail(d, 1.0, 1, 5)
    assert d.ejections == [(1.0, 0, CONSECUTIVE_5XX)]
    d = OutlierDetector(config(max_ejection_percent=40.0), 5)
    for h in range(4):
        fail(d, 1.0, h, 5)
    assert d.ejected_count() == 2


# ------------------------------------------------------------------ success rate and failure percentage


def interval_of(d: OutlierDetector, t: float, volume: list[int], successes: list[int]) -> None:
    for h, (n, s) in enumerate(zip(volume, successes)):
        for i in range(n):
            good = i < s
            d.on_result(t, h, good, 200 if good else 500, None if good else "http_5xx", U)


def test_success_rate_ejects_the_outlier_among_five_hosts_with_volume():
    # Envoy's own example: rates {50, 100, 100, 100, 100} -> mean 90, stdev 20, threshold 90 - 1.9 x 20 = 52
    d = OutlierDetector(config(max_ejection_percent=20.0, consecutive_5xx=1000), 5)
    interval_of(d, 5.0, [100] * 5, [50, 100, 100, 100, 100])
    assert d.ejected_count() == 0
    d.sweep(10.0, lambda: U)
    assert d.success_rate_average == pytest.approx(90.0)
    assert d.success_rate_ejection_threshold == pytest.approx(52.0)
    assert d.ejections == [(10.0, 0, SUCCESS_RATE)]


def test_success_rate_needs_enough_hosts_with_enough_volume():
    c = config(max_ejection_percent=100.0, consecutive_5xx=1000)
    d = OutlierDetector(c, 4)                                     # 4 < success_rate_minimum_hosts
    interval_of(d, 5.0, [100] * 4, [10, 100, 100, 100])
    d.sweep(10.0, lambda: U)
    assert d.ejected_count() == 0 and d.success_rate_average == -1.0
    d = OutlierDetector(c, 5)                                     # one host under the request volume
    interval_of(d, 5.0, [100, 100, 100, 100, 99], [10, 100, 100, 100, 99])
    d.sweep(10.0, lambda: U)
    assert d.ejected_count() == 0
    interval_of(d, 15.0, [100] * 5, [10, 100, 100, 100, 100])     # the next interval has the volume
    d.sweep(20.0, lambda: U)
    assert d.ejections == [(20.0, 0, SUCCESS_RATE)]


def test_success_rate_judges_only_the_last_interval():
    d = OutlierDetector(config(max_ejection_percent=100.0, consecutive_5xx=1000), 5)
    interval_of(d, 5.0, [60] * 5, [0, 60, 60, 60, 60])
    d.sweep(10.0, lambda: U)                                      # volume 60 < 100: not judged
    interval_of(d, 15.0, [60] * 5, [60] * 5)
    d.sweep(20.0, lambda: U)                                      # the first interval's counts are gone
    assert d.ejected_count() == 0


def test_equal_success_rates_eject_nobody():
    d = OutlierDetector(config(max_ejection_percent=100.0, consecutive_5xx=1000), 6)
    interval_of(d, 5.0, [200] * 6, [100] * 6)                     # stdev 0: nobody strictly below the mean
    d.sweep(10.0, lambda: U)
    assert d.ejected_count() == 0 and d.success_rate_ejection_threshold == pytest.approx(50.0)


def test_failure_percentage_ejects_at_the_threshold_when_enforced():
    c = config(enforcing_failure_percentage=100.0, enforcing_success_rate=0.0, max_ejection_percent=100.0,
               consecutive_5xx=1000)
    d = OutlierDetector(c, 6)
    interval_of(d, 5.0, [50, 50, 50, 50, 50, 49], [7, 8, 50, 50, 50, 0])  # 86 %, 84 %; host 5 under the volume
    d.sweep(10.0, lambda: U)
    assert d.ejections == [(10.0, 0, FAILURE_PERCENTAGE)]
    d = OutlierDetector(c, 5)
    interval_of(d, 5.0, [100] * 5, [15, 100, 100, 100, 100])       # exactly 85 %: >= ejects
    d.sweep(10.0, lambda: U)
    assert d.ejections == [(10.0, 0, FAILURE_PERCENTAGE)]
    assert d.stats["ejections_detected_success_rate"] == 1         # detected too, but not enforced


def test_a_host_ejected_by_success_rate_is_not_ejected_again_by_failure_percentage():
    c = config(enforcing_failure_percentage=100.0, max_ejection_percent=100.0, consecutive_5xx=1000)
    d = OutlierDetector(c, 5)
    interval_of(d, 5.0, [100] * 5, [0, 100, 100, 100, 100])
    d.sweep(10.0, lambda: U)
    assert d.ejections == [(10.0, 0, SUCCESS_RATE)] and d.ejected_count() == 1


def test_sweep_draws_once_per_attempt_within_the_cap():
    # 20 hosts at 10 %: two ejections at most. Rates {50, 50, 100 x 18}: mean 95, stdev 15, threshold 66.5
    c = config(enforcing_success_rate=50.0, consecutive_5xx=1000)
    d = OutlierDetector(c, 20)
    interval_of(d, 5.0, [100] * 20, [50, 50] + [100] * 18)
    calls = []
    d.sweep(10.0, lambda: calls.append(1) or 0.9)                 # 0.9 >= 0.5: neither enforced
    assert len(calls) == 2 and d.ejected_count() == 0
    assert d.success_rate_ejection_threshold == pytest.approx(66.5)
    interval_of(d, 15.0, [100] * 20, [50, 50, 50] + [100] * 17)   # three outliers; the third overflows
    draws = iter([0.1, 0.1])                                       # a third draw would raise StopIteration
    d.sweep(20.0, lambda: next(draws))
    assert d.ejections == [(20.0, 0, SUCCESS_RATE), (20.0, 1, SUCCESS_RATE)]
    assert d.stats["ejections_overflow"] == 1


# ------------------------------------------------------------------ panic


def test_panic_returns_every_host_below_the_threshold():
    d = OutlierDetector(config(max_ejection_percent=100.0), 4)
    fail(d, 1.0, 0, 5)
    assert d.healthy_hosts() == [1, 2, 3] and not d.in_panic()
    fail(d, 1.0, 1, 5)
    assert d.healthy_hosts() == [2, 3] and not d.in_panic()          # 50 % is not < 50 %
    fail(d, 1.0, 2, 5)
    assert d.in_panic() and d.healthy_hosts() == [0, 1, 2, 3]        # 25 % < 50 %: all hosts
    d = OutlierDetector(config(max_ejection_percent=100.0), 2, panic_threshold=0.0)
    fail(d, 1.0, 0, 5)
    fail(d, 1.0, 1, 5)
    assert d.healthy_hosts() == [] and not d.in_panic()               # Envoy: no healthy upstream (local 503)


# ------------------------------------------------------------------ determinism and bounds


KINDS = ["http_5xx", "conn_refused", "client_timeout", None, None, None, "http_4xx", "breaker_open"]


def run_script(seed: int, n_hosts: int, c: OutlierDetectionConfig) -> tuple:
    rng = np.random.default_rng(seed)
    d = OutlierDetector(c, n_hosts)
    t, next_sweep = 0.0, c.interval
    while t < 300.0:
        t += float(rng.exponential(0.05))
        while next_sweep <= t:
            d.sweep(next_sweep, lambda: float(rng.random()))
            next_sweep += c.interval
        pool = d.healthy_hosts()
        host = pool[int(rng.integers(len(pool)))]
        sick = host < 2
        kind = KINDS[int(rng.integers(len(KINDS)))] if sick or rng.random() < 0.02 else None
        status = {"http_5xx": 503, "http_4xx": 404, None: 200}.get(kind, 0)
        d.on_result(t, host, kind is None or kind == "http_4xx", status, kind, float(rng.random()))
        assert d.ejected_count() <= max(1, int(c.max_ejection_percent * n_hosts / 100))
    return d.ejections, d.unejections, d.stats


def test_determinism_same_draws_same_timeline():
    c = config(max_ejection_percent=30.0, enforcing_consecutive_5xx=70.0, success_rate_request_volume=20)
    first = run_script(7, 8, c)
    assert first == run_script(7, 8, c)
    ejected = [h for _, h, _ in first[0]]
    assert {0, 1} <= set(ejected)                   # both sick hosts leave the pool, again and again
    assert sum(h in (0, 1) for h in ejected) >= 0.8 * len(ejected)   # success rate at volume 20 is noisy
    assert first != run_script(8, 8, c)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.sampled_from([0.0, 10.0, 34.0, 50.0, 100.0]), st.booleans(), st.integers(0, 2**31))
def test_the_cap_holds_and_the_pool_is_never_empty_in_default_panic(n_hosts, max_pct, one, seed):
    c = config(max_ejection_percent=max_pct, consecutive_5xx=2, success_rate_minimum_hosts=1,
               success_rate_request_volume=1, enforcing_failure_percentage=100.0,
               failure_percentage_minimum_hosts=1, failure_percentage_request_volume=1)
    rng = np.random.default_rng(seed)
    d = OutlierDetector(c, n_hosts, always_eject_one_host=one)
    cap = max(int(max_pct * n_hosts / 100 + 1e-9), 1 if one else 0)
    for step in range(400):
        t = step * 0.25
        if step % 40 == 39:
            d.sweep(t, lambda: float(rng.random()))
        host = int(rng.integers(n_hosts))
        good = rng.random() < 0.5
        d.on_result(t, host, good, 200 if good else 500, None if good else "http_5xx", float(rng.random()))
        assert 0 <= d.ejected_count() <= cap
        assert d.ejected_count() == sum(d.is_ejected(h) for h in range(n_hosts))
        assert d.healthy_hosts()
