"""Plotly figure factories for sweeps: metrics and outcome probabilities over factors.

Every factory is pure: a cells table in (``experiments.sweep_summary.summarize_cells``
or ``summarize_groups``: one row per point, ``<metric>.mean``/``.ci_low``/``.ci_high``
columns, ``p_collapse`` and friends), ``plotly.graph_objects.Figure`` out, no file
I/O. Axis titles carry units: a factor's from the manifest's ``factor_units``
(pass them as ``units``), a metric's from its name (``_ms``, ``_s``, ``_rps``,
``_mib``). A numeric factor whose positive values span more than ``LOG_SPAN`` gets
a log axis. A missing column is a ValueError naming it; several rows for one
point (a third factor not summarised away) too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from scipy import optimize, special

from experiments.figures import RUN_COLOURS, timeseries_figure
from experiments.report import format_number
from experiments.sweep_summary import OUTCOME_PROBABILITY, PROBABILITIES
from sim.result import RunResult

LOG_SPAN = 20.0                 # max/min above which a positive factor gets a log axis
MIN_GRID_FILL = 0.5             # below this share of the grid filled, points are markers, not squares
LOGISTIC_RIDGE = 0.01           # keeps the tipping-line fit finite when outcomes separate perfectly
MAX_CDF_POINTS = 2000
FIGURE_HEIGHT_PX = 520
BAND_ALPHA = 0.18
PROBABILITY_COLOURSCALE = "RdYlGn_r"     # 0 green, 1 red
METRIC_COLOURSCALE = "Viridis"

METRIC_UNITS: dict[str, str] = {
    "success_rate": "fraction",
    "wasted_work_fraction": "fraction",
    "max_cpu_utilization": "fraction of cores",
    "attempts_per_request": "attempts per request",
    "truncated": "share of runs",
    "crash_loop": "share of runs",
    **{name: "probability" for name in PROBABILITIES},
}
SUFFIX_UNITS: tuple[tuple[str, str], ...] = (
    ("_ms", "ms"), ("_at_s", "s"), ("_s", "s"), ("_rps", "req/s"), ("_per_s", "/s"),
    ("_mib", "MiB"), ("_fraction", "fraction"),
)
BYTE_UNITS: tuple[tuple[float, str], ...] = ((1024.0 ** 3, "GiB"), (1024.0 ** 2, "MiB"), (1024.0, "KiB"))


# ------------------------------------------------------------------ labels and axes


def metric_unit(metric: str) -> str:
    """The unit of a summary metric, from its name ("" when it is a plain count)."""
    if metric in METRIC_UNITS:
        return METRIC_UNITS[metric]
    if metric.startswith("errors."):
        return "requests"
    return next((unit for suffix, unit in SUFFIX_UNITS if metric.endswith(suffix)), "")


def metric_label(metric: str) -> str:
    """``p99_ms (ms)``: the metric with its unit, for axis and colour-bar titles."""
    unit = metric_unit(metric)
    return f"{metric} ({unit})" if unit else metric


def factor_label(factor: str, units: Mapping[str, str] | None = None) -> str:
    """``clients.web.transport.client_timeout (s)``: the factor with its unit."""
    unit = (units or {}).get(factor, "")
    return f"{factor} ({unit})" if unit else factor


def format_value(value: Any, unit: str = "") -> str:
    """A factor value for a label: ``0.5 s``, ``64 KiB``, ``ramp``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    number = float(value)
    if unit == "B":
        for size, name in BYTE_UNITS:
            if abs(number) >= size:
                return f"{format_number(number / size)} {name}"
    text = format_number(value)
    return f"{text} {unit}" if unit else text


def is_numeric(values: Any) -> bool:
    """Whether a column holds numbers only (booleans excluded)."""
    series = pd.Series(values)
    return (pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)) or (
        series.dtype == object and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                                       for v in series.dropna()))


