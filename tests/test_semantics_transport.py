"""Exact-timeline tests of the transport: TLS, HTTP/2 streams and flow control, keep-alive,
TCP backlog, ephemeral ports, packet loss, and the "time before the server sees it".

Each test builds a small deterministic scenario (constant RTT and handler steps,
CSV-traced arrivals), runs it with ``trace=True`` and checks instants against the
facts of ``shared/reference/semantics.md`` (section numbers and ``[EXP En]`` in the
docstrings). RTT is 10 ms unless a test says otherwise: a one-way trip is 5 ms, a
connection is established 10 ms after the dial.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest

from sim.result import ERROR_CODE, SUCCESS
from sim.scenario_loader import scenario_from_dict
from timeline import EXACT, approx_all, arrivals, events, instants, one, run

ECDSA_CPU_S = 0.00015       # server CPU per full ECDSA-P256 handshake (sim.server TLS_SERVER_CPU_S)
RSA_CPU_S = 0.0017


def scenario(routes: dict[str, Any], *, duration: str = "2s", transport: dict | None = None,
             server: dict | None = None, load: dict | None = None, service: dict | None = None,
             retry: dict | None = None):
    svc = {"routes": routes, "server": server or {}, **(service or {})}
    client: dict[str, Any] = {"target": "api", "load": load or {"rate_per_s": 0},
                              "transport": {"rtt": "10ms", **(transport or {})}}
    if retry:
        client["retry"] = retry
    return scenario_from_dict({"duration": duration, "sample_interval": "1s",
                               "services": {"api": svc}, "clients": {"c": client}})


def sleep(duration: str, **route: Any) -> dict:
    return {"steps": [{"sleep": duration, "distribution": "constant"}], **route}


def attempts_of(res) -> dict[str, np.ndarray]:
    return res.attempts


# ------------------------------------------------------------------ TLS (§4)


@pytest.mark.parametrize("version,resumption,handshake_rtts", [
    ("1.3", False, 1), ("1.2", False, 2), ("1.3", True, 1), ("1.2", True, 1)])
def test_tls_round_trips_by_version_and_resumption(tmp_path, version, resumption, handshake_rtts):
    """TCP takes 1 RTT, then TLS 1.3 full 1 RTT, TLS 1.2 full 2, resumed 1 (RFC 8446 §2, RFC 5246
    §7.3). The second connection (after the first closed) resumes if resumption is on."""
    tls = {"enabled": True, "version": version, "resumption": resumption}
    res = run(scenario({"r": {"steps": []}}, transport={"tls": tls, "disable_keep_alives": True},
                       load=arrivals(tmp_path, [0.0, 0.5])))
    ready = instants(res, "request_sent")
    full_rtts = {"1.3": 1, "1.2": 2}[version]
    assert ready[0] == pytest.approx(0.010 + full_rtts * 0.010 + ECDSA_CPU_S, abs=EXACT)
    # the first handshake is always full; with resumption on, the second is abbreviated
    second_rtts = 1 if resumption else handshake_rtts
    cpu_second = {"1.3": 0.00011, "1.2": 0.00005}[version] if resumption else ECDSA_CPU_S
    assert ready[1] - 0.5 == pytest.approx(0.010 + second_rtts * 0.010 + cpu_second, abs=EXACT)


def test_first_full_handshake_timeline_and_its_phases(tmp_path):
    """TLS 1.3, ECDSA: established at 10 ms, ClientHello at the server at 15 ms, 0.15 ms of CPU,
    the server's flight back at 20.15 ms, the request at the server at 25.15 ms. The attempt's
    phases: connect 10 ms, TLS 10.15 ms, no pool wait or backlog, to_server 25.15 ms."""
    res = run(scenario({"r": {"steps": []}}, transport={"tls": {"enabled": True}}, load=arrivals(tmp_path, [0.0])))
    assert instants(res, "established") == approx_all([0.010])
    assert instants(res, "request_sent") == approx_all([0.020 + ECDSA_CPU_S])
    assert instants(res, "handler_start") == approx_all([0.025 + ECDSA_CPU_S])
    a = res.attempts
    assert a["connect_s"][0] == pytest.approx(0.010, abs=1e-6)
    assert a["tls_s"][0] == pytest.approx(0.010 + ECDSA_CPU_S, abs=1e-6)
    assert a["pool_wait_s"][0] == pytest.approx(0.0, abs=1e-6)
    assert a["backlog_s"][0] == pytest.approx(0.0, abs=1e-6)
    assert a["to_server_s"][0] == pytest.approx(0.025 + ECDSA_CPU_S, abs=1e-6)


def test_rsa_handshakes_queue_on_the_cores_a_reconnect_storm_is_a_cpu_storm(tmp_path):
    """200 simultaneous requests, no idle connection, 1 core, RSA-2048 (1.7 ms of server CPU per
    handshake): 200 dials, and the handshakes queue on the core one after another. Requests are
    served on the first connections to be ready, as each becomes idle (getConn takes whichever
    comes first), so all are answered by 98 ms; the remaining dials still cost their handshakes:
    the core is busy 200 x 1.7 ms = 340 ms in the first second."""
    res = run(scenario({"r": {"steps": []}}, transport={"tls": {"enabled": True, "key": "rsa-2048"}},
                       service={"cpu": {"cores": 1}}, load=arrivals(tmp_path, [0.0] * 200)))
    sent = sorted(instants(res, "request_sent"))
    assert len(sent) == 200 and len(events(res, "dial")) == 200
    assert sent[:3] == approx_all([0.015 + RSA_CPU_S * k + 0.005 for k in (1, 2, 3)])
    assert sent[-1] < 0.1
    assert res.levels["cpu_utilization"][0] == pytest.approx(200 * RSA_CPU_S, rel=1e-6)


def test_client_tls_handshake_timeout_fails_the_dial(tmp_path):
    """TLSHandshakeTimeout runs from the TCP connection being established: with 5 ms and an
    RSA handshake queued behind others on one core, the dial fails with tls_timeout at 15 ms."""
    res = run(scenario({"r": {"steps": []}},
                       transport={"tls": {"enabled": True, "key": "rsa-2048", "handshake_timeout": "5ms"}},
                       service={"cpu": {"cores": 1}}, load=arrivals(tmp_path, [0.0] * 10)))
    errors = res.attempts["error"]
    assert (errors == ERROR_CODE["tls_timeout"]).sum() >= 1
    failed_at = res.attempts["end_at"][errors == ERROR_CODE["tls_timeout"]]
    assert failed_at == pytest.approx(np.full(len(failed_at), 0.015), abs=EXACT)


def test_server_handshake_deadline_is_the_smallest_positive_read_or_write_timeout(tmp_path):
    """The server's handshake deadline is the smallest positive of ReadHeaderTimeout, ReadTimeout
    and WriteTimeout, from the accept. Five RSA handshakes queue on one core from 15 ms; with a
    2 ms deadline only the first (done at 16.7 ms) finishes; the others are closed at 17 ms
    and their dials fail when the client reads the EOF. (The first then waits for its request
    under the same 2 ms ReadHeaderTimeout, shorter than the round trip: closed at 18.7 ms.)"""
    res = run(scenario({"r": {"steps": []}}, transport={"tls": {"enabled": True, "key": "rsa-2048"}},
                       server={"read_header_timeout": "2ms", "read_timeout": "1s", "write_timeout": "5s"},
                       service={"cpu": {"cores": 1}}, load=arrivals(tmp_path, [0.0] * 5)))
    closes = [(t, d) for t, _, d in events(res, "server_close") if d == "tls_deadline"]
    assert [t for t, _ in closes] == approx_all([0.017] * 4)
    assert [t for t, _, d in events(res, "server_close") if d == "read_header_timeout"] == approx_all([0.0187])
    assert (res.attempts["error"] == ERROR_CODE["eof"]).all()


# --------------------------------------------------- HTTP/2 streams (§3)


def h2(transport: dict | None = None) -> dict:
    return {"protocol": "http2", "tls": {"enabled": True}, **(transport or {})}


def test_251st_concurrent_stream_opens_a_second_connection_and_the_dial_race(tmp_path):
    """EXP E11: one warm connection, then 299 concurrent blocked requests on a server with
    MAX_CONCURRENT_STREAMS 250: the 50 beyond the limit each dial; the first dial to land
    carries them all; the other 49 connections are closed unused. Streams per connection
    [250, 50]; 51 TCP+TLS connections accepted."""
    res = run(scenario({"r": sleep("1s")}, transport=h2(), load=arrivals(tmp_path, [0.0] + [0.2] * 299)))
    per_conn = Counter(c for _, c, _ in events(res, "stream_seen"))
    assert sorted(per_conn.values(), reverse=True) == [250, 50]
    assert len(events(res, "accept")) == 51
    assert len(events(res, "h2_redundant_conn")) == 49
    assert (res.attempts["error"] == SUCCESS).all()


def test_strict_max_concurrent_streams_waits_on_one_connection(tmp_path):
    """StrictMaxConcurrentStreams: the 50 beyond the limit wait for slots on the one connection;
    they start when the first 50 streams finish (1 s handler + a trip back)."""
    res = run(scenario({"r": sleep("1s")}, transport=h2({"strict_max_concurrent_streams": True}),
                       load=arrivals(tmp_path, [0.0] + [0.2] * 299), duration="4s"))
    assert len(events(res, "accept")) == 1
    seen = sorted(instants(res, "stream_seen"))
    assert len(seen) == 300
    # stream 251 opens when the first finished stream's response reaches the client
    first_done = min(instants(res, "response_received"))
    assert seen[250] == pytest.approx(first_done + 0.005, abs=EXACT)


def test_before_the_servers_settings_the_client_assumes_100_streams(tmp_path):
    """Until the server's SETTINGS arrive (one round trip after the connection is ready, here at
    30.15 ms) the Go client assumes 100 concurrent streams. 150 requests at 21 ms: 99 join the
    warm connection's first stream, the other 51 dial; by the time their connections land
    (after 41 ms) the SETTINGS have raised the limit to 250, so all 51 are closed unused and
    every stream ends up on the first connection."""
    res = run(scenario({"r": sleep("1s")}, transport=h2(), load=arrivals(tmp_path, [0.0] + [0.021] * 150)))
    per_conn = Counter(c for _, c, _ in events(res, "stream_seen"))
    # 1 + 99 fit the assumed 100 on the first connection; 51 dial; the first of them to land is
    # redundant (SETTINGS have raised the first connection's limit by then) and joins it
    assert sum(per_conn.values()) == 151
    assert len(per_conn) == 1
    assert len(events(res, "h2_redundant_conn")) == 51


def test_h2_client_timeout_resets_the_stream_and_keeps_the_connection(tmp_path):
    """HTTP/2: a timed-out request sends RST_STREAM(CANCEL); the connection stays and the next
    request uses it. The server cancels the handler's context when the reset arrives."""
    res = run(scenario({"slow": sleep("1s", honours_context=True)}, transport=h2({"client_timeout": "100ms"}),
                       load=arrivals(tmp_path, [0.0, 0.5])))
    assert len(events(res, "dial")) == 1
    assert events(res, "client_close") == []
    assert instants(res, "stream_opened") == approx_all([0.020 + ECDSA_CPU_S, 0.5])
    assert (res.attempts["error"] == ERROR_CODE["client_timeout"]).all()
    assert instants(res, "ctx_cancelled") == approx_all([0.105, 0.605])


