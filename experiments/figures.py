"""Plotly figure factories for one run and for a comparison of runs.

This module owns how a ``RunResult`` looks: the stacked time-series panels of
one run (levels the engine sampled, per-window series from ``sim.outputs``),
the fault windows and milestones drawn across them, the time before the server
sees an attempt split into its phases, the overlay of several runs for a
scenario comparison, and for a service-graph run the per-service panels and the
cascade timeline (docs/outputs.md, *Service graphs*). Every factory is pure: data in,
``plotly.graph_objects.Figure`` out, no file I/O. Missing series (a level the
engine did not sample, windows not computed yet) leave their panel empty
instead of failing. Long traces are decimated to at most ``MAX_POINTS_PER_TRACE``
points with a min/max envelope, so peaks survive and the HTML stays small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from sim.outputs import TO_SERVER_PARTS, is_graph_run
from sim.result import RunResult
from sim.schema import ERROR_KINDS, ServiceConfig

MAX_POINTS_PER_TRACE = 3000
PANEL_HEIGHT_PX = 230
MIB = 1024 * 1024

TIMESERIES_PANELS: tuple[tuple[str, str], ...] = (
    # (panel title, y-axis label with unit)
    ("Server connections and accept queue", "connections"),
    ("Open file descriptors", "fds"),
    ("Goroutines", "goroutines"),
    ("Memory", "MiB"),
    ("CPU utilization and GC share", "fraction of cores"),
    ("Goodput against offered load", "requests/s"),
    ("Latency per window", "ms (log)"),
    ("Errors by kind", "errors/s"),
    ("DB pool", "connections"),
    ("Resilience policies", "count, or %"),
)
COMPARISON_PANELS: tuple[tuple[str, str], ...] = (
    ("Server connections", "connections"),
    ("Open file descriptors", "fds"),
    ("Memory", "MiB"),
    ("Untouched goodput", "requests/s"),
    ("P99 latency per window", "ms (log)"),
)
TO_SERVER_PANELS: tuple[tuple[str, str], ...] = (
    ("Mean time before the server sees an attempt, by phase", "ms"),
    ("Time before the server sees it (P50, P99) against request latency", "ms (log)"),
    ("Attempts that never reached the server, and request timeouts", "per s"),
)
SERVICES_PANELS: tuple[tuple[str, str], ...] = (
    ("Success rate of the requests to each service (trailing collapse window)", "fraction"),
    ("P99 latency of the requests to each service", "ms (log)"),
    ("Live instances", "instances"),
    ("CPU utilization", "fraction of cores"),
)
SERVICES_LATENCY_ROW = 2
SERVICE_COLOURS: list[str] = list(qualitative.Dark24)
COLLAPSE_SYMBOLS: dict[str, str] = {"success_rate": "diamond", "no_live_instance": "x"}
LATENCY_ROW = 7      # 1-based rows with a log y axis
COMPARISON_LATENCY_ROW = 5
TO_SERVER_LATENCY_ROW = 2

FAULT_FILL = "rgba(255, 140, 0, 0.13)"
MILESTONE_COLOURS: dict[str, str] = {
    "trigger": "#d62728",
    "collapse": "#7f0000",
    "fd_exhausted": "#8c564b",
    "oom_kill": "#000000",
    "restart": "#2ca02c",
    "recovered": "#1f77b4",
    "truncated": "#7f7f7f",
}
ERROR_COLOURS: dict[str, str] = dict(zip(ERROR_KINDS, qualitative.Set1 + qualitative.Pastel1))
RUN_COLOURS: list[str] = list(qualitative.Plotly)
TO_SERVER_LABELS: dict[str, str] = {
    "pool_wait": "pool wait", "connect": "TCP connect", "tls": "TLS handshake",
    "backlog": "accept backlog", "flow_wait": "flow-control wait", "transit": "network transit",
}
TO_SERVER_COLOURS: dict[str, str] = {
    "pool_wait": "#9467bd", "connect": "#1f77b4", "tls": "#ff7f0e",
    "backlog": "#d62728", "flow_wait": "#2ca02c", "transit": "#7f7f7f",
}
TIMEOUT_KINDS: tuple[str, ...] = ("client_timeout", "dial_timeout", "tls_timeout", "response_header_timeout")


@dataclass(frozen=True)
class MilestoneMark:
    """One instant worth a vertical line: what happened (``kind``), its label and time."""

    kind: str        # a key of MILESTONE_COLOURS
    label: str
    at_s: float


# ------------------------------------------------------------------ data access


def decimate(x: np.ndarray, y: np.ndarray,
             max_points: int = MAX_POINTS_PER_TRACE) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of (x, y), keeping each bucket's min and max.

    A plain stride would drop the single sample where connections peaked; the
    min/max envelope keeps it (and the troughs), in time order.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n <= max_points:
        return x, y
    n_buckets = max(1, max_points // 2)
    per_bucket = -(-n // n_buckets)
    padded = np.full(n_buckets * per_bucket, np.nan)
    padded[:n] = y
    grid = padded.reshape(n_buckets, per_bucket)
    base = np.arange(n_buckets) * per_bucket
    with np.errstate(invalid="ignore"):
        hi = np.argmax(np.where(np.isnan(grid), -np.inf, grid), axis=1)
        lo = np.argmin(np.where(np.isnan(grid), np.inf, grid), axis=1)
    keep = np.unique(np.concatenate([base + hi, base + lo]))
    keep = keep[keep < n]
    return x[keep], y[keep]


def the_service(result: RunResult) -> ServiceConfig | None:
    """The service whose process the levels describe (the first one if several)."""
    services = result.scenario.services
    return next(iter(services.values()), None) if services else None


def window_rate_per_s(result: RunResult, key: str) -> np.ndarray | None:
    """A per-window count as a rate: count / sample_interval, or None if absent."""
    counts = result.windows.get(key)
    if counts is None:
        return None
    return np.asarray(counts, dtype=float) / float(result.scenario.sample_interval)


def summary_or_milestone(result: RunResult, key: str) -> float | None:
    """An instant from the summary, else from the milestones, else None."""
    value = result.summary.get(key)
    if value is None:
        value = getattr(result.milestones, key, None)
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def milestone_marks(result: RunResult) -> list[MilestoneMark]:
    """The instants drawn as vertical lines, in time order."""
    m = result.milestones
    marks: list[MilestoneMark] = []

    def add(kind: str, label: str, at_s: float | None) -> None:
        if at_s is not None and np.isfinite(at_s):
            marks.append(MilestoneMark(kind, label, float(at_s)))

    add("trigger", "trigger", summary_or_milestone(result, "trigger_at_s"))
    add("collapse", "collapse", summary_or_milestone(result, "collapse_at_s"))
    add("fd_exhausted", "fd exhausted", summary_or_milestone(result, "fd_exhausted_at_s"))
    kills = list(m.kills)
    oom_at = summary_or_milestone(result, "oom_killed_at_s")
    # the summary rounds instants to 1 us: match kills within that
    if oom_at is not None and not any(abs(k - oom_at) < 1e-6 for k in kills):
        kills.insert(0, oom_at)
    # in a service graph the kills are of every instance of every service, evictions included
    what = "instance kill" if is_graph_run(result) else "OOM kill"
    for i, at_s in enumerate(sorted(kills)):
        add("oom_kill", what if len(kills) == 1 else f"{what} {i + 1}", at_s)
    for i, at_s in enumerate(m.restarts):
        add("restart", "restart" if len(m.restarts) == 1 else f"restart {i + 1}", at_s)
    add("recovered", "recovered", summary_or_milestone(result, "recovered_at_s"))
    if m.truncated:
        add("truncated", f"truncated ({m.truncated_by or 'guard'})", m.end_at_s)
    return sorted(marks, key=lambda mark: mark.at_s)


# ------------------------------------------------------------------- drawing


def _legend_name(row: int) -> str:
    return "legend" if row == 1 else f"legend{row}"


def _axis_suffix(row: int) -> str:
    return "" if row == 1 else str(row)


def _line(fig: go.Figure, row: int, x: np.ndarray, y: np.ndarray | None, name: str, *,
          colour: str | None = None, dash: str | None = None, stack: bool = False,
          legend: str | None = None, legendgroup: str | None = None,
          showlegend: bool = True, hover_unit: str = "") -> None:
    """Add one decimated line (or stacked area) to a panel; skip it if y is missing."""
    if y is None or len(y) == 0:
        return
    n = min(len(x), len(y))
    xs, ys = decimate(np.asarray(x[:n]), np.asarray(y[:n]))
    trace = go.Scatter(
        x=xs, y=ys, name=name, mode="lines",
        line=dict(color=colour, dash=dash, width=1.4),
        legend=legend or _legend_name(row), legendgroup=legendgroup, showlegend=showlegend,
        hovertemplate=f"%{{y:.4g}}{hover_unit} at %{{x:.2f}} s<extra>{name}</extra>",
    )
    if stack:
        trace.update(stackgroup=f"stack{row}", line=dict(width=0.5, color=colour))
    fig.add_trace(trace, row=row, col=1)


def _limit_line(fig: go.Figure, row: int, x: np.ndarray, limit: float, observed_max: float,
                name: str, unit: str) -> None:
    """A dashed horizontal limit; when it is far above the data, keep the data readable."""
    if len(x) == 0:
        return
    t0, t1 = float(np.nanmin(x)), float(np.nanmax(x))
    fig.add_trace(go.Scatter(
        x=[t0, t1], y=[limit, limit], name=f"{name} ({limit:,.0f} {unit})", mode="lines",
        line=dict(color="#d62728", dash="dash", width=1.2), legend=_legend_name(row),
        hovertemplate=f"{name}: {limit:,.0f} {unit}<extra></extra>",
    ), row=row, col=1)
    if observed_max > 0 and limit > 20 * observed_max:
        fig.update_yaxes(range=[0, observed_max * 1.15], row=row, col=1)
        fig.add_annotation(
            text=f"{name} {limit:,.0f} {unit} (off scale)", showarrow=False,
            xref=f"x{_axis_suffix(row)} domain", yref=f"y{_axis_suffix(row)} domain",
            x=0.995, y=0.97, xanchor="right", yanchor="top",
            font=dict(size=10, color="#d62728"), name="limit_off_scale")


def _shade_faults(fig: go.Figure, result: RunResult, n_rows: int) -> None:
    """One translucent band per fault window across every panel, labelled once on top."""
    for fault in result.milestones.faults:
        for row in range(1, n_rows + 1):
            s = _axis_suffix(row)
            fig.add_shape(
                type="rect", xref=f"x{s}", yref=f"y{s} domain", x0=fault.start_at, x1=fault.end_at,
                y0=0, y1=1, fillcolor=FAULT_FILL, line_width=0, layer="below",
                name=f"fault:{fault.kind}")
        fig.add_annotation(
            text=f"{fault.kind} ({fault.target})" if fault.target else fault.kind,
            x=fault.start_at, xref="x", xanchor="left", y=1, yref="y domain", yanchor="top",
            showarrow=False, font=dict(size=10, color="#a65c00"), name=f"fault:{fault.kind}",
            hovertext=f"{fault.kind} on {fault.target}: {fault.start_at:.2f} s to {fault.end_at:.2f} s")


def _mark_milestones(fig: go.Figure, marks: list[MilestoneMark], n_rows: int) -> None:
    """A vertical line per milestone through every panel; labels staggered above the top one."""
    for i, mark in enumerate(marks):
        colour = MILESTONE_COLOURS.get(mark.kind, "#444")
        for row in range(1, n_rows + 1):
            s = _axis_suffix(row)
            fig.add_shape(
                type="line", xref=f"x{s}", yref=f"y{s} domain", x0=mark.at_s, x1=mark.at_s,
                y0=0, y1=1, line=dict(color=colour, width=1.2, dash="dot"),
                name=f"milestone:{mark.kind}")
        fig.add_annotation(
            text=f"{mark.label} {mark.at_s:.1f} s", x=mark.at_s, xref="x",
            y=1, yref="paper", yanchor="bottom", yshift=4 + 15 * (i % 3),
            showarrow=False, font=dict(size=11, color=colour), name=f"milestone:{mark.kind}",
            bgcolor="rgba(255,255,255,0.8)")


def _stack_layout(fig: go.Figure, panels: tuple[tuple[str, str], ...], *, per_panel_legend: bool,
                  title: str, top_margin_px: int) -> None:
    n_rows = len(panels)
    for row, (_, ylabel) in enumerate(panels, start=1):
        fig.update_yaxes(title_text=ylabel, title_font=dict(size=11), row=row, col=1)
        if per_panel_legend:
            domain = fig.layout[f"yaxis{_axis_suffix(row)}"].domain
            fig.layout[_legend_name(row)] = dict(
                x=1.01, xanchor="left", y=domain[1], yanchor="top", font=dict(size=10),
                bgcolor="rgba(255,255,255,0)", tracegroupgap=2)
    fig.update_xaxes(title_text="time (s)", row=n_rows, col=1)
    fig.update_xaxes(showticklabels=True, ticks="outside")
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left"),
        height=PANEL_HEIGHT_PX * n_rows + top_margin_px, margin=dict(l=70, r=230, t=top_margin_px, b=50),
        hovermode="x unified", template="plotly_white",
    )


# ----------------------------------------------------------------- factories


def timeseries_figure(result: RunResult) -> go.Figure:
    """The ten stacked panels of one run, with fault windows and milestones."""
    n_rows = len(TIMESERIES_PANELS)
    fig = make_subplots(rows=n_rows, cols=1, shared_xaxes=True, vertical_spacing=0.022,
                        subplot_titles=[title for title, _ in TIMESERIES_PANELS])
    lv, win = result.levels, result.windows
    t = np.asarray(lv.get("time_s", []), dtype=float)
    tw = np.asarray(win.get("time_s", []), dtype=float)
    service = the_service(result)

    # (1) connections and accept queue
    _line(fig, 1, t, lv.get("server_connections"), "server connections")
    _line(fig, 1, t, lv.get("accept_queue"), "accept queue")
    _line(fig, 1, t, lv.get("client_connections"), "client connections", dash="dot")
    # (2) fds against the limit
    fds = lv.get("open_fds")
    _line(fig, 2, t, fds, "open fds")
    if service is not None:
        _limit_line(fig, 2, t, float(service.fd_limit), _nanmax(fds), "fd limit", "fds")
    # (3) goroutines
    _line(fig, 3, t, lv.get("goroutines"), "goroutines")
    # (4) memory
    memory = lv.get("memory_mib")
    _line(fig, 4, t, memory, "memory", hover_unit=" MiB")
    if service is not None and service.memory.limit > 0:
        _limit_line(fig, 4, t, service.memory.limit / MIB, _nanmax(memory), "memory limit", "MiB")
    # (5) CPU
    _line(fig, 5, t, lv.get("cpu_utilization"), "CPU utilization")
    _line(fig, 5, t, lv.get("gc_fraction"), "GC fraction", dash="dot")
    # (6) goodput against offered
    for side, colour in (("untouched", "#1f77b4"), ("touched", "#ff7f0e")):
        _line(fig, 6, tw, window_rate_per_s(result, f"arrivals_{side}"), f"offered ({side})",
              colour=colour, dash="dash", hover_unit=" req/s")
        _line(fig, 6, tw, window_rate_per_s(result, f"successes_{side}"), f"goodput ({side})",
              colour=colour, hover_unit=" req/s")
    # (7) latency
    _line(fig, 7, tw, _positive(win.get("p50_ms")), "P50", hover_unit=" ms")
    _line(fig, 7, tw, _positive(win.get("p99_ms")), "P99", hover_unit=" ms")
    fig.update_yaxes(type="log", row=LATENCY_ROW, col=1)
    # (8) errors by kind, stacked, plus retries as a line
    for kind in ERROR_KINDS:
        rate = window_rate_per_s(result, f"failures.{kind}")
        if rate is not None and np.nansum(rate) > 0:
            _line(fig, 8, tw, rate, kind, colour=ERROR_COLOURS.get(kind), stack=True,
                  hover_unit=" /s")
    retries = window_rate_per_s(result, "retries")
    if retries is not None and np.nansum(retries) > 0:
        _line(fig, 8, tw, retries, "retries", colour="#444", dash="dot", hover_unit=" /s")
    # (9) DB pools
    for key in sorted(k for k in lv if k.startswith("db_in_use.")):
        _line(fig, 9, t, lv[key], f"in use {key.split('.', 1)[1]}")
    for key in sorted(k for k in lv if k.startswith("db_waiters.")):
        _line(fig, 9, t, lv[key], f"waiters {key.split('.', 1)[1]}", dash="dash")
    # (10) policy state: breakers, budgets, throttling, shedding (only the configured ones)
    _line(fig, 10, t, lv.get("breakers_open"), "breakers open", colour="#d62728")
    _line(fig, 10, t, lv.get("breakers_half_open"), "breakers half-open", colour="#ff7f0e", dash="dot")
    _line(fig, 10, t, lv.get("retry_budget_left"), "retries the budget allows", colour="#2ca02c")
    _line(fig, 10, t, lv.get("retries_outstanding"), "retries outstanding", colour="#17becf", dash="dot")
    throttle = lv.get("throttle_reject_probability")
    if throttle is not None:
        _line(fig, 10, t, np.asarray(throttle) * 100.0, "throttle reject %", colour="#9467bd", hover_unit=" %")
    _line(fig, 10, t, lv.get("shed_admitted"), "handlers past the shedding gate", colour="#8c564b")
    _line(fig, 10, t, lv.get("shed_queue_length"), "shedding queue", colour="#e377c2", dash="dash")

    _shade_faults(fig, result, n_rows)
    _mark_milestones(fig, milestone_marks(result), n_rows)
    outcome = result.summary.get("outcome")
    title = f"{result.scenario.name}: seed {result.seed}" + (f", {outcome}" if outcome else "")
    _stack_layout(fig, TIMESERIES_PANELS, per_panel_legend=True, title=title, top_margin_px=130)
    return fig


def to_server_figure(result: RunResult) -> go.Figure:
    """Where the time before the server sees an attempt goes, per window (docs/outputs.md).

    (1) the mean time-to-server of the attempts the server got in each window, stacked
    by phase (pool wait, TCP connect, TLS, accept backlog, flow-control wait, network
    transit): the stack's top is the mean ``to_server_s``; (2) its P50 and P99 on a log
    axis beside the P99 latency of the requests completing in the window and the
    clients' ``client_timeout``, so the share of the budget spent before the server
    starts is read off directly; (3) attempts that ended without ever reaching the
    server and the requests failing with a timeout, per second.
    """
    n_rows = len(TO_SERVER_PANELS)
    fig = make_subplots(rows=n_rows, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[title for title, _ in TO_SERVER_PANELS])
    win = result.windows
    tw = np.asarray(win.get("time_s", []), dtype=float)
    # (1) stacked mean per phase; one set of kept points for all six so the stack stays aligned
    parts = [(part, win.get(f"to_server_mean_ms.{part}")) for part, _ in TO_SERVER_PARTS]
    if all(y is not None and len(y) for _, y in parts):
        n = min(len(tw), *(len(y) for _, y in parts))
        ys = {part: np.asarray(y[:n], dtype=float) for part, y in parts}
        keep = _stack_keep(sum(np.nan_to_num(y) for y in ys.values()))
        for part, y in ys.items():
            name = TO_SERVER_LABELS[part]
            fig.add_trace(go.Scatter(
                x=tw[:n][keep], y=y[keep], name=name, mode="lines", stackgroup="stack1",
                line=dict(width=0.5, color=TO_SERVER_COLOURS[part]), legend="legend",
                hovertemplate=f"%{{y:.4g}} ms at %{{x:.2f}} s<extra>{name}</extra>"), row=1, col=1)
    # (2) distribution against the request latency and the clients' budgets
    _line(fig, 2, tw, _positive(win.get("to_server_p50_ms")), "to server P50", colour="#2ca02c",
          hover_unit=" ms")
    _line(fig, 2, tw, _positive(win.get("to_server_p99_ms")), "to server P99", colour="#d62728",
          hover_unit=" ms")
    _line(fig, 2, tw, _positive(win.get("p99_ms")), "request latency P99", colour="#444", dash="dot",
          hover_unit=" ms")
    for budget_ms, clients in client_timeouts_ms(result).items():
        _limit_line(fig, 2, tw, budget_ms, 0.0, f"client_timeout {', '.join(clients)}", "ms")
    fig.update_yaxes(type="log", row=TO_SERVER_LATENCY_ROW, col=1)
    # (3) attempts the server never saw, and timeouts
    _line(fig, 3, tw, window_rate_per_s(result, "never_reached_server"), "attempts that never reached the server",
          colour="#8c564b", hover_unit=" /s")
    timeouts = [window_rate_per_s(result, f"failures.{kind}") for kind in TIMEOUT_KINDS]
    if any(rate is not None for rate in timeouts):
        total = sum(np.nan_to_num(rate) for rate in timeouts if rate is not None)
        _line(fig, 3, tw, total, "requests timed out (client, dial, TLS, header)", colour="#ff7f0e",
              dash="dash", hover_unit=" /s")

    _shade_faults(fig, result, n_rows)
    _mark_milestones(fig, milestone_marks(result), n_rows)
    s = result.summary
    stats = ""
    if s.get("to_server_p50_ms") is not None:
        stats = f": P50 {s['to_server_p50_ms']:,.1f} ms, P99 {s['to_server_p99_ms']:,.1f} ms"
    _stack_layout(fig, TO_SERVER_PANELS, per_panel_legend=True,
                  title=f"{result.scenario.name}: time before the server sees it{stats}", top_margin_px=130)
    return fig


def service_colours(services: list[str]) -> dict[str, str]:
    """One colour per service, in the scenario's order (the same in every graph figure)."""
    return {svc: SERVICE_COLOURS[i % len(SERVICE_COLOURS)] for i, svc in enumerate(services)}


