"""The validation suite (experiments/validation, `stormsim validate`, docs/validation.md).

- Its closed forms: limits, textbook values, and the two deadline queues against an
  independent Lindley-recursion simulation (so a wrong formula cannot pass as "the engine
  agrees with it").
- Its machinery: intervals, known limitations, the observer's patches, the pointwise Little
  check (a wrong level is caught), the junit parsing, the monotonicity verdicts, the CLI.
- The quick suite end to end through the CLI, as CI runs it (a few minutes on two cores,
  fixed seeds, 99% intervals: deterministic). The full suite is ``-m slow``.
- The known limitation it reports (HTTP/2 handler goroutines), as a strict xfail: when the
  engine is fixed this test passes unexpectedly and the entry in KNOWN_LIMITATIONS must go.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from experiments.cli import main
from experiments.validation import analytic
from experiments.validation.checks import (FAIL, KNOWN, KNOWN_LIMITATIONS, PASS, Check, apply_known_limitations,
                                           interval_check, t_interval)
from experiments.validation.conservation import level_vs_intervals
from experiments.validation.monotonicity import property_check
from experiments.validation.observer import observe
from experiments.validation.semantics import cited_sources, parse_junit

# ------------------------------------------------------------------ closed forms


def lindley(lam: float, mu: float, deadline: float, n: int, firm: bool, seed: int) -> float:
    """Fraction of customers who leave unserved (abandon) or miss the deadline (firm), by the
    workload recursion of an FCFS single-server queue: independent of stormsim and of the formulas."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / lam, n).tolist()
    work = rng.exponential(1.0 / mu, n).tolist()
    v = 0.0
    missed = 0
    for a, s in zip(gaps, work):
        v = max(0.0, v - a)
        if firm:
            missed += v + s > deadline
            v = min(v + s, deadline)
        elif v > deadline:
            missed += 1
        else:
            v += s
    return missed / n


@pytest.mark.parametrize(("lam", "mu", "deadline"), [(0.5, 1.0, 1.0), (0.8, 1.0, 2.0), (1.2, 1.0, 1.5), (2.0, 1.0, 4.0)])
def test_deadline_closed_forms_match_an_independent_simulation(lam, mu, deadline):
    n = 150_000
    abandon = lindley(lam, mu, deadline, n, firm=False, seed=1)
    miss = lindley(lam, mu, deadline, n, firm=True, seed=2)
    assert abandon == pytest.approx(analytic.mm1_abandon_probability(lam, mu, deadline), abs=0.01)
    assert miss == pytest.approx(analytic.mm1_firm_deadline_miss_probability(lam, mu, deadline), abs=0.01)


def test_deadline_closed_forms_limits():
    lam, mu = 0.7, 1.0
    rho = lam / mu
    assert analytic.mm1_abandon_probability(lam, mu, 0.0) == pytest.approx(rho / (1 + rho))   # Erlang B, c = 1
    assert analytic.mm1_abandon_probability(lam, mu, 0.0) == pytest.approx(analytic.erlang_b(1, rho))
    assert analytic.mm1_firm_deadline_miss_probability(lam, mu, 0.0) == pytest.approx(1.0)
    assert analytic.mm1_abandon_probability(lam, mu, 200.0) < 1e-20
    assert analytic.mm1_firm_deadline_miss_probability(lam, mu, 200.0) < 1e-20
    for d in (0.5, 3.0):   # continuous through rho = 1
        assert analytic.mm1_abandon_probability(1.0 - 1e-7, 1.0, d) == pytest.approx(
            analytic.mm1_abandon_probability(1.0, 1.0, d), rel=1e-5)
        assert analytic.mm1_firm_deadline_miss_probability(1.0 + 1e-7, 1.0, d) == pytest.approx(
            analytic.mm1_firm_deadline_miss_probability(1.0, 1.0, d), rel=1e-5)
    # a firm deadline misses more than the queue alone abandons, less than an M/M/1 sojourn exceeds D
    assert analytic.mm1_abandon_probability(lam, mu, 2.0) < analytic.mm1_firm_deadline_miss_probability(lam, mu, 2.0)
    assert analytic.mm1_firm_deadline_miss_probability(lam, mu, 2.0) < math.exp(-(mu - lam) * 2.0)