def test_h1_client_timeout_closes_the_connection(tmp_path):
    """HTTP/1: the same timeout closes the connection; the next request dials (EXP E6)."""
    res = run(scenario({"slow": sleep("1s")}, transport={"client_timeout": "100ms"},
                       load=arrivals(tmp_path, [0.0, 0.5])))
    assert len(events(res, "dial")) == 2
    assert instants(res, "client_close") == approx_all([0.1, 0.6])


def test_a_reset_stream_holds_its_slot_until_the_ping_ack(tmp_path):
    """x/net http2 pendingResets: a reset stream counts against MAX_CONCURRENT_STREAMS until the
    PING sent with the RST_STREAM is acknowledged, one round trip later. With a limit of 1, a
    request at 105 ms (the stream timed out at 100 ms, its PING ack is due at 110 ms) finds no
    room and dials; its connection lands at 125.15 ms, finds the first one free again, and is
    closed unused; the request's stream goes on the first connection."""
    res = run(scenario({"slow": sleep("1s")}, transport=h2({"client_timeout": "100ms"}),
                       server={"h2_max_concurrent_streams": 1}, load=arrivals(tmp_path, [0.0, 0.105])))
    assert instants(res, "dial") == approx_all([0.0, 0.105])
    assert instants(res, "h2_redundant_conn") == approx_all([0.105 + 0.020 + ECDSA_CPU_S])
    assert events(res, "stream_opened")[1][:2] == (pytest.approx(0.105 + 0.020 + ECDSA_CPU_S, abs=EXACT), 1)


