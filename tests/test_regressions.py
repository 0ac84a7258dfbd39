"""Regression tests of the engine bugs a code review found, one small exact test per finding.

The findings are numbered as the reviewer's reproduction scripts, ``r1`` to
``r10`` (``r1_jitter`` .. ``r10_wanters``): rtt jitter reordering a connection's
segments (r1), a slow client's ACK to a dead process (r2), ResponseHeaderTimeout
across a transparent retry (r3), a TLS connection abandoned in the accept queue
(r4), a background reader after a TimeoutHandler 503 (r5), a dial with no
timeout behind a full accept queue (r6), accept-queue slots of dead dials (r7),
a dial landing at its attempt's deadline (r8), wasted work after a 503 (r9) and
the client's unbounded wait queues (r10). Each docstring names the finding and
the Go or Linux fact of ``shared/reference/semantics.md`` it protects; the
scenarios are the reviewer's, cut down to what shows the bug. Every test but
the strict xfail failed on the engine before the fixes.

Network: client RTT 10 ms (a one-way trip is 5 ms) unless a test says
otherwise; slow (attack) clients have a 1 ms RTT.
"""

from __future__ import annotations

from typing import Any

import pytest

from sim.connection import Conn, Link
from sim.result import ERROR_CODE, INCOMPLETE, SUCCESS
from sim.rng import Streams
from sim.scenario_loader import scenario_from_dict
from sim.world import World
from sim.engine import run_scenario
from timeline import EXACT, arrivals, run, events, one, approx_all

ONE_WAY = 0.005
MIB = 1048576.0
BASE_GOROUTINES = 4     # main/accept loop, signals, finaliser, timers (sim.server)
BASE_FDS = 4            # stdin, stdout, stderr, listener
BASELINE_MIB = 32.0 + BASE_GOROUTINES * 4096 / MIB     # MemoryConfig defaults at rest


# ------------------------------------------------------------------- helpers


def scenario_data(routes: dict[str, Any], *, duration: str = "2s", sample_interval: str = "1s",
                  server: dict | None = None, service: dict | None = None, load: dict | None = None,
                  transport: dict | None = None, clients: dict | None = None,
                  faults: list | None = None, retry: dict | None = None) -> dict:
    """One service ``api`` with ``routes`` and one client ``c`` (10 ms RTT) calling it."""
    svc = {"routes": routes, "server": server or {}, **(service or {})}
    client: dict[str, Any] = {"target": "api", "load": load or {"rate_per_s": 0},
                              "transport": {"rtt": "10ms", **(transport or {})}}
    if retry:
        client["retry"] = retry
    return {"duration": duration, "sample_interval": sample_interval, "services": {"api": svc},
            "clients": {"c": client, **(clients or {})}, "faults": faults or []}


def scenario(routes: dict[str, Any], **kw):
    return scenario_from_dict(scenario_data(routes, **kw))


def last_level(result, name: str) -> float:
    return float(result.levels[name][-1])


def cpu(duration: str) -> dict:
    return {"steps": [{"cpu": duration, "distribution": "constant"}]}


def sleep(duration: str) -> dict:
    return {"steps": [{"sleep": duration, "distribution": "constant"}]}


# ------------------------------------------------ r1: rtt jitter and TCP order


def test_r1_link_jitter_never_lets_a_segment_overtake_an_earlier_one():
    """r1 (unit): TCP delivers a connection's bytes in order, so a segment sent
    later never arrives earlier, whatever the per-segment jitter (semantics.md §2
    "Other client timers": the request follows the handshake on one connection).
    ``Conn.to_server_s`` / ``to_client_s`` clamp each arrival to the previous one."""
    link = Link(0.010, 0.050, Streams(3, 0).exponential("test.link"))
    conn = Conn(1, None, link, None)
    for direction in (conn.to_server_s, conn.to_client_s):
        now, last_arrival = 0.0, 0.0
        for _ in range(500):
            now += 0.001
            delay = direction(now)
            assert delay >= link.half_rtt_s - EXACT
            assert now + delay >= last_arrival - EXACT
            last_arrival = now + delay
        # the jitter is large against the 1 ms gap: unclamped draws would have reordered
        draws = [0.001 * i + link.one_way() for i in range(500)]
        raw_inversions = sum(1 for a, b in zip(draws, draws[1:]) if b < a)
        assert raw_inversions > 50


