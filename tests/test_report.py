"""Tests of experiments.report: self-contained HTML pages for one run and for a comparison."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from experiments import report
from experiments.report import (
    format_kpi,
    render_report_html,
    untouched_goodput_rps,
    write_comparison_html,
    write_report_html,
)
from sim.result import ERROR_CODE, REQUEST_COLUMNS, ATTEMPT_COLUMNS, FaultWindow, Milestones, RunResult
from sim.schema import (
    ClientConfig, DatabaseConfig, ERROR_KINDS, FaultConfig, MemoryConfig, RouteConfig, Scenario,
    ServiceConfig, StepConfig, TableConfig,
)


# ---------------------------------------------------------------- fixture
# (the same small fake run is built in test_figures.py and test_run_files.py)

def synthetic_run(duration_s: float = 50.0, sample_interval: float = 0.1, n_requests: int = 300,
                  seed: int = 7) -> RunResult:
    """~50 s, a db_lock on checkout from 10 s to 30 s, fd exhaustion, an OOM kill and a restart."""
    scenario = Scenario(
        name="lock-storm", description="A lock on orders <b>spreads</b> to browse.", seed=seed,
        duration=duration_s, sample_interval=sample_interval,
        services={"api": ServiceConfig(
            fd_limit=1024, memory=MemoryConfig(limit=256 * 1024 * 1024, restart_after=5.0),
            routes={"checkout": RouteConfig(steps=(StepConfig(query="orders.orders"),)),
                    "browse": RouteConfig(steps=(StepConfig(cpu=0.002),))})},
        databases={"orders": DatabaseConfig(tables={"orders": TableConfig()})},
        clients={"web": ClientConfig(target="api")},
        faults=(FaultConfig(kind="db_lock", at=10.0, duration=20.0, target="orders.orders"),),
    )
    rng = np.random.default_rng(seed)
    t = np.round(np.arange(0.0, duration_s, sample_interval), 9)
    n = len(t)
    storm = ((t >= 10) & (t < 30)).astype(float)
    dead = (t >= 25) & (t < 30)
    conns = np.where(dead, 0, 20 + 900 * storm * np.clip((t - 10) / 8, 0, 1))
    levels = {
        "time_s": t, "alive": (~dead).astype(float), "server_connections": conns,
        "accept_queue": np.where(conns >= 1000, 50.0, 0.0), "open_fds": np.minimum(conns + 6, 1024),
        "goroutines": 2 * conns + 5, "memory_mib": 32 + conns * 0.02,
        "cpu_utilization": np.clip(0.2 + 0.5 * storm + rng.normal(0, 0.02, n), 0, 1),
        "gc_fraction": 0.05 * storm, "inflight_requests": conns, "inflight.checkout": conns * 0.8,
        "inflight.browse": conns * 0.2, "db_in_use.orders": np.minimum(conns, 10.0),
        "db_waiters.orders": np.maximum(conns - 10, 0.0), "client_connections": conns + 3,
        "client_inflight": conns,
    }
    arr_u = rng.poisson(3, n).astype(float)
    arr_t = rng.poisson(3, n).astype(float)
    succ_u = np.where(storm > 0, np.floor(arr_u * 0.3), arr_u)
    succ_t = np.where(storm > 0, 0.0, arr_t)
    fails = (arr_u - succ_u) + (arr_t - succ_t)
    windows: dict[str, np.ndarray] = {
        "time_s": t, "arrivals": arr_u + arr_t, "successes": succ_u + succ_t, "failures": fails,
        "retries": np.floor(fails / 2), "arrivals_untouched": arr_u, "successes_untouched": succ_u,
        "arrivals_touched": arr_t, "successes_touched": succ_t,
        "p50_ms": 3 + 2000 * storm, "p99_ms": np.where(arr_u > 0, 10 + 9000 * storm, np.nan),
        "offered_untouched_rps": arr_u / sample_interval,
        "goodput_untouched_rps": succ_u / sample_interval,
    }
    for kind in ERROR_KINDS:
        windows[f"failures.{kind}"] = np.zeros(n)
    windows["failures.client_timeout"] = np.floor(fails * 0.7)
    windows["failures.conn_reset"] = fails - windows["failures.client_timeout"]

    requests = {name: np.zeros(n_requests, dtype=dtype) for name, dtype in REQUEST_COLUMNS.items()}
    requests["request_id"] = np.arange(n_requests)
    requests["client"][:] = 0
    requests["route"] = (np.arange(n_requests) % 2).astype(np.int32)
    requests["touched"] = requests["route"] == 0
    requests["arrival_at"] = np.sort(rng.uniform(0, duration_s, n_requests))
    requests["end_at"] = requests["arrival_at"] + rng.exponential(0.05, n_requests)
    requests["error"] = np.where(rng.random(n_requests) < 0.3, ERROR_CODE["client_timeout"], 0).astype(np.int8)
    requests["error"][-3:] = -1
    requests["end_at"][-3:] = np.nan
    requests["attempts"][:] = 1
    attempts = {name: np.zeros(n_requests, dtype=dtype) for name, dtype in ATTEMPT_COLUMNS.items()}
    attempts["request_id"] = requests["request_id"].copy()
    attempts["start_at"] = requests["arrival_at"].copy()
    attempts["end_at"] = requests["end_at"].copy()
    attempts["error"] = requests["error"].copy()
    attempts["new_conn"][::5] = True

    milestones = Milestones(
        trigger_at_s=10.0,
        faults=[FaultWindow("db_lock", 10.0, 30.0, "orders.orders", ("checkout",))],
        kills=[25.0], restarts=[30.0], fd_exhausted_at_s=18.0, oom_killed_at_s=25.0,
        end_at_s=duration_s, alive_at_end=True)
    summary = {
        "scenario": scenario.name, "seed": seed, "duration_s": duration_s, "offered_rps": 6.0,
        "goodput_rps": 4.1, "success_rate": 0.683, "p50_ms": 4.2, "p90_ms": 1500.0,
        "p99_ms": 9010.5, "p999_ms": 9900.0, "p99_success_ms": 12.5,
        "attempts_per_request": 1.4, "incomplete": 3,
        "errors": {"client_timeout": 80, "conn_reset": 15},
        "max_server_connections": 920, "max_accept_queue": 50, "max_open_fds": 926,
        "max_goroutines": 1845, "peak_memory_mib": 50.4, "max_cpu_utilization": 0.74,
        "wasted_work_fraction": 0.42, "trigger_at_s": 10.0, "collapse_at_s": 14.0,
        "collapse_time_s": 4.0, "recovered_at_s": 40.0, "outcome": "recovered", "crashes": 1,
        "crash_loop": False, "fd_exhausted_at_s": 18.0, "oom_killed_at_s": 25.0,
        "truncated": False, "truncated_by": None, "events": 123456, "wall_s": 1.25,
        "provenance": {"stormsim": "0.1.0", "git": "abc123", "scenario_hash": "deadbeef",
                       "seed": seed, "replication": 0},
    }
    return RunResult(
        scenario=scenario, seed=seed, replication=0, route_names=["checkout", "browse"],
        client_names=["web"], requests=requests, attempts=attempts, levels=levels,
        milestones=milestones, counters={"events": 123456.0}, wall_s=1.25,
        provenance=dict(summary["provenance"]), windows=windows, summary=summary)


# ------------------------------------------------------------------ tests

PLOTLY_JS_BANNER = re.compile(r"\* plotly\.js v\d+\.\d+\.\d+")


def _assert_self_contained(text: str) -> None:
    assert len(PLOTLY_JS_BANNER.findall(text)) == 1, "plotly.js must be inlined exactly once"
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, flags=re.I)
    assert '<script src="http' not in text
    assert not re.search(r"<link[^>]*href\s*=\s*[\"']https?:", text, flags=re.I)


def _without_scripts(text: str) -> str:
    return re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)


def test_report_is_self_contained_and_complete(tmp_path):
    run = synthetic_run()
    path = write_report_html(run, tmp_path / "report.html")
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    _assert_self_contained(text)
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    page = _without_scripts(text)
    # header
    assert "<h1>lock-storm" in page
    assert "A lock on orders &lt;b&gt;spreads&lt;/b&gt; to browse." in page   # escaped
    assert 'class="badge outcome-recovered"' in page
    assert "seed <code>7</code>" in page and "deadbeef" in page
    # every summary key appears in the KPI table, with units
    for key in run.summary:
        assert f'<td class="key">{key}</td>' in page, key
    assert "9,010 ms" in page and "68.3 %" in page and "50.4 MiB" in page and "1.4 &times;" in page
    assert "6 req/s" in page
    # errors as a small table
    assert '<table class="inner errors"><tr><td>client_timeout</td><td class="num">80</td>' in page
    # milestones
    for text_ in ("fault db_lock", "trigger</b> at 10.000 s", "collapse</b> at 14.000 s",
                  "fd exhausted</b> at 18.000 s", "OOM kill</b> at 25.000 s", "restart</b> at 30.000 s",
                  "recovered</b> at 40.000 s"):
        assert text_ in page, text_
    # the figure and the scenario
    assert 'id="timeseries"' in page
    assert "<details><summary>Scenario as YAML</summary><pre>" in page
    assert "fd_limit: 1024" in page
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_truncation_and_crash_loop_are_listed():
    run = synthetic_run()
    run.milestones = dataclasses.replace(run.milestones, truncated=True, truncated_by="wall_time",
                                         end_at_s=44.0, kills=[25.0, 33.0], restarts=[30.0])
    run.summary.update(truncated=True, truncated_by="wall_time", crash_loop=True, outcome="undecided")
    page = _without_scripts(render_report_html(run))
    assert "truncated (wall_time)</b> at 44.000 s" in page
    assert "guard <code>wall_time</code>" in page
    assert "crash loop" in page and "OOM kill 2" in page
    assert 'class="badge outcome-undecided"' in page


def test_report_without_summary_or_windows_still_renders():
    run = synthetic_run()
    run.summary = {}
    run.windows = {}
    run.provenance = {}
    text = render_report_html(run)
    _assert_self_contained(text)
    assert "No summary" in text and 'class="badge outcome-unknown"' in text


def test_scenario_yaml_falls_back_to_a_plain_dump(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_loader(name, *args, **kwargs):
        if name == "sim.scenario_loader":
            raise ImportError("not written yet")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_loader)
    text = report.scenario_yaml(synthetic_run())
    assert "fd_limit: 1024" in text and "limit: 268435456" in text   # bytes, tuples as lists
    assert "name: lock-storm" in text


@pytest.mark.parametrize("value, unit, expected", [
    (None, "at", "never"), (None, "ms", "n/a"), (0.5, "%", "50 %"), (1234.5678, "ms", "1,235 ms"),
    (3.25, "s", "3.25 s"), (True, "bool", "yes"), (12, "int", "12"), ({"a": 1}, "", "<code>1</code>"),
    (float("nan"), "ms", "n/a"), (np.int64(7), "int", "7"), (np.float64(12.34), "MiB", "12.3 MiB"),
])
def test_format_kpi(value, unit, expected):
    assert expected in format_kpi(value, unit)


def test_untouched_goodput_from_windows():
    run = synthetic_run()
    expected = run.windows["successes_untouched"][run.windows["time_s"] > 0].sum() / 50.0
    assert untouched_goodput_rps(run) == pytest.approx(expected)
    run.windows = {}
    assert untouched_goodput_rps(run) is None
    run.summary["goodput_untouched_rps"] = 2.5
    assert untouched_goodput_rps(run) == 2.5


def test_untouched_goodput_judges_all_traffic_when_everything_was_touched():
    run = synthetic_run()
    run.windows["arrivals_untouched"] = np.zeros_like(run.windows["arrivals_untouched"])
    run.windows["successes_untouched"] = np.zeros_like(run.windows["successes_untouched"])
    expected = run.windows["successes"][run.windows["time_s"] > 0].sum() / 50.0
    assert untouched_goodput_rps(run) == pytest.approx(expected)


def test_comparison_page(tmp_path):
    a, b = synthetic_run(seed=1), synthetic_run(seed=2)
    b.summary.update(outcome="metastable", collapse_time_s=None, max_open_fds=1024)
    path = write_comparison_html([("baseline", a), ("no retries", b)], tmp_path / "cmp.html")
    text = path.read_text(encoding="utf-8")
    _assert_self_contained(text)
    page = _without_scripts(text)
    table = page[page.index('<table class="comparison">'):page.index("</table>")]
    assert table.count("<tr>") == 3                       # header + one row per run
    for header in ("Outcome", "Time to collapse", "Max server connections", "Max open fds",
                   "Max goroutines", "Peak memory", "P99 latency", "Untouched goodput"):
        assert f"<th>{header}</th>" in table
    assert "baseline" in table and "no retries" in table
    assert "outcome-recovered" in table and "outcome-metastable" in table
    assert "1,024" in table and "req/s" in table and "4 s" in table
    assert 'id="comparison"' in page
    assert [p.name for p in tmp_path.iterdir()] == ["cmp.html"]
