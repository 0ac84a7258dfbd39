"""The four transport scenarios (docs/scenarios.md) load, and show what they exist to show.

- ``tls-h2-keepalive`` (S5): the time before the server sees a request is one trip on a
  reused connection and TCP + TLS (+ flow control for an upload) on a fresh one; TLS 1.2
  costs one more round trip, TLS 1.3 resumption none less; the spec's 65,535-byte window
  costs round trips that Go's 1 MiB does not; stale keep-alive connections cost HTTP/1
  POSTs an EOF, while GETs (and every HTTP/2 stream) are retried transparently.
- ``idle-churn``: MaxIdleConnsPerHost 2 turns a burst into a dial and RSA-handshake storm
  that saturates the CPU; 100 idle connections (or cheap handshakes, or HTTP/2) do not;
  one process churning ~500 connections a second runs out of ephemeral ports.
- ``h2-large-bodies``: a body moves one window per round trip: spec windows collapse
  uploads and downloads, Go's 1 MiB server connection window caps a connection's upload
  throughput (its client's 4 MiB / 1 GiB do not cap downloads), 16 MiB lifts the cap.
- ``backlog-overflow``: a full accept queue makes connect times ~0, 1 s, 3 s or 7 s.

Most checks run a shortened copy (``duration`` override) of the scenario; the runs are
cached per test process. The module takes ~45 s on one core (~30 s with `-n 2`).
"""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pytest

from conftest import load_shipped
from experiments.catalog import shipped_scenarios
from sim.engine import run_scenario
from sim.result import ERROR_CODE, SUCCESS, RunResult
from sim.scenario_loader import load_scenario

TRANSPORT_SCENARIOS = ("tls-h2-keepalive", "idle-churn", "h2-large-bodies", "backlog-overflow")


@functools.lru_cache(maxsize=None)
def traced(name: str, variant: str | None = None, overrides: tuple[str, ...] = ()) -> RunResult:
    """A run of a shipped scenario with its event trace (cached; read, never change)."""
    return run_scenario(load_shipped(name, variant, overrides), trace=True)


def count(result: RunResult, kind: str, since: float = 0.0, until: float = float("inf")) -> int:
    return sum(1 for at, k, *_ in result.trace if k == kind and since <= at < until)


def attempts(result: RunResult, population_only: bool = True) -> dict[str, np.ndarray]:
    """Attempt columns (float64), of population requests (arrived after the warm-up) by default."""
    cols = {k: np.asarray(v) for k, v in result.attempts.items()}
    if population_only:
        req = result.requests
        ids = req["request_id"][req["arrival_at"] >= result.scenario.warmup]
        keep = np.isin(cols["request_id"], ids)
        cols = {k: v[keep] for k, v in cols.items()}
    for name in ("pool_wait_s", "connect_s", "tls_s", "backlog_s", "flow_wait_s", "to_server_s"):
        cols[name] = cols[name].astype(float)
    return cols


def route_of_attempts(result: RunResult, cols: dict[str, np.ndarray]) -> np.ndarray:
    """Route name of each attempt's request."""
    route_by_id = dict(zip(result.requests["request_id"].tolist(), result.requests["route"].tolist()))
    return np.array([result.route_names[route_by_id[i]] for i in cols["request_id"].tolist()])


# ------------------------------------------------------------------------ loading


@pytest.mark.parametrize("name", TRANSPORT_SCENARIOS)
def test_scenario_is_shipped_and_every_variant_loads(name):
    path = shipped_scenarios()[name]
    base = load_scenario(path)
    assert base.name == name and base.description and base.variants
    for variant in base.variants:
        scenario = load_scenario(path, variant=variant)
        assert scenario.name == name
        assert scenario != base, f"{name}@{variant} changes nothing"


def test_s5_base_is_gos_defaults_with_a_server_idle_timeout_below_the_clients():
    s = load_shipped("tls-h2-keepalive")
    t = s.clients["web"].transport
    assert t.protocol == "http2" and t.client_timeout == 5.0
    assert t.tls.enabled and t.tls.version == "1.3" and not t.tls.resumption
    assert 0.04 <= t.rtt <= 0.08
    server = s.services["api"].server
    assert 0 < server.idle_timeout < t.idle_conn_timeout          # the keep-alive race can happen
    assert server.h2_stream_window == server.h2_connection_window == 1 << 20   # Go's server windows
    assert s.services["api"].routes["upload"].request_bytes > 65_535


# ------------------------------------------------------------ S5: tls-h2-keepalive

S5_SHORT = ("duration=40s",)       # 30 s of population after the 10 s warm-up
RTT_S = 0.05 + 2 * 0.005           # rtt plus the mean jitter of two one-way trips


def s5(variant: str | None = None) -> RunResult:
    return traced("tls-h2-keepalive", variant, S5_SHORT)