@pytest.mark.parametrize("transport", [
    {"max_idle_conns_per_host": 1},      # keep-alive, one idle connection kept per burst
    {"disable_keep_alives": True},       # r1_jitter: a new connection (ACK + request race) per request
])
def test_r1_rtt_jitter_serves_every_request_on_a_healthy_service(tmp_path, transport):
    """r1: with ``rtt_jitter`` the first request used to overtake the handshake's
    ACK (two independent one-way draws); the listener then overwrote the pending
    request and it was lost (incomplete forever). A healthy service must serve
    every request: 25 bursts of 3 requests 60 ms apart (so each burst dials new
    connections even with keep-alive), 1 ms of CPU each, all succeed and every one
    reaches a handler (semantics.md §5/§2: one TCP stream per connection, the
    request is written after the handshake)."""
    rows = [round(0.06 * i, 6) for i in range(25) for _ in range(3)]
    res = run(scenario({"a": cpu("1ms")}, duration="2s", load=arrivals(tmp_path, rows),
                       transport={"rtt_jitter": "2ms", **transport}))
    assert len(res.requests["error"]) == 75
    assert res.requests["error"].tolist() == [SUCCESS] * 75
    assert res.summary["success_rate"] == 1.0
    assert res.summary["incomplete"] == 0
    assert len(events(res, "handler_start")) == 75
    # each connection's events on the server come after its accept
    accepted_at = {c: t for t, c, _ in events(res, "accept")}
    for t, c, _ in events(res, "handler_start"):
        assert t >= accepted_at[c] - EXACT


# ------------------------------------------------ r2: slow client ACK to a dead process


def test_r2_slow_client_handshake_landing_on_an_oom_killed_process_does_not_crash():
    """r2: mute slow clients (2000 conn/s) fill a 40 MiB container until the OOM
    kill; a slow connection accepted in the last instants before the kill has its
    ACK land on the dead process, which used to call ``on_server_reset`` on the
    attacker (``SlowClients``) and crash the run with AttributeError. A killed
    process's sockets are reset and the attacker just loses its connection
    (semantics.md §5; the SIGKILL ends every socket). The run completes, with
    every kill followed by the restart 1 s later."""
    scn = scenario({"a": cpu("1ms")}, duration="3s", sample_interval="100ms",
                   service={"memory": {"limit": "40MiB", "restart_after": "1s"}},
                   faults=[{"kind": "slow_clients", "target": "api", "at": "0s", "connections_per_s": 2000}])
    res = run_scenario(scn, seed=1)
    kills, restarts = res.milestones.kills, res.milestones.restarts
    assert len(kills) >= 2
    assert res.milestones.oom_killed_at_s == kills[0]
    assert len(restarts) == sum(1 for k in kills if k + 1.0 <= 3.0)
    assert [r - k for k, r in zip(kills, restarts)] == approx_all([1.0] * len(restarts))
    assert res.milestones.end_at_s == pytest.approx(3.0)
    assert res.counters["slow_connections_opened"] > 0
    assert res.summary["outcome"] == "undecided"     # dead at the end, a restart on its way: crash-looping


# ------------------------------------------------ r3: ResponseHeaderTimeout and transparent retry