def axis_type(values: Any) -> str:
    """``log`` for positive numbers spanning more than LOG_SPAN, ``linear`` for numbers, else ``category``."""
    if not is_numeric(values):
        return "category"
    x = pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy(dtype=float)
    if len(x) and np.all(x > 0) and x.max() / x.min() > LOG_SPAN:
        return "log"
    return "linear"


def ordered_values(values: Any) -> list[Any]:
    """Distinct values in axis order: ascending numbers, else order of first appearance."""
    series = pd.Series(values).dropna()
    if is_numeric(series):
        return sorted(pd.unique(series).tolist())
    return list(dict.fromkeys(series.tolist()))


# ------------------------------------------------------------------ factories


def heatmap(cells: pd.DataFrame, x: str, y: str, metric: str, *,
            units: Mapping[str, str] | None = None) -> go.Figure:
    """Mean of ``metric`` over two factors, each square labelled with its value.

    Points that do not fill a grid (random, LHS or Sobol designs) are drawn as
    markers coloured by the value instead of squares.
    """
    mean, low, high = ci_columns(cells, metric)
    _require(cells, [x, y, mean], "heatmap")
    _check_unique(cells, [x, y], "heatmap")
    grid = _Grid(cells, x, y)
    label = metric_label(metric)
    hover = (f"{x} = %{{customdata[2]}}<br>{y} = %{{customdata[3]}}<br>{metric}: %{{VALUE:.4g}}"
             "<br>CI %{customdata[0]:.4g} to %{customdata[1]:.4g}<extra></extra>")
    colour = dict(colorscale=METRIC_COLOURSCALE, colorbar=dict(title=dict(text=label, side="right")))
    ci = [low, high] if low and high else []
    if grid.dense:
        z = grid.matrix(mean)
        customdata = np.dstack([grid.matrix(c) for c in ci] or [np.full_like(z, np.nan)] * 2)
        trace: Any = go.Heatmap(x=grid.x_edges, y=grid.y_edges, z=z, customdata=grid.with_labels(customdata, units),
                                name=metric, text=_text_matrix(z), texttemplate="%{text}",
                                hovertemplate=hover.replace("VALUE", "z"), **colour)
    else:
        trace = grid.points(mean, ci, units, name=metric, hover=hover, **colour)
    fig = go.Figure(trace)
    grid.style_axes(fig, units)
    _layout(fig, f"{label} over {x} and {y}")
    return fig


