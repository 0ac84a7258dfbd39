"""Backoff delays (sim.backoff): the AWS and gRPC formulas of semantics.md §8 / §7 and their bounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.backoff import BackoffPolicy
from sim.policies import make_backoff
from sim.retry import RetryPolicy
from sim.schema import RetryConfig

UNIFORM = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


def test_exponential_ceiling_doubles_from_base_and_stops_at_cap():
    p = BackoffPolicy("exponential", base_s=0.1, cap_s=1.0, jitter="none")
    assert [p.delay_s(n, 0.5) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_multiplier_and_huge_retry_numbers():
    p = BackoffPolicy("exponential", base_s=1.0, cap_s=120.0, multiplier=1.6, jitter="none")
    assert p.delay_s(3, 0.0) == pytest.approx(2.56)
    assert p.delay_s(100_000, 0.0) == 120.0   # no OverflowError


def test_none_and_constant():
    assert BackoffPolicy("none", jitter="full").delay_s(3, 0.9) == 0.0
    c = BackoffPolicy("constant", base_s=0.25, cap_s=10.0, jitter="none")
    assert [c.delay_s(n, 0.3) for n in (1, 2, 9)] == [0.25, 0.25, 0.25]
    assert BackoffPolicy("constant", base_s=0.25, jitter="full").delay_s(4, 0.5) == 0.125


def test_reference_jitter_values():
    # expo(3) = min(10, 0.1 * 2^2) = 0.4
    def d(jitter, u):
        return BackoffPolicy("exponential", base_s=0.1, cap_s=10.0, jitter=jitter).delay_s(3, u)
    assert d("full", 0.25) == pytest.approx(0.1)                 # U(0, 0.4)
    assert d("equal", 0.0) == pytest.approx(0.2)                 # 0.2 + U(0, 0.2)
    assert d("equal", 0.5) == pytest.approx(0.3)
    assert d("grpc", 0.0) == pytest.approx(0.32)                 # 0.4 * U(0.8, 1.2)
    assert d("grpc", 0.5) == pytest.approx(0.4)


def test_decorrelated_starts_at_base_and_triples():
    p = BackoffPolicy("exponential", base_s=0.1, cap_s=1.0, jitter="decorrelated")
    assert p.delay_s(1, 0.0) == pytest.approx(0.1)               # U(base, 3 * base)
    assert p.delay_s(1, 0.5) == pytest.approx(0.2)
    assert p.delay_s(2, 0.5, previous_s=0.2) == pytest.approx(0.35)   # U(0.1, 0.6)
    assert p.delay_s(5, 0.99, previous_s=0.9) == 1.0             # capped


@pytest.mark.parametrize(("backoff", "jitter"), [("none", "full"), ("exponential", "full"), ("exponential", "none"),
                                                 ("constant", "equal"), ("exponential", "grpc")])
@pytest.mark.parametrize("multiplier", [2.0, 1.6])
@pytest.mark.parametrize("u", [0.0, 0.37, 0.999])
def test_the_retry_policy_sleeps_what_the_schema_block_says(backoff, jitter, multiplier, u):
    config = RetryConfig(max_attempts=5, backoff=backoff, backoff_base=0.05, backoff_cap=0.3,
                         backoff_multiplier=multiplier, jitter=jitter)
    policy = make_backoff(config)
    assert policy == BackoffPolicy(backoff, base_s=0.05, cap_s=0.3, multiplier=multiplier, jitter=jitter)
    for n in range(1, 6):
        assert policy.delay_s(n, u) == RetryPolicy(config).backoff_s(n, u)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"kind": "linear"}, "backoff kind"),
    ({"jitter": "half"}, "jitter"),
    ({"base_s": 2.0, "cap_s": 1.0}, "base_s <= cap_s"),
    ({"multiplier": 0.5}, "multiplier"),
    ({"kind": "constant", "jitter": "decorrelated"}, "decorrelated"),
])
def test_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BackoffPolicy(**kwargs)


POLICY = st.builds(
    BackoffPolicy,
    kind=st.sampled_from(["none", "constant", "exponential"]),
    base_s=st.floats(0.0, 5.0),
    cap_s=st.floats(5.0, 60.0),
    multiplier=st.floats(1.0, 4.0),
    jitter=st.sampled_from(["none", "full", "equal", "grpc"]),
)


@given(POLICY, st.integers(1, 2000), UNIFORM)
def test_delay_within_bounds(policy, n, u):
    d = policy.delay_s(n, u)
    expo = policy.ceiling_s(n)
    assert 0.0 <= expo <= policy.cap_s
    if policy.jitter == "grpc":
        assert 0.8 * expo - 1e-12 <= d <= 1.2 * expo + 1e-12
    else:
        assert 0.0 <= d <= policy.cap_s
        assert d <= expo
        if policy.jitter == "equal":
            assert d >= expo / 2


@given(st.floats(0.0, 2.0), st.floats(2.0, 30.0), st.lists(UNIFORM, min_size=1, max_size=30))
def test_decorrelated_chain_stays_in_base_cap(base_s, cap_s, draws):
    p = BackoffPolicy("exponential", base_s=base_s, cap_s=cap_s, jitter="decorrelated")
    prev = None
    for n, u in enumerate(draws, start=1):
        prev = p.delay_s(n, u, prev)
        assert base_s - 1e-12 <= prev <= cap_s


@pytest.mark.parametrize(("jitter", "mean_over_expo"), [("full", 0.5), ("equal", 0.75), ("grpc", 1.0), ("none", 1.0)])
def test_jitter_means_by_seeded_sampling(jitter, mean_over_expo):
    p = BackoffPolicy("exponential", base_s=0.1, cap_s=10.0, jitter=jitter)
    draws = np.random.default_rng(20240829).random(100_000).tolist()
    mean = sum(p.delay_s(4, u) for u in draws) / len(draws)
    assert mean == pytest.approx(0.8 * mean_over_expo, rel=0.005)   # expo(4) = 0.8; tolerance ~7 sigma
    assert p.mean_delay_s(4) == pytest.approx(0.8 * mean_over_expo)


def test_decorrelated_first_step_mean_is_twice_base():
    p = BackoffPolicy("exponential", base_s=0.1, cap_s=10.0, jitter="decorrelated")
    draws = np.random.default_rng(7).random(100_000)
    mean = float(np.mean([p.delay_s(1, u) for u in draws.tolist()]))
    assert mean == pytest.approx(0.2, rel=0.005)
