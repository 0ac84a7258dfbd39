"""Tests of experiments.figures on hand-made runs (no engine, no sim.outputs needed)."""

from __future__ import annotations

import dataclasses

import numpy as np
import plotly.graph_objects as go
import pytest

from experiments.figures import (
    COMPARISON_PANELS,
    MAX_POINTS_PER_TRACE,
    TIMESERIES_PANELS,
    comparison_figure,
    decimate,
    milestone_marks,
    timeseries_figure,
)


# ------------------------------------------------------------------ tests
# (synthetic_run is the fixture in conftest.py: a factory of a small hand-made run)


def _rows_of(fig: go.Figure) -> dict[str, list[go.Scatter]]:
    by_axis: dict[str, list[go.Scatter]] = {}
    for trace in fig.data:
        by_axis.setdefault(trace.yaxis or "y", []).append(trace)
    return by_axis


def _names(fig: go.Figure) -> set[str]:
    return {trace.name for trace in fig.data}


def test_timeseries_has_ten_panels_with_titles_and_units(synthetic_run):
    fig = timeseries_figure(synthetic_run())
    y_axes = [key for key in fig.layout.to_plotly_json() if key.startswith("yaxis")]
    assert len(y_axes) == len(TIMESERIES_PANELS) == 10
    titles = [a.text for a in fig.layout.annotations if a.name is None]
    assert titles[:10] == [title for title, _ in TIMESERIES_PANELS]
    for row, (_, unit) in enumerate(TIMESERIES_PANELS, start=1):
        axis = fig.layout["yaxis" if row == 1 else f"yaxis{row}"]
        assert axis.title.text == unit
    assert fig.layout.xaxis10.title.text == "time (s)"
    assert fig.layout.yaxis7.type == "log"
    # every panel has data
    assert len(_rows_of(fig)) == 10


def test_timeseries_traces(synthetic_run):
    fig = timeseries_figure(synthetic_run())
    names = _names(fig)
    for expected in ("server connections", "accept queue", "open fds", "goroutines", "memory",
                     "CPU utilization", "GC fraction", "offered (untouched)", "goodput (untouched)",
                     "offered (touched)", "goodput (touched)", "P50", "P99", "client_timeout",
                     "conn_reset", "retries", "in use orders", "waiters orders", "breakers open",
                     "breakers half-open", "retries the budget allows"):
        assert expected in names, expected
    fd_limit = next(t for t in fig.data if t.name.startswith("fd limit"))
    assert fd_limit.line.dash == "dash" and fd_limit.yaxis == "y2"
    assert set(np.asarray(fd_limit.y)) == {1024.0}
    mem_limit = next(t for t in fig.data if t.name.startswith("memory limit"))
    assert mem_limit.y[0] == 256.0 and mem_limit.yaxis == "y4"
    # error kinds that never happened are left out; the ones that did are stacked
    errors = [t for t in fig.data if t.yaxis == "y8" and t.stackgroup]
    assert {t.name for t in errors} == {"client_timeout", "conn_reset"}
    # goodput is counts / sample_interval
    run = synthetic_run()
    goodput = next(t for t in fig.data if t.name == "goodput (untouched)")
    np.testing.assert_allclose(goodput.y, run.windows["successes_untouched"] / 0.1)


def test_fault_windows_shade_every_panel_and_are_labelled(synthetic_run):
    fig = timeseries_figure(synthetic_run())
    faults = [s for s in fig.layout.shapes if (s.name or "").startswith("fault:")]
    assert len(faults) == 10
    assert {s.yref for s in faults} == {"y domain"} | {f"y{i} domain" for i in range(2, 11)}
    assert all(s.x0 == 10.0 and s.x1 == 30.0 for s in faults)
    labels = [a for a in fig.layout.annotations if (a.name or "").startswith("fault:")]
    assert len(labels) == 1 and "db_lock" in labels[0].text


def test_milestones_are_lines_and_annotations(synthetic_run):
    run = synthetic_run()
    fig = timeseries_figure(run)
    texts = " | ".join(a.text for a in fig.layout.annotations if (a.name or "").startswith("milestone:"))
    for label in ("trigger 10.0 s", "collapse 14.0 s", "fd exhausted 18.0 s", "OOM kill 25.0 s",
                  "restart 30.0 s", "recovered 40.0 s"):
        assert label in texts
    lines = [s for s in fig.layout.shapes if (s.name or "").startswith("milestone:")]
    assert len(lines) == 6 * 10
    assert [m.kind for m in milestone_marks(run)] == [
        "trigger", "collapse", "fd_exhausted", "oom_kill", "restart", "recovered"]