def collapse_map(cells: pd.DataFrame, x: str, y: str, outcome: str = "collapse", level: float = 0.5, *,
                 units: Mapping[str, str] | None = None) -> go.Figure:
    """P(outcome) over two factors with the tipping-point line where it crosses ``level``.

    On a grid the line joins, row by row, the interpolated crossings of ``level``;
    for scattered points (random, LHS, Sobol) it is where a logistic fit of the
    outcome on both factors (in axis space) equals ``level``.
    """
    if outcome not in OUTCOME_PROBABILITY:
        raise ValueError(f"collapse_map: outcome {outcome!r} is not one of {', '.join(OUTCOME_PROBABILITY)}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"collapse_map: level {level} is not a probability strictly between 0 and 1")
    column = OUTCOME_PROBABILITY[outcome]
    _require(cells, [x, y, column, f"{column}.ci_low", f"{column}.ci_high", "n_ok"], "collapse_map")
    _check_unique(cells, [x, y], "collapse_map")
    hover = (f"{x} = %{{customdata[4]}}<br>{y} = %{{customdata[5]}}<br>P({outcome}) = %{{VALUE:.2f}}"
             "<br>Wilson CI %{customdata[0]:.2f} to %{customdata[1]:.2f}"
             "<br>%{customdata[2]:.0f} of %{customdata[3]:.0f} ok runs<extra></extra>")
    colour = dict(colorscale=PROBABILITY_COLOURSCALE, colorbar=dict(title=dict(text=f"P({outcome})", side="right")))
    hits = pd.to_numeric(cells[column], errors="coerce") * pd.to_numeric(cells["n_ok"], errors="coerce")
    with_hits = cells.assign(_hits=hits.round())
    ci = [f"{column}.ci_low", f"{column}.ci_high", "_hits", "n_ok"]
    grid = _Grid(with_hits, x, y)
    if grid.dense:
        p = grid.matrix(column)
        customdata = grid.with_labels(np.dstack([grid.matrix(c) for c in ci]), units)
        fig = go.Figure(go.Heatmap(x=grid.x_edges, y=grid.y_edges, z=p, zmin=0.0, zmax=1.0, customdata=customdata,
                                   name=column, text=_text_matrix(p, probability=True), texttemplate="%{text}",
                                   hovertemplate=hover.replace("VALUE", "z"), **colour))
        line_x, line_y = tipping_points(grid.x_positions, p, level, log_x=grid.x_type == "log"), grid.y_positions
        how = "interpolated per row"
    else:
        fig = go.Figure(grid.points(column, ci, units, name=column, hover=hover, cmin=0.0, cmax=1.0, **colour))
        line_x, line_y = grid.logistic_line(column, level)
        how = "logistic fit"
    fig.add_trace(go.Scatter(
        x=line_x, y=line_y, mode="lines+markers" if grid.dense else "lines",
        name=f"tipping point (p = {level:g}, {how})", line=dict(color="black", width=2.5, dash="dash"),
        marker=dict(size=7, symbol="diamond"), connectgaps=False,
        hovertemplate=f"P({outcome}) = {level:g} at {x} = %{{x:.4g}}, {y} = %{{y:.4g}}<extra></extra>",
    ))
    grid.style_axes(fig, units)
    _layout(fig, f"P({outcome}) over {x} and {y}; dashed: P = {level:g}")
    fig.update_layout(legend=dict(orientation="h", y=-0.15))
    return fig


def lines_ci(cells: pd.DataFrame, x: str, metric: str, by: str | None = None, *,
             units: Mapping[str, str] | None = None) -> go.Figure:
    """Mean of ``metric`` against one factor, one line per value of ``by``, CI as a shaded band."""
    mean, low, high = ci_columns(cells, metric)
    _require(cells, [x, mean, *([by] if by else [])], "lines_ci")
    _check_unique(cells, [x, *([by] if by else [])], "lines_ci")
    groups = [(None, cells)] if by is None else [(v, cells[cells[by] == v]) for v in ordered_values(cells[by])]
    x_order = ordered_values(cells[x])
    fig = go.Figure()
    for i, (value, group) in enumerate(groups):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        name = metric if by is None else _series_name(by, value, units)
        group = _sorted_by(group, x, x_order)
        if low and high:
            _add_band(fig, group, x, low, high, colour, name)
        fig.add_trace(go.Scatter(
            x=group[x], y=group[mean], mode="lines+markers", name=name, legendgroup=name,
            line=dict(color=colour, width=2),
            hovertemplate=f"{x}: %{{x}}<br>{metric}: %{{y:.4g}}<extra>{name}</extra>",
        ))
    _style_x(fig, x, cells[x], units, x_order)
    fig.update_yaxes(title_text=metric_label(metric))
    if metric_unit(metric) == "probability":
        fig.update_yaxes(range=[-0.02, 1.02])
    _layout(fig, f"{metric_label(metric)} against {x} (band: {_band_name(metric)})")
    if by:
        fig.update_layout(legend_title_text=factor_label(by, units))
    return fig


def amplification_bars(cells: pd.DataFrame, by: str | Sequence[str] | None, *,
                       units: Mapping[str, str] | None = None) -> go.Figure:
    """Retry amplification (attempts per request) per point, with CI error bars; 1 = none."""
    fig = metric_bars(cells, "attempts_per_request", by, units=units,
                      title="Retry amplification: attempts per request (error bars: t CI of the mean)")
    fig.add_hline(y=1.0, line=dict(color="#888", dash="dot"), annotation_text="1 = no retries",
                  annotation_position="bottom right")
    return fig


def wasted_work_bars(cells: pd.DataFrame, by: str | Sequence[str] | None, *,
                     units: Mapping[str, str] | None = None) -> go.Figure:
    """Share of handler time spent after the caller gave up, per point, with CI error bars."""
    return metric_bars(cells, "wasted_work_fraction", by, units=units,
                       title="Wasted work: fraction of handler time after the caller gave up "
                             "(error bars: t CI of the mean)")


def metric_bars(cells: pd.DataFrame, metric: str, by: str | Sequence[str] | None, *,
                units: Mapping[str, str] | None = None, title: str | None = None) -> go.Figure:
    """Bars of a metric mean with CI error bars: x = ``by[0]``, one bar colour per ``by[1]``.

    ``by=None`` gives one bar per cell.
    """
    keys = [by] if isinstance(by, str) else list(by or [])
    if len(keys) > 2:
        raise ValueError(f"metric_bars: by takes at most two factors, got {len(keys)}")
    mean, low, high = ci_columns(cells, metric)
    _require(cells, [mean, *keys, *([] if keys else ["cell"])], "metric_bars")
    _check_unique(cells, keys or ["cell"], "metric_bars")
    x_key = keys[0] if keys else "cell"
    x_unit = (units or {}).get(x_key, "")
    series = [(None, cells)] if len(keys) < 2 else [(v, cells[cells[keys[1]] == v])
                                                    for v in ordered_values(cells[keys[1]])]
    x_order = ordered_values(cells[x_key])
    fig = go.Figure()
    for i, (value, group) in enumerate(series):
        group = _sorted_by(group, x_key, x_order)
        name = metric if value is None else _series_name(keys[1], value, units)
        fig.add_trace(go.Bar(
            x=_bar_labels(group[x_key], x_unit, by_cell=not keys), y=group[mean], name=name,
            marker_color=RUN_COLOURS[i % len(RUN_COLOURS)], error_y=_error_bars(group, mean, low, high),
            hovertemplate=f"%{{x}}: %{{y:.4g}}<extra>{name}</extra>",
        ))
    fig.update_xaxes(title_text=factor_label(x_key, units) if keys else "cell", type="category")
    fig.update_yaxes(title_text=metric_label(metric))
    _layout(fig, title or f"{metric_label(metric)} (error bars: {_band_name(metric)})")
    fig.update_layout(barmode="group", showlegend=len(series) > 1)
    if len(keys) == 2:
        fig.update_layout(legend_title_text=factor_label(keys[1], units))
    return fig


def latency_cdfs(named_latencies: Mapping[str, Any], *, max_points: int = MAX_CDF_POINTS) -> go.Figure:
    """Empirical CDFs of request latencies in ms, one line per name, on a log x axis.

    NaN marks an unfinished request: it counts in the total, so such a curve
    ends below 1 (at the share of requests that finished). Zero latencies (refused
    at once, e.g. by an open breaker) count too: the curve starts above 0.
    """
    if not named_latencies:
        raise ValueError("latency_cdfs: no latencies given")
    fig = go.Figure()
    for i, (name, values) in enumerate(named_latencies.items()):
        x, y = empirical_cdf(values, max_points=max_points)
        n_total, n_unfinished = _counts(values)
        share = n_unfinished / max(n_total, 1)
        note = (f", {share:.1%} unfinished" if share >= 0.001 else ", <0.1% unfinished") if n_unfinished else ""
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines", line=dict(color=RUN_COLOURS[i % len(RUN_COLOURS)], width=2, shape="hv"),
            name=f"{name} (n = {n_total:,}{note})",
            hovertemplate="%{y:.1%} of requests within %{x:.4g} ms<extra>" + str(name) + "</extra>",
        ))
    fig.update_xaxes(type="log", title_text="request latency (ms)")
    fig.update_yaxes(title_text="fraction of requests done within the latency", range=[0, 1.02])
    _layout(fig, "Request latency, empirical CDF (ms, log scale)")
    return fig