def test_running_handlers_of_reset_streams_count_and_too_many_waiting_get_goaway(tmp_path):
    """Rapid-reset defence: handlers still running after their stream was reset hold their slots;
    new streams queue; more than 4 x MAX_CONCURRENT_STREAMS queued earns GOAWAY
    ENHANCE_YOUR_CALM and the connection is closed."""
    rows = [0.0] + [0.03 + 0.0001 * i for i in range(30)]
    res = run(scenario({"slow": sleep("5s")}, transport=h2({"client_timeout": "50ms"}),
                       server={"h2_max_concurrent_streams": 2}, load=arrivals(tmp_path, rows), duration="3s"))
    closes = [d for _, _, d in events(res, "server_close")]
    assert "enhance_your_calm" in closes
    assert res.counters["h2_goaways"] >= 1


def test_h2_write_timeout_resets_the_stream_and_keeps_the_connection(tmp_path):
    """EXP E10: an HTTP/2 WriteTimeout sends RST_STREAM at the deadline; the connection
    survives; the handler's context is not cancelled (Go 1.19)."""
    res = run(scenario({"slow": sleep("300ms")}, transport=h2(), server={"write_timeout": "100ms"},
                       load=arrivals(tmp_path, [0.0, 1.0])))
    start = instants(res, "handler_start")[0]
    assert instants(res, "h2_write_timeout_rst")[0] == pytest.approx(start + 0.1, abs=EXACT)
    assert (res.attempts["error"] == ERROR_CODE["stream_reset"]).all()
    assert res.attempts["end_at"][0] == pytest.approx(start + 0.105, abs=EXACT)
    assert events(res, "ctx_cancelled") == []
    assert len(events(res, "dial")) == 1