def fresh_mean(result: RunResult, column: str) -> float:
    """Mean of a phase over the attempts that dialled their own connection and reached the server."""
    a = attempts(result)
    fresh = a["new_conn"].astype(bool) & np.isfinite(a["to_server_s"])
    return float(a[column][fresh].mean())


def test_s5_reused_connections_cost_one_trip_fresh_ones_tcp_and_tls():
    r = s5()
    a = attempts(r)
    reached = np.isfinite(a["to_server_s"])
    ts = a["to_server_s"][reached]
    fresh = a["new_conn"].astype(bool)[reached]
    share_fresh = fresh.mean()
    assert 0.1 < share_fresh < 0.4, share_fresh        # a pooled connection the server had closed
    assert np.percentile(ts, 50) < 0.045               # one one-way trip (+ serialisation)
    assert 2 * RTT_S < np.percentile(ts, 99) < 6 * RTT_S
    # a fresh connection: connect ~1 RTT, TLS 1.3 ~1 RTT (+ a fraction of a ms of server CPU)
    assert RTT_S * 0.8 < fresh_mean(r, "connect_s") < RTT_S * 1.25
    assert RTT_S * 0.8 < fresh_mean(r, "tls_s") < RTT_S * 1.25
    assert a["connect_s"][reached][~fresh].max() == 0.0 and a["tls_s"][reached][~fresh].max() == 0.0


def test_s5_tls_12_costs_a_round_trip_more_and_tls_13_resumption_none_less():
    base = fresh_mean(s5(), "tls_s")
    assert fresh_mean(s5("tls-1.2"), "tls_s") / base == pytest.approx(2.0, rel=0.15)
    assert fresh_mean(s5("resumption"), "tls_s") / base == pytest.approx(1.0, rel=0.1)
    assert fresh_mean(s5("tls-1.2-resumption"), "tls_s") / base == pytest.approx(1.0, rel=0.1)
    # RSA-2048 only adds server CPU (1.7 ms instead of 0.15 ms per handshake)
    assert 0.0 < fresh_mean(s5("rsa-2048"), "tls_s") - base < 0.01
    assert s5("rsa-2048").summary["max_cpu_utilization"] > s5().summary["max_cpu_utilization"]


def upload_flow_wait(result: RunResult) -> tuple[np.ndarray, np.ndarray]:
    """flow_wait_s of uploads that reached the server, on fresh and on reused connections."""
    a = attempts(result)
    up = (route_of_attempts(result, a) == "upload") & np.isfinite(a["to_server_s"])
    fresh = a["new_conn"].astype(bool)
    return a["flow_wait_s"][up & fresh], a["flow_wait_s"][up & ~fresh]


def test_s5_initial_window_costs_a_round_trip_on_fresh_connections_only():
    fresh, reused = upload_flow_wait(s5())
    # Go's 1 MiB window holds a 256 KiB body (a stream that joins a connection before its
    # SETTINGS arrived waits like its dialler; rare)
    assert (reused > 0.001).mean() < 0.01
    assert 0.5 * RTT_S < fresh.mean() < 1.5 * RTT_S   # 65,535 bytes until the server's SETTINGS arrive
    spec_fresh, spec_reused = upload_flow_wait(s5("spec-windows"))
    assert spec_reused.mean() > 2 * RTT_S        # 256 KiB = 4 windows of 65,535: 3 more round trips
    assert spec_fresh.mean() > fresh.mean() + 2 * RTT_S
    assert s5("spec-windows").summary["to_server_p99_ms"] > 1.5 * s5().summary["to_server_p99_ms"]


def test_s5_stale_keep_alive_is_retried_for_gets_and_h2_but_fails_http1_posts():
    h2, h1 = s5(), s5("http1")
    n = h2.summary["attempts_reached_server"]
    for r in (h2, h1):
        assert 0 < count(r, "transparent_retry") < 0.02 * n      # the race is rare
    assert h2.summary["errors"]["eof"] == 0 and h2.summary["errors"]["conn_reset"] == 0
    assert h1.summary["errors"]["eof"] > 0                       # a POST written on a closed connection
    a = attempts(h1)
    eof_routes = set(route_of_attempts(h1, a)[a["error"] == ERROR_CODE["eof"]])
    assert eof_routes == {"upload"}
    # HTTP/1 needs more connections than HTTP/2 for the same requests
    assert attempts(h1)["new_conn"].mean() > attempts(h2)["new_conn"].mean()