def run_timeseries(run_result: RunResult) -> go.Figure:
    """The stacked time-series panels of one run (``experiments.figures.timeseries_figure``)."""
    return timeseries_figure(run_result)


# ------------------------------------------------------------------ computations


def ci_columns(cells: pd.DataFrame, metric: str) -> tuple[str, str | None, str | None]:
    """(mean, ci_low, ci_high) column names of a metric; a probability's mean is the bare name."""
    mean = f"{metric}.mean" if f"{metric}.mean" in cells.columns or metric not in cells.columns else metric
    low, high = f"{metric}.ci_low", f"{metric}.ci_high"
    return mean, (low if low in cells.columns else None), (high if high in cells.columns else None)


def tipping_points(x: Sequence[float], p_rows: np.ndarray, level: float, *, log_x: bool = False) -> np.ndarray:
    """Per row of ``p_rows``, the x where p first crosses ``level`` (linear interpolation; NaN if never).

    With ``log_x`` the interpolation is linear in log x, as the axis shows it.
    """
    xs = np.log(np.asarray(x, dtype=float)) if log_x else np.asarray(x, dtype=float)
    out = np.full(len(p_rows), np.nan)
    for r, row in enumerate(np.asarray(p_rows, dtype=float)):
        keep = np.isfinite(row)
        out[r] = _first_crossing(xs[keep], row[keep], level)
    return np.exp(out) if log_x else out