def service_success_rate(result: RunResult, service: str) -> np.ndarray | None:
    """What the service's collapse rule reads: successes / arrivals of the requests to it over
    the trailing collapse window (``svc.<s>.goodput_rps`` / ``svc.<s>.offered_rps``); NaN
    where nothing arrived."""
    goodput = result.windows.get(f"svc.{service}.goodput_rps")
    offered = result.windows.get(f"svc.{service}.offered_rps")
    if goodput is None or offered is None:
        return None
    goodput = np.asarray(goodput, dtype=float)
    offered = np.asarray(offered, dtype=float)
    out = np.full(len(offered), np.nan)
    np.divide(goodput, offered, out=out, where=offered > 0)
    return out


def service_level(result: RunResult, service: str, column: str) -> np.ndarray | None:
    """A per-service level: ``svc.<s>.<column>``, or the process column when the run has one service."""
    if len(result.scenario.services) == 1:
        return result.levels.get(column)
    return result.levels.get(f"svc.{service}.{column}")


def _trigger_line(fig: go.Figure, result: RunResult, n_rows: int) -> None:
    trigger = summary_or_milestone(result, "trigger_at_s")
    if trigger is not None:
        _mark_milestones(fig, [MilestoneMark("trigger", "trigger", trigger)], n_rows)