def test_erlang_and_pollaczek_khinchine_textbook_values():
    assert analytic.erlang_b(1, 1.0) == pytest.approx(0.5)
    assert analytic.erlang_b(2, 1.0) == pytest.approx(0.2)                       # (1/2) / (1 + 1 + 1/2)
    a, c = 7.2, 8
    top = a ** c / math.factorial(c) * c / (c - a)
    assert analytic.erlang_c(c, a) == pytest.approx(top / (sum(a ** k / math.factorial(k) for k in range(c)) + top))
    assert analytic.erlang_c(1, 0.6) == pytest.approx(0.6)
    lam, mu = 80.0, 100.0
    assert analytic.mg1_wait_mean_s(lam, 1 / mu, 2 / mu ** 2) == pytest.approx(analytic.mmc_wait_mean_s(1, lam, mu))
    assert analytic.mm1_sojourn_quantile_s(lam, mu, 0.99) == pytest.approx(math.log(100) / 20.0)
    with pytest.raises(ValueError):
        analytic.mmc_wait_mean_s(2, 200.0, 100.0)


# ------------------------------------------------------------------ machinery


def test_interval_check_and_known_limitations():
    values = [1.0, 1.1, 0.9, 1.05, 0.95]
    mean, lo, hi, half = t_interval(values, 0.99)
    assert lo < mean < hi and half == pytest.approx(hi - mean)
    common = dict(id="x.y", section="queueing", family="f", title="t", compared="c", reference="r", source="s")
    assert interval_check(values, 1.0, **common).status == PASS
    bad = interval_check(values, 2.0, **common)
    assert bad.status == FAIL and bad.relative_error == pytest.approx(0.5)
    table = {"example-gap": {"ids": r"^$", "reason": "r", "repro": "p", "owner": "o"},
             "by-id": {"ids": r"^rule\.by_id$", "reason": "r", "repro": "p", "owner": "o"}}
    named = Check(status=FAIL, limitation="example-gap", **common)
    other = Check(status=FAIL, **common)
    passed = Check(status=PASS, limitation="example-gap", **common)
    matched = Check(status=FAIL, **{**common, "id": "rule.by_id"})
    apply_known_limitations([named, other, passed, matched], table)
    assert matched.status == KNOWN and matched.limitation == "by-id"
    assert named.status == KNOWN and other.status == FAIL
    assert passed.status == PASS and passed.limitation is None
    for entry in KNOWN_LIMITATIONS.values():
        assert {"ids", "reason", "repro", "owner"} <= set(entry)
    assert json.dumps(Check(status=PASS, estimate=float("nan"), **common).to_json(), allow_nan=False)


