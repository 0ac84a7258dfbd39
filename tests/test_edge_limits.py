"""Exact behaviour of sim.edge_limits (Envoy cluster circuit-breaker thresholds), the
``edge_limits:`` scenario block through sim.policies, and a hypothesis check that no limit
is ever exceeded over random acquire/release sequences."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_scenarios import built_policies, scenario_with
from sim.edge_limits import CONNECTIONS, KINDS, OVERFLOW_STAT, PENDING, REQUESTS, RETRIES, EdgeLimits
from sim.retry_budget import EnvoyBudget
from sim.scenario_loader import ScenarioError

ENVOY_DEFAULTS = [1024, 1024, 1024, 3]


def limits_of(e: EdgeLimits) -> list[int]:
    return [e.limit(k) for k in (CONNECTIONS, PENDING, REQUESTS, RETRIES)]


def edge_limits_from(block: dict) -> EdgeLimits | None:
    """What sim.policies builds from a client's ``edge_limits:`` block, loaded as a scenario."""
    return built_policies(scenario_with({"edge_limits": block}))["edge_limits"]


def test_envoy_defaults():
    assert limits_of(EdgeLimits()) == ENVOY_DEFAULTS


def test_scenario_block_defaults_are_envoys_and_off_means_none():
    assert limits_of(edge_limits_from({"enabled": True})) == ENVOY_DEFAULTS
    assert edge_limits_from({}) is None                          # Go's default: no Envoy in the path
    assert edge_limits_from({"enabled": False, "max_requests": 5}) is None


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


def test_limits_do_not_move_with_load():
    e = EdgeLimits()
    for _ in range(24):
        e.try_acquire(REQUESTS)
    for _ in range(26):
        e.try_acquire(PENDING)
    assert e.limit(RETRIES) == 3                     # the Envoy budget is sim.retry_budget.EnvoyBudget


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


def test_bad_blocks_are_rejected_by_the_loader():
    with pytest.raises(ScenarioError, match="max_request"):
        edge_limits_from({"enabled": True, "max_request": 5})
    with pytest.raises(ScenarioError, match="retry_budget"):      # the Envoy budget is retry.budget
        edge_limits_from({"enabled": True, "retry_budget": {"budget_percent": 50}})
    with pytest.raises(ScenarioError, match="max_requests"):
        edge_limits_from({"enabled": True, "max_requests": 0})


def test_limits_from_a_scenario_block():
    e = edge_limits_from({"enabled": True, "max_connections": 10, "max_pending_requests": 5})
    assert limits_of(e) == [10, 5, 1024, 3]
    built = built_policies(scenario_with({
        "edge_limits": {"enabled": True, "max_retries": 100},
        "retry": {"max_attempts": 3, "budget": {"kind": "envoy", "budget_percent": 50}}}))
    assert built["edge_limits"].limit(RETRIES) == 100
    assert isinstance(built["budget"], EnvoyBudget)
    assert (built["budget"].budget_percent, built["budget"].min_retry_concurrency) == (50.0, 3)


limits = st.integers(min_value=0, max_value=6)
steps = st.lists(st.tuples(st.sampled_from(["acquire", "release"]), st.sampled_from(KINDS)),
                 max_size=200)


@settings(max_examples=300, deadline=None)
@given(limits, limits, limits, limits, steps)
def test_a_limit_is_never_exceeded(max_cx, max_pending, max_rq, max_retries, script):
    e = EdgeLimits(max_cx, max_pending, max_rq, max_retries)
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
            assert e.count(k) <= e.limit(k)