def services_figure(result: RunResult) -> go.Figure:
    """One line per service over the window grid (docs/outputs.md, *Service graphs*): (1) the
    success rate its collapse rule reads, with ``collapse_fraction`` dashed; (2) the P99 latency
    of the requests to it; (3) its live instances; (4) its CPU utilization. A dotted line in
    the service's colour marks its collapse in every panel, and a marker on panel 1 (a diamond
    for the success-rate rule, a cross when every instance was dead)."""
    n_rows = len(SERVICES_PANELS)
    fig = make_subplots(rows=n_rows, cols=1, shared_xaxes=True, vertical_spacing=0.05,
                        subplot_titles=[title for title, _ in SERVICES_PANELS])
    services = list(result.scenario.services)
    colours = service_colours(services)
    info = result.summary.get("services") or {}
    tw = np.asarray(result.windows.get("time_s", []), dtype=float)
    t = np.asarray(result.levels.get("time_s", []), dtype=float)
    for svc in services:
        colour = colours[svc]
        common = dict(colour=colour, legend="legend", legendgroup=svc)
        rate = service_success_rate(result, svc)
        _line(fig, 1, tw, rate, svc, showlegend=True, **common)
        _line(fig, 2, tw, _positive(result.windows.get(f"svc.{svc}.p99_ms")), svc, showlegend=False,
              hover_unit=" ms", **common)
        _line(fig, 3, t, service_level(result, svc, "alive"), svc, showlegend=False, **common)
        _line(fig, 4, t, service_level(result, svc, "cpu_utilization"), svc, showlegend=False, **common)
        at_s = (info.get(svc) or {}).get("collapsed_at_s")
        if at_s is None:
            continue
        cause = info[svc].get("collapse_cause") or "success_rate"
        for row in range(1, n_rows + 1):
            sfx = _axis_suffix(row)
            fig.add_shape(type="line", xref=f"x{sfx}", yref=f"y{sfx} domain", x0=at_s, x1=at_s, y0=0, y1=1,
                          line=dict(color=colour, width=1.2, dash="dot"), name=f"collapse:{svc}")
        y_at = 0.0
        if rate is not None and len(tw):
            k = int(np.clip(np.searchsorted(tw, at_s - 1e-9), 0, len(tw) - 1))
            y_at = float(rate[k]) if np.isfinite(rate[k]) else 0.0
        fig.add_trace(go.Scatter(
            x=[at_s], y=[y_at], mode="markers", name=f"{svc} collapsed", legend="legend", legendgroup=svc,
            showlegend=False, marker=dict(color=colour, size=11, symbol=COLLAPSE_SYMBOLS.get(cause, "diamond"),
                                          line=dict(width=1, color="#222")),
            hovertemplate=f"{svc} collapsed at %{{x:.2f}} s ({cause.replace('_', ' ')})<extra></extra>"),
            row=1, col=1)
    fraction = float(result.scenario.outcome.collapse_fraction)
    if len(tw):
        fig.add_trace(go.Scatter(
            x=[float(tw[0]), float(tw[-1])], y=[fraction, fraction], mode="lines", name=f"collapse_fraction {fraction:g}",
            line=dict(color="#d62728", dash="dash", width=1.2), legend="legend",
            hovertemplate=f"collapse_fraction {fraction:g}<extra></extra>"), row=1, col=1)
    fig.update_yaxes(range=[-0.03, 1.03], row=1, col=1)
    fig.update_yaxes(type="log", row=SERVICES_LATENCY_ROW, col=1)
    _shade_faults(fig, result, n_rows)
    _trigger_line(fig, result, n_rows)
    radius = result.summary.get("blast_radius")
    title = f"{result.scenario.name}: services" + (f", blast radius {radius} of {len(services)}"
                                                    if radius is not None else "")
    _stack_layout(fig, SERVICES_PANELS, per_panel_legend=False, title=title, top_margin_px=110)
    fig.update_layout(legend=dict(x=1.01, xanchor="left", y=1, yanchor="top", font=dict(size=10)))
    return fig