def test_h2_idle_timeout_race_retries_the_unprocessed_stream_on_a_new_connection(tmp_path):
    """The server closes an idle HTTP/2 connection (GOAWAY) at IdleTimeout; a POST the client sent
    just before the GOAWAY reached it was never processed, so the transport retries it on a new
    connection, whatever the method (x/net http2 canRetryError)."""
    res = run(scenario({"r": {"method": "POST", "steps": []}}, transport=h2(), server={"idle_timeout": "1s"},
                       load=arrivals(tmp_path, [0.0, 1.0 + 0.0252])))
    # the first response left the server at 0.02515: it is idle from then; closed at 1.02515
    assert one(res, "server_close")[0] == pytest.approx(1.02515, abs=EXACT)
    assert len(events(res, "transparent_retry")) == 1
    assert (res.attempts["error"] == SUCCESS).all()
    assert len(events(res, "dial")) == 2


# ------------------------------------------------------ flow control (§3)


def test_a_1mib_body_over_a_65535_window_at_50ms_rtt_takes_16_extra_round_trips(tmp_path):
    """1,048,576 bytes over 65,535-byte windows (spec defaults, server side): 17 windows, each
    released by the WINDOW_UPDATE of the one before, one RTT apart. h2c: the body starts with the
    HEADERS at 50 ms; its last window leaves at 50 + 16 x 50 ms and reaches the server 25 ms
    later: 875 ms. The handler reads its body first, so the server sees the request then;
    flow-control wait 800 ms."""
    res = run(scenario({"r": {"request_bytes": 1 << 20, "steps": []}},
                       transport={"protocol": "http2", "rtt": "50ms"},
                       server={"h2_stream_window": 65535, "h2_connection_window": 65535},
                       load=arrivals(tmp_path, [0.0])))
    assert instants(res, "handler_start") == approx_all([0.075])
    a = res.attempts
    assert a["to_server_s"][0] == pytest.approx(0.875, abs=1e-6)
    assert a["flow_wait_s"][0] == pytest.approx(0.800, abs=1e-6)
    assert instants(res, "response_received") == approx_all([0.9])


