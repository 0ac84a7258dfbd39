"""Plotly figures of the validation report, one per family of checks (built from the check records).

Every function takes the JSON check records (``Check.to_json()``) of its family and returns a
``go.Figure``; the report embeds them (experiments/validation/report.py).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from experiments.validation import analytic

STATUS_COLOURS = {"pass": "#2e7d32", "fail": "#c62828", "known_limitation": "#9e6a00", "error": "#6a1b9a",
                  "info": "#1565c0"}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def _layout(fig: go.Figure, title: str, height: int = 520) -> go.Figure:
    fig.update_layout(title=title, height=height, template="plotly_white", legend={"orientation": "v"},
                      margin={"l": 70, "r": 30, "t": 60, "b": 50})
    return fig


def queueing_figure(family: str, checks: list[dict[str, Any]]) -> go.Figure:
    """Simulated estimates (99% CI bars) against the closed form, across the grid; below, the
    relative error with its interval."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.06)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in checks:
        p = c["params"]
        key = _group_key(c)
        groups[key].append(c)
        del p
    for i, (key, items) in enumerate(sorted(groups.items())):
        colour = PALETTE[i % len(PALETTE)]
        items.sort(key=lambda c: _x(c))
        xs = [_x(c) for c in items]
        est = [c["estimate"] for c in items]
        ref = [c["reference_value"] for c in items]
        lo = [c["ci_low"] for c in items]
        hi = [c["ci_high"] for c in items]
        up = [(h - e) if h is not None and e is not None else None for h, e in zip(hi, est)]
        down = [(e - l) if l is not None and e is not None else None for l, e in zip(lo, est)]
        text = [f"{c['id']}<br>{c['status']}<br>reference {c['reference_value']:.5g}" for c in items]
        fig.add_trace(go.Scatter(x=xs, y=est, mode="markers", name=f"{key} simulated (99% CI)",
                                 marker={"color": colour, "size": 8, "symbol": [
                                     "circle" if c["status"] == "pass" else "x" for c in items]},
                                 error_y={"type": "data", "array": up, "arrayminus": down, "visible": True},
                                 hovertext=text, hoverinfo="text+y", legendgroup=key), row=1, col=1)
        cx, cy = _curve(items[0], xs)
        if cx is not None:
            fig.add_trace(go.Scatter(x=cx, y=cy, mode="lines", name=f"{key} closed form",
                                     line={"color": colour, "dash": "dot"}, legendgroup=key), row=1, col=1)
        else:
            fig.add_trace(go.Scatter(x=xs, y=ref, mode="lines+markers", name=f"{key} closed form",
                                     marker={"symbol": "diamond-open"}, line={"color": colour, "dash": "dot"},
                                     legendgroup=key), row=1, col=1)
        rel = [(e / r - 1.0) if r else None for e, r in zip(est, ref)]
        rel_up = [(h / r - 1.0) - v if r and v is not None and h is not None else None for h, r, v in zip(hi, ref, rel)]
        rel_down = [v - (l / r - 1.0) if r and v is not None and l is not None else None for l, r, v in zip(lo, ref, rel)]
        fig.add_trace(go.Scatter(x=xs, y=[100 * v if v is not None else None for v in rel], mode="markers",
                                 showlegend=False, marker={"color": colour, "size": 7},
                                 error_y={"type": "data", "array": [100 * v if v is not None else None for v in rel_up],
                                          "arrayminus": [100 * v if v is not None else None for v in rel_down]},
                                 legendgroup=key, hovertext=text, hoverinfo="text+y"), row=2, col=1)
    fig.add_hline(y=0, line={"color": "#888", "width": 1}, row=2, col=1)
    xlabel = "offered load a = lambda / mu (Erlangs)" if "Erlang B" in family else "utilisation rho = lambda / (c mu)"
    fig.update_xaxes(title_text=xlabel, row=2, col=1)
    fig.update_yaxes(title_text=_ylabel(family), row=1, col=1)
    fig.update_yaxes(title_text="(simulated / closed form - 1) %", row=2, col=1)
    if family.startswith("M/M/1 sojourn") or "Erlang C" in family or "Pollaczek" in family:
        fig.update_yaxes(type="log", row=1, col=1)
    return _layout(fig, family, 640)


def _group_key(c: dict[str, Any]) -> str:
    p = c["params"]
    kind = p["kind"]
    if kind == "mmc":
        return "P99" if c["id"].endswith(".p99") else ("mean" if p["c"] == 1 else f"c = {p['c']}")
    if kind == "mg1":
        return p["dist"].replace("_", "-")
    if kind == "erlang_b":
        return f"c = {p['c']}" + (" (constant service)" if p["dist"] == "constant" else "")
    return f"D = {p['deadline_s'] / p['mean_service_s']:g}/mu"


