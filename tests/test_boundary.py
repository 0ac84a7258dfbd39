"""`stormsim boundary`: bisection for a tipping point, with replications and Wilson intervals.

The search itself (``find_boundary``) is checked on synthetic evaluators, no simulation:
a deterministic step, a falling step, no crossing, a point that stays ambiguous, an
integer setting, and a seeded logistic with common random numbers. The command is
checked end to end on a tiny scenario whose capacity is known (one core, 10 ms of CPU
per request: 100 req/s), through ``add_boundary_parser`` / ``run_boundary`` on a parser
built here (the real CLI wiring lives in experiments/cli.py).
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from conftest import write_scenario_yaml
from experiments.boundary import (
    add_boundary_parser, find_boundary, format_setting_value, judge, parse_setting_value, run_boundary,
    wilson_interval,
)
from sim.schema import Duration, Rate, Size


# ------------------------------------------------------------------ helpers


def step(threshold: float, rising: bool = True):
    """Deterministic: the outcome happens above (or below) ``threshold``; records every call."""
    calls: list[tuple[float, range]] = []

    def evaluate(x, replications):
        calls.append((x, replications))
        return [(x > threshold) == rising for _ in replications]
    evaluate.calls = calls
    return evaluate


def logistic(x0: float, scale: float, seed: int = 12345):
    """Seeded Bernoulli with p(x) = 1 / (1 + exp(-(x - x0) / scale)) and common random numbers:
    replication r draws the same uniform at every x, so hits are monotone in x."""
    def evaluate(x, replications):
        p = 1.0 / (1.0 + math.exp(-(x - x0) / scale))
        return [np.random.default_rng([seed, r]).random() < p for r in replications]
    return evaluate


def contains(result, x: float) -> bool:
    a, b = result.bracket
    return a <= x <= b


# ------------------------------------------------------------------ Wilson intervals


@pytest.mark.parametrize("hits, runs, expected", [
    # reference values of the Wilson score interval at 95% (z = 1.959964)
    (0, 10, (0.0, 0.277533)),
    (5, 10, (0.236590, 0.763410)),
    (8, 10, (0.490162, 0.943318)),
    (10, 10, (0.722467, 1.0)),
    (1, 3, (0.061492, 0.792340)),
    (15, 20, (0.531299, 0.888138)),
])
def test_wilson_interval_matches_reference_values(hits, runs, expected):
    low, high = wilson_interval(hits, runs, 0.95)
    assert low == pytest.approx(expected[0], abs=1e-5)
    assert high == pytest.approx(expected[1], abs=1e-5)


def test_wilson_interval_properties():
    for runs in (1, 4, 7, 20):
        for hits in range(runs + 1):
            low, high = wilson_interval(hits, runs, 0.95)
            assert 0.0 <= low <= hits / runs <= high <= 1.0
            mirror = wilson_interval(runs - hits, runs, 0.95)   # symmetric in hits <-> misses
            assert (low, high) == pytest.approx((1 - mirror[1], 1 - mirror[0]))
            wide = wilson_interval(hits, runs, 0.99)             # more confidence, wider
            assert wide[0] <= low and wide[1] >= high
    assert wilson_interval(0, 0, 0.95) == (0.0, 1.0)


def test_judge_needs_the_interval_entirely_on_one_side():
    assert judge(5, 5, 0.5, 0.95).side == "above"            # [0.566, 1]
    assert judge(0, 5, 0.5, 0.95).side == "below"            # [0, 0.434]
    assert judge(4, 5, 0.5, 0.95).side == "uncertain"        # [0.376, 0.964] straddles 0.5
    assert judge(3, 3, 0.5, 0.95).side == "uncertain"        # [0.439, 1]
    assert judge(3, 3, 0.4, 0.95).side == "above"


# ------------------------------------------------------------------ the search


def test_step_rising_bracket_holds_the_crossing_within_tolerance():
    evaluate = step(7.3)
    result = find_boundary(evaluate, 0.0, 10.0, level=0.5, confidence=0.95, reps=5, max_reps=20,
                           tolerance=0.1, integer=False)
    assert result.status == "crossing" and result.direction == "rising"
    assert contains(result, 7.3)
    assert result.width <= 0.1
    assert result.x_below < 7.3 < result.x_above
    assert result.point(result.x_below).p == 0.0 and result.point(result.x_above).p == 1.0
    # unanimous batches of 5 are decisive: one batch per point, ends first, common replications
    assert [x for x, _ in evaluate.calls[:2]] == [0.0, 10.0]
    assert all(reps == range(0, 5) for _, reps in evaluate.calls)
    assert result.total_runs == 5 * len(result.points) == 5 * len(evaluate.calls)
    assert len(result.points) == 2 + math.ceil(math.log2(10.0 / 0.1))


def test_default_tolerance_is_a_32nd_of_the_range():
    result = find_boundary(step(7.3), 0.0, 10.0, level=0.5, confidence=0.95, reps=5, max_reps=20,
                           tolerance=None, integer=False)
    assert result.tolerance == 10.0 / 32
    assert result.status == "crossing" and contains(result, 7.3) and result.width <= 10.0 / 32
    assert len(result.points) == 2 + 5


def test_falling_direction():
    result = find_boundary(step(4.2, rising=False), 0.0, 10.0, level=0.5, confidence=0.95, reps=5,
                           max_reps=20, tolerance=0.05, integer=False)
    assert result.status == "crossing" and result.direction == "falling"
    assert result.x_above < 4.2 < result.x_below           # above at low x, below at high x
    assert contains(result, 4.2) and result.width <= 0.05


@pytest.mark.parametrize("always", [False, True])
def test_no_crossing_evaluates_only_the_ends(always):
    calls = []

    def evaluate(x, replications):
        calls.append(x)
        return [always] * len(replications)
    result = find_boundary(evaluate, 1.0, 2.0, level=0.5, confidence=0.95, reps=5, max_reps=20,
                           tolerance=None, integer=False)
    assert result.status == "no_crossing" and result.direction is None
    assert result.x_below is None and result.x_above is None
    assert calls == [1.0, 2.0]
    assert {p.side for p in result.points} == {"above" if always else "below"}


def test_ambiguous_point_stops_at_max_reps():
    """p = 1/2 exactly in the middle: it never leaves the level, so the search stops there."""
    batches = []

    def evaluate(x, replications):
        batches.append((x, replications))
        if 4.0 < x < 6.0:
            return [r % 2 == 0 for r in replications]
        return [x >= 6.0] * len(replications)
    result = find_boundary(evaluate, 0.0, 10.0, level=0.5, confidence=0.95, reps=3, max_reps=10,
                           tolerance=0.01, integer=False)
    assert result.status == "uncertain" and result.uncertain_at == 5.0
    assert result.bracket == (0.0, 10.0)                   # the bracket of the moment
    assert result.direction == "rising"
    middle = result.point(5.0)
    assert middle.runs == 10 and middle.hits == 5 and middle.side == "uncertain"
    assert [reps for x, reps in batches if x == 5.0] == [range(0, 3), range(3, 6), range(6, 9), range(9, 10)]


def test_ambiguous_point_resolved_by_more_runs():
    """4/5 straddles 0.5; 9/10 does not: more replications settle it before max_reps."""
    def evaluate(x, replications):
        if x < 5.0:
            return [False] * len(replications)
        return [r != 1 for r in replications]              # one miss, in replication 1
    result = find_boundary(evaluate, 0.0, 10.0, level=0.5, confidence=0.95, reps=5, max_reps=20,
                           tolerance=None, integer=False)
    assert result.status == "crossing"
    assert result.point(10.0).runs == 10 and result.point(10.0).hits == 9
    assert contains(result, 5.0)


def test_an_ambiguous_end_stops_the_search():
    def evaluate(x, replications):
        return [r % 2 == 0 for r in replications] if x == 0.0 else [True] * len(replications)
    result = find_boundary(evaluate, 0.0, 10.0, level=0.5, confidence=0.95, reps=4, max_reps=8,
                           tolerance=None, integer=False)
    assert result.status == "uncertain" and result.uncertain_at == 0.0
    assert result.bracket == (0.0, 10.0) and len(result.points) == 2


def test_integer_parameter_bisects_on_integers_to_adjacent_values():
    evaluate = step(36.5)                                  # hits from 37 on
    result = find_boundary(evaluate, 0, 100, level=0.5, confidence=0.95, reps=5, max_reps=20,
                           tolerance=None, integer=True)
    assert result.status == "crossing"
    assert (result.x_below, result.x_above) == (36, 37)
    assert all(isinstance(x, int) for x, _ in evaluate.calls)
    assert result.tolerance == 1.0


def test_integer_parameter_with_a_coarser_tolerance():
    result = find_boundary(step(36.5), 0, 100, level=0.5, confidence=0.95, reps=5, max_reps=20,
                           tolerance=10, integer=True)
    assert result.status == "crossing" and contains(result, 36.5) and result.width <= 10


def test_logistic_with_common_random_numbers():
    x0 = 42.0
    result = find_boundary(logistic(x0, 1.5), 0.0, 100.0, level=0.5, confidence=0.95, reps=20, max_reps=80,
                           tolerance=2.0, integer=False)
    assert result.status in ("crossing", "uncertain")
    assert contains(result, x0)
    if result.status == "crossing":
        assert result.width <= 2.0
    for p in result.points:                                # every estimate's interval is a Wilson interval
        assert (p.ci_low, p.ci_high) == wilson_interval(p.hits, p.runs, 0.95)


def test_logistic_at_another_level():
    """The 0.2 crossing of a logistic is at x0 - scale * ln(4)."""
    x0, scale = 42.0, 1.5
    target = x0 - scale * math.log(4.0)
    result = find_boundary(logistic(x0, scale, seed=7), 0.0, 100.0, level=0.2, confidence=0.9, reps=20,
                           max_reps=80, tolerance=3.0, integer=False)
    assert contains(result, target)


def test_progress_callback_sees_every_batch():
    seen = []
    find_boundary(lambda x, reps: [x > 3.0 and r != 0 for r in reps], 0.0, 10.0, level=0.5, confidence=0.95,
                  reps=4, max_reps=8, tolerance=None, integer=False,
                  on_point=lambda p, final: seen.append((p.x, p.runs, final)))
    assert seen[:3] == [(0.0, 4, True), (10.0, 4, False), (10.0, 8, True)]


@pytest.mark.parametrize("kwargs", [
    dict(lo=2.0, hi=1.0), dict(lo=1.0, hi=1.0), dict(reps=0), dict(max_reps=2, reps=3),
    dict(level=0.0), dict(level=1.0), dict(confidence=1.0), dict(tolerance=0.0),
    dict(lo=0.5, hi=3, integer=True),
])
def test_find_boundary_rejects_bad_arguments(kwargs):
    args = dict(lo=0.0, hi=1.0, level=0.5, confidence=0.95, reps=3, max_reps=12, tolerance=None, integer=False)
    args.update(kwargs)
    with pytest.raises(ValueError):
        find_boundary(step(0.5), args.pop("lo"), args.pop("hi"), **args)


def test_setting_values_parse_and_print_like_the_setting():
    assert parse_setting_value(Duration, "3.2s") == 3.2
    assert format_setting_value(Duration, 3.2) == "3.2s"
    assert format_setting_value(Duration, 0.0125) == "12.5ms"
    assert parse_setting_value(Size, "4KiB") == 4096 and format_setting_value(Size, 4096) == "4KiB"
    assert parse_setting_value(Rate, "362.5") == 362.5 and format_setting_value(Rate, 362.5) == "362.5"
    assert parse_setting_value(int, "12") == 12 and format_setting_value(int, 12) == "12"
    for annotation, text in ((Duration, "5 parsecs"), (Rate, "5 parsecs"), (int, "2.5"), (Rate, "nan")):
        with pytest.raises(ValueError):
            parse_setting_value(annotation, text)


# ------------------------------------------------------------------ end to end


TINY = {
    "name": "tiny-capacity",
    "description": "One core, 10 ms of CPU per request: capacity 100 req/s.",
    "duration": "10s",
    "services": {"api": {"cpu": {"cores": 1},
                         "routes": {"home": {"method": "GET", "steps": [{"cpu": "10ms"}]}}}},
    "clients": {"web": {"target": "api", "instances": 4, "load": {"rate_per_s": 50},
                        "transport": {"rtt": "1ms", "client_timeout": "300ms"}}},
}


class _Exit(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # pragma: no cover - argparse errors are not what is tested here
        raise _Exit(message)


def boundary(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = _Parser(prog="stormsim")
    add_boundary_parser(parser.add_subparsers(dest="command", parser_class=_Parser))
    rc = run_boundary(parser.parse_args(["boundary", *argv]))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture
def tiny(tmp_path):
    return str(write_scenario_yaml(tmp_path / "tiny.yaml", TINY))


RATE = ["--param", "clients.web.load.rate_per_s"]


def test_end_to_end_finds_the_capacity_of_a_one_core_service(tiny, capsys):
    rc, out, err = boundary([tiny, *RATE, "--lo", "50", "--hi", "200", "--reps", "4", "--tolerance", "10",
                             "--json"], capsys)
    assert rc == 0, err
    report = json.loads(out)                               # one JSON object, nothing else on stdout
    assert list(report) == ["scenario", "param", "outcome", "status", "direction", "level", "confidence",
                            "range", "bracket", "uncertain_at", "ends", "points", "message", "seed", "reps",
                            "max_reps", "tolerance", "tolerance_text", "overrides", "total_runs", "wall_s"]
    assert report["scenario"] == "tiny-capacity" and report["outcome"] == "collapse"
    assert report["status"] in ("crossing", "uncertain") and report["direction"] == "rising"
    bracket = report["bracket"]
    assert 50 < bracket["lo"] <= 100 <= bracket["hi"] <= 115
    if report["status"] == "crossing":
        assert bracket["width"] <= 10
        assert bracket["below"]["side"] == "below" and bracket["above"]["side"] == "above"
        assert bracket["below"]["x"] == bracket["lo"] and bracket["above"]["x"] == bracket["hi"]
    assert report["range"] == {"lo": 50.0, "hi": 200.0, "lo_text": "50", "hi_text": "200"}
    assert report["ends"]["lo"]["side"] == "below" and report["ends"]["hi"]["side"] == "above"
    xs = [p["x"] for p in report["points"]]
    assert xs == sorted(xs) and xs[0] == 50 and xs[-1] == 200
    point = report["points"][0]
    assert set(point) >= {"x", "text", "runs", "hits", "p", "ci", "side"}
    assert point["ci"] == pytest.approx(list(wilson_interval(point["hits"], point["runs"], 0.95)), abs=1e-6)
    assert report["total_runs"] == sum(p["runs"] for p in report["points"])
    assert all(p["runs"] % 4 == 0 and p["runs"] <= 16 for p in report["points"])
    # progress on stderr, one line per batch
    assert "rate_per_s=50:" in err and "rate_per_s=200:" in err


def test_results_do_not_depend_on_jobs(tiny, capsys):
    argv = [tiny, *RATE, "--lo", "60", "--hi", "160", "--reps", "3", "--max-reps", "6", "--tolerance", "12",
            "--seed", "3", "--json"]
    reports = []
    for jobs in ("1", "2"):
        rc, out, err = boundary([*argv, "--jobs", jobs], capsys)
        assert rc == 0, err
        report = json.loads(out)
        report.pop("wall_s")
        reports.append(report)
    assert reports[0] == reports[1]
    assert reports[0]["seed"] == 3


def test_human_output_duration_setting_and_a_falling_integer(tiny, capsys):
    # A Duration: the route's CPU per request at 80 req/s tips near 1 / 80 = 12.5 ms.
    rc, out, err = boundary([tiny, "--param", "services.api.routes.home.steps.0.cpu", "--lo", "2ms",
                             "--hi", "30ms", "--set", "clients.web.load.rate_per_s=80", "--reps", "4",
                             "--tolerance", "3ms"], capsys)
    assert rc == 0, err
    assert "P(collapse) crosses 0.5" in out and ("rising with cpu" in out or "uncertain" in out)
    assert "[2ms, 30ms]" in out and "95% CI" in out
    assert "9ms " in out and "16ms " in out                # midpoints written like the setting, no float noise
    assert "--set clients.web.load.rate_per_s=80" in out
    assert out.rstrip().splitlines()[-1].endswith("worker process(es)")

    # An integer: cores at 250 req/s; 3 cores carry it, 2 do not, so p falls between 2 and 3.
    rc, out, err = boundary([tiny, "--param", "services.api.cpu.cores", "--lo", "1", "--hi", "6",
                             "--set", "clients.web.load.rate_per_s=250", "--reps", "4", "--json"], capsys)
    assert rc == 0, err
    report = json.loads(out)
    assert report["status"] == "crossing" and report["direction"] == "falling"
    assert report["bracket"]["above"]["x"] == 2 and report["bracket"]["below"]["x"] == 3
    assert (report["bracket"]["lo"], report["bracket"]["hi"]) == (2, 3)
    assert report["message"].startswith("P(collapse) crosses 0.5 between 2 (p=1.00")
    assert all(isinstance(p["x"], int) for p in report["points"])


def test_no_crossing_is_a_finding_not_an_error(tiny, capsys):
    rc, out, err = boundary([tiny, *RATE, "--lo", "10", "--hi", "40", "--reps", "4"], capsys)
    assert rc == 0, err
    assert "no crossing in [10, 40]" in out
    rc, out, _ = boundary([tiny, *RATE, "--lo", "10", "--hi", "40", "--reps", "4", "--json"], capsys)
    report = json.loads(out)
    assert report["status"] == "no_crossing" and report["bracket"] is None
    assert report["ends"]["lo"]["side"] == report["ends"]["hi"]["side"] == "below"
    assert report["total_runs"] == 8


@pytest.mark.parametrize("argv, named", [
    ([*RATE[:1], "clients.web.load.rate_per_sec", "--lo", "1", "--hi", "2"], ["--param", "rate_per_sec"]),
    ([*RATE[:1], "clients.mobile.load.rate_per_s", "--lo", "1", "--hi", "2"], ["--param", "mobile"]),
    (["--param", "clients.web.transport.disable_keep_alives", "--lo", "0", "--hi", "1"],
     ["--param", "disable_keep_alives", "numeric"]),
    (["--param", "clients.web.load", "--lo", "0", "--hi", "1"], ["--param", "clients.web.load"]),
    ([*RATE, "--lo", "200", "--hi", "100"], ["--lo", "200", "100"]),
    ([*RATE, "--lo", "100", "--hi", "100"], ["--lo", "100"]),
    (["--param", "clients.web.transport.client_timeout", "--lo", "5 parsecs", "--hi", "1s"], ["--lo", "5 parsecs"]),
    ([*RATE, "--lo", "1", "--hi", "5 parsecs"], ["--hi", "5 parsecs"]),
    (["--param", "services.api.cpu.cores", "--lo", "1", "--hi", "2.5"], ["--hi", "2.5"]),
    ([*RATE, "--lo", "1", "--hi", "2", "--reps", "0"], ["--reps", "0"]),
    ([*RATE, "--lo", "1", "--hi", "2", "--reps", "4", "--max-reps", "3"], ["--max-reps", "3"]),
    ([*RATE, "--lo", "1", "--hi", "2", "--level", "1.5"], ["--level", "1.5"]),
    ([*RATE, "--lo", "1", "--hi", "2", "--level", "0"], ["--level", "0"]),
    ([*RATE, "--lo", "1", "--hi", "2", "--confidence", "1"], ["--confidence", "1"]),
    ([*RATE, "--lo", "1", "--hi", "2", "--tolerance", "0"], ["--tolerance", "0"]),
    ([*RATE, "--lo", "1", "--hi", "2", "--jobs", "0"], ["--jobs", "0"]),
    ([*RATE, "--lo", "1", "--hi", "2", "--seed", "-1"], ["--seed", "-1"]),
    ([*RATE, "--lo", "-5", "--hi", "100"], ["clients.web.load.rate_per_s", "-5"]),       # loading at A fails
    (["--param", "services.api.cpu.cores", "--lo", "0", "--hi", "4"], ["services.api.cpu.cores", "0"]),
    ([*RATE, "--lo", "1", "--hi", "2", "--set", "clients.web.nope=3"], ["clients.web.nope"]),
])
def test_bad_input_is_one_line_and_exit_2(tiny, capsys, argv, named):
    rc, out, err = boundary([tiny, *argv], capsys)
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("stormsim: error: ") and "Traceback" not in err
    for word in named:
        assert word in lines[0], (word, lines[0])


def test_a_scenario_that_does_not_exist(tmp_path, capsys):
    missing = str(tmp_path / "nope.yaml")
    rc, out, err = boundary([missing, *RATE, "--lo", "1", "--hi", "2"], capsys)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "nope.yaml" in err and "Traceback" not in err
    rc, _, err = boundary(["no-such-scenario", *RATE, "--lo", "1", "--hi", "2"], capsys)
    assert rc == 2 and "no-such-scenario" in err