def test_r3_response_header_timeout_restarts_for_a_transparent_retry(tmp_path):
    """r3: a GET written at 0.112 s on a kept-alive connection the server closes
    at 0.115 s (IdleTimeout 100 ms) is retried transparently on a new connection
    (semantics.md §2 "Automatic retry of idempotent requests"). ResponseHeaderTimeout
    runs per round trip, from the request being written (§2 "Other client timers",
    [go transport.go (*persistConn).roundTrip]): the retry's 500 ms start at 0.13 s,
    so the 480 ms handler's response at 0.62 s is in time. It used to keep the
    first write's timer and fail at 0.612 s."""
    res = run(scenario({"fast": {"steps": []}, "slow": sleep("480ms")}, duration="2s",
                       server={"idle_timeout": "100ms"},
                       load=arrivals(tmp_path, [(0.0, "fast"), (0.112, "slow")]),
                       transport={"response_header_timeout": "500ms"}))
    assert res.requests["error"].tolist() == [SUCCESS, SUCCESS]
    assert events(res, "attempt_failed") == []
    assert one(res, "server_close", 1)[::2] == (pytest.approx(0.115, abs=EXACT), "idle_timeout")
    assert one(res, "transparent_retry", 1)[0] == pytest.approx(0.12, abs=EXACT)
    sent = [(t, c) for t, c, _ in events(res, "request_sent")]
    assert sent == [(0.0 + 2 * ONE_WAY, 1), (pytest.approx(0.112, abs=EXACT), 1), (pytest.approx(0.13, abs=EXACT), 2)]
    assert one(res, "response_received", 2)[::2] == (pytest.approx(0.62, abs=EXACT), 200)
    assert res.attempts["error"].tolist() == [SUCCESS, SUCCESS]   # one attempt each: the retry is transparent


# ------------------------------------------------ r4: TLS connection whose client left while queued


def test_r4_tls_connection_abandoned_in_the_accept_queue_is_closed_when_accepted(tmp_path):
    """r4: fd_limit 8 leaves room for 4 connections; six TLS clients dial at once,
    two wait in the accept queue while Go's accept loop backs off on EMFILE (5 ms
    doubling: 5, 10, ..., 640 ms, semantics.md §1 "Connection handling details",
    [EXP E12]). Their TLSHandshakeTimeout (300 ms) closes them on the client at
    0.31 s; the FIN reaches the queue at 0.315 s. When the loop accepts them at
    1.29 s the handshake reads EOF and the server closes them at once (``tls_eof``).
    With no server deadline they used to stay open for ever after a handshake with
    nobody, each holding an fd and a goroutine (the fd table stayed full). With
    IdleTimeout 1 s the process returns to its baseline: 4 fds, 4 goroutines, no
    connection, baseline memory."""
    res = run(scenario({"a": sleep("1s")}, duration="3s", service={"fd_limit": 8},
                       server={"idle_timeout": "1s"}, load=arrivals(tmp_path, [0.0] * 6),
                       transport={"tls": {"enabled": True, "handshake_timeout": "300ms"}}))
    assert sorted(res.requests["error"].tolist()) == [SUCCESS] * 4 + [ERROR_CODE["tls_timeout"]] * 2
    queued = [c for c in range(1, 7) if not events(res, "handler_start", c)]
    assert len(queued) == 2
    for c in queued:
        assert one(res, "client_close", c)[0] == pytest.approx(0.31, abs=EXACT)
        assert one(res, "fin_seen", c)[0] == pytest.approx(0.315, abs=EXACT)
        assert one(res, "accept", c)[0] == pytest.approx(1.29, abs=EXACT)
        assert one(res, "server_close", c)[::2] == (pytest.approx(1.29, abs=EXACT), "tls_eof")
    backoffs = [d for _, _, d in events(res, "emfile")]
    assert backoffs[:8] == approx_all([0.005 * 2 ** i for i in range(8)])
    assert last_level(res, "open_fds") == BASE_FDS
    assert last_level(res, "server_connections") == 0
    assert last_level(res, "goroutines") == BASE_GOROUTINES
    assert last_level(res, "client_connections") == 0
    assert last_level(res, "memory_mib") == pytest.approx(BASELINE_MIB, abs=1e-9)


