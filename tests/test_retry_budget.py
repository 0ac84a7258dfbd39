"""Retry budgets (sim.retry_budget): the reference numbers of semantics.md §7 / §8 and their bounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_scenarios import built_policies, doc_examples, scenario_with
from sim.hedging import HedgingPolicy
from sim.retry_budget import (AwsRetryQuota, EnvoyBudget, FinagleBudget, GrpcThrottle, RatioBudget,
                              UnlimitedBudget, WindowedSum)
from sim.scenario_loader import ScenarioError
from sim.throttling import AdaptiveThrottle

# ------------------------------------------------------------------ WindowedSum


def test_windowed_sum_exact_and_sliced_expiry():
    exact = WindowedSum(10.0)
    exact.add(0.5, 3)
    assert exact.total(10.49) == 3 and exact.total(10.5) == 0
    sliced = WindowedSum(10.0, slices=10)   # Finagle WindowedAdder: current slice + 9 before
    sliced.add(0.5, 3)
    assert sliced.total(9.99) == 3 and sliced.total(10.0) == 0


# ------------------------------------------------------------------ ratio (SRE)


def test_ratio_budget_allows_one_retry_per_ten_requests():
    b = RatioBudget(ratio=0.1, window_s=120.0, slices=None)
    for _ in range(9):
        b.on_request(0.0)
    assert not b.can_retry(0.0)
    b.on_request(0.0)
    assert b.can_retry(0.0)
    b.on_retry(0.0)
    assert not b.can_retry(1.0)
    assert b.can_retry(120.0) is False   # the requests expired with the retry


EVENTS = st.lists(st.tuples(st.floats(0.0, 5.0), st.sampled_from(["request", "retry"])), max_size=120)


@given(EVENTS, st.floats(0.05, 0.5))
def test_ratio_budget_never_exceeds_its_ratio(events, ratio):
    b = RatioBudget(ratio=ratio, window_s=10.0, slices=None)
    now, requests, retries = 0.0, [], []
    for gap, what in events:
        now += gap
        if what == "request":
            b.on_request(now)
            requests.append(now)
        elif b.can_retry(now):
            b.on_retry(now)
            retries.append(now)
            in_window = lambda ts: sum(1 for t in ts if now - t < 10.0)  # noqa: E731
            assert in_window(retries) <= ratio * in_window(requests) + 1e-9


# ------------------------------------------------------------------ Finagle / Linkerd


def test_finagle_defaults_and_reserve():
    b = FinagleBudget()
    assert (b.deposit, b.withdrawal, b.reserve) == (1000, 5000, 10 * 10 * 5000)
    granted = 0
    while b.can_retry(0.0):
        b.on_retry(0.0)
        granted += 1
    assert granted == 100                      # min_retries_per_s * ttl, with no requests
    for _ in range(100):
        b.on_request(0.5)
    granted = 0
    while b.can_retry(1.0):
        b.on_retry(1.0)
        granted += 1
    assert granted == 20                       # 20 % of 100 requests
    assert not b.can_retry(9.9)
    assert b.can_retry(10.0)                   # the t=0 withdrawals expired (slice 0 left the window)


def test_finagle_zero_percent_costs_one_token_and_zero_zero_is_empty():
    b = FinagleBudget(percent_can_retry=0.0, min_retries_per_s=2.0, ttl_s=5.0)
    assert (b.deposit, b.withdrawal, b.reserve) == (0, 1, 10)
    assert not FinagleBudget(percent_can_retry=0.0, min_retries_per_s=0.0).can_retry(0.0)


@settings(max_examples=60)
@given(st.lists(st.tuples(st.floats(0.0, 2.0), st.integers(0, 30), st.integers(0, 30)), max_size=40),
       st.sampled_from([0.1, 0.2, 0.5]), st.sampled_from([0.0, 1.0, 10.0]))
def test_finagle_never_exceeds_percent_plus_reserve(steps, percent, min_per_s):
    ttl = 10.0
    b = FinagleBudget(ttl_s=ttl, min_retries_per_s=min_per_s, percent_can_retry=percent, slices=None)
    now, requests, retries = 0.0, [], []
    for gap, n_req, n_retry in steps:
        now += gap
        for _ in range(n_req):
            b.on_request(now)
            requests.append(now)
        for _ in range(n_retry):
            if b.can_retry(now):
                b.on_retry(now)
                retries.append(now)
                # checked at each grant: later, older deposits expire before these withdrawals
                req_w = sum(1 for t in requests if now - t < ttl)
                ret_w = sum(1 for t in retries if now - t < ttl)
                assert ret_w * b.withdrawal <= req_w * b.deposit + b.reserve


# ------------------------------------------------------------------ Envoy


@pytest.mark.parametrize(("active", "pending", "allowed"), [(25, 0, 5), (2, 0, 3), (24, 0, 4), (20, 5, 5), (0, 0, 3)])
def test_envoy_concurrent_retry_limit(active, pending, allowed):
    b = EnvoyBudget()
    assert b.max_retries(active, pending) == allowed
    granted = 0
    while b.can_retry(0.0, active_requests=active, pending_requests=pending):
        b.on_retry(0.0)
        granted += 1
    assert granted == allowed
    b.on_retry_done(1.0)
    assert b.can_retry(1.0, active_requests=active, pending_requests=pending)


def test_envoy_max_follows_load_and_held_retries_stay_when_it_shrinks():
    b = EnvoyBudget()
    assert b.max_retries(0, 0) == 3                     # min_retry_concurrency with no load
    assert b.max_retries(24, 0) == 4                    # int(0.2 * 24) = int(4.8)
    assert b.max_retries(24, 26) == 10                  # pending requests count too
    granted = 0
    while b.can_retry(0.0, active_requests=24, pending_requests=26):
        b.on_retry(0.0)
        granted += 1
    assert granted == 10
    assert b.max_retries(0, 0) == 3 and b.retries_outstanding == 10   # held ones stay ...
    assert not b.can_retry(1.0)                                      # ... new ones are refused
    for _ in range(8):
        b.on_retry_done(2.0)
    assert b.can_retry(2.0)


@given(st.lists(st.tuples(st.integers(0, 200), st.booleans()), max_size=100),
       st.floats(0.0, 100.0), st.integers(0, 10))
def test_envoy_outstanding_retries_never_exceed_the_bound(steps, percent, minimum):
    b = EnvoyBudget(budget_percent=percent, min_retry_concurrency=minimum)
    for active, finish in steps:
        if finish and b.retries_outstanding:
            b.on_retry_done(0.0)
        elif b.can_retry(0.0, active_requests=active):
            b.on_retry(0.0)
            assert b.retries_outstanding <= max(percent / 100 * active, minimum)


# ------------------------------------------------------------------ gRPC A6 throttling


def test_grpc_throttle_stops_exactly_at_half():
    b = GrpcThrottle(max_tokens=10, token_ratio=0.1)
    assert b.token_count == 10 and b.can_retry(0.0)
    for _ in range(4):
        b.on_failure(0.0)
    assert b.token_count == 6 and b.can_retry(0.0)
    b.on_failure(0.0)
    assert b.token_count == 5 and not b.can_retry(0.0)      # 5 <= 10/2
    b.on_success(0.0)
    assert b.token_count == 5.1 and b.can_retry(0.0)        # exact thousandths
    for _ in range(100):
        b.on_success(0.0)
    assert b.token_count == 10                              # capped
    for _ in range(50):
        b.on_failure(0.0)
    assert b.token_count == 0                               # floored


def test_grpc_throttle_ratio_keeps_three_decimals():
    assert GrpcThrottle(max_tokens=10, token_ratio=0.12345).ratio_milli == 123


@pytest.mark.parametrize("ratio", [0.1, 0.5])
@pytest.mark.parametrize("side", [-1, 1])
def test_grpc_tokens_drift_down_iff_failure_rate_above_r_over_1_plus_r(ratio, side):
    threshold = ratio / (1 + ratio)
    f = threshold + side * 0.03
    b = GrpcThrottle(max_tokens=1000, token_ratio=ratio, initial_tokens=500)
    failures = np.random.default_rng(6).random(10_000) < f
    for failed in failures.tolist():
        b.on_failure(0.0) if failed else b.on_success(0.0)
    # expected drift +/- 0.03 (1 + r) per attempt: about +/- 330..450 tokens; sd about 35..50
    assert (b.token_count < 400) if side > 0 else (b.token_count > 600)


# ------------------------------------------------------------------ AWS retry quota


def test_aws_quota_costs_and_refunds():
    q = AwsRetryQuota()
    assert q.cost_of("client_timeout") == 10 and q.cost_of("http_5xx") == 5 and q.cost_of("conn_reset") == 5
    granted = 0
    while q.can_retry(0.0, "client_timeout"):
        granted += q.on_retry(0.0, "client_timeout") == 10
    assert granted == 50 and q.tokens == 0
    q.on_success(0.0)                     # a first attempt: +1
    assert q.tokens == 1 and not q.can_retry(0.0, "http_5xx")
    q.tokens = 7
    cost = q.on_retry(0.0, "http_5xx")
    assert (cost, q.tokens) == (5, 2)
    q.on_success(0.0, retry_cost=cost)    # the retry succeeded: its cost comes back, plus the attempt's +1
    assert q.tokens == 8


def test_aws_quota_exclusive_refund_mode():
    q = AwsRetryQuota(increment_on_retry_success=False)
    q.tokens = 7
    q.on_success(0.0, retry_cost=q.on_retry(0.0, "http_5xx"))
    assert q.tokens == 7                  # cost only
    q.on_success(0.0)
    assert q.tokens == 8                  # first attempt: +1


def test_aws_quota_is_capped_at_capacity():
    q = AwsRetryQuota(tokens=500)
    q.on_success(0.0)
    q.on_success(0.0, retry_cost=10)
    assert q.tokens == 500


@given(st.lists(st.tuples(st.sampled_from(["fail_timeout", "fail_5xx", "ok_first", "ok_retry"])), max_size=300))
def test_aws_quota_stays_within_zero_and_capacity(ops):
    q = AwsRetryQuota()
    pending: list[int] = []
    for (op,) in ops:
        if op.startswith("fail"):
            kind = "client_timeout" if op == "fail_timeout" else "http_5xx"
            if q.can_retry(0.0, kind):
                pending.append(q.on_retry(0.0, kind))
        elif op == "ok_retry" and pending:
            q.on_success(0.0, retry_cost=pending.pop())
        else:
            q.on_success(0.0)
        assert 0 <= q.tokens <= 500


# ------------------------------------------------------------------ scenario blocks


def budget_from(block: dict):
    """The budget sim.policies builds from ``retry.budget``, loaded as a scenario."""
    return built_policies(scenario_with({"retry": {"max_attempts": 3, "budget": block}}))["budget"]


def test_budget_kinds_through_the_schema():
    assert budget_from({}) is None and budget_from({"kind": "none"}) is None   # no bookkeeping at all
    assert UnlimitedBudget().can_retry(0.0)
    envoy = budget_from({"kind": "envoy", "budget_percent": 20, "min_retry_concurrency": 3})
    assert isinstance(envoy, EnvoyBudget) and envoy.max_retries(25) == 5
    linkerd = budget_from({"kind": "linkerd"})
    assert isinstance(linkerd, FinagleBudget) and linkerd.withdrawal == 5000 and linkerd.ttl_s == 10.0
    ratio = budget_from({"kind": "ratio", "window": "2m"})
    assert isinstance(ratio, RatioBudget) and ratio.ratio == 0.1 and ratio.requests.window_s == 120.0
    grpc = budget_from({"kind": "grpc", "max_tokens": 10, "token_ratio": 0.1})
    assert isinstance(grpc, GrpcThrottle) and grpc.token_count == 10.0 and grpc.ratio_milli == 100
    aws = budget_from({"kind": "aws", "increment_on_retry_success": False})
    assert isinstance(aws, AwsRetryQuota)
    assert (aws.tokens, aws.retry_cost, aws.timeout_cost, aws.no_retry_increment) == (500, 5, 10, 1)
    assert not aws.increment_on_retry_success


def test_schema_defaults_are_the_reference_defaults():
    def same(a, b):
        return {k: v for k, v in vars(a).items() if isinstance(v, (bool, int, float))} == \
               {k: v for k, v in vars(b).items() if isinstance(v, (bool, int, float))}
    assert same(budget_from({"kind": "finagle"}), FinagleBudget())
    assert same(budget_from({"kind": "envoy"}), EnvoyBudget())
    assert same(budget_from({"kind": "grpc"}), GrpcThrottle())
    assert same(budget_from({"kind": "aws"}), AwsRetryQuota())
    assert budget_from({"kind": "ratio"}).requests.window_s == RatioBudget().requests.window_s


def test_bad_budgets_are_rejected_by_the_loader():
    with pytest.raises(ScenarioError, match="istio"):
        budget_from({"kind": "istio"})
    with pytest.raises(ScenarioError, match="budget_percent"):
        budget_from({"kind": "envoy", "budget_percent": 150})
    with pytest.raises(ScenarioError, match="ttl"):
        budget_from({"kind": "finagle", "ttl": "2m"})


def test_yaml_examples_in_the_retries_doc_load_and_build():
    """Every YAML example of docs/policies/retries.md loads as a scenario and builds its policies."""
    kinds, throttles, hedges = set(), 0, 0
    for block in doc_examples("retries.md"):
        built = built_policies(scenario_with(block))
        budget = built["budget"]
        kinds.add("none" if budget is None else type(budget).__name__)
        throttles += isinstance(built["throttle"], AdaptiveThrottle)
        hedges += isinstance(built["hedging"], HedgingPolicy)
    assert kinds >= {"RatioBudget", "FinagleBudget", "EnvoyBudget", "GrpcThrottle", "AwsRetryQuota"}
    assert throttles and hedges
