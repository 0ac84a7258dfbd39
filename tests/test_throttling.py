"""SRE client-side adaptive throttling (sim.throttling): the formula of semantics.md §7 "Google SRE"."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.throttling import AdaptiveThrottle


def _load(t: AdaptiveThrottle, now_s: float, requests: int, accepts: int) -> None:
    for i in range(requests):
        assert not t.should_reject(now_s, 0.999999)   # p < 1 here: every request is sent
        if i < accepts:
            t.on_result(now_s, accepted=True)


def test_fresh_throttle_never_rejects():
    t = AdaptiveThrottle()
    assert t.reject_probability(0.0) == 0.0 and not t.should_reject(0.0, 0.0)


@pytest.mark.parametrize(("requests", "accepts", "p"), [(10, 0, 10 / 11), (10, 5, 0.0), (12, 5, 2 / 13), (100, 40, 20 / 101)])
def test_reference_probabilities(requests, accepts, p):
    t = AdaptiveThrottle(k=2.0, window_s=120.0, slices=None)
    _load(t, 0.0, requests, accepts)
    assert t.reject_probability(1.0) == pytest.approx(p)


def test_rejected_requests_count_and_the_window_forgets():
    t = AdaptiveThrottle(slices=None)
    _load(t, 0.0, 10, 0)
    assert t.should_reject(1.0, 0.5)                       # p = 10/11
    assert t.reject_probability(1.0) == pytest.approx(11 / 12)  # the rejected one counted
    assert t.reject_probability(119.9) == pytest.approx(11 / 12)
    assert t.reject_probability(120.0) == pytest.approx(1 / 2)  # the t=0 ones left the window
    assert t.reject_probability(121.0) == 0.0


def test_k_one_is_stricter_than_k_two():
    loose, strict = AdaptiveThrottle(k=2.0, slices=None), AdaptiveThrottle(k=1.0, slices=None)
    for t in (loose, strict):
        _load(t, 0.0, 10, 6)
    assert loose.reject_probability(0.0) == 0.0
    assert strict.reject_probability(0.0) == pytest.approx(4 / 11)


@given(st.lists(st.tuples(st.floats(0.0, 3.0), st.floats(0.0, 1.0, exclude_max=True), st.booleans()), max_size=200))
def test_probability_in_unit_interval_and_decision_is_uniform_below_p(steps):
    t = AdaptiveThrottle(window_s=10.0, slices=None)
    now = 0.0
    for gap, u, accepted in steps:
        now += gap
        p = t.reject_probability(now)
        assert 0.0 <= p < 1.0
        rejected = t.should_reject(now, u)
        assert rejected == (u < p)
        if not rejected:
            t.on_result(now, accepted)


@pytest.mark.parametrize(("accept_p", "lo", "hi"), [(0.8, 0.0, 0.01), (0.3, 0.9, 1.0)])
def test_long_run_rejection_by_seeded_sampling(accept_p, lo, hi):
    # K * a > 1: the throttle stays out of the way; K * a < 1: it sheds almost everything
    t = AdaptiveThrottle(window_s=120.0, slices=None)
    draws = np.random.default_rng(21).random((12_000, 2)).tolist()
    rejected = 0
    for i, (u, v) in enumerate(draws):
        now = i * 0.01
        if t.should_reject(now, u):
            rejected += i >= 6000
        else:
            t.on_result(now, accepted=v < accept_p)
    assert lo <= rejected / 6000 <= hi


def test_sliced_window_matches_exact_within_a_slice():
    exact, sliced = AdaptiveThrottle(slices=None), AdaptiveThrottle(slices=120)
    for t in (exact, sliced):
        _load(t, 0.2, 30, 5)
    assert sliced.reject_probability(50.0) == exact.reject_probability(50.0)
    assert sliced.reject_probability(120.0) == 0.0 and exact.reject_probability(120.0) > 0


def test_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        AdaptiveThrottle(k=0)