# ------------------------------------------------ r5: TimeoutHandler 503 before a dribbled body is read


def test_r5_no_background_reader_for_a_request_the_timeout_handler_answered():
    """r5: slow clients dribble 512 B of headers and a 1000 B body at 1000 B/s;
    TimeoutHandler (100 ms) answers 503 before the body is read. Once the outer
    handler returned, the body is closed: the inner handler's read fails and never
    hits EOF, so Go starts no background read for it (semantics.md §1 step 5,
    registerOnHitEOF; "Request context lifetime"). It used to start one that
    nothing ended: goroutines stayed at 4 + 3 and memory above baseline."""
    res = run(scenario({"a": cpu("1ms")}, duration="5s", server={"timeout_handler": "100ms"},
                       faults=[{"kind": "slow_clients", "target": "api", "at": "0s", "duration": "0.05s",
                                "connections_per_s": 100, "bytes_per_s": 1000, "body_bytes": 1000,
                                "route": "a"}]))
    opened = int(res.counters["slow_connections_opened"])
    assert opened >= 1
    assert len(events(res, "timeout_handler_503")) == opened
    for t, c, _ in events(res, "timeout_handler_503"):
        end_at, _, status = one(res, "handler_end", c)
        assert end_at > t and status == 200      # the inner handler ran on after the 503
    assert last_level(res, "goroutines") == BASE_GOROUTINES
    assert last_level(res, "server_connections") == 0
    assert last_level(res, "open_fds") == BASE_FDS
    assert last_level(res, "memory_mib") == pytest.approx(BASELINE_MIB, abs=1e-9)


# ------------------------------------------------ r6: SYN retransmits give up at 127 s


def test_r6_dial_without_dial_timeout_gives_up_127_s_after_the_first_syn(tmp_path):
    """r6: with no dial timeout (``dial_timeout: 0``) and no Client.Timeout, a SYN
    the full accept queue keeps dropping is retransmitted 1, 3, 7, 15, 31 and 63 s
    after the first, and connect() fails with ETIMEDOUT 127 s after the first SYN
    (semantics.md §5: tcp_syn_retries 6, "final timeout ... after 127seconds";
    tcp_abort_on_overflow false). The dial used to hang for ever. fd_limit 8 and
    backlog 1: four connections are served (300 s handlers), two wait in the queue
    (backlog + 1), the seventh's SYN at 0.2 s is dropped."""
    res = run(scenario({"r": sleep("300s")}, duration="130s", sample_interval="10s",
                       server={"accept_backlog": 1}, service={"fd_limit": 8},
                       transport={"dial_timeout": 0},
                       load=arrivals(tmp_path, [0.0, 0.02, 0.04, 0.06, 0.1, 0.15, 0.2])))
    dropped = events(res, "syn_dropped", 7)
    assert [t for t, _, _ in dropped] == approx_all([0.2 + s + ONE_WAY for s in (0, 1, 3, 7, 15, 31, 63)])
    assert [d for _, _, d in dropped] == list(range(7))
    assert events(res, "syn_dropped") == dropped
    failed_at, conn, kind = one(res, "attempt_failed")
    assert (failed_at, kind) == (pytest.approx(0.2 + 127.0, abs=EXACT), "dial_timeout")
    assert one(res, "client_close", 7)[0] == pytest.approx(127.2, abs=EXACT)
    assert res.requests["error"].tolist() == [INCOMPLETE] * 6 + [ERROR_CODE["dial_timeout"]]
    assert res.requests["end_at"][-1] == pytest.approx(127.2, abs=EXACT)
    assert last_level(res, "client_connections") == 6


# ------------------------------------------------ r7: accept-queue slots of dead dials