def test_go_windows_move_a_1mib_body_in_one_window_after_the_settings(tmp_path):
    """Go's server windows (1 MiB) arrive with its SETTINGS one round trip after the connection is
    ready; until then the client may send 65,535 bytes. So a 1 MiB body on a fresh h2c
    connection waits one RTT for the rest: last bytes at the server at 50 + 50 + 25 ms."""
    res = run(scenario({"r": {"request_bytes": 1 << 20, "steps": []}},
                       transport={"protocol": "http2", "rtt": "50ms"}, load=arrivals(tmp_path, [0.0])))
    assert res.attempts["to_server_s"][0] == pytest.approx(0.125, abs=1e-6)
    assert res.attempts["flow_wait_s"][0] == pytest.approx(0.050, abs=1e-6)


def test_a_response_body_beyond_the_clients_stream_window_takes_extra_round_trips(tmp_path):
    """A 10 MiB response against the Go client's 4 MiB stream window: 3 windows, 2 extra RTTs."""
    res = run(scenario({"r": {"response_bytes": 10 << 20, "steps": []}},
                       transport={"protocol": "http2", "rtt": "50ms"}, load=arrivals(tmp_path, [0.0])))
    # request at the server at 75 ms; windows leave at 75, 125, 175 ms; the last lands at 200 ms
    assert instants(res, "response_received") == approx_all([0.2])


def test_bandwidth_serialises_bodies_on_a_connection(tmp_path):
    """At 1 MB/s, the 512-byte request headers take 0.512 ms and a 100 kB response 100 ms on the
    wire, on top of the one-way trips (HTTP/1)."""
    res = run(scenario({"r": {"response_bytes": 100_000, "steps": []}},
                       transport={"bandwidth_bytes_per_s": 1e6}, load=arrivals(tmp_path, [0.0])))
    assert instants(res, "handler_start") == approx_all([0.015512])
    assert instants(res, "response_received") == approx_all([0.015512 + 0.1 + 0.005])


# ------------------------------------------------------ keep-alive (§2)


def test_an_undrained_response_body_closes_the_http1_connection(tmp_path):
    """Closing the body before EOF (earlyCloseFn) makes the connection not reusable: every request
    dials, and the client closes each connection when it has the response."""
    res = run(scenario({"r": {"steps": []}}, transport={"drain_response_body": False},
                       load=arrivals(tmp_path, [0.0, 0.5, 1.0])))
    assert len(events(res, "dial")) == 3
    assert instants(res, "client_close") == approx_all([0.02, 0.52, 1.02])


def test_bursts_beyond_max_idle_conns_per_host_redial(tmp_path):
    """MaxIdleConnsPerHost 2: a burst of 10 opens 10 connections, 8 are closed when it ends, and the
    next burst of 10 dials 8 again (and re-handshakes under TLS)."""
    res = run(scenario({"r": sleep("50ms")}, transport={"tls": {"enabled": True}},
                       load=arrivals(tmp_path, [0.0] * 10 + [1.0] * 10)))
    assert len(events(res, "dial")) == 18