def cascade_figure(result: RunResult) -> go.Figure:
    """The cascade timeline: one row per service, the collapsed ones first in the order they
    collapsed (top to bottom), then the others. A thick bar where the service's success rate
    (``service_success_rate``) was below ``collapse_fraction``, a marker at its collapse
    instant (diamond: success-rate rule; cross: no live instance), a line joining the markers
    in cascade order; fault windows shaded, the trigger dotted."""
    services = list(result.scenario.services)
    colours = service_colours(services)
    cascade = result.summary.get("cascade") or []
    collapsed = [c["service"] for c in cascade]
    rows = collapsed + [svc for svc in services if svc not in collapsed]
    fig = go.Figure()
    tw = np.asarray(result.windows.get("time_s", []), dtype=float)
    fraction = float(result.scenario.outcome.collapse_fraction)
    for svc in rows:
        rate = service_success_rate(result, svc)
        if rate is None or not len(tw):
            continue
        below = np.where(rate < fraction, 1.0, np.nan)[: len(tw)]
        x, y = [], []
        for start, stop in _runs(~np.isnan(below)):
            x += [float(tw[start]), float(tw[stop - 1]), None]
            y += [svc, svc, None]
        if x:
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines", name=f"{svc}: success below {fraction:g}", showlegend=False,
                line=dict(color=colours[svc], width=9), opacity=0.35,
                hovertemplate=f"{svc}: success rate below {fraction:g} at %{{x:.2f}} s<extra></extra>"))
    if cascade:
        fig.add_trace(go.Scatter(
            x=[c["collapsed_at_s"] for c in cascade], y=[c["service"] for c in cascade], mode="lines",
            line=dict(color="#7f0000", width=1, dash="dot"), name="cascade order", showlegend=False,
            hoverinfo="skip"))
        for c in cascade:
            svc = c["service"]
            after = f" (trigger +{c['collapse_time_s']:.2f} s)" if c.get("collapse_time_s") is not None else ""
            fig.add_trace(go.Scatter(
                x=[c["collapsed_at_s"]], y=[svc], mode="markers+text", name=svc, showlegend=False,
                text=[f"{c['collapsed_at_s']:.1f} s"], textposition="middle right",
                marker=dict(color=colours[svc], size=13, symbol=COLLAPSE_SYMBOLS.get(c["cause"], "diamond"),
                            line=dict(width=1, color="#222")),
                hovertemplate=f"{svc} collapsed at %{{x:.3f}} s{after}, {c['cause'].replace('_', ' ')}<extra></extra>"))
    for fault in result.milestones.faults:
        fig.add_shape(type="rect", xref="x", yref="paper", x0=fault.start_at, x1=fault.end_at, y0=0, y1=1,
                      fillcolor=FAULT_FILL, line_width=0, layer="below", name=f"fault:{fault.kind}")
        fig.add_annotation(text=f"{fault.kind} ({fault.target})", x=fault.start_at, xref="x", xanchor="left",
                           y=1, yref="paper", yanchor="bottom", showarrow=False,
                           font=dict(size=10, color="#a65c00"), name=f"fault:{fault.kind}")
    trigger = summary_or_milestone(result, "trigger_at_s")
    if trigger is not None:
        fig.add_shape(type="line", xref="x", yref="paper", x0=trigger, x1=trigger, y0=0, y1=1,
                      line=dict(color=MILESTONE_COLOURS["trigger"], width=1.2, dash="dot"), name="milestone:trigger")
    end_s = float(result.milestones.end_at_s or result.scenario.duration)
    fig.update_xaxes(title_text="time (s)", range=[0, end_s], showgrid=True)
    # every service gets its row, with data or not (an invisible point per row fixes the axis)
    fig.add_trace(go.Scatter(x=[None] * len(rows), y=rows, mode="markers", showlegend=False, hoverinfo="skip",
                             name="services", marker=dict(opacity=0)))
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(rows)), type="category",
                     range=[-0.5, len(rows) - 0.5])
    radius = len(cascade)
    fig.update_layout(
        title=dict(text=f"{result.scenario.name}: cascade, blast radius {radius} of {len(services)}",
                   x=0.01, xanchor="left"),
        height=max(260, 60 + 28 * len(rows) + 80), margin=dict(l=140, r=40, t=80, b=50),
        template="plotly_white", hovermode="closest")
    return fig


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of every run of True values."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], np.asarray(flags, dtype=np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def client_timeouts_ms(result: RunResult) -> dict[float, list[str]]:
    """Each distinct ``client_timeout`` (ms) set on a client, with the clients that have it."""
    out: dict[float, list[str]] = {}
    for name, client in result.scenario.clients.items():
        timeout_s = float(getattr(getattr(client, "transport", None), "client_timeout", 0.0) or 0.0)
        if timeout_s > 0:
            out.setdefault(timeout_s * 1000.0, []).append(name)
    return out