def test_s5_server_idle_longer_than_the_clients_removes_the_fresh_connections():
    fix, base = s5("server-idle-120s"), s5()
    assert attempts(fix)["new_conn"].mean() < 0.02
    assert count(fix, "transparent_retry") == 0
    p90 = [np.nanpercentile(attempts(r)["to_server_s"], 90) for r in (fix, base)]
    assert p90[0] < p90[1] / 2           # (the P99 of a short run still holds first dials)
    assert fix.summary["to_server_mean_ms"] < base.summary["to_server_mean_ms"]


def test_s5_loss_puts_a_one_second_syn_retransmit_in_the_tail():
    r = s5("lossy")
    a = attempts(r)
    assert count(r, "syn_lost") > 0
    assert np.nanmax(a["connect_s"]) > 1.0
    assert np.nanmax(a["to_server_s"]) > 1.0 > np.nanmax(attempts(s5())["to_server_s"])


# ---------------------------------------------------------------------- idle-churn

CHURN_SHORT = ("duration=30s",)     # the burst is 15 s to 25 s
BURST = (15.0, 25.0)


def churn(variant: str | None = None) -> RunResult:
    return traced("idle-churn", variant, CHURN_SHORT)


def burst_success(result: RunResult) -> float:
    req = result.requests
    in_burst = (req["arrival_at"] >= BURST[0]) & (req["arrival_at"] < BURST[1])
    return float((req["error"][in_burst] == SUCCESS).mean())


def test_two_idle_connections_turn_the_burst_into_a_handshake_storm():
    two, hundred = churn(), churn("idle-100")
    dials_two, dials_hundred = count(two, "dial", *BURST), count(hundred, "dial", *BURST)
    assert dials_two > 20 * dials_hundred
    # every dial is a full RSA-2048 handshake: accepted TLS connections
    assert count(two, "accept") >= 0.99 * count(two, "dial")
    assert two.summary["max_cpu_utilization"] >= 0.95
    assert hundred.summary["max_cpu_utilization"] < 0.7
    assert burst_success(two) < 0.8 < 0.99 < burst_success(hundred)
    assert two.summary["p99_ms"] > 10 * hundred.summary["p99_ms"]
    assert count(two, "client_close") > 20 * max(1, count(hundred, "client_close"))   # errTooManyIdleHost


@pytest.mark.parametrize("variant", ["resumption", "ecdsa"])
def test_cheap_handshakes_survive_the_same_churn(variant):
    r = churn(variant)
    assert count(r, "dial", *BURST) > 10 * count(churn("idle-100"), "dial", *BURST)  # still churning
    assert r.summary["max_cpu_utilization"] < 0.7
    assert burst_success(r) > 0.99


def test_http2_multiplexes_the_burst_on_one_connection_per_process():
    r = churn("http2")
    instances = r.scenario.clients["web"].instances
    assert count(r, "dial") <= 2 * instances and count(r, "dial", *BURST) <= instances
    assert burst_success(r) > 0.99


def test_one_process_churning_past_470_connections_a_second_runs_out_of_ports():
    r = traced("idle-churn", "ephemeral-ports")
    ports = r.scenario.clients["web"].transport.ephemeral_ports
    assert ports == 28_232 and r.scenario.clients["web"].instances == 1
    churn_per_s = count(r, "dial", 0.0, 30.0) / 30.0
    assert churn_per_s > ports / 60.0                    # faster than TIME_WAIT gives ports back
    failures = [(at, in_use) for at, kind, _, in_use in r.trace if kind == "addr_unavailable"]
    assert failures and r.summary["errors"]["addr_unavailable"] > 0
    first_at, in_use = failures[0]
    assert in_use == ports
    assert first_at == pytest.approx(ports / churn_per_s, rel=0.15)
    # TIME_WAIT (60 s) gives ports back: dials succeed again from 60 s on
    assert count(r, "dial", 62.0, 64.0) > 0


# ----------------------------------------------------------------- h2-large-bodies


def bodies(variant: str | None = None, *overrides: str) -> RunResult:
    return traced("h2-large-bodies", variant, tuple(overrides))


def by_route(result: RunResult, route: str) -> tuple[np.ndarray, np.ndarray]:
    """(latency s, success) of the population requests of one route; unfinished at their age."""
    req = result.requests
    m = (req["arrival_at"] >= result.scenario.warmup) & (req["route"] == result.route_names.index(route))
    end = np.where(np.isnan(req["end_at"][m]), result.scenario.duration, req["end_at"][m])
    return end - req["arrival_at"][m], req["error"][m] == SUCCESS


def p99(result: RunResult, route: str) -> float:
    return float(np.percentile(by_route(result, route)[0], 99))


def success(result: RunResult, route: str) -> float:
    return float(by_route(result, route)[1].mean())


def upload_flow_wait_mean(result: RunResult) -> float:
    """Mean flow_wait_s of the uploads whose body reached the server."""
    a = attempts(result)
    up = (route_of_attempts(result, a) == "upload") & np.isfinite(a["to_server_s"])
    return float(a["flow_wait_s"][up].mean())