def _x(c: dict[str, Any]) -> float:
    p = c["params"]
    return p["rho"] * p["c"] if p["kind"] == "erlang_b" else p["rho"]


def _curve(c: dict[str, Any], xs: list[float]) -> tuple[list[float] | None, list[float] | None]:
    """The closed form as a dense curve over the group's x range (None when it is not a curve in x)."""
    p = c["params"]
    kind = p["kind"]
    mean = p["mean_service_s"]
    mu = 1.0 / mean
    lo, hi = min(xs), max(xs)
    if hi <= lo:
        return None, None
    grid = list(np.linspace(max(0.02, lo * 0.9), hi * 1.02 if kind in ("erlang_b", "abandon", "firm") else
                            min(hi * 1.02, 0.985), 80))
    out = []
    for x in grid:
        if kind == "mmc" and p["c"] == 1:
            lam = x * mu
            out.append(analytic.mm1_sojourn_quantile_s(lam, mu, 0.99) if c["id"].endswith(".p99")
                       else analytic.mm1_sojourn_mean_s(lam, mu))
        elif kind == "mmc":
            out.append(analytic.mmc_wait_mean_s(p["c"], x * p["c"] * mu, mu))
        elif kind == "mg1":
            es = mean
            es2 = c["params"].get("second_moment_s2")
            if es2 is None:
                return None, None
            out.append(analytic.mg1_wait_mean_s(x / es, es, es2))
        elif kind == "erlang_b":
            out.append(analytic.erlang_b(p["c"], x))
        elif kind == "abandon":
            out.append(analytic.mm1_abandon_probability(x * mu, mu, p["deadline_s"]))
        elif kind == "firm":
            out.append(analytic.mm1_firm_deadline_miss_probability(x * mu, mu, p["deadline_s"]))
    return grid, out


def _ylabel(family: str) -> str:
    if "sojourn" in family:
        return "latency (s)"
    if "wait" in family:
        return "mean wait in queue (s)"
    return "probability"


def little_figure(checks: list[dict[str, Any]]) -> go.Figure:
    """L from the sampled levels against lambda W from the records, every case and group."""
    fig = go.Figure()
    kinds: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in checks:
        little = c["params"].get("little") or {}
        if "L_levels" in little:
            kinds[c["id"].rsplit(".little.", 1)[1].split(".")[0]].append(c)
    lows = []
    for i, (kind, items) in enumerate(sorted(kinds.items())):
        xs = [max(c["params"]["little"]["L_records"], 1e-4) for c in items]
        ys = [max(c["params"]["little"]["L_levels"], 1e-4) for c in items]
        lows += xs + ys
        text = [f"{c['title']}<br>lambda {c['params']['little']['lambda_per_s']:.4g}/s, "
                f"W {c['params']['little']['W_s']:.4g} s<br>{c['status']}" for c in items]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=kind.replace("_", " "), hovertext=text,
                                 hoverinfo="text+x+y", marker={"size": 8, "color": PALETTE[i % len(PALETTE)],
                                 "symbol": ["circle" if c["status"] == "pass" else "x" for c in items]}))
    if lows:
        lo, hi = min(lows), max(lows)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="L = lambda W",
                                 line={"color": "#888", "dash": "dot"}))
    fig.update_xaxes(type="log", title_text="lambda W from the records / handler and pool intervals")
    fig.update_yaxes(type="log", title_text="L: time-average of the sampled level")
    return _layout(fig, "Little's law on every shipped scenario: client, service and pool levels", 560)