def test_r7_dials_that_time_out_mid_handshake_leak_no_accept_queue_slot(tmp_path):
    """r7: client ``c`` has a 7 ms dial timeout on a 10 ms RTT: each SYN reaches the
    listener at 5 ms, the dial gives up at 7 ms, the SYN-ACK lands at 10 ms on a
    closed socket and no ACK is ever sent, so nothing enters the accept queue
    (Linux counts only completed handshakes against the backlog:
    sk_acceptq_is_full, semantics.md §5). Five such dials with backlog 2 used to
    leave five reservations behind, and every later SYN was dropped. Client ``d``
    (no dial timeout) then connects at once, its three requests all succeed, and
    no SYN is ever dropped."""
    d_load = arrivals(tmp_path, [0.5, 0.6, 0.7], name="d.csv")
    res = run(scenario({"a": {"steps": []}}, duration="1s", server={"accept_backlog": 2},
                       load=arrivals(tmp_path, [0.0, 0.0, 0.01, 0.02, 0.03]),
                       transport={"dial_timeout": "7ms"},
                       clients={"d": {"target": "api", "load": d_load, "transport": {"rtt": "10ms"}}}))
    errors = res.requests["error"].tolist()
    clients = res.requests["client"].tolist()
    c, d = res.client_names.index("c"), res.client_names.index("d")
    assert [e for e, k in zip(errors, clients) if k == c] == [ERROR_CODE["dial_timeout"]] * 5
    assert [e for e, k in zip(errors, clients) if k == d] == [SUCCESS] * 3
    assert events(res, "syn_dropped") == []
    assert events(res, "established") and all(t >= 0.5 for t, _, _ in events(res, "established"))
    assert len(events(res, "accept")) == 1       # d's three requests share one kept-alive connection
    assert res.counters["peak_accept_queue"] == 1


def test_r7_accept_queue_never_holds_more_than_backlog_plus_one(tmp_path):
    """r7 (the queue's bound): Linux's sk_acceptq_is_full is ``sk_ack_backlog >
    sk_max_ack_backlog``, checked when the SYN arrives (tcp_conn_request) and again
    when the handshake's ACK would create the child socket (tcp_v4_syn_recv_sock);
    with tcp_abort_on_overflow false an ACK that finds the queue full is dropped
    and the connection stays half-open until a retransmission finds room
    (semantics.md §5). So a backlog of 1 never holds more than 2. fd_limit 8
    accepts 4 of 8 simultaneous dials; the other 4 must not all be queued."""
    res = run(scenario({"r": sleep("300s")}, duration="2s", server={"accept_backlog": 1},
                       service={"fd_limit": 8}, load=arrivals(tmp_path, [0.0] * 8)))
    assert len(events(res, "accept")) == 4
    assert res.counters["peak_accept_queue"] <= 2
    assert max(res.levels["accept_queue"]) <= 2


# ------------------------------------------------ r8: a dial that lands as its attempt times out


def test_r8_dial_landing_at_the_attempt_deadline_leaves_no_orphan_connection(tmp_path):
    """r8: MaxConnsPerHost 1 (semantics.md §2 "Getting a connection"): ``c``'s
    second request waits for the slot, which frees when the first times out at
    1 s (Client.Timeout 1 s, RTT 250 ms); its dial completes at 1.25 s, the very
    instant its own Client.Timeout fires. Whichever comes first, the connection
    must end up used, idle in the pool, or closed; it used to stay open with no
    owner on both sides for the rest of the run. Here the request is written and
    the timeout then closes the connection (HTTP/1: a timed-out request kills its
    connection, §2); the server sees the FIN and closes it after the handler."""
    tr = {"rtt": "250ms", "client_timeout": "1s"}
    res = run(scenario({"slow": sleep("2s")}, duration="30s",
                       load=arrivals(tmp_path, [0.0, 0.25], name="c.csv"),
                       transport={**tr, "max_conns_per_host": 1},
                       clients={"d": {"target": "api", "load": arrivals(tmp_path, [0.1875], name="d.csv"),
                                      "transport": tr}}))
    assert res.requests["error"].tolist() == [ERROR_CODE["client_timeout"]] * 3
    assert res.requests["end_at"].tolist() == approx_all([1.0, 1.1875, 1.25])
    assert one(res, "established", 3)[0] == pytest.approx(1.25, abs=EXACT)
    assert one(res, "client_close", 3)[0] == pytest.approx(1.25, abs=EXACT)
    assert one(res, "server_close", 3)[0] == pytest.approx(3.375, abs=EXACT)
    assert last_level(res, "client_connections") == 0
    assert last_level(res, "server_connections") == 0
    assert last_level(res, "open_fds") == BASE_FDS


