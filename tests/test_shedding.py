"""Exact behaviour of sim.shedding: admission, FIFO/LIFO order, fixed timeouts, and the
Fail-at-Scale CoDel + adaptive LIFO timeline; the ``services.X.shedding`` block through
sim.policies and the YAML examples of docs/policies/shedding.md; hypothesis checks that
every item leaves exactly once and that results do not depend on how often the caller
polls."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_scenarios import built_policies, doc_examples, scenario_with
from sim.edge_limits import EdgeLimits
from sim.scenario_loader import ScenarioError
from sim.shedding import QUEUE, REJECT, RUN, QueueConfig, RequestQueue, ServerShedding, SheddingConfig


# ------------------------------------------------------------------ admission

def shed(max_in_flight, max_length, discipline="fifo"):
    return ServerShedding(SheddingConfig(max_in_flight, QueueConfig(discipline, max_length)))


def test_max_in_flight_rejects_the_next_one_without_a_queue():
    s = shed(2, 0)
    assert s.admit(0.0, 0, 0) == RUN
    assert s.admit(0.0, 1, 0) == RUN
    assert s.admit(0.0, 2, 0) == REJECT


def test_bounded_queue_then_reject():
    s = shed(2, 2)
    assert s.admit(0.0, 2, 0) == QUEUE
    assert s.admit(0.0, 2, 1) == QUEUE
    assert s.admit(0.0, 2, 2) == REJECT


def test_free_slot_with_waiters_queues_instead_of_jumping_ahead():
    assert shed(2, 5).admit(0.0, 1, 1) == QUEUE


def test_unlimited_and_unbounded():
    assert ServerShedding(SheddingConfig()).admit(0.0, 10**6, 10**6) == RUN
    assert shed(1, None).admit(0.0, 1, 10**6) == QUEUE


def shedding_from(block: dict) -> ServerShedding | None:
    """What sim.policies builds from ``services.api.shedding``, loaded as a scenario."""
    return built_policies(scenario_with({"shedding": block}))["shedding"]


def test_config_from_a_scenario_block():
    s = shedding_from({"max_in_flight": 200, "queue_length": 1000, "discipline": "codel",
                       "codel_target": "5ms", "codel_interval": "100ms"})
    assert s.config == SheddingConfig(200, QueueConfig("codel", 1000, None, 0.005, 0.1))
    assert shedding_from({"max_in_flight": 8, "discipline": "codel"}).config.queue == \
        QueueConfig("codel", 0, None, 0.005, 0.1)                  # Fail at Scale's M and N by default
    assert shedding_from({"max_in_flight": 8, "queue_length": 4, "discipline": "lifo",
                          "queue_timeout": "1s"}).config == SheddingConfig(8, QueueConfig("lifo", 4, 1.0))
    assert shedding_from({"max_in_flight": 8}).config == SheddingConfig(8, QueueConfig("fifo", 0, None))
    assert shedding_from({}) is None                              # Go's default: no gate


def test_bad_blocks_are_rejected():
    with pytest.raises(ScenarioError, match="max_inflight"):
        shedding_from({"max_inflight": 3})
    with pytest.raises(ScenarioError, match="random"):
        shedding_from({"max_in_flight": 3, "discipline": "random"})
    with pytest.raises(ScenarioError, match="queue_timeout"):
        shedding_from({"max_in_flight": 3, "discipline": "codel", "queue_timeout": "1s"})
    with pytest.raises(ScenarioError, match="codel_target"):
        shedding_from({"max_in_flight": 3, "discipline": "codel", "codel_target": "1s"})
    with pytest.raises(ScenarioError, match="max_in_flight"):
        shedding_from({"queue_length": 5})
    with pytest.raises(ValueError, match="max_in_flight"):
        SheddingConfig(0)
    with pytest.raises(ValueError, match="codel sets its own"):
        QueueConfig("codel", timeout_s=1.0)


def test_yaml_examples_in_the_shedding_doc_load_and_build():
    """Every YAML example of docs/policies/shedding.md (shedding and edge limits) loads as a
    scenario and builds its policies."""
    sheds = limits = 0
    for block in doc_examples("shedding.md"):
        built = built_policies(scenario_with(block))
        sheds += isinstance(built["shedding"], ServerShedding)
        limits += isinstance(built["edge_limits"], EdgeLimits)
    assert sheds >= 2 and limits >= 1


# ------------------------------------------------------------------ fifo / lifo

def pushed(discipline, items, **kw):
    q = RequestQueue(discipline, **kw)
    for i, item in enumerate(items):
        q.push(float(i), item)
    return q


def test_fifo_serves_the_oldest_first():
    q = pushed("fifo", "abc")
    assert [q.pop(5.0), q.pop(5.0), q.pop(5.0), q.pop(5.0)] == ["a", "b", "c", None]
    assert len(q) == 0


def test_lifo_serves_the_newest_first():
    q = pushed("lifo", "abc")
    assert q.pop(5.0) == "c"
    q.push(6.0, "d")
    assert [q.pop(7.0), q.pop(7.0), q.pop(7.0), q.pop(7.0)] == ["d", "b", "a", None]


@pytest.mark.parametrize("discipline", ["fifo", "lifo"])
def test_fixed_timeout_drops_when_sojourn_exceeds_it(discipline):
    q = RequestQueue(discipline, timeout_s=1.0)
    q.push(0.0, "a")
    q.push(0.5, "b")
    assert len(q.expire(1.0)) == 0 and len(q) == 2          # sojourn == timeout: kept
    dropped: list[str] = []
    got = q.pop(1.25, dropped)                               # a waited 1.25 s > 1 s
    assert dropped == ["a"] and got == "b" and len(q) == 0
    assert q.last_empty_at == 1.25


def test_next_deadline_skips_served_requests():
    q = RequestQueue("lifo", timeout_s=1.0)
    assert q.next_deadline_at() is None
    q.push(0.0, "a")
    q.push(0.5, "b")
    assert q.next_deadline_at() == 1.0
    q.pop(0.6)                             # b served
    q.pop(0.7)                             # a served
    assert q.next_deadline_at() is None


def test_expiry_is_attributed_to_the_deadline():
    q = RequestQueue("fifo", timeout_s=1.0)
    q.push(0.0, "a")
    assert q.expire(5.0) == ["a"]
    assert q.last_empty_at == 1.0


# ------------------------------------------------------------------ codel

def test_codel_short_timeout_only_after_a_full_interval_non_empty():
    q = RequestQueue("codel", target_s=0.005, interval_s=0.1, created_at_s=0.0)
    q.push(0.0, "a")                       # empty at 0 -> long timeout 100 ms
    assert q.timeout_for_push_s(0.05) == 0.1
    assert q.timeout_for_push_s(0.1) == 0.1                  # last_empty_at == now - interval: not yet
    assert not q.overloaded(0.1)
    assert q.overloaded(0.1001)
    assert q.timeout_for_push_s(0.1001) == 0.005


def test_codel_timeline_short_timeout_lifo_then_back_to_fifo_when_drained():
    q = RequestQueue("codel", target_s=0.005, interval_s=0.1, created_at_s=0.0)
    q.push(0.0, "A")                       # deadline 0.100
    q.push(0.05, "B")                      # not empty since 0, but for < 100 ms: deadline 0.150
    q.push(0.1, "C")                       # exactly 100 ms: still long, deadline 0.200
    dropped: list[str] = []
    q.push(0.12, "D", dropped)             # A timed out at 0.100; overloaded -> 5 ms, deadline 0.125
    assert dropped == ["A"] and len(q) == 3
    assert q.overloaded(0.12)
    assert q.pop(0.121) == "D"             # adaptive LIFO: newest first
    assert q.pop(0.13) == "C"
    assert q.pop(0.14) == "B"              # last one; the queue drains at 0.14
    assert q.last_empty_at == 0.14 and not q.overloaded(0.2)
    q.push(0.15, "E")                      # empty right before: long timeout and FIFO again
    q.push(0.16, "F")
    assert q.timeout_for_push_s(0.2) == 0.1
    assert q.pop(0.2) == "E"


def test_codel_short_timeout_drops_a_standing_queue():
    q = RequestQueue("codel", target_s=0.005, interval_s=0.1)
    dropped: list[int] = []
    q.push(0.0, 0)
    for i in range(1, 200):                # one arrival per ms, nobody served
        q.push(i / 1000, i, dropped)
    # Arrivals after 100 ms get 5 ms; those pushed up to 100 ms keep 100 ms.
    assert dropped[:3] == [0, 1, 2]        # item 0 times out at 100 ms, seen at the push at 101 ms
    q.expire(0.2005, dropped)
    assert len(q) == 4                     # pushed at 0.196 .. 0.199
    assert sorted(dropped) == list(range(196))
    assert q.pop(0.2005) == 199              # overloaded: newest first


def test_codel_expiry_that_empties_the_queue_ends_the_overload():
    q = RequestQueue("codel", target_s=0.005, interval_s=0.1)
    q.push(0.0, "a")
    q.push(0.09, "b")                      # deadline 0.19
    assert q.expire(0.5) == ["a", "b"]
    assert q.last_empty_at == pytest.approx(0.19)
    q.push(0.5, "c")
    assert q.timeout_for_push_s(0.5) == 0.1


# ------------------------------------------------------------------ properties

ops = st.lists(st.tuples(st.sampled_from(["push", "pop", "expire"]),
                         st.integers(min_value=0, max_value=30)), max_size=120)


def run(discipline, script, extra_polls=False, timeout_s=None):
    q = RequestQueue(discipline, timeout_s=timeout_s, target_s=0.005, interval_s=0.1) \
        if discipline != "codel" else RequestQueue("codel", target_s=0.005, interval_s=0.1)
    now_ms, served, dropped, n = 0, [], [], 0
    for op, step in script:
        if extra_polls:                    # poll at every intermediate millisecond
            for t in range(now_ms + 1, now_ms + step):
                q.expire(t / 1000, dropped)
        now_ms += step
        now_s = now_ms / 1000
        if op == "push":
            q.push(now_s, n, dropped)
            n += 1
        elif op == "pop":
            got = q.pop(now_s, dropped)
            if got is not None:
                served.append(got)
        else:
            q.expire(now_s, dropped)
        assert len(q) == n - len(served) - len(dropped)
    return served, dropped, n, q


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["fifo", "lifo", "codel"]), ops, st.sampled_from([None, 0.004, 0.02]))
def test_every_item_leaves_once_and_polling_does_not_matter(discipline, script, timeout_s):
    served, dropped, n, q = run(discipline, script, timeout_s=timeout_s)
    rest = []
    while (x := q.pop(10**6, rest)) is not None:
        rest.append(x)
    assert sorted(served + dropped + rest) == list(range(n))
    again = run(discipline, script, extra_polls=True, timeout_s=timeout_s)
    assert again[:3] == (served, dropped, n)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_codel_drops_only_past_their_timeout(script):
    q = RequestQueue("codel", target_s=0.005, interval_s=0.1)
    pushed_at: dict[int, float] = {}
    now_ms, n = 0, 0
    for op, step in script:
        now_ms += step
        now_s = now_ms / 1000
        dropped: list[int] = []
        if op == "push":
            q.push(now_s, n, dropped)
            pushed_at[n] = now_s
            n += 1
        elif op == "pop":
            got = q.pop(now_s, dropped)
            if got is not None:
                assert now_s - pushed_at[got] <= 0.1 + 1e-12
        else:
            q.expire(now_s, dropped)
        for d in dropped:
            assert now_s - pushed_at[d] > 0.005 - 1e-12


def test_a_storm_of_many_requests_stays_cheap():
    q = RequestQueue("codel")
    t = 0.0
    for i in range(50_000):
        t += 1e-4
        q.push(t, i)
        if i % 3 == 0:
            q.pop(t)
    assert 0 < len(q) < 200               # the 5 ms timeout bounds the standing queue