def status_matrix_figure(checks: list[dict[str, Any]]) -> go.Figure:
    """Cases x checks, coloured by status."""
    cases: list[str] = []
    kinds: list[str] = []
    cell: dict[tuple[str, str], str] = {}
    for c in checks:
        case = c["params"].get("case", "?")
        kind = c["id"][len("conservation.") + len(case) + 1:]
        kind = kind.split(".")[0] + ("." + kind.split(".")[1] if kind.startswith(("little", "rule")) else "")
        if case not in cases:
            cases.append(case)
        if kind not in kinds:
            kinds.append(kind)
        prev = cell.get((case, kind))
        order = ["pass", "info", "known_limitation", "error", "fail"]
        if prev is None or order.index(c["status"]) > order.index(prev):
            cell[(case, kind)] = c["status"]
    codes = {"pass": 0, "known_limitation": 1, "fail": 2, "error": 3, "info": 0}
    z = [[codes.get(cell.get((case, k), ""), None) for k in kinds] for case in cases]
    text = [[cell.get((case, k), "n/a") for k in kinds] for case in cases]
    colours = [STATUS_COLOURS[k] for k in ("pass", "known_limitation", "fail", "error")]
    scale = []
    for i, colour in enumerate(colours):            # four flat bands: code i sits in the middle of band i
        scale += [[i / 4, colour], [(i + 1) / 4, colour]]
    z = [[None if v is None else (v + 0.5) / 4 * 3 for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=kinds, y=cases, text=text, hovertemplate="%{y}<br>%{x}: %{text}<extra></extra>",
                               colorscale=scale, zmin=0, zmax=3, showscale=False, xgap=2, ygap=2))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, "Conservation checks per shipped case (green pass, amber known limitation, red fail; "
                        "blank: not applicable)", max(360, 22 * len(cases) + 160))


def monotonicity_figure(checks: list[dict[str, Any]]) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(checks), subplot_titles=[c["title"] for c in checks])
    for j, c in enumerate(checks, start=1):
        prop = c["params"]["property"]
        for i, curve in enumerate(c["params"]["curves"]):
            ys = [v if v is not None and math.isfinite(v) else None for v in curve["values"]]
            fig.add_trace(go.Scatter(x=curve["ladder"], y=ys, mode="lines+markers", showlegend=False,
                                     line={"color": PALETTE[i % len(PALETTE)], "width": 1},
                                     hovertext=f"example {i + 1}", hoverinfo="text+x+y"), row=1, col=j)
        xlabel, ylabel = {"client_timeout": ("client_timeout (s)", "requests timed out"),
                          "cores": ("cores", "mean latency (s)"),
                          "fd_limit": ("fd_limit", "first EMFILE at (s); gap = never")}[prop]
        fig.update_xaxes(title_text=xlabel, type="log" if prop != "cores" else "linear", row=1, col=j)
        fig.update_yaxes(title_text=ylabel, type="log" if prop == "cores" else "linear", row=1, col=j)
    return _layout(fig, "Monotonicity: each line is one drawn configuration over its ladder of settings", 460)


def semantics_figure(checks: list[dict[str, Any]]) -> go.Figure:
    families: list[str] = []
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for c in checks:
        if c["family"] not in families:
            families.append(c["family"])
        counts[(c["family"], c["status"])] += 1
    fig = go.Figure()
    for status in ("pass", "known_limitation", "fail", "error", "info"):
        ys = [counts[(f, status)] for f in families]
        if any(ys):
            fig.add_trace(go.Bar(y=families, x=ys, name=status, orientation="h",
                                 marker={"color": STATUS_COLOURS[status]}))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="tests")
    return _layout(fig, "Reference semantics: exact-timeline and reference-number tests by family",
                   max(320, 34 * len(families) + 140))


def convergence_figure(checks: list[dict[str, Any]]) -> go.Figure:
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=["mean of the first r replications / mean of all, with its 95% CI",
                                        "95% CI half-width, % of the mean"])
    for i, c in enumerate(checks):
        rows = c["params"]["rows"]
        if not rows:
            continue
        colour = PALETTE[i % len(PALETTE)]
        final = rows[-1]["mean"] or 1.0
        r = [row["replications"] for row in rows]
        mean = [row["mean"] / final for row in rows]
        lo = [row["low"] / final for row in rows]
        hi = [row["high"] / final for row in rows]
        label = c["title"].replace(" as replications grow", "")
        fig.add_trace(go.Scatter(x=r + r[::-1], y=hi + lo[::-1], fill="toself", line={"width": 0},
                                 fillcolor=colour, opacity=0.15, showlegend=False, hoverinfo="skip",
                                 legendgroup=label), row=1, col=1)
        fig.add_trace(go.Scatter(x=r, y=mean, mode="lines+markers", name=label, line={"color": colour},
                                 legendgroup=label), row=1, col=1)
        fig.add_trace(go.Scatter(x=r, y=[100 * row["relative_half_width"] for row in rows], mode="lines+markers",
                                 showlegend=False, line={"color": colour}, legendgroup=label), row=2, col=1)
    fig.add_hline(y=10, line={"color": "#888", "dash": "dot"}, row=2, col=1)
    fig.update_xaxes(title_text="replications r", row=2, col=1)
    fig.update_yaxes(type="log", row=2, col=1)
    return _layout(fig, "Convergence: how many replications a sweep needs", 640)