def test_truncation_and_several_kills_are_marked(synthetic_run):
    run = synthetic_run()
    run.milestones = dataclasses.replace(run.milestones, kills=[25.0, 33.0], restarts=[30.0, 38.0],
                                         truncated=True, truncated_by="events", end_at_s=45.0)
    labels = [m.label for m in milestone_marks(run)]
    assert "OOM kill 1" in labels and "OOM kill 2" in labels and "restart 2" in labels
    assert "truncated (events)" in labels


def test_downsampling_keeps_traces_short_and_peaks(synthetic_run):
    run = synthetic_run(duration_s=2000.0, sample_interval=0.1, n_requests=10)
    peak_at = 12345
    run.levels["server_connections"][peak_at] = 99_999.0
    fig = timeseries_figure(run)
    assert all(len(trace.x) <= MAX_POINTS_PER_TRACE for trace in fig.data)
    conns = next(t for t in fig.data if t.name == "server connections")
    assert max(conns.y) == 99_999.0
    assert np.all(np.diff(np.asarray(conns.x)) > 0)


def test_decimate_short_series_is_unchanged_and_nan_safe():
    x = np.arange(10.0)
    y = np.arange(10.0)
    assert np.array_equal(decimate(x, y)[1], y)
    y_long = np.full(10_000, np.nan)
    y_long[5000] = 3.0
    xs, ys = decimate(np.arange(10_000.0), y_long, max_points=100)
    assert len(xs) <= 100 and np.nanmax(ys) == 3.0


def test_missing_series_leave_panels_empty_instead_of_failing(synthetic_run):
    run = synthetic_run()
    run.windows = {}
    run.summary = {}
    run.levels = {"time_s": run.levels["time_s"], "server_connections": run.levels["server_connections"]}
    fig = timeseries_figure(run)
    assert len([k for k in fig.layout.to_plotly_json() if k.startswith("yaxis")]) == 10
    # milestones still come from the engine's Milestones when the summary is missing
    assert "trigger" in [m.kind for m in milestone_marks(run)]
    fig.to_json()


def test_default_fd_limit_does_not_squash_the_panel(synthetic_run):
    run = synthetic_run()
    service = run.scenario.services["api"]
    big = dataclasses.replace(service, fd_limit=524288)
    run.scenario = dataclasses.replace(run.scenario, services={"api": big})
    fig = timeseries_figure(run)
    assert fig.layout.yaxis2.range[1] < 2000
    assert any(a.name == "limit_off_scale" for a in fig.layout.annotations)


def test_comparison_overlays_runs_with_one_colour_each(synthetic_run):
    a, b = synthetic_run(seed=1), synthetic_run(seed=2)
    b.summary["collapse_at_s"] = None
    fig = comparison_figure([("baseline", a), ("with budget", b)])
    y_axes = [key for key in fig.layout.to_plotly_json() if key.startswith("yaxis")]
    assert len(y_axes) == len(COMPARISON_PANELS) == 5
    assert len(fig.data) == 2 * 5
    for label in ("baseline", "with budget"):
        traces = [t for t in fig.data if t.name == label]
        assert len({t.line.color for t in traces}) == 1
        assert sum(bool(t.showlegend) for t in traces) == 1
    assert fig.data[0].line.color != fig.data[5].line.color
    assert fig.layout.yaxis5.type == "log"
    # the shared fault window is shaded once per panel, not once per run
    assert len([s for s in fig.layout.shapes if (s.name or "").startswith("fault:")]) == 5
    collapse_lines = [s for s in fig.layout.shapes if (s.name or "").startswith("milestone:collapse")]
    assert len(collapse_lines) == 5


@pytest.mark.parametrize("n_runs", [0, 1])
def test_comparison_handles_few_runs(n_runs, synthetic_run):
    fig = comparison_figure([(f"run{i}", synthetic_run()) for i in range(n_runs)])
    assert isinstance(fig, go.Figure)
    fig.to_json()
