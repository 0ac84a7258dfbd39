"""Exact behaviour of sim.edge_limits (Envoy cluster circuit-breaker thresholds), and a
hypothesis check that no limit is ever exceeded over random acquire/release sequences."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.edge_limits import (
    CONNECTIONS, KINDS, OVERFLOW_STAT, PENDING, REQUESTS, RETRIES, EdgeLimits, EnvoyRetryBudget,
    edge_limits_from_mapping,
)


def test_envoy_defaults():
    e = EdgeLimits()
    assert [e.limit(k) for k in (CONNECTIONS, PENDING, REQUESTS, RETRIES)] == [1024, 1024, 1024, 3]
    assert EnvoyRetryBudget() == EnvoyRetryBudget(20.0, 3)
    assert edge_limits_from_mapping({}).limit(RETRIES) == 3


def test_over_max_pending_is_rejected_immediately_with_the_reason():
    e = EdgeLimits(max_pending_requests=2)
    assert e.try_acquire(PENDING) is None
    assert e.try_acquire(PENDING) is None
    assert e.try_acquire(PENDING) == "pending"
    assert e.count(PENDING) == 2 and e.overflows[PENDING] == 1
    e.release(PENDING)
    assert e.try_acquire(PENDING) is None
    assert OVERFLOW_STAT[PENDING] == OVERFLOW_STAT[REQUESTS] == "upstream_rq_pending_overflow"


def test_each_kind_reports_its_own_reason():
    e = EdgeLimits(0, 0, 0, 0)
    assert [e.try_acquire(k) for k in KINDS] == ["connections", "pending", "requests", "retries"]
    assert e.overflows == dict.fromkeys(KINDS, 1)


def test_default_max_retries_allows_three_concurrent():
    e = EdgeLimits()
    assert [e.try_acquire(RETRIES) for _ in range(4)] == [None, None, None, "retries"]


def test_retry_budget_replaces_max_retries_and_follows_load():
    e = EdgeLimits(max_retries=1000, retry_budget=EnvoyRetryBudget())
    assert e.limit(RETRIES) == 3                     # min_retry_concurrency with no load
    for _ in range(24):
        e.try_acquire(REQUESTS)
    assert e.limit(RETRIES) == 4                     # int(0.2 * 24) = int(4.8)
    for _ in range(26):
        e.try_acquire(PENDING)
    assert e.limit(RETRIES) == 10                    # pending requests count too
    assert [e.try_acquire(RETRIES) for _ in range(11)][-2:] == [None, "retries"]
    for _ in range(50):
        e.release(REQUESTS) if e.count(REQUESTS) else e.release(PENDING)
    assert e.limit(RETRIES) == 3 and e.count(RETRIES) == 10   # held ones stay; new ones refused
    assert e.try_acquire(RETRIES) == "retries"


def test_force_acquire_is_the_only_way_past_a_limit():
    e = EdgeLimits(max_connections=1)
    assert e.try_acquire(CONNECTIONS) is None
    assert e.try_acquire(CONNECTIONS) == "connections"
    e.force_acquire(CONNECTIONS)
    assert e.count(CONNECTIONS) == 2


def test_misuse_is_an_error():
    e = EdgeLimits()
    with pytest.raises(ValueError, match="none held"):
        e.release(REQUESTS)
    with pytest.raises(ValueError, match="unknown resource kind"):
        e.try_acquire("streams")
    with pytest.raises(ValueError, match="whole number"):
        EdgeLimits(max_requests=-1)
    with pytest.raises(ValueError, match="unknown key"):
        edge_limits_from_mapping({"max_request": 5})
    with pytest.raises(ValueError, match="budget_percent"):
        EnvoyRetryBudget(150.0)


def test_limits_from_yaml_mapping():
    e = edge_limits_from_mapping({"max_connections": 10, "max_pending_requests": 5,
                                  "retry_budget": {"budget_percent": 50}})
    assert (e.limit(CONNECTIONS), e.limit(PENDING), e.limit(REQUESTS)) == (10, 5, 1024)
    assert e.retry_budget == EnvoyRetryBudget(50.0, 3)


limits = st.integers(min_value=0, max_value=6)
steps = st.lists(st.tuples(st.sampled_from(["acquire", "release"]), st.sampled_from(KINDS)),
                 max_size=200)


@settings(max_examples=300, deadline=None)
@given(limits, limits, limits, limits, st.booleans(), steps)
def test_a_limit_is_never_exceeded(max_cx, max_pending, max_rq, max_retries, budget, script):
    e = EdgeLimits(max_cx, max_pending, max_rq, max_retries,
                   EnvoyRetryBudget(50.0, 1) if budget else None)
    held = dict.fromkeys(KINDS, 0)
    for op, kind in script:
        if op == "release":
            if held[kind]:
                e.release(kind)
                held[kind] -= 1
            continue
        before, limit = e.count(kind), e.limit(kind)
        reason = e.try_acquire(kind)
        assert (reason is None) == (before < limit)
        if reason is None:
            held[kind] += 1
            assert e.count(kind) <= limit
        else:
            assert reason == kind and e.count(kind) == before
        for k in KINDS:
            assert e.count(k) == held[k]
            if k != RETRIES or not budget:           # a budget may shrink under held retries
                assert e.count(k) <= e.limit(k)
