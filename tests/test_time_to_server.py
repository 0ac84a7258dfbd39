"""The time before the server sees an attempt (docs/outputs.md): the record columns, the summary
keys and window series of sim.outputs, the report's figure and section, and the console line.

The summary and window tests use a hand-built RunResult whose phases are powers of two, so the
float32 columns hold them exactly and every expected number below is exact arithmetic.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import small_scenario
from experiments.console import format_summary, to_server_line
from experiments.figures import TO_SERVER_LABELS, TO_SERVER_PANELS, to_server_figure
from experiments.report import render_report_html
from sim.engine import run_scenario
from sim.outputs import TO_SERVER_PARTS, summarize
from sim.result import (
    ATTEMPT_COLUMNS, ERROR_CODE, INCOMPLETE, REQUEST_COLUMNS, SUCCESS, TO_SERVER_COLUMNS, TO_SERVER_PHASES,
    FaultWindow, Milestones, RunResult, empty_columns, pad_to_server_columns,
)
from sim.schema import ClientConfig, OutcomeConfig, Scenario, TransportConfig
from sim.world import World

NAN = float("nan")
PHASE_KEYS = [f"to_server_{part}_fraction" for part, _ in TO_SERVER_PARTS]

# One row per attempt: request, attempt number, start, end, error, pool, connect, tls, backlog, flow, to_server.
# Request 0 arrived in the warm-up (1 s); requests 1-4 are the population.
ATTEMPTS = [
    # A: every phase, transit 0.015625 s; the server has it at 2.52 s
    (1, 0, 2.02, 2.60, SUCCESS, 0.0625, 0.125, 0.25, 0.03125, 0.015625, 0.5),
    # B: TLS only, transit 0.125 s; the server has it at 2.52 s too
    (2, 0, 2.27, 2.60, SUCCESS, 0.0, 0.0, 0.125, 0.0, 0.0, 0.25),
    # D: timed out while dialling: 0.75 s of connect, never reached the server
    (3, 0, 3.30, 4.05, ERROR_CODE["dial_timeout"], 0.0, 0.75, 0.0, 0.0, 0.0, NAN),
    # C: the retry of request 3: pool wait 0.5 s, transit 0.5 s; the server has it at 6.05 s
    (3, 1, 5.05, 6.20, SUCCESS, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0),
    # E: in flight at the end, still waiting for a connection: neither reached nor never reached
    (4, 0, 9.50, NAN, INCOMPLETE, 0.25, 0.0, 0.0, 0.0, 0.0, NAN),
    # F: the warm-up request: 4 s in the backlog; out of the summary, in the window series (at 4.05 s)
    (0, 0, 0.05, 4.10, SUCCESS, 0.0, 0.0, 0.0, 4.0, 0.0, 4.0),
]


def hand_built_run() -> RunResult:
    requests = empty_columns(REQUEST_COLUMNS, 5)
    requests["request_id"] = np.arange(5, dtype=np.int64)
    requests["arrival_at"] = np.array([0.05, 2.02, 2.27, 3.30, 9.50])
    requests["end_at"] = np.array([4.10, 2.60, 2.60, 6.20, NAN])
    requests["error"] = np.array([SUCCESS, SUCCESS, SUCCESS, SUCCESS, INCOMPLETE], dtype=np.int8)
    requests["attempts"] = np.array([1, 1, 1, 2, 1], dtype=np.int16)
    attempts = empty_columns(ATTEMPT_COLUMNS, len(ATTEMPTS))
    names = ["request_id", "attempt", "start_at", "end_at", "error", *TO_SERVER_COLUMNS]
    for i, row in enumerate(ATTEMPTS):
        for name, value in zip(names, row):
            attempts[name][i] = value
    scenario = Scenario(name="s5-by-hand", duration=10.0, warmup=1.0, sample_interval=0.1,
                        outcome=OutcomeConfig(),
                        clients={"web": ClientConfig(target="api", transport=TransportConfig(client_timeout=5.0)),
                                 "batch": ClientConfig(target="api", transport=TransportConfig(client_timeout=5.0))})
    milestones = Milestones(end_at_s=10.0, trigger_at_s=2.0,
                            faults=[FaultWindow("latency", 2.0, 6.0, "api", ("api/a",))])
    return RunResult(scenario=scenario, seed=3, replication=0, route_names=["a"], client_names=["web", "batch"],
                     requests=requests, attempts=attempts, levels={}, milestones=milestones,
                     counters={"events": 10.0}, wall_s=0.1, provenance={"seed": 3})


# ------------------------------------------------------------------ records


def test_attempt_columns_hold_the_six_values_in_float32():
    assert TO_SERVER_COLUMNS == ("pool_wait_s", "connect_s", "tls_s", "backlog_s", "flow_wait_s", "to_server_s")
    for name in TO_SERVER_COLUMNS:
        assert ATTEMPT_COLUMNS[name] == "float32"
    assert tuple(column for _, column in TO_SERVER_PARTS if column) == TO_SERVER_PHASES
    assert [part for part, _ in TO_SERVER_PARTS] == list(TO_SERVER_LABELS)


def test_columns_an_older_writer_left_short_are_padded_with_nothing_measured():
    attempts = empty_columns(ATTEMPT_COLUMNS, 2)
    attempts["tls_s"][:] = 0.125
    attempts["to_server_s"][:] = 0.5
    # the end-of-run pass appended two in-flight attempts to the older columns only
    for name in ("request_id", "attempt", "start_at", "end_at", "error", "new_conn"):
        attempts[name] = np.concatenate([attempts[name], np.zeros(2, attempts[name].dtype)])
    del attempts["backlog_s"]
    pad_to_server_columns(attempts)
    assert {len(v) for v in attempts.values()} == {4}
    assert attempts["tls_s"].tolist() == [0.125, 0.125, 0.0, 0.0]
    assert attempts["backlog_s"].tolist() == [0.0] * 4
    assert attempts["to_server_s"][:2].tolist() == [0.5, 0.5] and np.isnan(attempts["to_server_s"][2:]).all()
    assert all(attempts[name].dtype == np.float32 for name in TO_SERVER_COLUMNS)
    attempts["tls_s"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match="tls_s"):
        pad_to_server_columns(attempts)


def test_record_attempt_writes_what_the_attempt_holds(monkeypatch):
    """Whatever the engine sets on an Attempt is what the records hold, column by column."""
    original = World.record_attempt

    def stamped(self, att, code):
        k = att.request.id
        att.pool_wait_s, att.connect_s, att.tls_s = k * 1e-3, 2e-3, 3e-3
        att.backlog_s, att.flow_wait_s = 4e-3, 5e-3
        att.to_server_s = NAN if k % 7 == 0 else 0.5 + k * 1e-3
        original(self, att, code)

    monkeypatch.setattr(World, "record_attempt", stamped)
    result = run_scenario(small_scenario())
    a = result.attempts
    assert len({len(v) for v in a.values()}) == 1
    done = a["error"] != INCOMPLETE
    ids = a["request_id"][done].astype(np.float64)
    assert done.sum() > 100
    np.testing.assert_allclose(a["pool_wait_s"][done], ids * 1e-3, rtol=1e-6)
    for name, value in (("connect_s", 2e-3), ("tls_s", 3e-3), ("backlog_s", 4e-3), ("flow_wait_s", 5e-3)):
        np.testing.assert_allclose(a[name][done], value, rtol=1e-6)
    never = ids % 7 == 0
    assert np.isnan(a["to_server_s"][done][never]).all()
    np.testing.assert_allclose(a["to_server_s"][done][~never], 0.5 + ids[~never] * 1e-3, rtol=1e-6)
    s = result.summary
    assert s["attempts_never_reached_server"] == int(never.sum())
    assert s["attempts_reached_server"] == int((~never).sum())


def test_runs_with_attempts_in_flight_at_the_end_keep_every_column_the_same_length():
    scenario = small_scenario(services={"api": {"cpu": {"cores": 2},
                                                "routes": {"home": {"method": "GET", "steps": [{"sleep": "1s"}]}}}})
    result = run_scenario(scenario)
    assert (result.attempts["error"] == INCOMPLETE).sum() > 10
    assert len({len(v) for v in result.attempts.values()}) == 1


# ------------------------------------------------------------------ summary


def test_summary_over_the_population_attempts_that_reached_the_server():
    run = hand_built_run()
    summarize(run)
    s = run.summary
    # reached: A 500 ms, B 250 ms, C 1,000 ms (F is in the warm-up, D never got there, E is in flight)
    assert s["attempts_reached_server"] == 3
    assert s["attempts_never_reached_server"] == 1
    assert s["to_server_mean_ms"] == 583.333           # 1,750 / 3
    assert s["to_server_p50_ms"] == 500.0
    assert s["to_server_p99_ms"] == 990.0              # linear: 500 + 0.98 x 500
    # shares of the 1.75 s the three spent before the server saw them
    assert s["to_server_pool_wait_fraction"] == round(0.5625 / 1.75, 6) == 0.321429
    assert s["to_server_connect_fraction"] == round(0.125 / 1.75, 6) == 0.071429
    assert s["to_server_tls_fraction"] == round(0.375 / 1.75, 6) == 0.214286
    assert s["to_server_backlog_fraction"] == round(0.03125 / 1.75, 6) == 0.017857
    assert s["to_server_flow_wait_fraction"] == round(0.015625 / 1.75, 6) == 0.008929
    assert s["to_server_transit_fraction"] == round(0.640625 / 1.75, 6) == 0.366071
    assert sum(s[k] for k in PHASE_KEYS) == pytest.approx(1.0, abs=5e-6)


def test_summary_when_no_attempt_reached_the_server():
    run = hand_built_run()
    run.attempts["to_server_s"][:] = np.nan
    summarize(run)
    s = run.summary
    assert s["attempts_reached_server"] == 0
    assert s["attempts_never_reached_server"] == 4     # A, B, C, D: finished, population
    for key in ("to_server_mean_ms", "to_server_p50_ms", "to_server_p99_ms", *PHASE_KEYS):
        assert s[key] is None, key


def test_zero_length_spans_have_percentiles_but_no_shares():
    run = hand_built_run()
    for name in TO_SERVER_COLUMNS:
        run.attempts[name][:] = 0.0
    summarize(run)
    s = run.summary
    assert s["to_server_p99_ms"] == 0.0
    assert s["attempts_reached_server"] == 5           # E too: in flight, but the server has it
    assert all(s[k] is None for k in PHASE_KEYS)


def test_window_series_bucket_by_the_instant_the_server_had_the_request():
    run = hand_built_run()
    summarize(run)
    w = run.windows
    t = np.round(w["time_s"], 9)
    at = {x: int(np.flatnonzero(t == x)[0]) for x in (2.6, 4.1, 6.1)}
    assert w["reached_server"].sum() == 4 and w["reached_server"][at[2.6]] == 2
    assert w["reached_server"][at[4.1]] == 1 and w["reached_server"][at[6.1]] == 1    # F (warm-up) and C
    assert w["never_reached_server"].sum() == 1 and w["never_reached_server"][at[4.1]] == 1   # D ended at 4.05
    k = at[2.6]                                      # A and B
    assert w["to_server_p50_ms"][k] == 375.0
    assert w["to_server_p99_ms"][k] == pytest.approx(497.5)
    means = {part: w[f"to_server_mean_ms.{part}"][k] for part, _ in TO_SERVER_PARTS}
    assert means == pytest.approx({"pool_wait": 31.25, "connect": 62.5, "tls": 187.5, "backlog": 15.625,
                                   "flow_wait": 7.8125, "transit": 70.3125})
    assert sum(means.values()) == pytest.approx(375.0)
    assert w["to_server_mean_ms.backlog"][at[4.1]] == 4000.0
    empty = w["reached_server"] == 0
    for part, _ in TO_SERVER_PARTS:
        assert np.isnan(w[f"to_server_mean_ms.{part}"][empty]).all()
    assert np.isnan(w["to_server_p99_ms"][empty]).all()


# ------------------------------------------------------------------ figure, report, console


def test_figure_stacks_six_phases_summing_to_the_mean():
    run = hand_built_run()
    summarize(run)
    fig = to_server_figure(run)
    stacked = [tr for tr in fig.data if tr.stackgroup]
    assert [tr.name for tr in stacked] == list(TO_SERVER_LABELS.values())
    assert {tr.yaxis for tr in stacked} == {"y"}
    x = np.asarray(stacked[0].x)
    assert all(np.array_equal(np.asarray(tr.x), x) for tr in stacked)
    total = np.sum([np.nan_to_num(np.asarray(tr.y, dtype=float)) for tr in stacked], axis=0)
    k = int(np.flatnonzero(np.isclose(x, 2.6))[0])
    assert total[k] == pytest.approx(375.0)
    assert total[int(np.flatnonzero(np.isclose(x, 6.1))[0])] == pytest.approx(1000.0)
    # the distribution, the request latency and the budget share the log-scaled middle panel
    by_name = {tr.name: tr for tr in fig.data}
    assert by_name["to server P99"].yaxis == "y2" and by_name["to server P50"].yaxis == "y2"
    assert by_name["request latency P99"].yaxis == "y2"
    budget = by_name["client_timeout web, batch (5,000 ms)"]
    assert set(budget.y) == {5000.0} and budget.yaxis == "y2"
    assert fig.layout.yaxis2.type == "log"
    never = by_name["attempts that never reached the server"]
    assert never.yaxis == "y3" and np.nansum(np.asarray(never.y, dtype=float)) == pytest.approx(1 / 0.1)
    # panels, fault band on each, title with the run's P50 and P99
    assert [a.text for a in fig.layout.annotations if a.name is None][:3] == [t for t, _ in TO_SERVER_PANELS]
    assert len([s for s in fig.layout.shapes if (s.name or "").startswith("fault:")]) == 3
    assert "P50 500.0 ms, P99 990.0 ms" in fig.layout.title.text
    fig.to_json()


def test_figure_of_a_run_without_the_series_renders_empty_panels(synthetic_run):
    fig = to_server_figure(synthetic_run())
    assert not [tr for tr in fig.data if tr.stackgroup]
    assert len([k for k in fig.layout.to_plotly_json() if k.startswith("yaxis")]) == 3
    fig.to_json()


def test_report_has_its_own_section_with_how_to_read_it():
    run = hand_built_run()
    summarize(run)
    page = re.sub(r"<script[^>]*>.*?</script>", "", render_report_html(run), flags=re.S)
    assert '<h2 id="time-to-server">Time before the server sees it</h2>' in page
    assert 'id="to-server"' in page
    section = page.split('id="time-to-server"', 1)[1]
    assert "The top panel stacks the mean of each phase" in section
    assert "P50 500 ms, P99 990 ms, mean 583.3 ms" in section
    assert "TLS handshake 21.43 %" in section and "network transit 36.61 %" in section
    assert "1 attempt ended without reaching the server" in section
    assert '<td class="key">to_server_p99_ms</td>' in page


def test_console_line():
    run = hand_built_run()
    summarize(run)
    line = to_server_line(run.summary)
    assert line == ("  time before the server sees it: P50 500.0 ms, P99 990.0 ms (pool 32.1%, connect 7.1%, "
                    "TLS 21.4%, backlog 1.8%, flow 0.9%, transit 36.6%); 1 attempt never reached it")
    assert line in format_summary(run).splitlines()
    assert to_server_line({"attempts_never_reached_server": 0}) == (
        "  time before the server sees it: no attempt reached the server")


# ------------------------------------------------------------------ the engine's side of the contract


@pytest.mark.parametrize("name", ["seed-collapse", "retry-storm", "slowloris"])
def test_phases_fit_inside_the_span_on_shipped_runs(name):
    """What the summary and the figure assume of the engine (docs/outputs.md): phases are >= 0,
    an attempt the server got spent at most its to_server_s in them (transit >= 0, to float32
    rounding), and the server got it before the attempt ended. Vacuous until the engine fills
    the columns."""
    from conftest import run_shipped

    a = run_shipped(name).attempts
    tol_s = 1e-5
    for phase in TO_SERVER_PHASES:
        assert (a[phase] >= 0).all(), phase
    reached = np.isfinite(a["to_server_s"])
    span = a["to_server_s"][reached].astype(np.float64)
    phases = sum(a[p][reached].astype(np.float64) for p in TO_SERVER_PHASES)
    bad = np.flatnonzero(phases > span + tol_s)
    assert bad.size == 0, (f"{bad.size} attempts spent longer in the phases than to_server_s, e.g. request "
                           f"{a['request_id'][reached][bad[0]]}: phases {phases[bad[0]]:.6f} s, "
                           f"to_server_s {span[bad[0]]:.6f} s")
    ended = (a["error"] != INCOMPLETE)[reached]
    seen_at = a["start_at"][reached] + span
    assert (seen_at[ended] <= a["end_at"][reached][ended] + tol_s).all()
