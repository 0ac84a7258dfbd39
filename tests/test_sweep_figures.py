"""Tests of experiments.sweep_figures on small synthetic cells tables (no engine, no files)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from experiments.sweep_figures import (
    amplification_bars,
    axis_type,
    brick_edges,
    collapse_map,
    empirical_cdf,
    format_value,
    heatmap,
    latency_cdfs,
    lines_ci,
    logistic_tipping_line,
    metric_label,
    metric_unit,
    run_timeseries,
    tipping_points,
    wasted_work_bars,
)
from experiments.sweep_summary import summarize_cells, summarize_groups

TIMEOUT = "clients.web.transport.client_timeout"
CONNS = "services.api.max_conns"
UNITS = {TIMEOUT: "s", CONNS: ""}
TIMEOUTS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)     # spans 60x: a log axis
CONNS_VALUES = (100, 200, 400)                  # spans 4x: linear
METRICS = ["p99_ms", "attempts_per_request", "wasted_work_fraction"]


def _runs(replications: int = 5) -> pd.DataFrame:
    """Collapse more likely with a longer timeout and more connections; deterministic."""
    rng = np.random.default_rng(3)
    rows, cell = [], 0
    for conns in CONNS_VALUES:
        for timeout in TIMEOUTS_S:
            p = 1.0 / (1.0 + np.exp(-2.0 * (np.log(timeout / 3.0) + (conns - 200) / 150)))
            for rep in range(replications):
                collapsed = bool(rng.random() < p)
                rows.append({
                    "run_key": f"{cell}-{rep}", "cell": cell, "replication": rep, "seed": rep, "status": "ok",
                    "error": "", "wall_s": 1.0, TIMEOUT: timeout, CONNS: conns,
                    "p99_ms": float(rng.normal(100 * timeout, 5)), "collapse_at_s": 20.0 if collapsed else None,
                    "outcome": "crashed" if collapsed else "stable", "attempts_per_request": 1 + rng.random(),
                    "wasted_work_fraction": rng.random() / 10,
                })
            cell += 1
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cells() -> pd.DataFrame:
    return summarize_cells(_runs(), [TIMEOUT, CONNS], METRICS)


@pytest.fixture(scope="module")
def one_factor_cells() -> pd.DataFrame:
    return summarize_groups(_runs(), [TIMEOUT], METRICS)


def _types(fig: go.Figure) -> list[str]:
    return [trace.type for trace in fig.data]


# ------------------------------------------------------------------ labels and axes


def test_units_and_labels():
    assert metric_unit("p99_ms") == "ms" and metric_label("p99_ms") == "p99_ms (ms)"
    assert metric_unit("collapse_time_s") == "s" and metric_unit("collapse_at_s") == "s"
    assert metric_unit("goodput_rps") == "req/s" and metric_unit("peak_memory_mib") == "MiB"
    assert metric_unit("p_collapse") == "probability" and metric_unit("errors.eof") == "requests"
    assert metric_label("max_goroutines") == "max_goroutines"
    assert format_value(65536, "B") == "64 KiB" and format_value(0.5, "s") == "0.5 s"
    assert format_value("lifo") == "lifo"


def test_axis_type():
    assert axis_type(TIMEOUTS_S) == "log"
    assert axis_type(CONNS_VALUES) == "linear"
    assert axis_type([0.0, 1.0, 100.0]) == "linear"      # zero: no log axis
    assert axis_type(["fifo", "lifo"]) == "category"


def test_brick_edges_are_midpoints_in_axis_space():
    assert brick_edges([1.0, 2.0, 4.0]) == pytest.approx([0.5, 1.5, 3.0, 5.0])
    assert brick_edges([1.0, 100.0], log=True) == pytest.approx([0.1, 10.0, 1000.0])
    assert brick_edges([0, 1, 2]) == pytest.approx([-0.5, 0.5, 1.5, 2.5])


# ------------------------------------------------------------------ heatmap


def test_heatmap(cells):
    fig = heatmap(cells, TIMEOUT, CONNS, "p99_ms", units=UNITS)
    assert _types(fig) == ["heatmap"]
    trace = fig.data[0]
    assert np.asarray(trace.z).shape == (len(CONNS_VALUES), len(TIMEOUTS_S))
    assert len(trace.x) == len(TIMEOUTS_S) + 1                       # brick edges
    assert trace.colorbar.title.text == "p99_ms (ms)"
    assert trace.texttemplate and all(text for row in trace.text for text in row)
    assert fig.layout.xaxis.title.text == f"{TIMEOUT} (s)"
    assert fig.layout.yaxis.title.text == CONNS
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "linear"
    assert "ms" in fig.layout.title.text
    expected = cells.set_index([CONNS, TIMEOUT]).loc[(400, 30.0), "p99_ms.mean"]
    assert np.asarray(trace.z)[-1, -1] == pytest.approx(expected)


def test_heatmap_of_a_categorical_factor(cells):
    named = cells.assign(**{CONNS: cells[CONNS].map({100: "small", 200: "medium", 400: "large"})})
    fig = heatmap(named, TIMEOUT, CONNS, "p99_ms", units=UNITS)
    assert list(fig.layout.yaxis.ticktext) == ["small", "medium", "large"]     # first-appearance order
    assert list(fig.layout.yaxis.tickvals) == [0, 1, 2]


# ------------------------------------------------------------------ collapse map


def test_tipping_points():
    p = np.array([[0.0, 0.25, 0.75, 1.0],       # crosses 0.5 halfway between x=2 and x=3
                  [0.0, 0.0, 0.5, 1.0],         # exactly at x=3
                  [0.0, 0.1, 0.2, 0.3],         # never
                  [1.0, 0.6, 0.4, np.nan]])     # falling, crosses between x=2 and x=3
    x = [1.0, 2.0, 3.0, 4.0]
    out = tipping_points(x, p, 0.5)
    assert out[0] == pytest.approx(2.5) and out[1] == pytest.approx(3.0)
    assert np.isnan(out[2]) and out[3] == pytest.approx(2.5)
    logged = tipping_points([1.0, 100.0], np.array([[0.0, 1.0]]), 0.5, log_x=True)
    assert logged[0] == pytest.approx(10.0)     # halfway on a log axis


def test_collapse_map_has_contour_and_wilson_hover(cells):
    fig = collapse_map(cells, TIMEOUT, CONNS, units=UNITS)
    assert _types(fig) == ["heatmap", "scatter"]
    heat, contour = fig.data
    assert (heat.zmin, heat.zmax) == (0.0, 1.0)
    assert "Wilson CI" in heat.hovertemplate
    assert np.asarray(heat.customdata).shape == (len(CONNS_VALUES), len(TIMEOUTS_S), 6)
    assert contour.name == "tipping point (p = 0.5, interpolated per row)"
    assert len(contour.y) == len(CONNS_VALUES)
    expected = tipping_points(TIMEOUTS_S, np.asarray(heat.z, dtype=float), 0.5, log_x=True)
    np.testing.assert_allclose(np.asarray(contour.x, dtype=float), expected)
    assert np.isfinite(np.asarray(contour.x, dtype=float)).any()
    assert fig.layout.xaxis.title.text == f"{TIMEOUT} (s)"
    assert heat.colorbar.title.text == "P(collapse)"


def test_collapse_map_other_outcomes_and_levels(cells):
    fig = collapse_map(cells, TIMEOUT, CONNS, outcome="crashed", level=0.25)
    assert fig.data[0].colorbar.title.text == "P(crashed)"
    assert fig.data[1].name.startswith("tipping point (p = 0.25")
    with pytest.raises(ValueError, match="'sad'"):
        collapse_map(cells, TIMEOUT, CONNS, outcome="sad")
    with pytest.raises(ValueError, match="level"):
        collapse_map(cells, TIMEOUT, CONNS, level=1.0)


def _scattered_cells() -> pd.DataFrame:
    """40 points of an LHS-like design: collapse when log(t / 3) + (c - 250) / 150 > 0."""
    rng = np.random.default_rng(0)
    rows = []
    for cell in range(40):
        t, c = float(np.exp(rng.uniform(np.log(0.3), np.log(30)))), float(rng.uniform(50, 500))
        collapsed = np.log(t / 3) + (c - 250) / 150 > 0
        for rep in range(3):
            rows.append({"cell": cell, "status": "ok", TIMEOUT: t, CONNS: c, "p99_ms": 100 * t + rep,
                         "collapse_at_s": 1.0 if collapsed else None, "outcome": "stable"})
    return summarize_cells(pd.DataFrame(rows), [TIMEOUT, CONNS], ["p99_ms"])


def test_scattered_designs_get_markers_and_a_fitted_tipping_line():
    cells = _scattered_cells()
    heat = heatmap(cells, TIMEOUT, CONNS, "p99_ms", units=UNITS)
    assert _types(heat) == ["scatter"] and heat.data[0].mode == "markers"
    assert heat.data[0].marker.colorbar.title.text == "p99_ms (ms)"
    fig = collapse_map(cells, TIMEOUT, CONNS, units=UNITS)
    assert _types(fig) == ["scatter", "scatter"]
    points, line = fig.data
    assert (points.marker.cmin, points.marker.cmax) == (0.0, 1.0) and "Wilson CI" in points.hovertemplate
    assert line.name == "tipping point (p = 0.5, logistic fit)" and len(line.x) > 10
    # the fitted line lies near the true boundary log(t / 3) + (c - 250) / 150 = 0
    truth = 250 - 150 * np.log(np.asarray(line.x) / 3)
    assert np.median(np.abs(np.asarray(line.y) - truth)) < 40


def test_logistic_tipping_line_needs_both_outcomes():
    u, v, n = np.arange(5.0), np.array([0.0, 3.0, 1.0, 4.0, 2.0]), np.full(5, 3.0)
    assert logistic_tipping_line(u, v, np.zeros(5), n, 0.5) is None          # never collapsed
    assert logistic_tipping_line(u, v, n, n, 0.5) is None                    # always collapsed
    assert logistic_tipping_line(u[:2], v[:2], np.array([0.0, 3.0]), n[:2], 0.5) is None   # too few points
    line_u, line_v = logistic_tipping_line(u, v, np.array([0.0, 0.0, 1.0, 3.0, 3.0]), n, 0.5)
    assert len(line_u) == len(line_v) > 0
    assert np.all((line_u >= 0) & (line_u <= 4)) and np.all((line_v >= 0) & (line_v <= 4))


# ------------------------------------------------------------------ lines


def test_lines_ci_one_band_and_line_per_group(cells):
    fig = lines_ci(cells, TIMEOUT, "p99_ms", by=CONNS, units=UNITS)
    assert _types(fig) == ["scatter"] * (2 * len(CONNS_VALUES))
    bands = [t for t in fig.data if t.fill == "toself"]
    lines = [t for t in fig.data if t.fill != "toself"]
    assert len(bands) == len(lines) == len(CONNS_VALUES)
    assert [t.name for t in lines] == [f"max_conns = {c}" for c in CONNS_VALUES]
    band, group = bands[0], cells[cells[CONNS] == 100].sort_values(TIMEOUT)
    assert list(band.x) == list(group[TIMEOUT]) + list(group[TIMEOUT])[::-1]
    assert list(band.y) == pytest.approx(list(group["p99_ms.ci_high"]) + list(group["p99_ms.ci_low"])[::-1])
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.title.text == f"{TIMEOUT} (s)"
    assert fig.layout.yaxis.title.text == "p99_ms (ms)"
    assert fig.layout.legend.title.text == CONNS


def test_lines_ci_of_a_probability_uses_the_wilson_band(one_factor_cells):
    fig = lines_ci(one_factor_cells, TIMEOUT, "p_collapse", units=UNITS)
    band, line = fig.data
    assert band.fill == "toself" and line.mode == "lines+markers"
    assert list(line.y) == pytest.approx(list(one_factor_cells["p_collapse"]))
    assert tuple(fig.layout.yaxis.range) == (-0.02, 1.02)
    assert "Wilson" in fig.layout.title.text and "probability" in fig.layout.yaxis.title.text


def test_lines_ci_skips_points_without_an_interval():
    cells = pd.DataFrame({TIMEOUT: [1.0, 2.0, 3.0], "m.mean": [1.0, 2.0, 3.0],
                          "m.ci_low": [0.5, np.nan, 2.5], "m.ci_high": [1.5, np.nan, 3.5]})
    band, _ = lines_ci(cells, TIMEOUT, "m").data
    assert list(band.x) == [1.0, 3.0, 3.0, 1.0]


# ------------------------------------------------------------------ bars and CDFs


def test_amplification_and_wasted_work_bars(cells, one_factor_cells):
    fig = amplification_bars(cells, [TIMEOUT, CONNS], units=UNITS)
    assert _types(fig) == ["bar"] * len(CONNS_VALUES)
    bar = fig.data[0]
    assert list(bar.x) == [format_value(t, "s") for t in TIMEOUTS_S] == ["0.5 s", "1 s", "2 s", "5 s", "10 s", "30 s"]
    group = cells[cells[CONNS] == 100].sort_values(TIMEOUT)
    half_up = group["attempts_per_request.ci_high"] - group["attempts_per_request.mean"]
    np.testing.assert_allclose(bar.error_y.array, half_up)
    assert bar.error_y.symmetric is False
    assert fig.layout.yaxis.title.text == "attempts_per_request (attempts per request)"
    assert any(shape.y0 == 1.0 for shape in fig.layout.shapes)          # the no-retries line
    single = wasted_work_bars(one_factor_cells, TIMEOUT, units=UNITS)
    assert _types(single) == ["bar"]
    assert list(single.data[0].x) == ["0.5 s", "1 s", "2 s", "5 s", "10 s", "30 s"]
    assert single.layout.yaxis.title.text == "wasted_work_fraction (fraction)"
    assert single.layout.xaxis.title.text == f"{TIMEOUT} (s)"
    per_cell = wasted_work_bars(cells, None)
    assert len(per_cell.data[0].x) == len(cells)


def test_latency_cdfs():
    rng = np.random.default_rng(1)
    fast = rng.lognormal(2.0, 0.5, 5000)
    slow = np.concatenate([rng.lognormal(5.0, 0.5, 900), np.full(100, np.nan)])   # 10 % unfinished
    fig = latency_cdfs({"fast": fast, "slow": slow}, max_points=500)
    assert _types(fig) == ["scatter", "scatter"]
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.title.text == "request latency (ms)"
    first, second = fig.data
    assert len(first.x) <= 500 and first.y[-1] == pytest.approx(1.0)
    assert second.y[-1] == pytest.approx(0.9)
    assert "10.0% unfinished" in second.name and first.name == "fast (n = 5,000)"
    assert np.all(np.diff(first.x) >= 0) and np.all(np.diff(first.y) > 0)


def test_empirical_cdf_counts_zero_latencies():
    x, y = empirical_cdf([0.0, 0.0, 10.0, 20.0])
    assert list(x) == [10.0, 20.0] and list(y) == [0.75, 1.0]


def test_run_timeseries_delegates(synthetic_run):
    fig = run_timeseries(synthetic_run())
    assert sum(1 for key in fig.layout.to_plotly_json() if key.startswith("yaxis")) == 10


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("draw,column", [
    (lambda c: heatmap(c, TIMEOUT, CONNS, "p98_ms"), "p98_ms.mean"),
    (lambda c: heatmap(c, TIMEOUT, "nope", "p99_ms"), "nope"),
    (lambda c: collapse_map(c.drop(columns=["p_collapse.ci_low"]), TIMEOUT, CONNS), "p_collapse.ci_low"),
    (lambda c: lines_ci(c, "nope", "p99_ms"), "nope"),
    (lambda c: lines_ci(c, TIMEOUT, "p99_ms", by="other"), "other"),
    (lambda c: amplification_bars(c.drop(columns=["attempts_per_request.mean"]), TIMEOUT),
     "attempts_per_request.mean"),
    (lambda c: wasted_work_bars(c, "nope"), "nope"),
])
def test_missing_columns_are_named(cells, draw, column):
    with pytest.raises(ValueError, match=f"no column '{column}'"):
        draw(cells)


def test_several_rows_per_point_are_refused(cells):
    with pytest.raises(ValueError, match="summarize_groups"):
        lines_ci(cells, TIMEOUT, "p99_ms")          # three cells per timeout (one per max_conns)
    with pytest.raises(ValueError, match="rows of the cells share"):
        heatmap(pd.concat([cells, cells.head(1)]), TIMEOUT, CONNS, "p99_ms")
    with pytest.raises(ValueError, match="no latencies"):
        latency_cdfs({})