def empirical_cdf(values: Any, *, max_points: int = MAX_CDF_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Sorted positive latencies and their cumulative fractions, thinned to ``max_points``.

    Fractions are of all values: NaNs (unfinished) and zeros count in the total.
    """
    n_total, _ = _counts(values)
    raw = _as_floats(values)
    n_below = int(np.count_nonzero(np.isfinite(raw) & (raw <= 0)))
    x = np.sort(_positive_finite(values))
    n = len(x)
    y = (n_below + np.arange(1, n + 1, dtype=float)) / max(n_total, 1)
    if n > max_points:
        keep = np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
        x, y = x[keep], y[keep]
    return x, y


def logistic_tipping_line(u: np.ndarray, v: np.ndarray, hits: np.ndarray, n: np.ndarray, level: float,
                          points: int = 60) -> tuple[np.ndarray, np.ndarray] | None:
    """Where ``logit P = b0 + b1 u + b2 v`` (fitted to hits of n per point) equals ``level``.

    A slightly ridged binomial fit, so perfectly separated outcomes still give a
    line. None with fewer than three points, when every point had the same
    outcome, or when the line leaves the points' range.
    """
    keep = np.isfinite(u) & np.isfinite(v) & np.isfinite(hits) & (n > 0)
    u, v, hits, n = (np.asarray(a, dtype=float)[keep] for a in (u, v, hits, n))
    if len(u) < 3 or hits.sum() == 0 or hits.sum() == n.sum():
        return None
    (mu_u, sd_u), (mu_v, sd_v) = _centre_scale(u), _centre_scale(v)
    design = np.column_stack([np.ones(len(u)), (u - mu_u) / sd_u, (v - mu_v) / sd_v])
    b = _fit_logistic(design, hits, n)
    target = float(special.logit(level))
    if abs(b[1]) >= abs(b[2]):          # solve for u along v
        vs = np.linspace(v.min(), v.max(), points)
        us = mu_u + sd_u * (target - b[0] - b[2] * (vs - mu_v) / sd_v) / b[1]
    else:
        us = np.linspace(u.min(), u.max(), points)
        vs = mu_v + sd_v * (target - b[0] - b[1] * (us - mu_u) / sd_u) / b[2]
    inside = (us >= u.min()) & (us <= u.max()) & (vs >= v.min()) & (vs <= v.max())
    return (us[inside], vs[inside]) if inside.any() else None


def _fit_logistic(design: np.ndarray, hits: np.ndarray, n: np.ndarray) -> np.ndarray:
    def loss(b: np.ndarray) -> tuple[float, np.ndarray]:
        eta = design @ b
        penalty = LOGISTIC_RIDGE * np.concatenate([[0.0], b[1:]])
        value = float(np.sum(n * np.logaddexp(0.0, eta) - hits * eta) + penalty @ b / 2.0)
        return value, design.T @ (n * special.expit(eta) - hits) + penalty
    return optimize.minimize(loss, np.zeros(design.shape[1]), jac=True, method="BFGS").x


def _centre_scale(a: np.ndarray) -> tuple[float, float]:
    sd = float(np.std(a))
    return float(np.mean(a)), sd if sd > 0 else 1.0


def _first_crossing(x: np.ndarray, p: np.ndarray, level: float) -> float:
    if len(x) == 0:
        return np.nan
    d = p - level
    for i in range(len(x)):
        if d[i] == 0:
            return float(x[i])
        if i + 1 < len(x) and d[i] * d[i + 1] < 0:
            return float(x[i] + (x[i + 1] - x[i]) * d[i] / (d[i] - d[i + 1]))
    return np.nan


# ------------------------------------------------------------------ helpers


class _Grid:
    """Two factors as heatmap axes: numbers at their values, categories at 0, 1, 2, ..."""

    def __init__(self, cells: pd.DataFrame, x: str, y: str) -> None:
        self.cells, self.x, self.y = cells, x, y
        self.x_values, self.y_values = ordered_values(cells[x]), ordered_values(cells[y])
        self.x_type, self.y_type = axis_type(cells[x]), axis_type(cells[y])
        self.x_positions = _positions(self.x_values, self.x_type)
        self.y_positions = _positions(self.y_values, self.y_type)
        self.x_edges = brick_edges(self.x_positions, log=self.x_type == "log")
        self.y_edges = brick_edges(self.y_positions, log=self.y_type == "log")

    @property
    def dense(self) -> bool:
        """Whether the points fill at least MIN_GRID_FILL of the grid their values span."""
        return len(self.cells) >= MIN_GRID_FILL * len(self.x_values) * len(self.y_values)

    def point_positions(self) -> tuple[list[Any], list[Any]]:
        """Each row's position on the two axes (its value, or its category's index)."""
        x_at = dict(zip(self.x_values, self.x_positions))
        y_at = dict(zip(self.y_values, self.y_positions))
        return [x_at.get(v) for v in self.cells[self.x]], [y_at.get(v) for v in self.cells[self.y]]

    def points(self, column: str, extra: Sequence[str], units: Mapping[str, str] | None, *, name: str,
               hover: str, **marker: Any) -> go.Scatter:
        """Markers coloured by ``column``; customdata: the ``extra`` columns, then the x and y labels."""
        units = units or {}
        xs, ys = self.point_positions()
        data = [_floats(self.cells[c]) for c in extra] or [np.full(len(self.cells), np.nan)] * 2
        labels = [[format_value(v, units.get(f, "")) for v in self.cells[f]] for f in (self.x, self.y)]
        customdata = np.column_stack([*(d.astype(object) for d in data), *labels])
        return go.Scatter(x=xs, y=ys, mode="markers", name=name, customdata=customdata,
                          marker=dict(color=_floats(self.cells[column]), size=13, showscale=True,
                                      line=dict(width=0.5, color="#333"), **marker),
                          hovertemplate=hover.replace("VALUE", "marker.color"))

    def logistic_line(self, column: str, level: float) -> tuple[list[float], list[float]]:
        """The ``level`` line of a logistic fit of the outcome on both axes; empty if none fits."""
        xs, ys = self.point_positions()
        u, v = _axis_space(xs, self.x_type), _axis_space(ys, self.y_type)
        n = _floats(self.cells["n_ok"])
        line = logistic_tipping_line(u, v, np.round(_floats(self.cells[column]) * n), n, level)
        if line is None:
            return [], []
        lu, lv = (np.exp(a) if kind == "log" else a for a, kind in zip(line, (self.x_type, self.y_type)))
        return lu.tolist(), lv.tolist()

    def with_labels(self, customdata: np.ndarray, units: Mapping[str, str] | None) -> np.ndarray:
        """``customdata`` with two more layers: the x and y values as labels, for the hover."""
        units = units or {}
        xs = [format_value(v, units.get(self.x, "")) for v in self.x_values]
        ys = [format_value(v, units.get(self.y, "")) for v in self.y_values]
        labels = np.empty(customdata.shape[:2] + (2,), dtype=object)
        labels[:, :, 0] = np.array(xs, dtype=object)[None, :]
        labels[:, :, 1] = np.array(ys, dtype=object)[:, None]
        return np.concatenate([customdata.astype(object), labels], axis=2)

    def matrix(self, column: str) -> np.ndarray:
        """Values of ``column`` as a (len(y), len(x)) array, NaN where no row is."""
        z = np.full((len(self.y_values), len(self.x_values)), np.nan)
        x_index = {v: i for i, v in enumerate(self.x_values)}
        y_index = {v: i for i, v in enumerate(self.y_values)}
        values = pd.to_numeric(self.cells[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        for xv, yv, value in zip(self.cells[self.x], self.cells[self.y], values):
            if xv in x_index and yv in y_index:
                z[y_index[yv], x_index[xv]] = value
        return z

    def style_axes(self, fig: go.Figure, units: Mapping[str, str] | None) -> None:
        for axis, factor, kind, values in (("x", self.x, self.x_type, self.x_values),
                                           ("y", self.y, self.y_type, self.y_values)):
            unit = (units or {}).get(factor, "")
            positions = self.x_positions if axis == "x" else self.y_positions
            update: dict[str, Any] = dict(title_text=factor_label(factor, units), showgrid=not self.dense,
                                          type="linear" if kind == "category" else kind)
            if self.dense or kind == "category":     # ticks at the swept values
                update.update(tickmode="array", tickvals=positions,
                              ticktext=[format_value(v, unit if unit == "B" else "") for v in values])
            (fig.update_xaxes if axis == "x" else fig.update_yaxes)(**update)


def brick_edges(centres: Sequence[float], *, log: bool = False) -> list[float]:
    """Edges of heatmap bricks around ``centres``: midpoints, in log space for a log axis."""
    c = np.log(np.asarray(centres, dtype=float)) if log else np.asarray(centres, dtype=float)
    if len(c) == 0:
        return []
    if len(c) == 1:
        half = 0.5 if log or c[0] == 0 else 0.5 * abs(c[0])
        edges = np.array([c[0] - half, c[0] + half])
    else:
        mids = (c[:-1] + c[1:]) / 2.0
        edges = np.concatenate([[c[0] - (mids[0] - c[0])], mids, [c[-1] + (c[-1] - mids[-1])]])
    return (np.exp(edges) if log else edges).tolist()


def _axis_space(positions: Sequence[Any], kind: str) -> np.ndarray:
    x = np.array([np.nan if p is None else p for p in positions], dtype=float)
    return np.log(x) if kind == "log" else x


def _floats(values: Any) -> np.ndarray:
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _positions(values: list[Any], kind: str) -> list[Any]:
    return list(range(len(values))) if kind == "category" else [float(v) for v in values]


def _style_x(fig: go.Figure, x: str, values: Any, units: Mapping[str, str] | None, order: list[Any]) -> None:
    kind = axis_type(values)
    unit = (units or {}).get(x, "")
    update: dict[str, Any] = dict(title_text=factor_label(x, units), type=kind)
    if kind == "category":
        update.update(categoryorder="array", categoryarray=order)
    elif kind == "log" or unit == "B":   # ticks at the swept values: no bare minor-tick digits
        update.update(tickmode="array", tickvals=order,
                      ticktext=[format_value(v, unit if unit == "B" else "") for v in order])
    fig.update_xaxes(**update)


def _add_band(fig: go.Figure, group: pd.DataFrame, x: str, low: str, high: str, colour: str, name: str) -> None:
    """The CI as a filled polygon (upper edge forward, lower edge back), over points that have one."""
    lo = pd.to_numeric(group[low], errors="coerce")
    hi = pd.to_numeric(group[high], errors="coerce")
    keep = (lo.notna() & hi.notna()).to_numpy()
    if not keep.any():
        return
    xs = list(group[x][keep])
    fig.add_trace(go.Scatter(
        x=xs + xs[::-1], y=list(hi[keep]) + list(lo[keep])[::-1], fill="toself", mode="lines",
        line=dict(width=0), fillcolor=_rgba(colour, BAND_ALPHA), name=f"{name} CI", legendgroup=name,
        showlegend=False, hoverinfo="skip",
    ))


def _error_bars(group: pd.DataFrame, mean: str, low: str | None, high: str | None) -> dict[str, Any]:
    if not (low and high):
        return dict(visible=False)
    m = pd.to_numeric(group[mean], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    lo = pd.to_numeric(group[low], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    hi = pd.to_numeric(group[high], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return dict(type="data", symmetric=False, array=hi - m, arrayminus=m - lo, color="#333", thickness=1.2)


def _series_name(factor: str, value: Any, units: Mapping[str, str] | None) -> str:
    """``max_conns = 100``: the last part of the factor's path and the value."""
    return f"{factor.rsplit('.', 1)[-1]} = {format_value(value, (units or {}).get(factor, ''))}"