# ------------------------------------------------ r9: work after a TimeoutHandler 503 is wasted


def test_r9_handler_time_after_a_timeout_handler_503_counts_as_wasted():
    """r9: TimeoutHandler 100 ms around a 1 s handler: the client has its 503 at
    100 ms and the inner handler runs on for 900 ms for nobody (semantics.md §1:
    TimeoutHandler cancels the inner context but cannot stop the goroutine, Claim
    B). Each request wastes 0.9 s of its 1 s, so wasted_work_fraction is 0.9; it
    used to be 0 (the caller had not gone, so nothing counted)."""
    res = run_scenario(scenario({"a": sleep("1s")}, duration="5s", server={"timeout_handler": "100ms"},
                                load={"rate_per_s": 5, "arrivals": "uniform"}))
    errors = res.requests["error"].tolist()
    assert errors.count(ERROR_CODE["http_5xx"]) == 24 and errors.count(INCOMPLETE) == 1
    assert res.counters["handler_s"] == pytest.approx(20.0, abs=1e-6)
    assert res.counters["wasted_handler_s"] == pytest.approx(0.9 * res.counters["handler_s"], abs=1e-6)
    assert res.summary["wasted_work_fraction"] == pytest.approx(0.9, abs=1e-6)


# ---------------------------------------------------- r10: the client's FIFO wait queues


@pytest.mark.parametrize("max_conns_per_host", [0, 1])
def test_r10_client_wait_queues_stay_bounded_when_the_server_is_dead(max_conns_per_host):
    """r10: the process is OOM-killed by its first request (64 MiB allocation at a
    64 MiB limit) and never restarts; 2000 requests/s keep arriving for 3 s. Each
    attempt joins the client's FIFO wait queue (getConn waits for any connection,
    and with MaxConnsPerHost for a dial slot, semantics.md §2) and its dial is
    refused; an ended attempt is removed from the queues lazily, when a
    connection is handed out, which a dead server never does. The queues used to
    grow by every attempt (6000 here); compaction keeps them within
    max(1024, 2 x the waiters still live), and Client.Timeout (100 ms) bounds those."""
    scn = scenario({"a": {"steps": [{"alloc": "64MiB"}]}}, duration="3s",
                   service={"memory": {"limit": "64MiB"}}, load={"rate_per_s": 2000},
                   transport={"client_timeout": "100ms", "max_conns_per_host": max_conns_per_host})
    world = World(scn, 1)
    res = world.run()
    assert len(world.milestones.kills) == 1 and world.service.current is None
    inst = world.clients["c"][0].hosts[0]     # the client process's Transport pool for the one instance
    assert len(res.requests["error"]) > 5000
    live = sum(1 for a in inst._wanters if a.waiting)
    assert live <= 0.1 * 2000 * 1.5            # arrivals within one Client.Timeout, at most
    assert len(inst._wanters) <= 1024
    assert len(inst._slot_waiters) <= 1024
    # every attempt still waiting is in the queue it waits in
    waiting = [req.current for req in world.inflight.values() if req.current is not None and req.current.waiting]
    assert {id(a) for a in waiting} <= {id(a) for a in inst._wanters}
