"""Exact-timeline tests of the Go http.Transport / http.Client behaviours the model implements.

Each test builds a small deterministic scenario (constant RTT, constant handler
steps, CSV-traced arrivals), runs it with ``trace=True`` and checks the
instants of the event log against the Go facts of
``shared/reference/semantics.md`` (section numbers and ``[EXP En]`` in the
docstrings; the measured timelines are in ``reference/go-experiments/``).

Network: RTT 10 ms unless a test says otherwise, so a one-way trip is 5 ms; a
fresh connection is established 10 ms after the dial and its first request
reaches the server 15 ms after it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sim.result import ERROR_CODE, SUCCESS
from sim.scenario_loader import scenario_from_dict
from timeline import EXACT, arrivals, run, events, instants, one, approx_all

ONE_WAY = 0.005


# ------------------------------------------------------------------- helpers


def scenario(routes: dict[str, Any], *, duration: str = "2s", sample_interval: str = "1s",
             server: dict | None = None, service: dict | None = None, load: dict | None = None,
             transport: dict | None = None, retry: dict | None = None, faults: list | None = None):
    """One service ``api`` with ``routes`` and one client ``c`` (10 ms RTT) calling it."""
    svc = {"routes": routes, "server": server or {}, **(service or {})}
    client: dict[str, Any] = {"target": "api", "load": load or {"rate_per_s": 0},
                              "transport": {"rtt": "10ms", **(transport or {})}}
    if retry:
        client["retry"] = retry
    return scenario_from_dict({"duration": duration, "sample_interval": sample_interval,
                               "services": {"api": svc}, "clients": {"c": client},
                               "faults": faults or []})


def sleep(duration: str) -> dict:
    return {"steps": [{"sleep": duration, "distribution": "constant"}]}


# ----------------------------------------------------- 11. MaxIdleConnsPerHost


def test_connections_beyond_max_idle_per_host_close_when_the_burst_ends(tmp_path):
    """Five concurrent requests open five connections; when their responses arrive
    (0.12 s) the first two go to the idle pool and the other three are closed by
    the client at that instant (errTooManyIdleHost, MaxIdleConnsPerHost default 2;
    semantics.md §2 "Idle pool"); the server sees their FINs one trip later."""
    res = run(scenario({"r": sleep("100ms")}, duration="1s", load=arrivals(tmp_path, [0.0] * 5)))
    assert len(events(res, "dial")) == 5
    assert instants(res, "response_received") == approx_all([0.12] * 5)
    closes = events(res, "client_close")
    assert [c for _, c, _ in closes] == [3, 4, 5]
    assert [t for t, _, _ in closes] == approx_all([0.12] * 3)
    assert [(t, c, d) for t, c, d in events(res, "server_close")] == [
        (pytest.approx(0.125, abs=EXACT), c, "client_closed") for c in (3, 4, 5)]


def test_max_idle_conns_per_host_is_configurable(tmp_path):
    """With MaxIdleConnsPerHost 4, only the fifth connection is closed."""
    res = run(scenario({"r": sleep("100ms")}, duration="1s", transport={"max_idle_conns_per_host": 4},
                       load=arrivals(tmp_path, [0.0] * 5)))
    assert [(t, c) for t, c, _ in events(res, "client_close")] == [(pytest.approx(0.12, abs=EXACT), 5)]


def test_beyond_max_idle_conns_the_oldest_idle_connection_is_closed(tmp_path):
    """MaxIdleConns 1 (over all hosts), MaxIdleConnsPerHost 2: conn 1 becomes idle
    at 0.12 s, conn 2 at 0.32 s; tryPutIdleConn adds conn 2 and, the LRU being
    over MaxIdleConns, closes the oldest, conn 1 (semantics.md §2 "Idle pool":
    "Beyond MaxIdleConns the oldest idle connection is closed")."""
    res = run(scenario({"a": sleep("100ms"), "b": sleep("300ms")}, duration="1s",
                       transport={"max_idle_conns": 1, "max_idle_conns_per_host": 2},
                       load=arrivals(tmp_path, [(0.0, "a"), (0.0, "b")])))
    assert [(t, c) for t, c, _ in events(res, "client_close")] == [(pytest.approx(0.32, abs=EXACT), 1)]


def test_zero_max_idle_conns_per_host_means_the_default_of_two(tmp_path):
    """Transport.maxIdleConnsPerHost() returns DefaultMaxIdleConnsPerHost = 2 when
    the field is 0 (semantics.md §2 DefaultTransport table: "unset ->
    DefaultMaxIdleConnsPerHost = 2"): the connection of the first request is kept
    and reused by the second."""
    res = run(scenario({"r": sleep("100ms")}, duration="1s", transport={"max_idle_conns_per_host": 0},
                       load=arrivals(tmp_path, [0.0, 0.5])))
    assert events(res, "client_close") == []
    assert len(events(res, "dial")) == 1


# ------------------------------------------ 12. a timed-out HTTP/1 request kills its conn


def test_timed_out_request_closes_its_connection_and_the_next_one_dials(tmp_path):
    """Client.Timeout 200 ms vs a 600 ms handler on a kept-alive connection: the
    attempt fails at 0.7 s and the client closes that connection at once; the next
    request dials a new one (semantics.md §2 "What a timed-out or cancelled request
    does to its connection"; [EXP E6]: server connections went 1 -> 2)."""
    routes = {"fast": {"steps": []}, "slow": sleep("600ms")}
    res = run(scenario(routes, duration="2s", transport={"client_timeout": "200ms"},
                       load=arrivals(tmp_path, [(0.0, "fast"), (0.5, "slow"), (1.0, "fast")])))
    assert [(t, d) for t, _, d in events(res, "request_sent", 1)] == [   # request 2 reuses conn 1
        (pytest.approx(0.01, abs=EXACT), 1), (pytest.approx(0.5, abs=EXACT), 2)]
    assert one(res, "attempt_failed", 1)[::2] == (pytest.approx(0.7, abs=EXACT), "client_timeout")
    assert one(res, "client_close", 1)[0] == pytest.approx(0.7, abs=EXACT)
    assert one(res, "fin_seen", 1)[0] == pytest.approx(0.705, abs=EXACT)
    assert one(res, "dial", 2)[0] == pytest.approx(1.0, abs=EXACT)
    assert res.attempts["new_conn"].tolist() == [True, False, True]
    assert res.requests["error"].tolist() == [SUCCESS, ERROR_CODE["client_timeout"], SUCCESS]
    # the server's handler is not pre-empted: it ends at 0.505 + 0.6 and finds the client gone
    assert one(res, "server_close", 1)[::2] == (pytest.approx(1.105, abs=EXACT), "write_to_gone_client")


@pytest.mark.parametrize("transport", [{"client_timeout": "500ms"}, {"response_header_timeout": "100ms"}])
def test_request_on_the_wire_reaches_the_server_after_the_client_gave_up(tmp_path, transport):
    """RTT 400 ms: the connection is established and the request written at 0.4 s;
    the attempt times out at 0.5 s, but the request bytes are already on the wire:
    they reach the server at 0.6 s (ahead of the FIN, 0.7 s), Go accepts, reads the
    request and runs the handler; the FIN then cancels the GET's context
    (semantics.md §1 "Request context lifetime"; TCP delivers in order)."""
    res = run(scenario({"r": sleep("1s")}, duration="2s", transport={"rtt": "400ms", **transport},
                       load=arrivals(tmp_path, [0.0])))
    assert one(res, "request_sent", 1)[0] == pytest.approx(0.4, abs=EXACT)
    assert one(res, "attempt_failed", 1)[0] == pytest.approx(0.5, abs=EXACT)
    assert one(res, "handler_start", 1)[0] == pytest.approx(0.6, abs=EXACT)
    assert one(res, "ctx_cancelled", 1)[::2] == (pytest.approx(0.7, abs=EXACT), "client_gone")


# --------------------------------------------------------------- 13. MaxConnsPerHost


def test_max_conns_per_host_one_serialises_requests_fifo_on_one_connection(tmp_path):
    """MaxConnsPerHost 1, four concurrent requests to a 200 ms handler: one dial,
    one connection; each waiting request takes the connection when the previous
    response arrives, in arrival order, so they complete at 0.2, 0.4, 0.6, 0.8 s
    plus the dial (10 ms) and one RTT each (semantics.md §2 "Getting a connection;
    MaxConnsPerHost queueing"; [EXP E7]: 0.202, 0.403, 0.603, 0.804 s, 1 conn)."""
    res = run(scenario({"r": sleep("200ms")}, duration="2s", transport={"max_conns_per_host": 1},
                       load=arrivals(tmp_path, [0.0] * 4)))
    assert len(events(res, "dial")) == 1
    assert len(events(res, "accept")) == 1
    assert [d for _, _, d in events(res, "request_sent", 1)] == [1, 2, 3, 4]
    done = [0.01 + 0.2 * k + 0.01 * k for k in (1, 2, 3, 4)]
    assert instants(res, "response_received", 1) == approx_all(done)
    assert res.requests["end_at"].tolist() == approx_all(done)
    assert res.requests["error"].tolist() == [SUCCESS] * 4


# ----------------------------------------------------- 14. IdleConnTimeout, LIFO reuse


def test_idle_conn_timeout_closes_idle_connections_and_reuse_is_lifo(tmp_path):
    """Two connections go idle at 0.12 s (conn 1) and 0.32 s (conn 2); a request at
    0.5 s takes the most recently returned one, conn 2 (LIFO, semantics.md §2
    "Getting a connection"). IdleConnTimeout 1 s closes conn 1 at 0.12 + 1 s and
    conn 2 at its new idle start 0.61 s + 1 s (the timer restarts on each return;
    semantics.md §2 "Idle pool")."""
    routes = {"a": sleep("100ms"), "b": sleep("300ms")}
    res = run(scenario(routes, duration="3s", transport={"idle_conn_timeout": "1s"},
                       load=arrivals(tmp_path, [(0.0, "a"), (0.0, "b"), (0.5, "a")])))
    assert instants(res, "response_received", 1) == approx_all([0.12])
    assert instants(res, "response_received", 2) == approx_all([0.32, 0.61])
    assert [(t, d) for t, _, d in events(res, "request_sent", 2)] == [
        (pytest.approx(0.01, abs=EXACT), 2), (pytest.approx(0.5, abs=EXACT), 3)]
    assert [(t, c) for t, c, _ in events(res, "client_close")] == [
        (pytest.approx(1.12, abs=EXACT), 1), (pytest.approx(1.61, abs=EXACT), 2)]
    assert len(events(res, "dial")) == 2


# ------------------------------------------ 15. Client.Timeout and ResponseHeaderTimeout


@pytest.mark.parametrize("timeout, failed_at", [("300ms", 0.3), ("700ms", 0.7)])
def test_client_timeout_covers_dial_and_response(tmp_path, timeout, failed_at):
    """RTT 400 ms: the dial takes 0.4 s and the response would arrive at 0.8 s.
    Client.Timeout is one deadline from the start of the attempt over the dial and
    the wait for the response: 300 ms ends it during the dial, 700 ms while it
    awaits headers (semantics.md §2 "Client.Timeout")."""
    res = run(scenario({"r": {"steps": []}}, duration="2s", transport={"rtt": "400ms", "client_timeout": timeout},
                       load=arrivals(tmp_path, [0.0])))
    assert one(res, "attempt_failed")[::2] == (pytest.approx(failed_at, abs=EXACT), "client_timeout")
    assert res.requests["error"].tolist() == [ERROR_CODE["client_timeout"]]
    assert res.requests["end_at"].tolist() == approx_all([failed_at])
    assert events(res, "response_received") == []


def test_client_timeout_covers_the_wait_for_a_connection_and_is_per_attempt(tmp_path):
    """MaxConnsPerHost 1, two requests at 0, 200 ms handler, Client.Timeout 300 ms,
    2 attempts: the second request waits for the connection until 0.22 s, sends,
    and times out at 0.3 s, its deadline counting the wait (semantics.md §2: no
    queue timer of its own, only Client.Timeout bounds the wait). Its connection
    is closed; the retry at 0.3 s gets a fresh 300 ms deadline, dials and
    succeeds at 0.52 s."""
    res = run(scenario({"r": sleep("200ms")}, duration="2s",
                       transport={"max_conns_per_host": 1, "client_timeout": "300ms"},
                       retry={"max_attempts": 2, "retry_on": ["client_timeout"]},
                       load=arrivals(tmp_path, [0.0, 0.0])))
    a = res.attempts
    rows = sorted(zip(a["request_id"].tolist(), a["attempt"].tolist(), a["start_at"].tolist(),
                      a["end_at"].tolist(), a["error"].tolist()))
    assert rows == [
        (1, 0, 0.0, pytest.approx(0.22, abs=EXACT), SUCCESS),
        (2, 0, 0.0, pytest.approx(0.3, abs=EXACT), ERROR_CODE["client_timeout"]),
        (2, 1, pytest.approx(0.3, abs=EXACT), pytest.approx(0.52, abs=EXACT), SUCCESS),
    ]
    assert [(t, c, d) for t, c, d in events(res, "request_sent")] == [
        (pytest.approx(0.01, abs=EXACT), 1, 1), (pytest.approx(0.22, abs=EXACT), 1, 2),
        (pytest.approx(0.31, abs=EXACT), 2, 2)]
    assert one(res, "client_close", 1)[0] == pytest.approx(0.3, abs=EXACT)
    assert one(res, "dial", 2)[0] == pytest.approx(0.3, abs=EXACT)


def test_response_header_timeout_starts_when_the_request_is_written(tmp_path):
    """RTT 400 ms, ResponseHeaderTimeout 500 ms. The first request's dial (0.4 s)
    does not count: written at 0.4 s, answered at 0.8 s < 0.9 s, it succeeds. The
    second, written at 1.0 s on the kept-alive connection to a 200 ms handler,
    would be answered at 1.6 s: it fails at 1.5 s and its connection is closed
    (semantics.md §2 "Other client timers")."""
    routes = {"fast": {"steps": []}, "slow": sleep("200ms")}
    res = run(scenario(routes, duration="3s", transport={"rtt": "400ms", "response_header_timeout": "500ms"},
                       load=arrivals(tmp_path, [(0.0, "fast"), (1.0, "slow")])))
    assert one(res, "response_received", 1)[::2] == (pytest.approx(0.8, abs=EXACT), 200)
    assert one(res, "attempt_failed", 1)[::2] == (pytest.approx(1.5, abs=EXACT), "response_header_timeout")
    assert one(res, "client_close", 1)[0] == pytest.approx(1.5, abs=EXACT)
    assert res.requests["error"].tolist() == [SUCCESS, ERROR_CODE["response_header_timeout"]]


# ------------------------------------------------------------ 16. keep-alive race


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_keep_alive_race_get_retried_transparently_post_fails(tmp_path, method):
    """Server IdleTimeout 300 ms closes the idle connection at 0.315 s; the client
    sends its next request on it at 0.313 s, before the FIN reaches it (0.32 s).
    A GET on a reused connection is retried at once on a new connection and
    succeeds within the same attempt; a POST is not replayable and fails with EOF
    (semantics.md §2 "Automatic retry of idempotent requests on a dead keep-alive
    connection")."""
    routes = {"r": {"method": method, "steps": []}}
    res = run(scenario(routes, duration="1s", server={"idle_timeout": "300ms"},
                       load=arrivals(tmp_path, [0.0, 0.313])))
    assert one(res, "server_close", 1)[::2] == (pytest.approx(0.315, abs=EXACT), "idle_timeout")
    assert [t for t, _, d in events(res, "request_sent", 1) if d == 2] == approx_all([0.313])
    if method == "GET":
        assert one(res, "transparent_retry", 1)[::2] == (pytest.approx(0.32, abs=EXACT), "eof")
        assert one(res, "dial", 2)[0] == pytest.approx(0.32, abs=EXACT)
        assert one(res, "response_received", 2)[::2] == (pytest.approx(0.34, abs=EXACT), 200)
        assert res.requests["error"].tolist() == [SUCCESS, SUCCESS]
        assert res.requests["attempts"].tolist() == [1, 1]
        assert events(res, "attempt_failed") == []
    else:
        assert events(res, "transparent_retry") == []
        assert one(res, "attempt_failed", 1)[::2] == (pytest.approx(0.32, abs=EXACT), "eof")
        assert res.requests["error"].tolist() == [SUCCESS, ERROR_CODE["eof"]]
        assert len(events(res, "dial")) == 1


def test_fresh_connection_reset_is_not_retried_transparently(tmp_path):
    """No transparent retry on a connection that was never used successfully
    (shouldRetryRequest: !pc.isReused() -> false, semantics.md §2): killed while
    serving its first request, a GET fails with conn_reset."""
    routes = {"boom": {"steps": [{"sleep": "100ms", "distribution": "constant"}, {"alloc": "1GiB"},
                                 {"sleep": "100ms", "distribution": "constant"}]}}
    res = run(scenario(routes, duration="1s", service={"memory": {"limit": "100MiB"}},
                       load=arrivals(tmp_path, [0.0])))
    assert events(res, "transparent_retry") == []
    assert one(res, "attempt_failed", 1)[::2] == (pytest.approx(0.115 + ONE_WAY, abs=EXACT), "conn_reset")


# ------------------------------------------------ 17. accept-queue overflow, SYN retries


def test_accept_queue_overflow_drops_syns_retransmitted_at_1_3_7_s_until_dial_timeout(tmp_path):
    """fd_limit 8 (4 connections) and backlog 1: four staggered clients are
    accepted; the fifth and sixth complete their handshakes into the accept
    queue (EMFILE keeps them there; Linux's sk_acceptq_is_full compares with >,
    so a backlog of 1 holds 2); the seventh's SYN (sent at 0.2 s) finds the queue
    full and is dropped silently; the kernel retransmits it 1, 3 and 7 s after the
    first SYN (initial RTO 1 s, doubling), each dropped again, until the 8 s dial
    timeout (semantics.md §5: tcp_abort_on_overflow false, tcp_syn_retries)."""
    routes = {"r": sleep("60s")}
    res = run(scenario(routes, duration="10s", server={"accept_backlog": 1}, service={"fd_limit": 8},
                       transport={"dial_timeout": "8s"},
                       load=arrivals(tmp_path, [0.0, 0.02, 0.04, 0.06, 0.1, 0.15, 0.2])))
    assert len(events(res, "accept")) == 4
    assert one(res, "established", 5)[0] == pytest.approx(0.11, abs=EXACT)
    assert one(res, "established", 6)[0] == pytest.approx(0.16, abs=EXACT)
    assert events(res, "accept", 5) == events(res, "accept", 6) == []
    dropped = events(res, "syn_dropped", 7)
    assert [t for t, _, _ in dropped] == approx_all([0.2 + s + ONE_WAY for s in (0.0, 1.0, 3.0, 7.0)])
    assert [d for _, _, d in dropped] == [0, 1, 2, 3]
    assert events(res, "established", 7) == []
    assert one(res, "attempt_failed")[::2] == (pytest.approx(8.2, abs=EXACT), "dial_timeout")
    assert one(res, "client_close", 7)[0] == pytest.approx(8.2, abs=EXACT)
    assert res.requests["error"].tolist()[-1] == ERROR_CODE["dial_timeout"]


# -------------------------------------------------------------------- 18. retries


RETRY_503 = [{"kind": "error_rate", "target": "api", "rate": 1.0, "status": 503}]


def test_exponential_backoff_without_jitter_is_exact(tmp_path):
    """Every response is a 503; max_attempts 4, backoff base 100 ms capped at
    300 ms, no jitter: sleeps of 100, 200 and 300 ms (min(cap, base*2^(n-1)),
    semantics.md §8) between the end of one attempt and the start of the next,
    all on the kept-alive connection; the request ends with http_5xx after 4."""
    res = run(scenario({"r": {"steps": []}}, duration="2s", faults=RETRY_503,
                       retry={"max_attempts": 4, "backoff": "exponential", "backoff_base": "100ms",
                              "backoff_cap": "300ms", "jitter": "none"},
                       load=arrivals(tmp_path, [0.0])))
    a = res.attempts
    assert a["attempt"].tolist() == [0, 1, 2, 3]
    assert a["start_at"].tolist() == approx_all([0.0, 0.12, 0.33, 0.64])
    assert a["end_at"].tolist() == approx_all([0.02, 0.13, 0.34, 0.65])
    assert a["error"].tolist() == [ERROR_CODE["http_5xx"]] * 4
    assert a["new_conn"].tolist() == [True, False, False, False]
    assert res.requests["attempts"].tolist() == [4]
    assert res.requests["error"].tolist() == [ERROR_CODE["http_5xx"]]


def test_full_jitter_backoff_stays_within_its_bounds():
    """Full jitter: the sleep before retry n is U(0, min(cap, base*2^(n-1)))
    (semantics.md §8): with base 100 ms and cap 300 ms, gaps lie in [0, 0.1],
    [0, 0.2] and [0, 0.3] (cap binding, not 0.4), and they do vary."""
    res = run(scenario({"r": {"steps": []}}, duration="30s", faults=RETRY_503,
                       retry={"max_attempts": 4, "backoff": "exponential", "backoff_base": "100ms",
                              "backoff_cap": "300ms", "jitter": "full"},
                       load={"rate_per_s": 10, "arrivals": "uniform"}))
    a = res.attempts
    order = np.lexsort((a["attempt"], a["request_id"]))
    rid, n, start, end = (a[k][order] for k in ("request_id", "attempt", "start_at", "end_at"))
    same = rid[1:] == rid[:-1]
    gaps = start[1:][same] - end[:-1][same]
    retry_no = n[1:][same]
    assert set(retry_no.tolist()) == {1, 2, 3}
    for k, bound in ((1, 0.1), (2, 0.2), (3, 0.3)):
        g = gaps[retry_no == k]
        assert len(g) > 250
        assert g.min() >= -EXACT and g.max() <= bound + EXACT
        assert g.max() > 0.9 * bound          # the bound is reached, not a smaller one
        assert g.std() > 0.2 * bound          # spread out, not a constant sleep
    assert set(res.requests["attempts"][np.isfinite(res.requests["end_at"])].tolist()) == {4}


@pytest.mark.parametrize("status, retry_on, attempts", [
    (503, None, 3),                 # http_5xx is retried by default
    (404, None, 1),                 # http_4xx is not
    (404, ["http_4xx"], 3),
    (503, ["conn_reset"], 1),
])
def test_retry_on_selects_the_error_kinds_that_are_retried(tmp_path, status, retry_on, attempts):
    """max_attempts 3: a request is retried only while its last error kind is in
    retry_on, and never beyond max_attempts (schema RetryConfig)."""
    retry: dict[str, Any] = {"max_attempts": 3}
    if retry_on is not None:
        retry["retry_on"] = retry_on
    res = run(scenario({"r": {"steps": []}}, duration="2s",
                       faults=[{"kind": "error_rate", "target": "api", "rate": 1.0, "status": status}],
                       retry=retry, load=arrivals(tmp_path, [0.0])))
    kind = "http_5xx" if status >= 500 else "http_4xx"
    assert res.requests["attempts"].tolist() == [attempts]
    assert res.attempts["error"].tolist() == [ERROR_CODE[kind]] * attempts
    assert res.requests["error"].tolist() == [ERROR_CODE[kind]]
    # backoff "none": each retry starts the instant the previous attempt ended
    assert res.attempts["start_at"].tolist()[1:] == approx_all(res.attempts["end_at"].tolist()[:-1])