def test_pointwise_little_check_catches_a_level_off_by_one():
    rng = np.random.default_rng(5)
    start = np.cumsum(rng.exponential(0.01, 5_000))
    end = start + rng.exponential(0.05, start.size)
    t = np.arange(1, int(start[-1] / 0.1)) * 0.1
    exact = np.searchsorted(np.sort(start), t, "right") - np.searchsorted(np.sort(end), t, "right")
    good = level_vs_intervals(t, exact.astype(float), start, end)
    assert not good["problems"]
    assert good["summary"]["L_levels"] == pytest.approx(good["summary"]["L_records"], rel=0.05)
    off = exact.astype(float)
    off[len(off) // 2] += 1
    assert level_vs_intervals(t, off, start, end)["problems"]


def test_observer_restores_the_engine_and_records_handlers():
    import sim.dbpool as dbpool
    import sim.server as server
    before = (server.ServerProcess.end_handler, dbpool.SqlPool.release)
    from conftest import small_scenario
    from sim.engine import run_scenario
    with observe() as obs:
        result = run_scenario(small_scenario(duration="1s"))
    assert (server.ServerProcess.end_handler, dbpool.SqlPool.release) == before
    obs.close_open(result.milestones.end_at_s)
    starts = sorted(start for start, _end in obs.handlers["api"])
    assert len(starts) == int(np.sum(np.isfinite(result.attempts["to_server_s"])))   # every handler the server ran
    assert all(s.sampled == s.rule for s in obs.rules)


def test_http2_handlers_count_one_goroutine_each():
    """Was the known limitation h2-handler-goroutines (docs/validation.md)."""
    from sim.engine import run_scenario
    from sim.scenario_loader import scenario_from_dict
    data = {"name": "h2-goroutines", "duration": "1s", "sample_interval": "100ms",
            "services": {"api": {"routes": {"r": {"steps": [{"sleep": "500ms"}]}}}},
            "clients": {"c": {"target": "api", "load": {"rate_per_s": 10, "arrivals": "uniform"},
                              "transport": {"rtt": "10ms", "protocol": "http2"}}}}
    levels = run_scenario(scenario_from_dict(data), seed=1).levels
    k = int(np.argmin(np.abs(levels["time_s"] - 0.5)))
    assert levels["server_connections"][k] == 1 and levels["inflight_requests"][k] == 5
    assert levels["goroutines"][k] == 4 + 2 + 5          # main..., serve loop, frame reader, 5 handlers


def test_junit_parsing_and_cited_sources():
    xml = ('<testsuites><testsuite><testcase classname="tests.test_semantics_server" name="test_a" time="0.5"/>'
           '<testcase classname="tests.test_breakers" name="test_b[x]" time="0.1"><failure message="boom"/></testcase>'
           '<testcase classname="tests.test_hedging" name="test_c" time="0"><skipped message="why"/></testcase>'
           '</testsuite></testsuites>')
    cases = parse_junit(xml)
    assert [c["status"] for c in cases] == ["pass", "fail", "info"]
    assert cases[1]["message"] == "boom"
    text = 'closed silently (semantics.md §1 "What happens when each one fires"; [EXP E2b]); see gRFC A6.'
    assert cited_sources(text) == 'semantics.md §1 "What happens when each one fires"; [EXP E2b]; gRFC A6'


def test_property_check_reports_the_counterexample():
    example = {"config": {"ladder": [1, 2]}, "values": [3, 5], "violation": "more timeouts at 2"}
    check = property_check("client_timeout", {"examples": [example], "counterexample": example, "engine": "test"})
    assert check.status == FAIL and "more timeouts at 2" in check.detail
    fine = {"config": {"ladder": [1, 2]}, "values": [5, 3], "violation": None}
    assert property_check("client_timeout", {"examples": [fine], "counterexample": None, "engine": "t"}).status == PASS


def test_cli_rejects_bad_input(capsys):
    assert main(["validate", "--jobs", "0"]) == 2
    assert "--jobs" in capsys.readouterr().err


# ------------------------------------------------------------------ the suites

REQUIRED_CHECK_KEYS = {"id", "section", "family", "title", "compared", "reference", "source", "status", "estimate",
                       "ci_low", "ci_high", "reference_value", "relative_error", "replications", "detail", "params"}


def test_quick_suite_passes_end_to_end(tmp_path, capsys):
    """`stormsim validate --quick` as CI runs it: every check passes or is a known limitation."""
    rc = main(["validate", "--quick", "--out", str(tmp_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    report = json.loads((tmp_path / "validation.json").read_text())
    failing = [f"{c['id']}: {c['detail']}" for c in report["checks"] if c["status"] in ("fail", "error")]
    assert rc == 0 and out["summary"]["ok"], "\n".join(failing)
    s = report["summary"]
    assert s == out["summary"]
    assert s["failed"] == 0 and s["errors"] == 0
    assert set(s["by_section"]) == {"queueing", "conservation", "monotonicity", "semantics", "convergence"}
    assert all(s["by_section"][sec] for sec in s["by_section"])
    assert s["analytic_checks"] >= 25 and s["max_relative_error"]["value"] < 0.15
    assert set(report["known_limitations"]) <= set(KNOWN_LIMITATIONS)
    for c in report["checks"]:
        assert REQUIRED_CHECK_KEYS <= set(c)
        if c["section"] == "queueing":
            assert c["ci_low"] <= c["reference_value"] <= c["ci_high"]
            assert c["replications"] == 10 and c["params"]["rho"] <= 0.8 or c["params"]["kind"] in ("abandon", "firm")
    families = {c["family"] for c in report["checks"] if c["section"] == "queueing"}
    assert len(families) == 6
    page = (tmp_path / "validation.html").read_text()
    for title in ("Queueing theory", "Conservation and consistency", "Monotonicity", "Reference semantics",
                  "Convergence"):
        assert title in page


@pytest.mark.slow
def test_full_suite_passes(tmp_path):
    from experiments.validation.report import write_report
    from experiments.validation.suite import run_suite
    report = run_suite(quick=False, jobs=2, progress=lambda _line: None)
    write_report(report, tmp_path)
    failing = [f"{c['id']}: {c['detail']}" for c in report["checks"] if c["status"] in ("fail", "error")]
    assert report["summary"]["ok"], "\n".join(failing)