def comparison_figure(results: list[tuple[str, RunResult]]) -> go.Figure:
    """Key series of several runs overlaid, one colour per run, shared time axis."""
    n_rows = len(COMPARISON_PANELS)
    fig = make_subplots(rows=n_rows, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=[title for title, _ in COMPARISON_PANELS])
    seen_faults: set[tuple[str, float, float]] = set()
    for i, (label, result) in enumerate(results):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        lv, win = result.levels, result.windows
        t = np.asarray(lv.get("time_s", []), dtype=float)
        tw = np.asarray(win.get("time_s", []), dtype=float)
        goodput = win.get("goodput_untouched_rps")
        if goodput is None:
            goodput = window_rate_per_s(result, "successes_untouched")
        series = (
            (t, lv.get("server_connections")),
            (t, lv.get("open_fds")),
            (t, lv.get("memory_mib")),
            (tw, goodput),
            (tw, _positive(win.get("p99_ms"))),
        )
        first_shown = True
        for row, (x, y) in enumerate(series, start=1):
            if y is None or len(y) == 0:
                continue
            _line(fig, row, x, y, label, colour=colour, legend="legend", legendgroup=label,
                  showlegend=first_shown)
            first_shown = False
        collapse_at = summary_or_milestone(result, "collapse_at_s")
        if collapse_at is not None:
            for row in range(1, n_rows + 1):
                s = _axis_suffix(row)
                fig.add_shape(type="line", xref=f"x{s}", yref=f"y{s} domain", x0=collapse_at,
                              x1=collapse_at, y0=0, y1=1, line=dict(color=colour, dash="dot", width=1),
                              name=f"milestone:collapse:{label}")
        for fault in result.milestones.faults:
            seen_faults.add((fault.kind, float(fault.start_at), float(fault.end_at)))
    for kind, start_at, end_at in sorted(seen_faults, key=lambda f: (f[1], f[2], f[0])):
        for row in range(1, n_rows + 1):
            s = _axis_suffix(row)
            fig.add_shape(type="rect", xref=f"x{s}", yref=f"y{s} domain", x0=start_at, x1=end_at,
                          y0=0, y1=1, fillcolor=FAULT_FILL, line_width=0, layer="below",
                          name=f"fault:{kind}")
        fig.add_annotation(text=kind, x=start_at, xref="x", xanchor="left", y=1, yref="y domain",
                           yanchor="top", showarrow=False, font=dict(size=10, color="#a65c00"),
                           name=f"fault:{kind}")
    fig.update_yaxes(type="log", row=COMPARISON_LATENCY_ROW, col=1)
    _stack_layout(fig, COMPARISON_PANELS, per_panel_legend=False,
                  title="Scenario comparison (dotted lines: collapse of each run)", top_margin_px=80)
    return fig


# ------------------------------------------------------------------- helpers


def _stack_keep(total: np.ndarray) -> np.ndarray:
    """Indexes to draw of stacked series: all of them, or the min/max envelope of their total."""
    index = np.arange(len(total), dtype=float)
    kept, _ = decimate(index, total)
    return kept.astype(np.int64)


def _nanmax(y: Any) -> float:
    if y is None or len(y) == 0:
        return 0.0
    arr = np.asarray(y, dtype=float)
    return float(np.nanmax(arr)) if np.isfinite(arr).any() else 0.0


def _positive(y: Any) -> np.ndarray | None:
    """Values for a log axis: non-positive ones become gaps instead of errors."""
    if y is None:
        return None
    arr = np.asarray(y, dtype=float).copy()
    arr[~(arr > 0)] = np.nan
    return arr
