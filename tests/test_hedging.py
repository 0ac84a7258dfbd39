"""Hedging timetable (sim.hedging)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.hedging import HedgingPolicy


def test_hedges_every_delay_after_the_first_attempt():
    h = HedgingPolicy(delay_s=0.05, max_outstanding=3)
    assert h.hedge_due_at(10.0) == pytest.approx(10.05)
    assert h.hedge_due_at(10.0, hedges_sent=1) == pytest.approx(10.10)


def test_outstanding_limit_counts_the_original():
    h = HedgingPolicy(delay_s=0.05, max_outstanding=2)
    assert h.may_hedge(1) and not h.may_hedge(2) and not h.may_hedge(3)
    assert not HedgingPolicy(max_outstanding=1).may_hedge(1)   # hedging off


@pytest.mark.parametrize(("kwargs", "match"), [({"delay_s": -1.0}, "delay_s"), ({"max_outstanding": 0}, "max_outstanding")])
def test_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HedgingPolicy(**kwargs)


@given(st.floats(0.0, 10.0), st.floats(0.0, 1e6), st.integers(0, 20))
def test_due_times_never_precede_the_first_attempt_and_do_not_go_back(delay_s, t0, n):
    h = HedgingPolicy(delay_s=delay_s, max_outstanding=5)
    assert t0 <= h.hedge_due_at(t0, n) <= h.hedge_due_at(t0, n + 1)