# --------------------------------------------------------- TCP and Linux (§5)


def test_a_syn_dropped_by_a_full_backlog_succeeds_at_the_1s_retransmit(tmp_path):
    """fd_limit 8 leaves room for 4 connections; backlog 1 holds 2 more (the queue holds
    backlog + 1); two more SYNs 20 ms later find it full and are dropped silently. The server
    closes each connection after its response (DisableKeepAlives), the accept loop drains the
    queue, and the SYNs sent again 1 s after the first succeed: connect phase 1 s + the
    handshake's round trip."""
    res = run(scenario({"r": sleep("50ms")}, server={"accept_backlog": 1},
                       transport={"disable_keep_alives": True},
                       service={"fd_limit": 8}, load=arrivals(tmp_path, [0.0] * 6 + [0.02] * 2)))
    dropped = events(res, "syn_dropped")
    assert len(dropped) == 2
    connect = np.sort(res.attempts["connect_s"])
    assert connect[-2:] == pytest.approx([1.010, 1.010], abs=1e-6)
    assert connect[:-2] == pytest.approx(np.full(6, 0.010), abs=1e-6)
    assert (res.attempts["error"] == SUCCESS).all()


def test_time_wait_holds_ports_for_60s_after_the_client_closes(tmp_path):
    """ephemeral_ports 2: two requests time out (the client closes: active close, TIME_WAIT);
    a third dial 0.5 s later finds no port (EADDRNOTAVAIL at once); 60 s after the closes the
    ports are free and a fourth request dials."""
    res = run(scenario({"slow": sleep("1s")}, transport={"client_timeout": "100ms", "ephemeral_ports": 2},
                       load=arrivals(tmp_path, [0.0, 0.01, 0.5, 60.2]), duration="62s"))
    err = res.attempts["error"]
    assert list(err) == [ERROR_CODE["client_timeout"], ERROR_CODE["client_timeout"],
                         ERROR_CODE["addr_unavailable"], ERROR_CODE["client_timeout"]]
    assert res.attempts["end_at"][2] == pytest.approx(0.5, abs=EXACT)
    assert len(events(res, "dial")) == 3


def test_server_closes_do_not_hold_client_ports(tmp_path):
    """DisableKeepAlives: the server closes after each response (Connection: close), so the
    TIME_WAIT is the server's; with 1 ephemeral port, requests one after another all dial."""
    res = run(scenario({"r": {"steps": []}}, transport={"disable_keep_alives": True, "ephemeral_ports": 1},
                       load=arrivals(tmp_path, [0.0, 0.5, 1.0])))
    assert (res.attempts["error"] == SUCCESS).all()


# ------------------------------------------------------------ packet loss


def test_lost_segments_cost_an_rto_alone_or_a_round_trip_with_fast_retransmit():
    """A 1-segment message cannot trigger 3 duplicate ACKs: its loss costs the RTO (RTT + 200 ms);
    with at least 3 segments after the lost one (or other streams busy), fast retransmit recovers
    it in one RTT."""
    from sim.connection import Link

    class Draw:
        def __init__(self, u: float) -> None:
            self.u = u

        def next(self) -> float:
            return self.u

    link = Link(0.05, 0.0, None, loss_rate=0.5, loss_uniform=Draw(0.0))
    assert link.loss_delay_s(100, busy=False) == pytest.approx(0.25)
    assert link.loss_delay_s(100, busy=True) == pytest.approx(0.05)
    assert link.loss_delay_s(10 * 1448, busy=False) == pytest.approx(0.05)   # first of 10 lost
    assert Link(0.05, 0.0, None, loss_rate=0.5, loss_uniform=Draw(0.99)).loss_delay_s(100, False) == 0.0