def _bar_labels(values: pd.Series, unit: str, *, by_cell: bool) -> list[str]:
    """Category labels of bars; more digits when rounding would merge two values (continuous designs)."""
    if by_cell:
        return [f"cell {v}" for v in values]
    labels = [format_value(v, unit) for v in values]
    if len(set(labels)) < len(set(values)):
        labels = [f"{v:.6g} {unit}".strip() if isinstance(v, (int, float)) else str(v) for v in values]
    return labels


def _sorted_by(group: pd.DataFrame, column: str, order: list[Any]) -> pd.DataFrame:
    rank = {v: i for i, v in enumerate(order)}
    return group.iloc[np.argsort([rank.get(v, len(rank)) for v in group[column]], kind="stable")]


def _text_matrix(z: np.ndarray, *, probability: bool = False) -> list[list[str]]:
    """Square labels: probabilities with two decimals, other values as ``format_number`` has them."""
    def text(v: float) -> str:
        if not np.isfinite(v):
            return ""
        return f"{v:.2f}" if probability else format_number(float(v))
    return [[text(v) for v in row] for row in z]


def _band_name(metric: str) -> str:
    return "Wilson CI" if metric in PROBABILITIES else "t CI of the mean"


def _rgba(colour: str, alpha: float) -> str:
    colour = colour.lstrip("#")
    r, g, b = (int(colour[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {alpha})"


def _as_floats(values: Any) -> np.ndarray:
    series = pd.Series(np.asarray(values, dtype=object).ravel())
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _positive_finite(values: Any) -> np.ndarray:
    x = _as_floats(values)
    return x[np.isfinite(x) & (x > 0)]


def _counts(values: Any) -> tuple[int, int]:
    """(all values, unfinished ones: NaN)."""
    x = _as_floats(values)
    return len(x), int(np.count_nonzero(np.isnan(x)))


def _require(cells: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    for column in columns:
        if column not in cells.columns:
            raise ValueError(f"{what}: the cells table has no column {column!r}")


def _check_unique(cells: pd.DataFrame, keys: Sequence[str], what: str) -> None:
    counts = cells.groupby(list(keys), dropna=False).size()
    if (counts > 1).any():
        point = counts[counts > 1].index[0]
        values = point if isinstance(point, tuple) else (point,)
        where = ", ".join(f"{k} = {v.item() if isinstance(v, np.generic) else v!r}" for k, v in zip(keys, values))
        raise ValueError(f"{what}: {int(counts.max())} rows of the cells share {where}; summarise the runs "
                         "over these factors first (experiments.sweep_summary.summarize_groups)")


def _layout(fig: go.Figure, title: str) -> None:
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left"), template="plotly_white",
                      height=FIGURE_HEIGHT_PX, margin=dict(l=80, r=40, t=70, b=70))
