"""Exact-timeline tests of the resilience policies as the engine applies them.

Each test builds a small deterministic scenario (one client process, constant RTT,
constant handler steps, CSV-traced arrivals), runs it with ``trace=True`` and checks
records, counters, levels and the instants of the event log against the rules of the
policies (docs/policies/*.md, the ``sim.schema`` docs of each key, and the docstrings of
``sim.client`` / ``sim.server`` that implement them). Expected instants are derived in
the comments from the network arithmetic below, not copied from the simulator.

Network: RTT 20 ms, so a one-way trip is 10 ms. A request that dials a fresh
connection at t is written at t + 20 ms (SYN, SYN-ACK), reaches the server at
t + 30 ms and, for a handler of h, its response arrives at t + 40 ms + h. On a
kept-alive connection a request written at t is answered at t + 20 ms + h. Retries
use ``backoff: none`` (retry at once) unless a test says otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sim.result import ERROR_CODE, SUCCESS
from sim.scenario_loader import scenario_from_dict
from timeline import EXACT, approx_all, arrivals, events, instants, one, run

ONE_WAY = 0.010
RTT = 2 * ONE_WAY
FRESH = RTT + ONE_WAY      # dial -> request at the server, on a new connection

HTTP_5XX = ERROR_CODE["http_5xx"]


# ------------------------------------------------------------------- helpers


def scenario(routes: dict[str, Any], *, duration: str = "2s", sample_interval: str = "1s",
             service: dict | None = None, load: dict | None = None, transport: dict | None = None,
             retry: dict | None = None, policies: dict | None = None, faults: list | None = None):
    """One service ``api`` with ``routes`` and one client ``c`` (one process, 20 ms RTT).

    ``service`` adds keys of the service (e.g. ``shedding``); ``policies`` adds client keys
    (``breaker``, ``hedging``, ``throttle``, ``edge_limits``)."""
    svc = {"routes": routes, **(service or {})}
    client: dict[str, Any] = {"target": "api", "load": load or {"rate_per_s": 0},
                              "transport": {"rtt": "20ms", **(transport or {})}, **(policies or {})}
    if retry:
        client["retry"] = retry
    return scenario_from_dict({"duration": duration, "sample_interval": sample_interval,
                               "services": {"api": svc}, "clients": {"c": client},
                               "faults": faults or []})


def sleep(duration: str, method: str = "GET") -> dict:
    return {"method": method, "steps": [{"sleep": duration, "distribution": "constant"}]}


INSTANT = {"steps": []}


def status_fault(status: int, **kw) -> list[dict]:
    """Every request to ``api`` answered with ``status`` (error_rate with rate 1.0)."""
    return [{"kind": "error_rate", "target": "api", "rate": 1.0, "status": status, **kw}]


def attempt_rows(res) -> list[tuple]:
    """(request id, attempt number, start, end, error code), in request then attempt order."""
    a = res.attempts
    return sorted(zip(a["request_id"].tolist(), a["attempt"].tolist(), a["start_at"].tolist(),
                      a["end_at"].tolist(), a["error"].tolist()))


def request_rows(res) -> list[tuple]:
    """(arrival, end, error code, attempts) of every logical request, by request id."""
    r = res.requests
    return list(zip(r["arrival_at"].tolist(), r["end_at"].tolist(), r["error"].tolist(),
                    r["attempts"].tolist()))


def at(t: float):
    return pytest.approx(t, abs=EXACT)


def level_at(res, name: str, t: float) -> float:
    times = res.levels["time_s"]
    i = int(np.argmin(np.abs(times - t)))
    assert abs(times[i] - t) < 1e-6, f"no sample at {t}"
    return float(res.levels[name][i])


# ------------------------------------------------------------- 1. circuit breakers


def test_gobreaker_trips_on_the_sixth_failure_then_one_half_open_probe(tmp_path):
    """sony/gobreaker defaults (ReadyToTrip: ConsecutiveFailures > 5; MaxRequests 0 -> 1),
    Timeout 1 s; every request gets a 500 until 1 s (error_rate fault), one every 100 ms
    on one kept-alive connection (docs/policies/breakers.md "gobreaker").

    Requests 1-6 reach the server; the 6th response (0.5 + RTT = 0.52 s) trips it. Request 7
    (0.6 s) and the one at 1.5 s are refused at their arrival instant: ``breaker_open``,
    no attempt record, ``attempts`` 0 (nothing left the process). OPEN -> HALF_OPEN happens
    on the first check strictly after 0.52 + 1 = 1.52 s: of the two requests at 1.6 s the
    first is the single probe (the fault has ended: 200 at 1.62 s closes the breaker) and
    the second is refused (ErrTooManyRequests). The request at 1.7 s passes again."""
    res = run(scenario({"r": INSTANT}, duration="3s", faults=status_fault(500, duration="1s"),
                       policies={"breaker": {"kind": "gobreaker", "timeout": "1s"}},
                       load=arrivals(tmp_path, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.5, 1.6, 1.6, 1.7])))
    refused = (ERROR_CODE["breaker_open"], 0)
    # request 1 dials: answered at 0 + FRESH + ONE_WAY = 0.04; the rest reuse the connection
    answered = [0.04, 0.12, 0.22, 0.32, 0.42, 0.52]
    assert request_rows(res) == (
        [(at(t0), at(t1), HTTP_5XX, 1) for t0, t1 in zip([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], answered)]
        + [(at(t), at(t), *refused) for t in (0.6, 1.5)]
        + [(at(1.6), at(1.62), SUCCESS, 1), (at(1.6), at(1.6), *refused), (at(1.7), at(1.72), SUCCESS, 1)])
    assert [r for r, *_ in attempt_rows(res)] == [1, 2, 3, 4, 5, 6, 9, 11]
    assert len(events(res, "handler_start")) == 8
    assert res.milestones.breaker_transitions == [
        (at(0.52), 0, 0, "open"), (at(1.6), 0, 0, "half_open"), (at(1.62), 0, 0, "closed")]
    assert res.counters["breaker_rejections"] == 3


def test_a_retry_refused_by_the_breaker_ends_the_request_and_refusals_are_never_retried(tmp_path):
    """max_attempts 4, 500s retried at once (http_5xx is in retry_on by default).
    Request 1 (0 s): 4 failed attempts, 0-0.04, 0.04-0.06, 0.06-0.08, 0.08-0.10 s.
    Request 2 (0.2 s): 0.2-0.22 (5th consecutive failure), 0.22-0.24 (6th: the breaker
    trips at 0.24); its third attempt, due at 0.24, is refused: the request ends
    ``breaker_open`` at 0.24 with attempts 2 (the refusal is not an attempt). Request 3
    (0.3 s) is refused at arrival and, although 3 more attempts are allowed, never retried:
    no attempt record of it at all (schema ERROR_KINDS: policy kinds are never retried)."""
    res = run(scenario({"r": INSTANT}, duration="1s", faults=status_fault(500),
                       retry={"max_attempts": 4},
                       policies={"breaker": {"kind": "gobreaker", "timeout": "10s"}},
                       load=arrivals(tmp_path, [0.0, 0.2, 0.3])))
    fail = HTTP_5XX
    assert attempt_rows(res) == [
        (1, 0, 0.0, at(0.04), fail), (1, 1, at(0.04), at(0.06), fail), (1, 2, at(0.06), at(0.08), fail),
        (1, 3, at(0.08), at(0.10), fail),
        (2, 0, at(0.2), at(0.22), fail), (2, 1, at(0.22), at(0.24), fail)]
    assert request_rows(res) == [
        (0.0, at(0.10), fail, 4),
        (at(0.2), at(0.24), ERROR_CODE["breaker_open"], 2),
        (at(0.3), at(0.3), ERROR_CODE["breaker_open"], 0)]
    assert res.counters["breaker_rejections"] == 2


@pytest.mark.parametrize("status, reached_server", [(404, 10), (500, 6)])
def test_breakers_count_a_4xx_as_a_success(tmp_path, status, reached_server):
    """Ten sequential requests all answered ``status``. A 4xx means the server answered:
    the breaker counts it as a success (sim.client ``_observe``), so all ten reach the
    server; ten 500s trip gobreaker on the 6th and the last four are refused."""
    res = run(scenario({"r": INSTANT}, duration="2s", faults=status_fault(status),
                       policies={"breaker": {"kind": "gobreaker"}},
                       load=arrivals(tmp_path, [0.1 * k for k in range(10)])))
    assert len(events(res, "handler_start")) == reached_server
    assert len(res.attempts["request_id"]) == reached_server
    assert res.counters["breaker_rejections"] == 10 - reached_server
    refused = res.requests["error"] == ERROR_CODE["breaker_open"]
    assert refused.tolist() == [False] * reached_server + [True] * (10 - reached_server)


# --------------------------------------------------------------------- 2. retries


@pytest.mark.parametrize("status, attempts", [(503, 3), (500, 1), (502, 1)])
def test_retry_on_status_retries_only_the_listed_statuses(tmp_path, status, attempts):
    """``retry_on_status: [503]``: an http_5xx is retried only when its status is listed
    (schema RetryConfig.retry_on_status); max_attempts 3, retries at once on the
    kept-alive connection: 0-0.04, 0.04-0.06, 0.06-0.08 s."""
    res = run(scenario({"r": INSTANT}, duration="1s", faults=status_fault(status),
                       retry={"max_attempts": 3, "retry_on_status": [503]},
                       load=arrivals(tmp_path, [0.0])))
    ends = [0.04, 0.06, 0.08][:attempts]
    assert attempt_rows(res) == [(1, n, at(([0.0] + ends)[n]), at(ends[n]), HTTP_5XX) for n in range(attempts)]
    assert request_rows(res) == [(0.0, at(ends[-1]), HTTP_5XX, attempts)]


@pytest.mark.parametrize("retry_non_idempotent, attempts", [(False, 1), (True, 3)])
def test_post_is_retried_only_with_retry_non_idempotent(tmp_path, retry_non_idempotent, attempts):
    """A POST route answered 503: ``retry_non_idempotent: false`` (the default) retries only
    GET, HEAD, OPTIONS and TRACE, so the POST fails after one attempt; true retries it up
    to max_attempts 3 (sim.retry ``method_allowed``)."""
    res = run(scenario({"w": {"method": "POST", "steps": []}}, duration="1s", faults=status_fault(503),
                       retry={"max_attempts": 3, "retry_non_idempotent": retry_non_idempotent},
                       load=arrivals(tmp_path, [0.0])))
    assert res.requests["attempts"].tolist() == [attempts]
    assert res.attempts["error"].tolist() == [HTTP_5XX] * attempts
    assert res.requests["end_at"].tolist() == approx_all([[0.04, 0.06, 0.08][attempts - 1]])


@pytest.mark.parametrize("client_timeout, per_try_timeout, cut_at", [
    ("0s", "100ms", 0.1),        # per_try_timeout alone
    ("80ms", "100ms", 0.08),     # the smaller of the two applies
    ("150ms", "100ms", 0.1),
])
def test_per_try_timeout_cuts_an_attempt_as_a_client_timeout(tmp_path, client_timeout, per_try_timeout, cut_at):
    """A 300 ms handler; ``retry.per_try_timeout`` is a deadline on each attempt on top of
    ``transport.client_timeout``: the attempt fails with client_timeout at the earlier of
    the two, even when client_timeout is 0 (none); its connection is closed then."""
    res = run(scenario({"r": sleep("300ms")}, duration="1s", transport={"client_timeout": client_timeout},
                       retry={"per_try_timeout": per_try_timeout}, load=arrivals(tmp_path, [0.0])))
    assert one(res, "attempt_failed", 1)[::2] == (at(cut_at), "client_timeout")
    assert one(res, "client_close", 1)[0] == at(cut_at)
    assert request_rows(res) == [(0.0, at(cut_at), ERROR_CODE["client_timeout"], 1)]


# ---------------------------------------------------------- 3. the overall deadline


def test_deadline_ends_a_request_whose_attempts_keep_timing_out(tmp_path):
    """A 300 ms handler, per_try_timeout 100 ms, max_attempts 10, retried at once, deadline
    250 ms (schema RetryConfig.deadline: a context.WithTimeout around the retry loop).
    Attempts 0-0.1 and 0.1-0.2 s time out (each closes its connection, so each retry
    dials); the third, started at 0.2 s, is in flight at the deadline 0 + 0.25 s: it is cut
    and recorded with deadline_exceeded at 0.25 s, its connection closed; the request ends
    deadline_exceeded at exactly arrival + deadline, with 3 attempts."""
    res = run(scenario({"r": sleep("300ms")}, duration="1s",
                       retry={"max_attempts": 10, "per_try_timeout": "100ms", "deadline": "250ms"},
                       load=arrivals(tmp_path, [0.0])))
    timeout, cut = ERROR_CODE["client_timeout"], ERROR_CODE["deadline_exceeded"]
    assert attempt_rows(res) == [(1, 0, 0.0, at(0.1), timeout), (1, 1, at(0.1), at(0.2), timeout),
                                 (1, 2, at(0.2), at(0.25), cut)]
    assert request_rows(res) == [(0.0, at(0.25), cut, 3)]
    assert instants(res, "dial") == approx_all([0.0, 0.1, 0.2])
    assert one(res, "client_close", 3)[0] == at(0.25)


def test_deadline_cuts_a_backoff_sleep_short(tmp_path):
    """Every response a 503; constant backoff 200 ms (no jitter); deadline 300 ms. Attempt
    1: 0-0.04 s; the retry sleeps until 0.24 s and fails at 0.26 s; the next sleep would
    end at 0.46 s, past the deadline: the request ends deadline_exceeded at 0.3 s exactly,
    and no third attempt is made (schema: "a backoff sleep is cut short by it too")."""
    res = run(scenario({"r": INSTANT}, duration="1s", faults=status_fault(503),
                       retry={"max_attempts": 5, "backoff": "constant", "backoff_base": "200ms",
                              "jitter": "none", "deadline": "300ms"},
                       load=arrivals(tmp_path, [0.0])))
    assert attempt_rows(res) == [(1, 0, 0.0, at(0.04), HTTP_5XX), (1, 1, at(0.24), at(0.26), HTTP_5XX)]
    assert request_rows(res) == [(0.0, at(0.3), ERROR_CODE["deadline_exceeded"], 2)]
    assert len(events(res, "request_sent")) == 2


# ------------------------------------------------------------------- 4. budgets


@pytest.mark.parametrize("max_tokens, attempts, error", [
    (2, 1, "budget_exhausted"),    # 2 -> 1 after the failure: 1 > 2/2 is false, no retry
    (3, 2, "budget_exhausted"),    # 3 -> 2: 2 > 1.5, retry; 2 -> 1: 1 > 1.5 false
    (5, 3, "http_5xx"),            # 5 -> 4 -> 3, both retries allowed; then max_attempts
])
def test_grpc_retry_throttling_allows_retries_only_above_half_the_bucket(tmp_path, max_tokens, attempts, error):
    """gRFC A6 retry throttling (docs/policies/retries.md "grpc"): tokens start at
    max_tokens; each retryable failure takes 1 before the decision; a retry is allowed
    only while token_count > max_tokens / 2. Every response a 503, max_attempts 3. When
    the budget refuses, the request fails ``budget_exhausted`` (its attempts keep their
    http_5xx) and ``retries_denied`` counts the refusal; when max_attempts runs out first,
    the request keeps the kind of its last attempt."""
    res = run(scenario({"r": INSTANT}, duration="1s", faults=status_fault(503),
                       retry={"max_attempts": 3, "budget": {"kind": "grpc", "max_tokens": max_tokens,
                                                            "token_ratio": 0.1}},
                       load=arrivals(tmp_path, [0.0])))
    ends = [0.04, 0.06, 0.08]
    assert res.attempts["error"].tolist() == [HTTP_5XX] * attempts
    assert request_rows(res) == [(0.0, at(ends[attempts - 1]), ERROR_CODE[error], attempts)]
    assert res.counters["retries_denied"] == (1 if error == "budget_exhausted" else 0)


def test_grpc_budget_refuses_the_first_retry_of_every_request_once_spent(tmp_path):
    """max_tokens 2: request 1's failure leaves 1 token (refused, budget_exhausted at
    0.04 s), request 2's leaves 0 (refused at 0.12 s): one attempt each, two denials; the
    sampled budget left (tokens above half the bucket) is 0."""
    res = run(scenario({"r": INSTANT}, duration="1s", faults=status_fault(503),
                       retry={"max_attempts": 3, "budget": {"kind": "grpc", "max_tokens": 2, "token_ratio": 0.1}},
                       load=arrivals(tmp_path, [0.0, 0.1])))
    exhausted = ERROR_CODE["budget_exhausted"]
    assert request_rows(res) == [(0.0, at(0.04), exhausted, 1), (at(0.1), at(0.12), exhausted, 1)]
    assert res.counters["retries_denied"] == 2
    assert res.levels["retry_budget_left"][-1] == 0.0


def test_aws_retry_quota_pays_two_retries_then_is_exhausted(tmp_path):
    """aws-sdk-go-v2 retry quota with tokens 10, retry_cost 5 (docs/policies/retries.md
    "aws": allowed iff tokens >= cost; a failed attempt refunds nothing). Every response a
    503, max_attempts 5. Request 1: attempt 1 fails (10 >= 5: retry, 5 left), attempt 2
    fails (5 >= 5: retry, 0 left), attempt 3 fails (0 < 5): budget_exhausted at 0.08 s after
    3 attempts. Request 2 (0.2 s) finds the quota empty: refused after its first attempt."""
    res = run(scenario({"r": INSTANT}, duration="1s", faults=status_fault(503),
                       retry={"max_attempts": 5, "budget": {"kind": "aws", "tokens": 10, "retry_cost": 5}},
                       load=arrivals(tmp_path, [0.0, 0.2])))
    exhausted = ERROR_CODE["budget_exhausted"]
    assert attempt_rows(res) == [
        (1, 0, 0.0, at(0.04), HTTP_5XX), (1, 1, at(0.04), at(0.06), HTTP_5XX), (1, 2, at(0.06), at(0.08), HTTP_5XX),
        (2, 0, at(0.2), at(0.22), HTTP_5XX)]
    assert request_rows(res) == [(0.0, at(0.08), exhausted, 3), (at(0.2), at(0.22), exhausted, 1)]
    assert res.counters["retries_denied"] == 2
    assert res.levels["retry_budget_left"][-1] == 0.0     # tokens / retry_cost


# ------------------------------------------------------------------- 5. backoff


def test_constant_backoff_sleeps_exactly_backoff_base_between_attempts(tmp_path):
    """``backoff: constant`` with jitter none: every sleep is min(cap, base) = 150 ms, not
    growing (docs/policies/retries.md "Backoff"). Every response a 503, max_attempts 3:
    attempts 0-0.04, 0.19-0.21, 0.36-0.38 s on the kept-alive connection."""
    res = run(scenario({"r": INSTANT}, duration="1s", faults=status_fault(503),
                       retry={"max_attempts": 3, "backoff": "constant", "backoff_base": "150ms",
                              "jitter": "none"},
                       load=arrivals(tmp_path, [0.0])))
    assert res.attempts["start_at"].tolist() == approx_all([0.0, 0.19, 0.36])
    assert res.attempts["end_at"].tolist() == approx_all([0.04, 0.21, 0.38])


def test_equal_jitter_sleeps_between_half_the_ceiling_and_the_ceiling():
    """Equal jitter: the sleep before retry n is expo/2 + U(0, expo/2) with
    expo = min(cap, base * 2^(n-1)): with base 100 ms, cap 1 s, the gaps between an
    attempt's end and the next start lie in [0.05, 0.1], [0.1, 0.2], [0.2, 0.4], and they
    spread over that range (docs/policies/retries.md, AWS "Equal Jitter")."""
    res = run(scenario({"r": INSTANT}, duration="6s", faults=status_fault(503),
                       retry={"max_attempts": 4, "backoff": "exponential", "backoff_base": "100ms",
                              "backoff_cap": "1s", "jitter": "equal"},
                       load={"rate_per_s": 20, "arrivals": "uniform"}))
    a = res.attempts
    order = np.lexsort((a["attempt"], a["request_id"]))
    rid, n, start, end = (a[k][order] for k in ("request_id", "attempt", "start_at", "end_at"))
    same = rid[1:] == rid[:-1]
    gaps, retry_no = (start[1:] - end[:-1])[same], n[1:][same]
    for k, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4)):
        g = gaps[retry_no == k]
        assert len(g) > 80
        assert g.min() >= ceiling / 2 - EXACT and g.max() <= ceiling + EXACT
        assert g.min() < 0.6 * ceiling and g.max() > 0.9 * ceiling


# ------------------------------------------------------------- 6. Retry-After


@pytest.mark.parametrize("retry_after, sleep_s", [("1s", 1.0), ("300ms", 1.0), ("1500ms", 2.0)])
@pytest.mark.parametrize("honour", [True, False])
def test_retry_after_of_a_shed_503_sets_the_sleep_when_honoured(tmp_path, retry_after, sleep_s, honour):
    """Server shedding max_in_flight 1, no queue, ``retry_after`` rounded up to whole
    seconds (the header carries seconds). Two requests at 0 on two new connections reach
    the server at 0.03 s: the first runs (200 ms), the second is shed (503 at 0.03 s,
    received at 0.04 s). Constant backoff 100 ms. ``honour_retry_after: true``: the retry
    sleeps max(backoff, Retry-After) and starts at 0.04 + sleep_s; it then finds the slot
    free and succeeds one RTT + 200 ms later. false: it starts after the backoff, 0.14 s,
    reaches the server at 0.15 s while the first still runs, and is shed again."""
    res = run(scenario({"r": sleep("200ms")}, duration="3s",
                       service={"shedding": {"max_in_flight": 1, "retry_after": retry_after}},
                       retry={"max_attempts": 2, "backoff": "constant", "backoff_base": "100ms",
                              "jitter": "none", "honour_retry_after": honour},
                       load=arrivals(tmp_path, [0.0, 0.0])))
    assert [(t, c) for t, c, _ in events(res, "shed_rejected")][0] == (at(FRESH), 2)
    retry_at = 0.04 + (sleep_s if honour else 0.1)
    assert attempt_rows(res)[1:] == [
        (2, 0, 0.0, at(0.04), HTTP_5XX),
        (2, 1, at(retry_at), at(retry_at + 0.22) if honour else at(0.16), SUCCESS if honour else HTTP_5XX)]
    assert res.counters["shed_rejected"] == (1 if honour else 2)


# ------------------------------------------------------------------- 7. hedging


def test_hedge_goes_after_the_delay_and_the_loser_is_cancelled_at_the_winners_end(tmp_path):
    """Hedging delay 50 ms, max_outstanding 2, max_attempts 2, a 200 ms handler (gRFC A6,
    docs/policies/retries.md "Hedging"). Attempt 1 dials at 0 and is answered at
    0 + FRESH + 0.2 + ONE_WAY = 0.24 s. Unanswered at 0.05 s, the hedge starts then (no
    idle connection: it dials conn 2) and would be answered at 0.29 s. The first answer
    wins: the request succeeds at 0.24 s with attempts 2, and the loser is recorded as
    ``cancelled`` at 0.24 s; its connection is closed then (HTTP/1: a request given up
    kills its connection)."""
    res = run(scenario({"r": sleep("200ms")}, duration="1s",
                       retry={"max_attempts": 2},
                       policies={"hedging": {"enabled": True, "delay": "50ms", "max_outstanding": 2}},
                       load=arrivals(tmp_path, [0.0])))
    assert attempt_rows(res) == [(1, 0, 0.0, at(0.24), SUCCESS), (1, 1, at(0.05), at(0.24), ERROR_CODE["cancelled"])]
    assert request_rows(res) == [(0.0, at(0.24), SUCCESS, 2)]
    assert instants(res, "dial") == approx_all([0.0, 0.05])
    assert one(res, "client_close", 2)[0] == at(0.24)
    assert one(res, "handler_start", 2)[0] == at(0.05 + FRESH)


def test_no_hedge_once_the_request_is_answered(tmp_path):
    """An instant handler answers at 0.04 s, before the 50 ms hedging delay: no hedge is
    sent (the hedge timer is cancelled when the request finishes)."""
    res = run(scenario({"r": INSTANT}, duration="1s", retry={"max_attempts": 2},
                       policies={"hedging": {"enabled": True, "delay": "50ms", "max_outstanding": 2}},
                       load=arrivals(tmp_path, [0.0])))
    assert request_rows(res) == [(0.0, at(0.04), SUCCESS, 1)]
    assert len(events(res, "dial")) == 1
    assert len(events(res, "request_sent")) == 1


def test_a_failed_hedged_attempt_sends_the_next_copy_at_once(tmp_path):
    """Every response a 503, hedging delay 50 ms, max_attempts 3: attempt 1 fails at
    0.04 s, before the delay; a retryable failure sends the next copy at once (schema
    HedgingConfig.enabled), at 0.04 s and 0.06 s on the kept-alive connection; the request
    fails http_5xx when no attempt is out and none is left, at 0.08 s."""
    res = run(scenario({"r": INSTANT}, duration="1s", faults=status_fault(503), retry={"max_attempts": 3},
                       policies={"hedging": {"enabled": True, "delay": "50ms", "max_outstanding": 2}},
                       load=arrivals(tmp_path, [0.0])))
    assert attempt_rows(res) == [(1, 0, 0.0, at(0.04), HTTP_5XX), (1, 1, at(0.04), at(0.06), HTTP_5XX),
                                 (1, 2, at(0.06), at(0.08), HTTP_5XX)]
    assert request_rows(res) == [(0.0, at(0.08), HTTP_5XX, 3)]


# --------------------------------------------------------- 8. adaptive throttling


def test_adaptive_throttling_rejects_locally_once_the_backend_refuses(tmp_path):
    """SRE adaptive throttling, k 2 (docs/policies/retries.md "Adaptive throttling"):
    P(reject) = max(0, (requests - k accepts) / (requests + 1)) over the window, every
    request counted (the throttled ones too); a 503 is not an accept. One request every
    100 ms, all answered 503: accepts stay 0, so P = n / (n + 1) after n requests. The
    first request is always sent (P = 0); later ones are refused locally with
    ``throttled``: at their arrival instant, no attempt record, attempts 0. The sampled
    level at 1, 2 and 3 s is exactly 10/11, 20/21, 30/31."""
    times = [0.05 + 0.1 * k for k in range(30)]
    res = run(scenario({"r": INSTANT}, duration="3s", faults=status_fault(503),
                       policies={"throttle": {"enabled": True, "k": 2}},
                       load=arrivals(tmp_path, times)))
    r = res.requests
    throttled = r["error"] == ERROR_CODE["throttled"]
    assert not throttled[0]
    assert 10 <= throttled.sum() < 30
    assert r["attempts"][throttled].tolist() == [0] * int(throttled.sum())
    assert r["end_at"][throttled].tolist() == approx_all(r["arrival_at"][throttled].tolist())
    assert sorted(res.attempts["request_id"].tolist()) == r["request_id"][~throttled].tolist()
    assert (r["error"][~throttled] == HTTP_5XX).all()
    assert res.counters["throttle_rejections"] == throttled.sum()
    for t, n in ((1.0, 10), (2.0, 20), (3.0, 30)):
        assert level_at(res, "throttle_reject_probability", t) == pytest.approx(n / (n + 1), abs=1e-12)


# ---------------------------------------------------------------- 9. edge limits


def test_edge_max_pending_requests_overflow_fails_at_once(tmp_path):
    """Envoy-style limits, max_connections 1 (caps dials like MaxConnsPerHost) and
    max_pending_requests 1; a 200 ms handler. Request 1 (0 s) waits for its dial (pending),
    is answered at 0.24 s. Request 2 (0.1 s) finds the only connection busy: it waits,
    pending, and takes the connection when it comes back (written 0.24 s, answered
    0.46 s). Request 3 (0.15 s) would be a second pending request: it fails at once with
    ``edge_overflow`` (Envoy's local 503; it is recorded as a zero-length attempt, which
    never reached the server)."""
    res = run(scenario({"r": sleep("200ms")}, duration="1s",
                       policies={"edge_limits": {"enabled": True, "max_connections": 1, "max_pending_requests": 1}},
                       load=arrivals(tmp_path, [0.0, 0.1, 0.15])))
    overflow = ERROR_CODE["edge_overflow"]
    assert request_rows(res) == [(0.0, at(0.24), SUCCESS, 1), (at(0.1), at(0.46), SUCCESS, 1),
                                 (at(0.15), at(0.15), overflow, 1)]
    assert attempt_rows(res)[2] == (3, 0, at(0.15), at(0.15), overflow)
    assert len(events(res, "dial")) == 1
    assert [(t, d) for t, _, d in events(res, "request_sent")] == [(at(0.02), 1), (at(0.24), 2)]


def test_edge_max_pending_requests_zero_refuses_even_the_wait_for_a_first_dial(tmp_path):
    """max_pending_requests 0: a request with no ready connection would wait (even for its
    own dial), which is pending (Envoy ``newStream`` checks the pending limit whenever no
    connection is ready): every request fails edge_overflow at arrival and nothing is
    ever dialled."""
    res = run(scenario({"r": sleep("200ms")}, duration="1s",
                       policies={"edge_limits": {"enabled": True, "max_connections": 1, "max_pending_requests": 0}},
                       load=arrivals(tmp_path, [0.0, 0.1])))
    overflow = ERROR_CODE["edge_overflow"]
    assert request_rows(res) == [(0.0, 0.0, overflow, 1), (at(0.1), at(0.1), overflow, 1)]
    assert events(res, "dial") == []


def test_edge_max_requests_overflow_fails_at_once_and_is_released(tmp_path):
    """max_requests 1 (attempts outstanding): request 2 (0.1 s) arrives while request 1 is
    out (until 0.24 s) and fails at once with edge_overflow; request 3 (0.3 s) finds the
    count released and reuses the idle connection (answered 0.3 + RTT + 0.2 = 0.52 s)."""
    res = run(scenario({"r": sleep("200ms")}, duration="1s",
                       policies={"edge_limits": {"enabled": True, "max_requests": 1}},
                       load=arrivals(tmp_path, [0.0, 0.1, 0.3])))
    assert request_rows(res) == [(0.0, at(0.24), SUCCESS, 1), (at(0.1), at(0.1), ERROR_CODE["edge_overflow"], 1),
                                 (at(0.3), at(0.52), SUCCESS, 1)]
    assert len(events(res, "dial")) == 1


# ------------------------------------------------------------ 10. server shedding


def shed_run(tmp_path, shedding: dict, times: list, route: str = "200ms", **kw):
    return run(scenario({"r": sleep(route)}, duration="1s", sample_interval="100ms",
                        service={"shedding": shedding}, load=arrivals(tmp_path, times), **kw))


def test_shedding_without_a_queue_answers_503_at_the_gate(tmp_path):
    """max_in_flight 1, queue_length 0 (the bulkhead, docs/policies/shedding.md §1): two
    requests at 0 reach the server at 0.03 s on two connections; the first runs (200 ms,
    answered 0.24 s), the second gets a 503 at the instant it reaches the gate (0.03 s,
    received 0.04 s). The 503 keeps its connection open."""
    res = shed_run(tmp_path, {"max_in_flight": 1, "queue_length": 0}, [0.0, 0.0])
    assert one(res, "shed_rejected")[:2] == (at(FRESH), 2)
    assert one(res, "handler_end", 2)[::2] == (at(FRESH), 503)
    assert request_rows(res) == [(0.0, at(0.24), SUCCESS, 1), (0.0, at(0.04), HTTP_5XX, 1)]
    assert events(res, "client_close") == []
    assert res.counters["shed_rejected"] == 1 and res.counters["shed_dropped"] == 0


def test_shedding_queue_starts_the_waiter_when_the_running_handler_ends(tmp_path):
    """queue_length 1: the second request queues at 0.03 s and runs from the instant the
    first handler ends (0.23 s) to 0.43 s; it is answered at 0.44 s. Levels: at 0.1 and
    0.2 s one admitted, one queued; at 0.3 s one admitted, none queued; at 0.5 s none."""
    res = shed_run(tmp_path, {"max_in_flight": 1, "queue_length": 1}, [0.0, 0.0])
    assert one(res, "shed_queued")[:2] == (at(FRESH), 2)
    assert [(t, c) for t, c, _ in events(res, "handler_end")] == [(at(0.23), 1), (at(0.43), 2)]
    assert request_rows(res) == [(0.0, at(0.24), SUCCESS, 1), (0.0, at(0.44), SUCCESS, 1)]
    for t, admitted, queued in ((0.1, 1, 1), (0.2, 1, 1), (0.3, 1, 0), (0.5, 0, 0)):
        assert (level_at(res, "shed_admitted", t), level_at(res, "shed_queue_length", t)) == (admitted, queued)
    assert res.counters["shed_rejected"] == 0 and res.counters["shed_dropped"] == 0


@pytest.mark.parametrize("discipline", ["fifo", "lifo"])
def test_queue_timeout_drops_a_waiter_exactly_when_its_wait_exceeds_it(tmp_path, discipline):
    """queue_timeout 100 ms: the second request, queued at 0.03 s behind a 200 ms handler,
    is dropped with a 503 at 0.03 + 0.1 = 0.13 s (a request is dropped once its sojourn
    exceeds the timeout; docs/policies/shedding.md §2), not earlier, answered at 0.14 s."""
    res = shed_run(tmp_path, {"max_in_flight": 1, "queue_length": 1, "discipline": discipline,
                              "queue_timeout": "100ms"}, [0.0, 0.0])
    assert one(res, "shed_dropped")[:2] == (at(FRESH + 0.1), 2)
    assert one(res, "handler_end", 2)[::2] == (at(FRESH + 0.1), 503)
    assert request_rows(res) == [(0.0, at(0.24), SUCCESS, 1), (0.0, at(0.14), HTTP_5XX, 1)]
    assert res.counters["shed_dropped"] == 1 and res.counters["shed_rejected"] == 0


def test_a_waiter_whose_timeout_is_reached_exactly_when_a_slot_frees_is_served(tmp_path):
    """queue_timeout 200 ms: the waiter queued at 0.03 s reaches its timeout at 0.23 s,
    the instant the running handler ends; its sojourn does not exceed the timeout, so it
    is served (docs/policies/shedding.md §2: "At exactly the timeout it is still served")."""
    res = shed_run(tmp_path, {"max_in_flight": 1, "queue_length": 1, "queue_timeout": "200ms"}, [0.0, 0.0])
    assert events(res, "shed_dropped") == []
    assert [(t, c) for t, c, _ in events(res, "handler_end")] == [(at(0.23), 1), (at(0.43), 2)]


def test_the_tie_between_a_queue_timeout_and_a_freed_slot_does_not_depend_on_event_order(tmp_path):
    """Regression: the same tie as above, but with the queue's timer scheduled before the
    handler's end. RTT 1/32 s (a one-way trip of 1/64 s) and a 250 ms handler keep every
    instant exact in binary. LIFO, max_in_flight 1, queue_length 2, queue_timeout
    484.375 ms: A (0 s) runs 3/64-0.296875 s; B (1/64 s) queues at 4/64 s (timeout ends at
    0.0625 + 0.484375 = 0.546875 s); C (2/64 s) queues at 5/64 s, is served first (LIFO)
    and ends at 0.296875 + 0.25 = 0.546875 s: the instant B's wait reaches its timeout
    without exceeding it, so B is served then (until 0.796875 s), not dropped. (The drop
    timer was armed at 0.0625 s, before C's handler end was scheduled; it used to drop B.)"""
    res = run(scenario({"r": sleep("250ms")}, duration="1s", transport={"rtt": "31.25ms"},
                       service={"shedding": {"max_in_flight": 1, "queue_length": 2, "discipline": "lifo",
                                             "queue_timeout": "484.375ms"}},
                       load=arrivals(tmp_path, [0.0, 1 / 64, 2 / 64])))
    assert [(t, c) for t, c, _ in events(res, "shed_queued")] == [(4 / 64, 2), (5 / 64, 3)]
    assert events(res, "shed_dropped") == []
    assert [(t, c, d) for t, c, d in events(res, "handler_end")] == [
        (0.296875, 1, 200), (0.546875, 3, 200), (0.796875, 2, 200)]


def test_a_request_whose_client_is_already_gone_is_not_queued(tmp_path):
    """Regression. fd_limit 8 (4 connections), max_in_flight 1, queue_length 4,
    client_timeout 300 ms, a 500 ms handler. Requests 1-4 (0 s) are accepted at 0.03 s: 1
    runs, 2-4 queue. Request 5 (0.01 s) completes its handshake into the accept queue at
    0.03 s and waits there (EMFILE backoff); its client gives up at 0.31 s and the FIN
    arrives (0.32 s) before the accept. When it is accepted, the request is read with its
    context already cancelled: the gate's select on the context returns at once (503 to a
    gone client, connection closed), instead of queueing it and running the handler from
    0.53 to 1.03 s for nobody."""
    res = run(scenario({"r": sleep("500ms")}, duration="2s", sample_interval="100ms",
                       transport={"client_timeout": "300ms"},
                       service={"fd_limit": 8, "shedding": {"max_in_flight": 1, "queue_length": 4}},
                       load=arrivals(tmp_path, [0.0, 0.0, 0.0, 0.0, 0.01])))
    accepted_at = one(res, "accept", 5)[0]
    assert accepted_at > 0.32
    assert one(res, "ctx_cancelled", 5)[0] == accepted_at
    assert events(res, "shed_queued", 5) == []
    assert one(res, "handler_end", 5)[::2] == (accepted_at, 503)
    assert one(res, "server_close", 5)[::2] == (accepted_at, "write_to_gone_client")
    assert [t for t, _, _ in events(res, "handler_end")][-1] == at(0.53)    # request 1's, the last
    assert level_at(res, "shed_queue_length", 0.4) == 0


@pytest.mark.parametrize("discipline, first, second", [("fifo", 2, 3), ("lifo", 3, 2)])
def test_lifo_serves_the_newest_waiter_first(tmp_path, discipline, first, second):
    """max_in_flight 1, queue_length 2. A (0 s, conn 1) runs 0.03-0.23 s; B (0.05 s, conn
    2) queues at 0.08 s, C (0.1 s, conn 3) at 0.13 s. When A ends, FIFO runs B then C,
    LIFO runs C (the newest) then B: 0.23-0.43 s and 0.43-0.63 s."""
    res = shed_run(tmp_path, {"max_in_flight": 1, "queue_length": 2, "discipline": discipline},
                   [0.0, 0.05, 0.1])
    assert [(t, c) for t, c, _ in events(res, "shed_queued")] == [(at(0.08), 2), (at(0.13), 3)]
    assert [(t, c) for t, c, _ in events(res, "handler_end")] == [(at(0.23), 1), (at(0.43), first),
                                                                  (at(0.63), second)]


def test_a_queued_get_whose_client_times_out_leaves_the_queue(tmp_path):
    """client_timeout 150 ms, max_in_flight 1, queue_length 1. A (slow, 0 s) runs
    0.03-0.23 s (its own timeout at 0.15 s does not stop the handler: Go cannot pre-empt
    it). B (0.01 s) queues at 0.04 s; its client gives up at 0.16 s and the FIN reaches
    the server at 0.17 s: the GET's context is cancelled and it leaves the queue (the
    middleware's select returns). C (0.18 s, a fresh connection, reaching the server at
    0.21 s) therefore finds the queue empty and waits instead of being shed; it runs when
    A ends (0.23 s, instant handler) and is answered at 0.24 s. Nothing was rejected or
    dropped by the gate; the queue sampled at 0.1 s holds B, at 0.2 s nothing."""
    res = run(scenario({"slow": sleep("200ms"), "fast": INSTANT}, duration="1s", sample_interval="100ms",
                       transport={"client_timeout": "150ms"},
                       service={"shedding": {"max_in_flight": 1, "queue_length": 1}},
                       load=arrivals(tmp_path, [(0.0, "slow"), (0.01, "fast"), (0.18, "fast")])))
    assert [(t, c) for t, c, _ in events(res, "shed_queued")] == [(at(0.04), 2), (at(0.21), 3)]
    assert one(res, "ctx_cancelled", 2)[::2] == (at(0.17), "client_gone")
    assert one(res, "server_close", 2)[::2] == (at(0.17), "write_to_gone_client")
    assert [(t, c) for t, c, _ in events(res, "handler_end")] == [(at(0.17), 2), (at(0.23), 1), (at(0.23), 3)]
    timeout = ERROR_CODE["client_timeout"]
    assert request_rows(res) == [(0.0, at(0.15), timeout, 1), (at(0.01), at(0.16), timeout, 1),
                                 (at(0.18), at(0.24), SUCCESS, 1)]
    assert res.counters["shed_rejected"] == 0 and res.counters["shed_dropped"] == 0
    assert level_at(res, "shed_queue_length", 0.1) == 1 and level_at(res, "shed_queue_length", 0.2) == 0


# ------------------------------------------------------------- 11. determinism


def every_policy_scenario():
    return scenario(
        {"r": {"steps": [{"sleep": "20ms", "distribution": "exponential"}]}}, duration="4s",
        sample_interval="500ms",
        service={"shedding": {"max_in_flight": 3, "queue_length": 3, "queue_timeout": "30ms",
                              "retry_after": "100ms"}},
        transport={"client_timeout": "200ms"},
        retry={"max_attempts": 3, "backoff": "exponential", "backoff_base": "10ms", "jitter": "full",
               "budget": {"kind": "grpc", "max_tokens": 20, "token_ratio": 0.1}},
        policies={"breaker": {"kind": "gobreaker", "timeout": "500ms"},
                  "hedging": {"enabled": True, "delay": "30ms", "max_outstanding": 2},
                  "throttle": {"enabled": True, "k": 2}},
        faults=[{"kind": "error_rate", "target": "api", "rate": 0.5, "status": 503, "at": "1s", "duration": "2s"}],
        load={"rate_per_s": 200})


def test_every_policy_together_is_deterministic_for_a_seed():
    """A breaker, a retry budget, adaptive throttling, hedging and server shedding in one
    run (Poisson load, exponential handler times, full-jitter backoff): the same seed gives
    identical records, levels, counters and event log (design.md §5); another seed does not."""
    scn = every_policy_scenario()
    a, b, c = run(scn, seed=7), run(scn, seed=7), run(scn, seed=8)
    for what in ("requests", "attempts", "levels"):
        cols_a, cols_b = getattr(a, what), getattr(b, what)
        assert list(cols_a) == list(cols_b)
        for column in cols_a:
            np.testing.assert_array_equal(cols_a[column], cols_b[column], err_msg=f"{what}.{column}")
    assert a.trace == b.trace
    assert a.counters == b.counters
    assert a.milestones.breaker_transitions == b.milestones.breaker_transitions
    assert a.trace != c.trace
    # the policies all acted
    kinds = set(a.requests["error"].tolist()) | set(a.attempts["error"].tolist())
    assert {ERROR_CODE["cancelled"], HTTP_5XX} <= kinds
    assert a.counters["shed_rejected"] + a.counters["shed_dropped"] > 0
    assert a.counters["breaker_rejections"] + a.counters["throttle_rejections"] > 0


def test_a_hedge_that_was_the_half_open_probe_and_lost_still_closes_the_breaker(tmp_path):
    """Regression: gobreaker (timeout 50 ms) and hedging (delay 200 ms, max_attempts 2).
    Request 1 (route slow, 300 ms) starts at 0 while the breaker is closed. Six requests
    to route bad (every one a 500) arrive at 1..6 ms, each on a fresh connection, and fail
    at t + 40 ms: the 6th consecutive failure trips the breaker at 0.046 s. At 0.2 s
    request 1's hedge asks the breaker, which has been open for more than 50 ms: it goes
    half-open and admits the hedge as its single probe. Request 1's original attempt wins
    at 0 + 30 ms + 300 ms + 10 ms = 0.34 s and the hedge is cancelled. A cancelled hedge
    reports a success to the breaker (docs/policies/breakers.md), so the breaker closes
    at 0.34 s; before that fix it waited for ever for its probe's result and refused
    every later request. Requests at 1 s and 2 s are then served on a kept-alive
    connection at t + 20 ms + 300 ms (their own hedges at t + 200 ms lose)."""
    rows = [(0.0, "slow")] + [(0.001 * i, "bad") for i in range(1, 7)] + [(1.0, "slow"), (2.0, "slow")]
    res = run(scenario({"slow": sleep("300ms"), "bad": INSTANT}, duration="3s",
                       faults=[{"kind": "error_rate", "target": "api", "routes": ["bad"], "rate": 1.0,
                                "status": 500}],
                       retry={"max_attempts": 2, "retry_on": ["client_timeout"]},
                       policies={"hedging": {"enabled": True, "delay": "200ms", "max_outstanding": 2},
                                 "breaker": {"kind": "gobreaker", "timeout": "50ms"}},
                       load=arrivals(tmp_path, rows)))
    assert [(round(t, 9), s) for t, _, _, s in res.milestones.breaker_transitions] == [
        (0.046, "open"), (0.2, "half_open"), (0.34, "closed")]
    requests = request_rows(res)
    assert requests[0] == (0.0, at(0.34), SUCCESS, 2)
    assert requests[-2:] == [(1.0, at(1.32), SUCCESS, 2), (2.0, at(2.32), SUCCESS, 2)]
    assert res.summary["errors"]["breaker_open"] == 0