def test_head_of_line_blocking_a_lost_segment_stalls_every_stream_on_the_connection(tmp_path):
    """TCP delivers in order (RFC 9113 §1): when one response is delayed by a loss, responses on
    the same connection sent after it wait for it, so they arrive together."""
    res = run(scenario({"r": sleep("10ms")}, transport=h2({"loss_rate": 0.3, "rtt": "20ms"}),
                       load=arrivals(tmp_path, [0.1 + 0.001 * i for i in range(40)]), duration="3s"), seed=3)
    got = np.array(instants(res, "response_received"))
    assert np.all(np.diff(got) >= -EXACT)          # in the order they were sent on the one connection
    gaps = np.diff(got)
    assert (gaps < 1e-9).sum() > 0                  # some arrive at the same instant: held behind a loss


# ------------------------------------------------------- time to the server


def test_backlog_phase_of_a_request_queued_behind_a_stuck_accept_loop(tmp_path):
    """Without TLS the request follows the handshake's ACK and waits in the accept queue until the
    loop accepts its connection: that wait is the attempt's backlog phase."""
    res = run(scenario({"r": sleep("100ms")}, service={"fd_limit": 8}, transport={"disable_keep_alives": True},
                       load=arrivals(tmp_path, [0.0] * 5)))
    a = res.attempts
    assert (a["error"] == SUCCESS).all()
    queued = a["backlog_s"] > 0
    assert queued.sum() == 1
    # connect 10 ms + transit 5 ms + the wait in the queue
    assert a["to_server_s"][queued][0] == pytest.approx(0.015 + a["backlog_s"][queued][0], abs=1e-6)
    assert a["backlog_s"][queued][0] > 0.1


def test_a_dropped_final_ack_completes_at_the_clients_data_retransmission(tmp_path):
    """The accept queue is full when the last two connections' ACKs arrive (15 ms): Linux drops
    them and keeps the connections half-open. Each client sent its request right after its ACK;
    the request's retransmission at the RTO (RTT + 200 ms = 210 ms later) carries the ACK again
    and completes the handshake: the requests wait 210 ms in the backlog, not the 1 s of the
    server's SYN-ACK retransmission."""
    res = run(scenario({"r": sleep("50ms")}, server={"accept_backlog": 1}, transport={"disable_keep_alives": True},
                       service={"fd_limit": 8}, load=arrivals(tmp_path, [0.0] * 8)))
    backlog = np.sort(res.attempts["backlog_s"])
    assert backlog[-2:] == pytest.approx([0.210, 0.210], abs=1e-6)
    assert (res.attempts["error"] == SUCCESS).all()


def test_syn_schedule_of_newer_kernels_is_linear_first():
    """ip-sysctl.rst: tcp_syn_linear_timeouts = 4 (Linux >= 6.5): 1, 2, 3, 4, 5, 7, 11, 19, 35,
    67 s, ETIMEDOUT at 131 s; 0 (older kernels): 1, 3, 7, 15, 31, 63 s, ETIMEDOUT at 127 s."""
    from sim.transport import syn_schedule
    assert syn_schedule(0) == ((1.0, 3.0, 7.0, 15.0, 31.0, 63.0), 127.0)
    assert syn_schedule(4) == ((1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 11.0, 19.0, 35.0, 67.0), 131.0)


def test_background_reader_goroutine_exits_when_the_client_goes(tmp_path):
    """Calibrated against Go 1.19 (docs/calibration.md): a GET's background read gets EOF when
    the client closes, so its goroutine ends then, not when the handler returns. One GET, a 2 s
    handler, a 500 ms client timeout: connection goroutine + handler's background reader until
    the FIN arrives at 505 ms, then the connection goroutine alone (+ the 4 base ones)."""
    res = run(scenario({"r": sleep("2s")}, transport={"client_timeout": "500ms"}, load=arrivals(tmp_path, [0.0]),
                       duration="3s"))
    world_goroutines = res.levels["goroutines"]
    times = res.levels["time_s"]
    # sampled every second: at 1 s the client is gone; the handler still runs (sleep)
    assert world_goroutines[list(times).index(1.0)] == 4 + 1
