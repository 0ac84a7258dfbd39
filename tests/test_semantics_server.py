"""Exact-timeline tests of the Go net/http *server* behaviours the model implements.

Each test builds a small deterministic scenario (constant RTT, constant handler
steps, evenly spaced or CSV-traced arrivals), runs it with ``trace=True`` and
checks the instants of the event log against the Go facts of
``shared/reference/semantics.md`` (section numbers and ``[EXP En]`` in the
docstrings; the measured timelines are in ``reference/go-experiments/``).

Network: client RTT 10 ms, so a one-way trip is 5 ms; a fresh connection's
first request reaches the server (and is accepted) 15 ms after the dial
(SYN 5 ms, SYN-ACK 5 ms, ACK + request 5 ms). Slow (attack) clients have a
1 ms RTT and start dribbling when they are accepted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sim.result import ERROR_CODE, SUCCESS
from sim.scenario_loader import scenario_from_dict
from timeline import EXACT, arrivals, run, events, instants, one

ONE_WAY = 0.005
MIB = 1048576.0
BASE_GOROUTINES = 4     # main/accept loop, signals, finaliser, timers (sim.server)
BASE_FDS = 4            # stdin, stdout, stderr, listener


# ------------------------------------------------------------------- helpers


def scenario(routes: dict[str, Any], *, duration: str = "2s", sample_interval: str = "1s",
             server: dict | None = None, service: dict | None = None, load: dict | None = None,
             transport: dict | None = None, clients: dict | None = None,
             databases: dict | None = None, faults: list | None = None):
    """One service ``api`` with ``routes`` and one client ``c`` (10 ms RTT) calling it."""
    svc = {"routes": routes, "server": server or {}, **(service or {})}
    client = {"target": "api", "load": load or {"rate_per_s": 0},
              "transport": {"rtt": "10ms", **(transport or {})}}
    data: dict[str, Any] = {"duration": duration, "sample_interval": sample_interval,
                            "services": {"api": svc}, "clients": {"c": client, **(clients or {})},
                            "faults": faults or []}
    if databases:
        data["databases"] = databases
    return scenario_from_dict(data)


def level_at(result, name: str, t: float) -> float:
    """The sampled level ``name`` at the sample closest to instant ``t``."""
    times = result.levels["time_s"]
    i = int(np.argmin(np.abs(times - t)))
    assert abs(times[i] - t) < 1e-6, f"no sample at {t}"
    return float(result.levels[name][i])


def slow_fault(**kw) -> dict:
    return {"kind": "slow_clients", "target": "api", "connections_per_s": 2, "duration": "1s", **kw}


SLEEP_100MS = {"r": {"steps": [{"sleep": "100ms", "distribution": "constant"}]}}


# ------------------------------------------ 1. ReadHeaderTimeout on a new connection


def test_mute_connection_closed_silently_at_read_header_timeout():
    """A new connection that sends nothing is closed at accept + ReadHeaderTimeout,
    without a reply (semantics.md §1 "What happens when each one fires"; [EXP E2b])."""
    res = run(scenario(SLEEP_100MS, duration="3s", server={"read_header_timeout": "500ms"},
                       faults=[slow_fault(bytes_per_s=0)]))
    accepts = events(res, "accept")
    assert accepts
    for at, conn, _ in accepts:
        close_at, _, reason = one(res, "server_close", conn)
        assert close_at == pytest.approx(at + 0.5, abs=EXACT)
        assert reason == "read_header_timeout"
    assert res.counters["slow_connections_cut_silently"] == len(accepts)
    assert res.counters["slow_connections_cut_400"] == 0


def test_dribbling_headers_cut_with_400_at_read_header_timeout():
    """Partial headers (10 B/s of a 512 B block) are cut at the same instant,
    accept + ReadHeaderTimeout, with 400 Bad Request ([EXP E2]: 400 at 0.501 s)."""
    res = run(scenario(SLEEP_100MS, duration="3s", server={"read_header_timeout": "500ms"},
                       faults=[slow_fault(bytes_per_s=10)]))
    accepts = events(res, "accept")
    assert accepts
    for at, conn, _ in accepts:
        close_at, _, reason = one(res, "server_close", conn)
        assert close_at == pytest.approx(at + 0.5, abs=EXACT)
        assert reason == "read_header_timeout_400"
    assert res.counters["slow_connections_cut_400"] == len(accepts)
    assert res.counters["slow_connections_cut_silently"] == 0


@pytest.mark.parametrize("bytes_per_s, reason", [(0, "read_header_timeout"), (10, "read_header_timeout_400")])
def test_read_timeout_is_the_header_deadline_when_read_header_timeout_is_zero(bytes_per_s, reason):
    """readHeaderTimeout() returns ReadTimeout when ReadHeaderTimeout is 0
    (semantics.md §1 "Defaults and fallbacks", [go server.go (*Server).readHeaderTimeout])."""
    res = run(scenario(SLEEP_100MS, duration="3s", server={"read_timeout": "700ms"},
                       faults=[slow_fault(bytes_per_s=bytes_per_s)]))
    accepts = events(res, "accept")
    assert accepts
    for at, conn, _ in accepts:
        close_at, _, got = one(res, "server_close", conn)
        assert close_at == pytest.approx(at + 0.7, abs=EXACT)
        assert got == reason


def test_client_connection_without_request_closed_at_read_header_timeout(tmp_path):
    """A client dial that outlives its attempt (Client.Timeout 5 ms < the 10 ms
    handshake) still completes and lands in the idle pool (Go 1.23 detached dials,
    semantics.md §2); the server sees a new connection with no request and closes
    it silently at accept + ReadHeaderTimeout (§1, [EXP E2b]); the client reads EOF
    one trip later and drops it from its pool."""
    res = run(scenario(SLEEP_100MS, duration="1s", server={"read_header_timeout": "500ms"},
                       transport={"client_timeout": "5ms"}, load=arrivals(tmp_path, [0.0])))
    assert one(res, "attempt_failed")[0] == pytest.approx(0.005, abs=EXACT)
    assert one(res, "attempt_failed")[2] == "client_timeout"
    accept_at = one(res, "accept", 1)[0]
    assert accept_at == pytest.approx(3 * ONE_WAY, abs=EXACT)
    assert events(res, "handler_start") == []
    close_at, _, reason = one(res, "server_close", 1)
    assert (close_at, reason) == (pytest.approx(accept_at + 0.5, abs=EXACT), "read_header_timeout")
    assert one(res, "client_close", 1)[0] == pytest.approx(close_at + ONE_WAY, abs=EXACT)


# --------------------------------------------- 2. IdleTimeout on kept-alive connections


@pytest.mark.parametrize("server, idle_s", [
    ({"idle_timeout": "300ms"}, 0.3),
    ({"idle_timeout": "300ms", "read_timeout": "5s"}, 0.3),
    ({"read_timeout": "400ms"}, 0.4),     # IdleTimeout 0 falls back to ReadTimeout (E9)
])
def test_idle_keep_alive_connection_closed_at_response_plus_idle_timeout(server, idle_s):
    """After the response the connection waits under IdleTimeout, and is closed at
    handler end + IdleTimeout; idleTimeout() falls back to ReadTimeout
    (semantics.md §1 "When deadlines are set" step 6 and "Defaults and fallbacks";
    [EXP E9]: ReadTimeout=400ms, IdleTimeout=0 closed the idle conn at 0.401 s)."""
    res = run(scenario(SLEEP_100MS, duration="1.2s", server=server,
                       load={"rate_per_s": 1, "arrivals": "uniform"}))   # one request at 0.5 s
    start_at = one(res, "handler_start", 1)[0]
    assert start_at == pytest.approx(0.5 + 3 * ONE_WAY, abs=EXACT)
    end_at, _, status = one(res, "handler_end", 1)
    assert (end_at, status) == (pytest.approx(start_at + 0.1, abs=EXACT), 200)
    assert one(res, "response_received", 1)[0] == pytest.approx(end_at + ONE_WAY, abs=EXACT)
    close_at, _, reason = one(res, "server_close", 1)
    assert (close_at, reason) == (pytest.approx(end_at + idle_s, abs=EXACT), "idle_timeout")
    assert one(res, "client_close", 1)[0] == pytest.approx(close_at + ONE_WAY, abs=EXACT)


def test_no_idle_deadline_when_idle_and_read_timeouts_are_zero():
    """idleTimeout() does not fall back to ReadHeaderTimeout: with IdleTimeout and
    ReadTimeout both 0 an idle keep-alive connection stays open (semantics.md §1)."""
    res = run(scenario(SLEEP_100MS, duration="1.4s", server={"read_header_timeout": "200ms"},
                       load={"rate_per_s": 1, "arrivals": "uniform"}))
    assert events(res, "server_close") == []


# -------------------------------------------------------------------- 3. WriteTimeout


def test_write_timeout_does_not_cancel_the_handler_the_client_reads_eof(tmp_path):
    """WriteTimeout=500ms, handler 1.5 s: the handler runs its full time (no ctx
    cancel), the write after the deadline fails, the connection closes and the
    client reads a bare EOF one trip later, at 1.5 s rather than 0.5 s
    (semantics.md §0 claim C; [EXP E3])."""
    routes = {"r": {"honours_context": True, "steps": [{"sleep": "1.5s", "distribution": "constant"}]}}
    res = run(scenario(routes, duration="3s", server={"write_timeout": "500ms"},
                       load=arrivals(tmp_path, [0.0])))
    start_at = one(res, "handler_start", 1)[0]
    end_at = one(res, "handler_end", 1)[0]
    assert end_at == pytest.approx(start_at + 1.5, abs=EXACT)
    assert events(res, "ctx_cancelled") == []
    close_at, _, reason = one(res, "server_close", 1)
    assert (close_at, reason) == (pytest.approx(end_at, abs=EXACT), "write_timeout")
    failed_at, _, kind = one(res, "attempt_failed", 1)
    assert (failed_at, kind) == (pytest.approx(end_at + ONE_WAY, abs=EXACT), "eof")
    assert events(res, "response_received") == []
    assert res.requests["error"].tolist() == [ERROR_CODE["eof"]]


def test_response_before_the_write_deadline_is_delivered(tmp_path):
    """A handler that returns before start + WriteTimeout writes its response
    normally (the deadline only fails writes after it, semantics.md §1)."""
    routes = {"r": {"steps": [{"sleep": "400ms", "distribution": "constant"}]}}
    res = run(scenario(routes, duration="2s", server={"write_timeout": "500ms"},
                       load=arrivals(tmp_path, [0.0, 1.0])))
    assert [d for _, _, d in events(res, "response_received")] == [200, 200]
    assert instants(res, "response_received") == [pytest.approx(0.015 + 0.4 + ONE_WAY, abs=EXACT),
                                                   pytest.approx(1.005 + 0.4 + ONE_WAY, abs=EXACT)]
    assert events(res, "server_close") == []   # kept alive; the deadline is reset per request


# --------------------------------------------------------------------- 4. ReadTimeout


def test_read_timeout_is_absolute_over_a_dribbled_body():
    """ReadTimeout is one deadline t0 + ReadTimeout over headers and body, not per
    Read: a client dribbling 10 B/s (5 B of headers, 100 B of body, so every read
    makes progress) fails its body read at accept + 1 s, the request ctx is
    cancelled at that instant and the handler answers 400 (semantics.md §0 claim A;
    [EXP E1]: i/o timeout at 1.001 s after 10 bytes)."""
    routes = {"upload": {"method": "POST", "steps": [{"sleep": "10ms", "distribution": "constant"}]}}
    res = run(scenario(routes, duration="3s", server={"read_timeout": "1s", "header_bytes": 5},
                       faults=[slow_fault(connections_per_s=1, bytes_per_s=10, body_bytes=100,
                                          route="upload")]))
    accepts = events(res, "accept")
    assert accepts
    for at, conn, _ in accepts:
        assert one(res, "handler_start", conn)[0] == pytest.approx(at + 0.5, abs=EXACT)   # headers read
        body_complete_at = at + (5 + 100) / 10
        cancelled_at, _, why = one(res, "ctx_cancelled", conn)
        assert (cancelled_at, why) == (pytest.approx(at + 1.0, abs=EXACT), "read_error")
        assert cancelled_at < body_complete_at
        end_at, _, status = one(res, "handler_end", conn)
        assert (end_at, status) == (pytest.approx(at + 1.0, abs=EXACT), 400)


def test_connection_closed_when_the_read_error_response_is_written():
    """After the body read fails, Go marks the response closeAfterReply (the
    post-handler discard of the unread body fails too) and closes the connection
    right after writing it (semantics.md §1 "ReadTimeout while the handler is
    reading the body": "The connection is not reused"; [go server.go
    (*chunkWriter).writeHeader, (*response).shouldReuseConnection])."""
    routes = {"upload": {"method": "POST", "steps": [{"sleep": "10ms", "distribution": "constant"}]}}
    res = run(scenario(routes, duration="3s", server={"read_timeout": "1s", "header_bytes": 5},
                       faults=[slow_fault(connections_per_s=1, bytes_per_s=10, body_bytes=100,
                                          route="upload")]))
    accepts = events(res, "accept")
    assert accepts
    for at, conn, _ in accepts:
        close_at, _, reason = one(res, "server_close", conn)
        assert (close_at, reason) == (pytest.approx(at + 1.0, abs=EXACT), "close_after_response")


def test_read_timeout_cleared_once_the_body_is_read(tmp_path):
    """ReadTimeout=300ms does not cut an 800 ms GET handler: the deadline is cleared
    when the (empty) body is consumed, and the client gets 200 (semantics.md §0
    claim A, [go server.go startBackgroundRead]; [EXP E8]: 200 at 0.802 s)."""
    routes = {"r": {"steps": [{"sleep": "800ms", "distribution": "constant"}]}}
    res = run(scenario(routes, duration="2s", server={"read_timeout": "300ms"},
                       load=arrivals(tmp_path, [0.0])))
    start_at = one(res, "handler_start", 1)[0]
    assert one(res, "handler_end", 1)[::2] == (pytest.approx(start_at + 0.8, abs=EXACT), 200)
    assert events(res, "ctx_cancelled") == []
    received_at, _, status = one(res, "response_received", 1)
    assert (received_at, status) == (pytest.approx(start_at + 0.8 + ONE_WAY, abs=EXACT), 200)
    assert res.requests["error"].tolist() == [SUCCESS]


# ------------------------------------------------------------------ 5. TimeoutHandler


def test_timeout_handler_answers_503_at_its_deadline_and_the_inner_handler_runs_on(tmp_path):
    """TimeoutHandler(dt=500ms) around a 1.2 s handler: 503 written at handler
    start + dt (the client has it one trip later), the inner ctx cancelled at that
    instant, the inner handler still finishes at start + 1.2 s (semantics.md §0
    claim C, last bullet; [EXP E5]: 503 at 0.502 s, inner finished at 1.2 s).
    While it runs there are 4 base + 1 connection + 1 background reader + 1
    TimeoutHandler goroutines; after the 503 the connection goroutine is idle and
    the inner goroutine remains (semantics.md §1 "Connection handling details")."""
    routes = {"r": {"steps": [{"sleep": "1.2s", "distribution": "constant"}]}}
    res = run(scenario(routes, duration="2s", sample_interval="10ms", server={"timeout_handler": "500ms"},
                       load=arrivals(tmp_path, [0.0])))
    start_at = one(res, "handler_start", 1)[0]
    assert start_at == pytest.approx(0.015, abs=EXACT)
    assert one(res, "timeout_handler_503", 1)[0] == pytest.approx(start_at + 0.5, abs=EXACT)
    assert one(res, "ctx_cancelled", 1)[::2] == (pytest.approx(start_at + 0.5, abs=EXACT), "timeout_handler")
    assert one(res, "response_sent", 1)[::2] == (pytest.approx(start_at + 0.5, abs=EXACT), 503)
    assert one(res, "response_received", 1)[::2] == (pytest.approx(start_at + 0.5 + ONE_WAY, abs=EXACT), 503)
    assert one(res, "handler_end", 1)[0] == pytest.approx(start_at + 1.2, abs=EXACT)
    assert res.requests["error"].tolist() == [ERROR_CODE["http_5xx"]]
    assert level_at(res, "goroutines", 0.30) == BASE_GOROUTINES + 3
    assert level_at(res, "goroutines", 1.00) == BASE_GOROUTINES + 2
    assert level_at(res, "goroutines", 1.50) == BASE_GOROUTINES + 1


# --------------------------------------------------- 6. client disconnect and the context


def _disconnect_scenario(tmp_path, *, method: str = "GET", request_body: bool = False,
                         honours_context: bool = True):
    """Client ``c`` holds the only DB connection for 1 s from 0.015 s; client ``b``
    (Client.Timeout 300 ms) arrives at 0.1 s and its handler waits for the pool."""
    routes = {
        "hold": {"steps": [{"query": "db.t"}]},
        "q": {"method": method, "request_body": request_body, "honours_context": honours_context,
              "steps": [{"query": "db.t"}]},
    }
    return scenario(
        routes, duration="3s", service={"pools": {"db": {"max_open_conns": 1}}},
        databases={"db": {"rtt": "0", "tables": {"t": {"query_time": "1s", "distribution": "constant"}}}},
        load=arrivals(tmp_path, [(0.0, "hold")], "hold.csv"),
        clients={"b": {"target": "api", "load": arrivals(tmp_path, [(0.1, "q")], "q.csv"),
                       "transport": {"rtt": "10ms", "client_timeout": "300ms"}}})


def test_client_disconnect_cancels_a_get_handler_pool_wait(tmp_path):
    """GET with a context-honouring handler: the client times out at 0.4 s and
    closes; its FIN reaches the server one trip later, the background read sees it,
    the request ctx is cancelled and the pool wait is abandoned at that instant
    (semantics.md §1 "Request context lifetime"; [EXP E4]: cancelled at 0.301 s)."""
    res = run(_disconnect_scenario(tmp_path))
    conn = 2
    assert one(res, "handler_start", conn)[0] == pytest.approx(0.115, abs=EXACT)
    assert one(res, "attempt_failed", conn)[::2] == (pytest.approx(0.4, abs=EXACT), "client_timeout")
    assert one(res, "client_close", conn)[0] == pytest.approx(0.4, abs=EXACT)
    fin_at = one(res, "fin_seen", conn)[0]
    assert fin_at == pytest.approx(0.4 + ONE_WAY, abs=EXACT)
    assert one(res, "ctx_cancelled", conn)[::2] == (pytest.approx(fin_at, abs=EXACT), "client_gone")
    assert one(res, "handler_end", conn)[::2] == (pytest.approx(fin_at, abs=EXACT), 500)
    assert one(res, "server_close", conn)[::2] == (pytest.approx(fin_at, abs=EXACT), "write_to_gone_client")
    # the holder is unaffected and its connection is not handed to the gone waiter
    assert one(res, "handler_end", 1)[::2] == (pytest.approx(1.015, abs=EXACT), 200)


def test_handler_ignoring_its_context_runs_to_completion_after_disconnect(tmp_path):
    """The same with honours_context false: the ctx is cancelled at the FIN but the
    wait goes on; the handler gets the DB connection when the holder releases it
    at 1.015 s, queries 1 s and returns at 2.015 s; the 1.615 s after the caller
    gave up (0.4 s) count as wasted work (docs/outputs.md wasted_work_fraction)."""
    res = run(_disconnect_scenario(tmp_path, honours_context=False))
    conn = 2
    assert one(res, "ctx_cancelled", conn)[::2] == (pytest.approx(0.405, abs=EXACT), "client_gone")
    assert one(res, "handler_end", conn)[::2] == (pytest.approx(2.015, abs=EXACT), 200)
    assert one(res, "server_close", conn)[::2] == (pytest.approx(2.015, abs=EXACT), "write_to_gone_client")
    assert res.counters["wasted_handler_s"] == pytest.approx(2.015 - 0.4, abs=EXACT)
    assert res.counters["handler_s"] == pytest.approx(1.0 + (2.015 - 0.115), abs=EXACT)
    assert res.summary["wasted_work_fraction"] == pytest.approx(1.615 / 2.9, abs=1e-6)
    assert res.summary["wasted_work_fraction"] > 0


def test_post_with_unread_body_does_not_see_the_disconnect(tmp_path):
    """A POST whose body the handler has not read has no background read, so the
    client's FIN cancels nothing: even a context-honouring handler waits for the
    pool and runs to completion (semantics.md §1 "Request context lifetime";
    [EXP E13]: ctx not cancelled 0.8 s after the client closed)."""
    res = run(_disconnect_scenario(tmp_path, method="POST", request_body=True))
    conn = 2
    assert one(res, "fin_seen", conn)[0] == pytest.approx(0.405, abs=EXACT)
    assert events(res, "ctx_cancelled") == []
    assert one(res, "handler_end", conn)[::2] == (pytest.approx(2.015, abs=EXACT), 200)
    assert res.summary["wasted_work_fraction"] > 0


# ----------------------------------------------------------- 7. EMFILE accept backoff


def test_emfile_accept_backoff_doubles_from_5ms_to_1s(tmp_path):
    """fd_limit 8 = 4 base fds + 4 connections. Six clients connect at once: four
    are accepted at 15 ms; then accept4 fails with EMFILE and Serve sleeps 5, 10,
    20, ..., 640 ms, then 1 s, 1 s, ... (semantics.md §1 "Connection handling
    details", §5; [EXP E12]). The other two clients still complete the TCP
    handshake into the accept queue and hang there."""
    routes = {"r": {"steps": [{"sleep": "10s", "distribution": "constant"}]}}
    res = run(scenario(routes, duration="3.5s", sample_interval="100ms", service={"fd_limit": 8},
                       load=arrivals(tmp_path, [0.0] * 6)))
    assert instants(res, "accept") == [pytest.approx(0.015, abs=EXACT)] * 4
    backoffs = [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0, 1.0]
    expected_at = list(0.015 + np.concatenate([[0.0], np.cumsum(backoffs[:-1])]))
    got = events(res, "emfile")
    assert [d for _, _, d in got] == [pytest.approx(b, abs=EXACT) for b in backoffs]
    assert [t for t, _, _ in got] == [pytest.approx(t, abs=EXACT) for t in expected_at]
    assert res.summary["fd_exhausted_at_s"] == pytest.approx(0.015, abs=EXACT)
    for conn in (5, 6):
        assert one(res, "established", conn)[0] == pytest.approx(0.01, abs=EXACT)
        assert events(res, "accept", conn) == []
    assert res.counters["peak_open_fds"] == 8
    assert level_at(res, "accept_queue", 2.0) == 2
    assert level_at(res, "open_fds", 2.0) == 8
    assert level_at(res, "server_connections", 2.0) == 4


def test_emfile_backoff_resets_after_a_successful_accept(tmp_path):
    """Handlers of 1 s: at 1.02 s the client keeps 2 idle connections and closes 2
    (MaxIdleConnsPerHost 2); their FINs free 2 fds at 1.025 s; the accept loop,
    asleep until 0.65 + 0.64 = 1.29 s, then accepts the two queued connections and
    the next EMFILE starts again at 5 ms (tempDelay reset, semantics.md §1)."""
    routes = {"r": {"steps": [{"sleep": "1s", "distribution": "constant"}]}}
    res = run(scenario(routes, duration="2s", service={"fd_limit": 8}, load=arrivals(tmp_path, [0.0] * 6)))
    assert instants(res, "server_close") == [pytest.approx(1.025, abs=EXACT)] * 2
    assert instants(res, "accept", 5) == [pytest.approx(1.29, abs=EXACT)]
    assert instants(res, "accept", 6) == [pytest.approx(1.29, abs=EXACT)]
    after = [(t, d) for t, _, d in events(res, "emfile") if t > 1.0]
    assert after[0] == (pytest.approx(1.29, abs=EXACT), pytest.approx(0.005, abs=EXACT))
    assert after[1] == (pytest.approx(1.295, abs=EXACT), pytest.approx(0.01, abs=EXACT))


# ------------------------------------------------------------------- 8. db_deadline


@pytest.mark.parametrize("honours_context", [True, False])
def test_db_deadline_ends_a_query_whatever_honours_context_says(tmp_path, honours_context):
    """context.WithTimeout(200ms) around a 1 s query ends it at query start + 200 ms
    with 500; a deadline reaches the driver whether or not the handler passes the
    request context (schema RouteConfig.db_deadline)."""
    routes = {"q": {"honours_context": honours_context, "db_deadline": "200ms", "steps": [{"query": "db.t"}]}}
    res = run(scenario(routes, duration="2s",
                       databases={"db": {"rtt": "0", "tables": {"t": {"query_time": "1s",
                                                                     "distribution": "constant"}}}},
                       load=arrivals(tmp_path, [0.0])))
    start_at = one(res, "handler_start", 1)[0]
    assert one(res, "db_deadline", 1)[0] == pytest.approx(start_at + 0.2, abs=EXACT)
    assert one(res, "handler_end", 1)[::2] == (pytest.approx(start_at + 0.2, abs=EXACT), 500)
    assert one(res, "response_received", 1)[::2] == (pytest.approx(start_at + 0.2 + ONE_WAY, abs=EXACT), 500)


@pytest.mark.parametrize("honours_context", [True, False])
def test_db_deadline_ends_a_pool_wait(tmp_path, honours_context):
    """The deadline covers the wait for a pool connection too: with the only
    connection held for 1 s, the waiter's handler ends at its query start + 200 ms
    with 500, and leaves the queue (db_waiters back to 0)."""
    routes = {"hold": {"steps": [{"query": "db.t"}]},
              "q": {"honours_context": honours_context, "db_deadline": "200ms", "steps": [{"query": "db.t"}]}}
    res = run(scenario(routes, duration="2s", sample_interval="50ms",
                       service={"pools": {"db": {"max_open_conns": 1}}},
                       databases={"db": {"rtt": "0", "tables": {"t": {"query_time": "1s",
                                                                     "distribution": "constant"}}}},
                       load=arrivals(tmp_path, [(0.0, "hold"), (0.1, "q")])))
    start_at = one(res, "handler_start", 2)[0]
    assert start_at == pytest.approx(0.115, abs=EXACT)
    assert level_at(res, "db_waiters.db", 0.2) == 1
    assert one(res, "db_deadline", 2)[0] == pytest.approx(start_at + 0.2, abs=EXACT)
    assert one(res, "handler_end", 2)[::2] == (pytest.approx(start_at + 0.2, abs=EXACT), 500)
    assert level_at(res, "db_waiters.db", 0.4) == 0
    assert one(res, "handler_end", 1)[::2] == (pytest.approx(1.015, abs=EXACT), 200)


# ------------------------------------------------------- 9. goroutines and memory


MEMORY = {"baseline": "1MiB", "per_connection": 10000, "per_request": 2000, "per_goroutine": 4096}


@pytest.mark.parametrize("timeout_handler", [False, True])
def test_goroutines_and_memory_follow_the_per_connection_and_per_request_rule(tmp_path, timeout_handler):
    """One GET and one POST with an unread body in flight, then both connections
    idle: goroutines = 4 base + 1 per connection + 1 background reader per request
    whose body is read (the GET only) + 1 per TimeoutHandler-wrapped request
    (semantics.md §1 "Request context lifetime", "Memory per connection": 2
    goroutines for an in-flight GET, 1 for an idle keep-alive connection); memory
    (GC off) = baseline + per_goroutine x goroutines + per_connection x conns +
    per_request x requests."""
    routes = {"get": {"steps": [{"sleep": "1s", "distribution": "constant"}]},
              "post": {"method": "POST", "request_body": True,
                       "steps": [{"sleep": "1s", "distribution": "constant"}]}}
    server = {"timeout_handler": "10s"} if timeout_handler else {}
    res = run(scenario(routes, duration="1.5s", sample_interval="50ms", server=server,
                       service={"memory": MEMORY}, load=arrivals(tmp_path, [(0.0, "get"), (0.0, "post")])))
    th = 2 if timeout_handler else 0
    busy = BASE_GOROUTINES + 2 + 1 + th
    assert level_at(res, "goroutines", 0.5) == busy
    assert level_at(res, "memory_mib", 0.5) * MIB == pytest.approx(
        MIB + 4096 * busy + 10000 * 2 + 2000 * 2, abs=1e-3)
    idle = BASE_GOROUTINES + 2
    assert level_at(res, "goroutines", 1.25) == idle
    assert level_at(res, "memory_mib", 1.25) * MIB == pytest.approx(MIB + 4096 * idle + 10000 * 2, abs=1e-3)
    assert level_at(res, "server_connections", 1.25) == 2
    assert level_at(res, "open_fds", 1.25) == BASE_FDS + 2
    assert res.counters["peak_goroutines"] == busy


def test_no_background_reader_goroutine_while_the_body_is_dribbled():
    """Go starts the background read only when the body hits EOF
    (registerOnHitEOF(startBackgroundRead), semantics.md §1 step 5): while a slow
    client is still sending its body, its connection has 1 goroutine, not 2."""
    routes = {"upload": {"method": "POST", "steps": [{"sleep": "10ms", "distribution": "constant"}]}}
    res = run(scenario(routes, duration="3s", sample_interval="10ms",
                       server={"read_timeout": "5s", "header_bytes": 5},
                       faults=[slow_fault(connections_per_s=1, bytes_per_s=10, body_bytes=100,
                                          route="upload")]))
    at, conn, _ = events(res, "accept")[0]
    assert one(res, "handler_start", conn)[0] == pytest.approx(at + 0.5, abs=EXACT)
    sample_at = round(at + 0.8, 2)           # headers read, body still arriving
    assert level_at(res, "server_connections", sample_at) == 1
    assert level_at(res, "goroutines", sample_at) == BASE_GOROUTINES + 1


# -------------------------------------------------------------------- 10. OOM kill


OOM_ROUTES = {
    "r": {"steps": [{"sleep": "300ms", "distribution": "constant"}]},
    "p": {"method": "POST", "steps": [{"sleep": "300ms", "distribution": "constant"}]},
    "boom": {"steps": [{"sleep": "100ms", "distribution": "constant"}, {"alloc": "1GiB"},
                       {"sleep": "1s", "distribution": "constant"}]},
}


def test_oom_kill_fails_every_inflight_attempt_and_refuses_new_dials(tmp_path):
    """At the memory limit the process is killed: every socket is reset. A
    replayable GET on a reused connection is retried transparently (Go retries
    transportReadFromServerError on a reused connection, semantics.md §2) and the
    retry's dial is refused; a POST on a reused connection and a GET on a fresh
    one fail with conn_reset; dials while the process is down are refused."""
    load = arrivals(tmp_path, [(0.0, "r"), (0.0, "p"), (0.5, "r"), (0.5, "p"), (0.55, "boom"), (1.0, "r")])
    res = run(scenario(OOM_ROUTES, duration="1.5s", service={"memory": {"limit": "100MiB"}}, load=load))
    kill_at = 0.55 + 3 * ONE_WAY + 0.1
    assert instants(res, "killed") == [pytest.approx(kill_at, abs=EXACT)]
    assert res.summary["oom_killed_at_s"] == pytest.approx(kill_at, abs=1e-6)
    # LIFO: the GET at 0.5 s took conn 2 (returned last at 0.32 s), the POST conn 1; boom dialled conn 3
    assert [(t, c, d) for t, c, d in events(res, "request_sent") if 0.4 < t < 0.6] == [
        (pytest.approx(0.5, abs=EXACT), 2, 3), (pytest.approx(0.5, abs=EXACT), 1, 4),
        (pytest.approx(0.56, abs=EXACT), 3, 5)]
    reset_at = kill_at + ONE_WAY
    assert one(res, "transparent_retry")[:3] == (pytest.approx(reset_at, abs=EXACT), 2, "conn_reset")
    failed = {(c, d): t for t, c, d in events(res, "attempt_failed")}
    assert failed[(1, "conn_reset")] == pytest.approx(reset_at, abs=EXACT)     # POST, reused conn
    assert failed[(3, "conn_reset")] == pytest.approx(reset_at, abs=EXACT)     # GET, fresh conn
    # the transparent retry dials at once and is refused one round trip later
    assert one(res, "dial", 4)[0] == pytest.approx(reset_at, abs=EXACT)
    refused = [t for t, c, d in events(res, "attempt_failed") if d == "conn_refused"]
    assert refused == [pytest.approx(reset_at + 2 * ONE_WAY, abs=EXACT), pytest.approx(1.01, abs=EXACT)]
    err = dict(zip(res.requests["request_id"].tolist(), res.requests["error"].tolist()))
    assert err == {1: SUCCESS, 2: SUCCESS, 3: ERROR_CODE["conn_refused"], 4: ERROR_CODE["conn_reset"],
                   5: ERROR_CODE["conn_reset"], 6: ERROR_CODE["conn_refused"]}
    assert res.levels["alive"][-1] == 0
    assert res.summary["crashes"] == 1 and res.summary["crash_loop"] is False


def test_oom_restart_serves_again_and_a_second_kill_is_a_crash_loop(tmp_path):
    """With restart_after 1 s the process comes back 1 s after the kill and
    serves again; killed again after the restart, the run is a crash loop
    (docs/outputs.md crash_loop)."""
    load = arrivals(tmp_path, [(0.0, "r"), (0.5, "boom"), (1.0, "r"), (2.0, "r"), (2.5, "boom"), (3.9, "r")])
    res = run(scenario(OOM_ROUTES, duration="4s", service={"memory": {"limit": "100MiB", "restart_after": "1s"}},
                       load=load))
    first_kill = 0.5 + ONE_WAY + 0.1     # boom reuses the idle conn 1; alloc after 100 ms
    assert res.milestones.kills == [pytest.approx(first_kill, abs=EXACT), pytest.approx(2.605, abs=EXACT)]
    assert res.milestones.restarts == [pytest.approx(first_kill + 1.0, abs=EXACT), pytest.approx(3.605, abs=EXACT)]
    err = dict(zip(res.requests["request_id"].tolist(), res.requests["error"].tolist()))
    assert err[3] == ERROR_CODE["conn_refused"]            # 1.0 s: down, its dial refused
    assert err[4] == SUCCESS                               # 2.0 s: restarted at 1.605 s
    assert one(res, "accept", 4)[0] == pytest.approx(2.015, abs=EXACT)
    assert one(res, "response_received", 4)[::2] == (pytest.approx(2.32, abs=EXACT), 200)
    assert one(res, "handler_start", 6)[0] == pytest.approx(3.915, abs=EXACT)   # after the 2nd restart
    assert res.summary["crashes"] == 2
    assert res.summary["crash_loop"] is True


def test_no_response_after_the_allocation_that_crosses_the_memory_limit(tmp_path):
    """A handler whose last step allocates past the container limit is killed by
    that allocation (the OOM killer SIGKILLs the process while the allocating
    thread is still in its page fault): it never returns, no 200 is written, and
    the client's attempt fails with conn_reset one trip after the kill
    (design.md: memory -> OOM kill at the limit)."""
    routes = {"boom": {"steps": [{"sleep": "100ms", "distribution": "constant"}, {"alloc": "1GiB"}]}}
    res = run(scenario(routes, duration="1s", service={"memory": {"limit": "100MiB"}},
                       load=arrivals(tmp_path, [0.0])))
    assert instants(res, "killed") == [pytest.approx(0.115, abs=EXACT)]
    assert events(res, "handler_end") == []
    assert events(res, "response_received") == []
    assert one(res, "attempt_failed", 1)[::2] == (pytest.approx(0.12, abs=EXACT), "conn_reset")