def test_spec_windows_move_one_window_per_round_trip_and_collapse_at_the_shipped_load():
    rtt = bodies().scenario.clients["web"].transport.rtt
    windows = -(-(1 << 20) // 65_535)                      # 1 MiB in 65,535-byte windows: 17
    light = bodies("spec-windows", "clients.web.load.rate_per_s=2")   # rarely two at once
    assert success(light, "upload") > 0.9 and success(light, "download") > 0.9
    assert upload_flow_wait_mean(light) == pytest.approx((windows - 1) * rtt, rel=0.25)
    assert np.median(by_route(light, "download")[0]) == pytest.approx(windows * rtt, rel=0.25)
    assert upload_flow_wait_mean(bodies(None, "clients.web.load.rate_per_s=2")) < rtt
    spec = bodies("spec-windows")
    assert success(spec, "upload") < 0.1 and success(spec, "download") < 0.1


def test_gos_server_window_limits_uploads_its_client_window_not_downloads():
    go, large, h1 = bodies(), bodies("large-conn-window"), bodies("http1")
    rtt = go.scenario.clients["web"].transport.rtt
    assert success(go, "upload") > 0.98 and success(go, "download") > 0.98
    assert 2 * rtt < p99(go, "upload") < 1.0                 # waits for connection credit
    assert p99(go, "download") < p99(go, "upload") / 2       # 4 MiB / 1 GiB: the link is the limit
    assert p99(large, "upload") < p99(go, "upload") / 2      # a 16 MiB connection window lifts it
    assert upload_flow_wait_mean(large) < upload_flow_wait_mean(go) / 10
    a = attempts(h1)
    assert a["flow_wait_s"].max() == 0.0 and count(h1, "dial") > 5 * count(go, "dial")
    # 400 requests/s: 200 uploads/s, 21 MB/s a connection, Go's 1 MiB per 50 ms round trip
    busy_go, busy_large = bodies(None, "clients.web.load.rate_per_s=400"), \
        bodies("large-conn-window", "clients.web.load.rate_per_s=400")
    assert success(busy_go, "upload") < 0.8 < 0.98 < success(busy_go, "download")
    assert success(busy_large, "upload") > 0.98


# ---------------------------------------------------------------- backlog-overflow

BACKLOG_SHORT = ("duration=20s",)   # the burst is 10 s to 15 s


def backlog(variant: str | None = None) -> RunResult:
    return traced("backlog-overflow", variant, BACKLOG_SHORT)


def cliff_counts(result: RunResult) -> Counter:
    """Dialled attempts by connect time: ~0, ~1 s, ~3 s, ~7 s (within 10 ms), or 'between'."""
    a = attempts(result, population_only=False)
    c = a["connect_s"][a["new_conn"].astype(bool) & np.isfinite(a["to_server_s"])]
    out: Counter = Counter()
    for x in c.tolist():
        near = [mark for mark in (0.0, 1.0, 3.0, 7.0) if abs(x - mark) < 0.01]
        out[near[0] if near else "between"] += 1
    return out


def test_full_accept_queue_makes_connect_times_jump_in_cliffs():
    r = backlog()
    backlog_len = r.scenario.services["api"].server.accept_backlog
    assert r.summary["max_accept_queue"] == backlog_len + 1            # sk_acceptq_is_full uses >
    assert r.summary["fd_exhausted_at_s"] is not None
    assert count(r, "syn_dropped") > 0
    cliffs = cliff_counts(r)
    assert cliffs["between"] == 0, cliffs
    assert cliffs[1.0] > 0 and cliffs[3.0] > 0
    # the time before the server sees it has the same cliffs at its tail
    assert r.summary["to_server_p99_ms"] > 1000


def test_enough_fds_leave_the_accept_queue_empty():
    r = backlog("fd-limit-65536")
    assert r.summary["fd_exhausted_at_s"] is None and count(r, "syn_dropped") == 0
    assert set(cliff_counts(r)) == {0.0}
    assert r.summary["to_server_p99_ms"] < 10


def test_a_deeper_backlog_drops_fewer_syns_and_queues_longer():
    deep, base = backlog("backlog-4096"), backlog()
    assert count(deep, "syn_dropped") < count(base, "syn_dropped")
    assert deep.summary["max_accept_queue"] > base.summary["max_accept_queue"]


def test_a_two_second_budget_turns_the_three_second_cliff_into_timeouts():
    short, base = backlog("client-timeout-2s"), backlog()
    assert short.summary["errors"]["client_timeout"] > 10 * max(1, base.summary["errors"]["client_timeout"])
    a = attempts(short, population_only=False)
    reached = np.isfinite(a["to_server_s"])
    assert a["connect_s"][reached].max() < 2.0
