"""Self-contained HTML reports: one run, and a comparison of several runs.

This module owns the report pages: the header (scenario, seed, outcome badge,
provenance), the KPI table with every summary key formatted with its unit, the
milestone list, the plotly figures of ``experiments.figures`` (the time series,
and the time before the server sees an attempt), for a service-graph run the
*Services* section (cascade, graph figures, tables per entry client, service and
edge), and the scenario as YAML. Pages
inline plotly.js once, so they open offline from a file or an e-mail attachment.
``render_*`` build the page as a string; ``write_*`` write it atomically
(``experiments.run_files.write_atomic``).
"""

from __future__ import annotations

import dataclasses
import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import yaml

from experiments.console import cascade_text
from experiments.figures import (
    TO_SERVER_LABELS, cascade_figure, comparison_figure, milestone_marks, services_figure,
    timeseries_figure, to_server_figure,
)
from experiments.kpis import untouched_goodput_rps
from experiments.run_files import write_atomic
from sim.graph_outputs import GRAPH_SUMMARY_KEYS
from sim.outputs import is_graph_run
from sim.result import RunResult

OUTCOME_COLOURS: dict[str, str] = {
    "stable": "#2e7d32",
    "recovered": "#1565c0",
    "undecided": "#9e6a00",
    "metastable": "#6a1b9a",
    "crashed": "#c62828",
}

# summary key -> (label, unit); the unit picks the formatting (see format_kpi)
KPI_LABELS: dict[str, tuple[str, str]] = {
    "scenario": ("Scenario", ""),
    "seed": ("Seed", "int"),
    "duration_s": ("Measured duration (end - warm-up)", "s"),
    "offered_rps": ("Offered load", "req/s"),
    "goodput_rps": ("Goodput", "req/s"),
    "success_rate": ("Success rate", "%"),
    "p50_ms": ("P50 latency", "ms"),
    "p90_ms": ("P90 latency", "ms"),
    "p99_ms": ("P99 latency", "ms"),
    "p999_ms": ("P99.9 latency", "ms"),
    "p99_success_ms": ("P99 latency of successes", "ms"),
    "attempts_per_request": ("Attempts per request", "x"),
    "incomplete": ("Incomplete requests", "int"),
    "errors": ("Errors by kind", "errors"),
    "to_server_mean_ms": ("Time before the server sees an attempt, mean", "ms"),
    "to_server_p50_ms": ("Time before the server sees an attempt, P50", "ms"),
    "to_server_p99_ms": ("Time before the server sees an attempt, P99", "ms"),
    "to_server_pool_wait_fraction": ("... of which pool wait", "%"),
    "to_server_connect_fraction": ("... of which TCP connect", "%"),
    "to_server_tls_fraction": ("... of which TLS handshake", "%"),
    "to_server_backlog_fraction": ("... of which accept backlog", "%"),
    "to_server_flow_wait_fraction": ("... of which flow-control wait", "%"),
    "to_server_transit_fraction": ("... of which network transit", "%"),
    "attempts_reached_server": ("Attempts the server got", "int"),
    "attempts_never_reached_server": ("Attempts that never reached the server", "int"),
    "max_server_connections": ("Max server connections", "int"),
    "max_accept_queue": ("Max accept queue", "int"),
    "max_open_fds": ("Max open fds", "int"),
    "max_goroutines": ("Max goroutines", "int"),
    "peak_memory_mib": ("Peak memory", "MiB"),
    "max_cpu_utilization": ("Max CPU utilization", "%"),
    "wasted_work_fraction": ("Wasted handler work", "%"),
    "trigger_at_s": ("Trigger", "at"),
    "collapse_at_s": ("Collapse", "at"),
    "collapse_time_s": ("Time to collapse (from trigger)", "s"),
    "recovered_at_s": ("Recovered", "at"),
    "outcome": ("Outcome", "outcome"),
    "faults_end_at_s": ("End of the faults", "at"),
    "goodput_during_fault_rps": ("Goodput during the faults", "req/s"),
    "healthy_again_at_s": ("Healthy again after the faults", "at"),
    "time_to_recover_s": ("Time to recover (from the end of the faults)", "s"),
    "breaker_trips": ("Breaker trips", "int"),
    "first_trip_at_s": ("First breaker trip", "at"),
    "time_to_trip_s": ("Time to trip (from trigger)", "s"),
    "breakers_closed_at_s": ("Breakers closed again", "at"),
    "retries_denied": ("Retries denied by the budget", "int"),
    "shed_rejected": ("Shed at the gate (503)", "int"),
    "shed_dropped": ("Shed from the queue (503)", "int"),
    "crashes": ("Crashes (kills)", "int"),
    "crash_loop": ("Crash loop", "bool"),
    "fd_exhausted_at_s": ("fd exhaustion (first EMFILE)", "at"),
    "oom_killed_at_s": ("First OOM kill", "at"),
    "truncated": ("Truncated by a guard", "bool"),
    "truncated_by": ("Truncating guard", ""),
    "events": ("Simulation events", "int"),
    "wall_s": ("Wall-clock time", "s"),
    "provenance": ("Provenance", "mapping"),
}

COMPARISON_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (summary key or computed name, header, unit)
    ("outcome", "Outcome", "outcome"),
    ("collapse_time_s", "Time to collapse", "s"),
    ("max_server_connections", "Max server connections", "int"),
    ("max_open_fds", "Max open fds", "int"),
    ("max_goroutines", "Max goroutines", "int"),
    ("peak_memory_mib", "Peak memory", "MiB"),
    ("p99_ms", "P99 latency", "ms"),
    ("untouched_goodput_rps", "Untouched goodput from the trigger", "req/s"),
    ("goodput_during_fault_rps", "Goodput during the faults", "req/s"),
    ("attempts_per_request", "Attempts per request", ""),
    ("wasted_work_fraction", "Wasted work", "%"),
    ("time_to_trip_s", "Time to trip", "s"),
    ("time_to_recover_s", "Time to recover after the faults", "s"),
)

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px auto;
       max-width: 1500px; padding: 0 16px; color: #222; }
h1 { margin-bottom: 4px; } h2 { margin-top: 32px; border-bottom: 1px solid #ddd; }
.description { color: #444; margin: 4px 0 12px; }
.badge { display: inline-block; padding: 3px 12px; border-radius: 12px; color: #fff;
         font-weight: 600; font-size: 0.95em; vertical-align: middle; }
.meta { color: #555; font-size: 0.9em; } .meta code { background: #f4f4f4; padding: 0 4px; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #fafafa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.key { color: #888; font-family: monospace; font-size: 0.9em; }
table.inner td, table.inner th { border: none; padding: 1px 8px 1px 0; }
ul.milestones li { margin: 3px 0; } .muted { color: #888; }
details { margin: 16px 0; } summary { cursor: pointer; font-weight: 600; }
pre { background: #f6f8fa; padding: 12px; overflow-x: auto; font-size: 0.85em; }
"""


# ------------------------------------------------------------------ formatting


def format_number(value: float | int) -> str:
    """A number for people: thousands separators, about four significant digits."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:.3g}"


def format_kpi(value: Any, unit: str) -> str:
    """One value as HTML, formatted by its unit (``%`` takes a fraction)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<span class="muted">never</span>' if unit == "at" else '<span class="muted">n/a</span>'
    if unit == "errors":
        return errors_table(value)
    if unit == "mapping" or isinstance(value, dict):
        return mapping_table(value)
    if isinstance(value, (list, tuple)):
        return html.escape(", ".join(str(v) for v in value))
    if unit == "outcome":
        return outcome_badge(str(value))
    if unit == "bool" or isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, str):
        return html.escape(value)
    if unit == "%":
        return f"{100.0 * float(value):.4g} %"
    if unit == "at":
        return f"{float(value):,.3f} s"
    if unit == "int" or unit == "":
        return format_number(value)
    if unit == "x":
        return f"{format_number(value)} &times;"
    return f"{format_number(value)} {html.escape(unit)}"


def errors_table(errors: Any) -> str:
    if not isinstance(errors, dict) or not errors:
        return '<span class="muted">none</span>'
    rows = [(kind, count) for kind, count in errors.items() if count]
    if not rows:
        return '<span class="muted">none</span>'
    total = sum(count for _, count in rows)
    body = "".join(f"<tr><td>{html.escape(str(kind))}</td><td class=\"num\">{format_number(count)}</td></tr>"
                   for kind, count in sorted(rows, key=lambda kv: -kv[1]))
    return (f'<table class="inner errors">{body}'
            f'<tr><th>total</th><th class="num">{format_number(total)}</th></tr></table>')


def mapping_table(mapping: Any) -> str:
    if not isinstance(mapping, dict) or not mapping:
        return '<span class="muted">none</span>'
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td><code>{html.escape(str(v))}</code></td></tr>"
                   for k, v in mapping.items())
    return f'<table class="inner">{body}</table>'


def outcome_badge(outcome: str | None) -> str:
    name = outcome or "unknown"
    colour = OUTCOME_COLOURS.get(name, "#616161")
    return f'<span class="badge outcome-{html.escape(name)}" style="background:{colour}">{html.escape(name)}</span>'


# ------------------------------------------------------------------ page parts


def scenario_yaml(result: RunResult) -> str:
    """The scenario as YAML: the loader's dump when it is there, else a plain dump."""
    try:
        from sim.scenario_loader import dump_scenario_yaml
    except ImportError:
        dump_scenario_yaml = None
    if dump_scenario_yaml is not None:
        try:
            text = dump_scenario_yaml(result.scenario)
            if isinstance(text, str):
                return text
        except Exception:  # a loader in progress must not cost us the report
            pass
    return yaml.safe_dump(_plain(dataclasses.asdict(result.scenario)), sort_keys=False,
                          allow_unicode=True)


def milestones_html(result: RunResult) -> str:
    items: list[str] = []
    s, m = result.summary, result.milestones
    for fault in m.faults:
        touched = ", ".join(fault.touched_routes) or "none"
        items.append(f"<li><b>fault {html.escape(fault.kind)}</b> on <code>{html.escape(fault.target)}</code>: "
                     f"{fault.start_at:,.3f} s to {fault.end_at:,.3f} s (routes touched: {html.escape(touched)})</li>")
    for mark in milestone_marks(result):
        extra = ""
        if mark.kind == "collapse" and s.get("collapse_time_s") is not None:
            extra = f" ({format_number(s['collapse_time_s'])} s after the trigger)"
        if mark.kind == "truncated":
            extra = f": the run ended early, guard <code>{html.escape(str(m.truncated_by))}</code>"
        items.append(f"<li><b>{html.escape(mark.label)}</b> at {mark.at_s:,.3f} s{extra}</li>")
    if s.get("crash_loop"):
        items.append("<li><b>crash loop</b>: killed again after a restart</li>")
    end = f"{m.end_at_s:,.3f} s" if m.end_at_s else "n/a"
    alive = "alive" if m.alive_at_end else "dead"
    items.append(f"<li>end of run at {end}, process {alive}</li>")
    return '<ul class="milestones">' + "".join(items) + "</ul>"


def to_server_html(summary: dict[str, Any]) -> str:
    """The paragraph above the time-to-server figure: how to read it, and the run's figures."""
    how = ("Every attempt spends some time before the server's handler has its request: waiting for a "
           "pooled connection or an HTTP/2 stream slot, dialling (TCP connect with any SYN retransmits), "
           "the TLS handshake, queueing in the server's accept backlog, HTTP/2 flow control holding the "
           "body back, and the network transit itself. The top panel stacks the mean of each phase over "
           "the attempts the server got in each window (bucketed by the instant it got them), so the "
           "stack's height is their mean time-to-server; the middle panel puts its P50 and P99 beside "
           "the requests' P99 latency and each client's <code>client_timeout</code> (the gap between that "
           "P99 and the timeout is the budget left for the server's own work); the bottom panel counts "
           "attempts that ended before the server ever saw them (they are not in the two panels above) "
           "and requests failing with a timeout.")
    if summary.get("to_server_p50_ms") is None:
        figures = '<span class="muted">No attempt of the measured population reached the server.</span>'
    else:
        shares = ", ".join(
            f"{html.escape(label)} {format_kpi(summary.get(f'to_server_{part}_fraction'), '%')}"
            for part, label in TO_SERVER_LABELS.items())
        figures = (f"Attempts of the measured population that reached the server: P50 {format_kpi(summary['to_server_p50_ms'], 'ms')}, "
                   f"P99 {format_kpi(summary.get('to_server_p99_ms'), 'ms')}, mean "
                   f"{format_kpi(summary.get('to_server_mean_ms'), 'ms')} ({shares}).")
    never = summary.get("attempts_never_reached_server")
    if never:
        figures += (f" {format_number(never)} attempt{'s' if never != 1 else ''} ended without reaching "
                    "the server.")
    return f'<p class="description to-server">{how}</p>\n<p class="to-server-figures">{figures}</p>'


SERVICE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (key of summary["services"][s], header, unit)
    ("instances", "instances", "int"),
    ("handlers_started", "handlers started", "int"),
    ("requests", "requests to it", "int"),
    ("offered_rps", "offered", "req/s"),
    ("success_rate", "success", "%"),
    ("p50_ms", "P50", "ms"),
    ("p99_ms", "P99", "ms"),
    ("attempts_per_request", "attempts/req", "x"),
    ("errors", "errors", "errors"),
    ("max_cpu_utilization", "peak CPU", "%"),
    ("max_inflight_requests", "peak in flight", "int"),
    ("min_alive", "fewest live instances", "int"),
    ("collapsed_at_s", "collapsed", "at"),
)
EDGE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("requests", "requests", "int"),
    ("offered_rps", "offered", "req/s"),
    ("goodput_rps", "goodput", "req/s"),
    ("success_rate", "success", "%"),
    ("p50_ms", "P50", "ms"),
    ("p99_ms", "P99", "ms"),
    ("attempts_per_request", "attempts/req", "x"),
    ("incomplete", "incomplete", "int"),
    ("errors", "errors", "errors"),
)


def _record_table(rows: dict[str, dict[str, Any]], columns: tuple[tuple[str, str, str], ...],
                  first: str, css: str) -> str:
    if not rows:
        return '<p class="muted">none</p>'
    head = f"<tr><th>{html.escape(first)}</th>" + "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in columns) + "</tr>"
    body = []
    for name, row in rows.items():
        cells = "".join(f'<td class="{"num" if unit not in ("errors", "") else ""}">{format_kpi(row.get(key), unit)}</td>'
                        for key, _, unit in columns)
        body.append(f"<tr><td><code>{html.escape(name)}</code></td>{cells}</tr>")
    return f'<table class="{css}">{head}{"".join(body)}</table>'


def graph_html(result: RunResult) -> list[str]:
    """The *Services* section of a graph run: the cascade, the tables per entry client, service
    and edge, and the two graph figures (docs/outputs.md, *Service graphs*)."""
    s = result.summary
    cascade = s.get("cascade") or []
    items = []
    for c in cascade:
        after = (f", trigger +{format_number(c['collapse_time_s'])} s" if c.get("collapse_time_s") is not None else "")
        cause = "no live instance" if c["cause"] == "no_live_instance" else "success rate below the collapse fraction"
        items.append(f"<li><code>{html.escape(c['service'])}</code> at {c['collapsed_at_s']:,.3f} s{after} "
                     f"({cause})</li>")
    lead = (f'<p class="cascade"><b>Cascade:</b> {html.escape(cascade_text(s))}.</p>'
            + (f'<ol class="cascade">{"".join(items)}</ol>' if items else ""))
    how = ("A service collapsed at the first instant, from the trigger on, from which the success rate of "
           "the requests sent to it (by its callers and, for an entry service, by the load sources) stayed "
           "below the collapse fraction for the hold time, or at which it had no live instance. The blast "
           "radius counts the services that collapsed. Requests to a service are logical requests: a "
           "caller's retries are attempts of one request.")
    entry = {name: row for name, row in (s.get("entry_clients") or {}).items()}
    services = {name: row for name, row in (s.get("services") or {}).items()}
    edges = {name: row for name, row in (s.get("edges") or {}).items()}
    return [
        '<h2 id="services">Services</h2>', lead, f'<p class="description">{how}</p>',
        figure_html(cascade_figure(result), with_plotlyjs=False, div_id="cascade"),
        figure_html(services_figure(result), with_plotlyjs=False, div_id="services-figure"),
        "<h3>Entry clients (end to end)</h3>",
        _record_table(entry, (("target", "target", ""),) + EDGE_COLUMNS, "load source", "entry-clients"),
        "<h3>Services (requests sent to each)</h3>",
        _record_table(services, SERVICE_COLUMNS, "service", "services"),
        "<h3>Edges (caller -> callee)</h3>",
        _record_table(edges, EDGE_COLUMNS, "edge", "edges"),
    ]


def kpi_table(summary: dict[str, Any]) -> str:
    rows = []
    # a graph run's per-service, per-edge and cascade keys have their own section (graph_html)
    keys = [key for key in summary if key not in GRAPH_SUMMARY_KEYS] if summary else []
    for key in keys:
        label, unit = KPI_LABELS.get(key, (key, _guess_unit(key)))
        cls = "num" if unit not in ("errors", "mapping", "outcome", "") else ""
        rows.append(f'<tr><td>{html.escape(label)}</td><td class="{cls}">{format_kpi(summary[key], unit)}</td>'
                    f'<td class="key">{html.escape(key)}</td></tr>')
    if not rows:
        return '<p class="muted">No summary (sim.outputs did not run).</p>'
    return ('<table class="kpi"><tr><th>KPI</th><th>value</th><th>summary key</th></tr>'
            + "".join(rows) + "</table>")


def figure_html(fig: go.Figure, *, with_plotlyjs: bool, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=with_plotlyjs, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


# ------------------------------------------------------------------ pages


def render_report_html(result: RunResult) -> str:
    """The report page of one run as a self-contained HTML string."""
    scenario, summary = result.scenario, result.summary
    provenance = result.provenance or summary.get("provenance") or {}
    prov = " &middot; ".join(f"{html.escape(str(k))} <code>{html.escape(str(v))}</code>"
                             for k, v in provenance.items()) or "none recorded"
    description = (f'<p class="description">{html.escape(scenario.description)}</p>'
                   if scenario.description else "")
    header = (f"<h1>{html.escape(scenario.name)} {outcome_badge(summary.get('outcome'))}</h1>\n{description}\n"
              f'<p class="meta">seed <code>{result.seed}</code> &middot; replication '
              f"<code>{result.replication}</code> &middot; simulated {result.milestones.end_at_s:,.3f} s "
              f"&middot; wall {result.wall_s:,.2f} s</p>\n"
              f'<p class="meta">provenance: {prov}</p>')
    body = "\n".join([
        f"<header>{header}</header>",
        "<h2>Key results</h2>", kpi_table(summary),
        "<h2>Milestones</h2>", milestones_html(result),
        "<h2>Time series</h2>",
        figure_html(timeseries_figure(result), with_plotlyjs=True, div_id="timeseries"),
        '<h2 id="time-to-server">Time before the server sees it</h2>', to_server_html(summary),
        figure_html(to_server_figure(result), with_plotlyjs=False, div_id="to-server"),
        *(graph_html(result) if is_graph_run(result) and summary.get("services") is not None else []),
        "<h2>Scenario</h2>",
        "<details><summary>Scenario as YAML</summary><pre>"
        f"{html.escape(scenario_yaml(result))}</pre></details>",
    ])
    return _page(f"stormsim: {scenario.name} (seed {result.seed})", body)


def render_comparison_html(results: list[tuple[str, RunResult]]) -> str:
    """The comparison page of several labelled runs as a self-contained HTML string."""
    header_cells = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in COMPARISON_COLUMNS)
    rows = []
    for label, result in results:
        values = dict(result.summary)
        values["untouched_goodput_rps"] = untouched_goodput_rps(result, from_s=result.milestones.trigger_at_s)
        cells = "".join(
            f'<td class="{"num" if unit not in ("outcome",) else ""}">{format_kpi(values.get(key), unit)}</td>'
            for key, _, unit in COMPARISON_COLUMNS)
        rows.append(f"<tr><td><b>{html.escape(label)}</b><br><span class=\"muted\">"
                    f"{html.escape(result.scenario.name)}, seed {result.seed}</span></td>{cells}</tr>")
    table = (f'<table class="comparison"><tr><th>run</th>{header_cells}</tr>' + "".join(rows) + "</table>")
    body = "\n".join([
        "<header><h1>Scenario comparison</h1>"
        f'<p class="meta">{len(results)} runs</p></header>',
        "<h2>Key results</h2>", table,
        '<p class="muted">Untouched goodput: successes of requests no fault acted on, per second from the '
        "trigger (the first fault) to the end, from the per-window series (all traffic when every request "
        "was touched; from the warm-up when there is no fault).</p>",
        "<h2>Time series</h2>",
        figure_html(comparison_figure(results), with_plotlyjs=True, div_id="comparison"),
    ])
    return _page("stormsim: scenario comparison", body)


def write_report_html(result: RunResult, path: Path | str) -> Path:
    """Write the report page of one run to ``path`` atomically."""
    return write_atomic(path, render_report_html(result))


def write_comparison_html(results: list[tuple[str, RunResult]], path: Path | str) -> Path:
    """Write the comparison page of several labelled runs to ``path`` atomically."""
    return write_atomic(path, render_comparison_html(results))


# ------------------------------------------------------------------ helpers


def _guess_unit(key: str) -> str:
    if key.endswith("_ms"):
        return "ms"
    if key.endswith("_at_s"):
        return "at"
    if key.endswith("_s"):
        return "s"
    if key.endswith("_rps") or key.endswith("_per_s"):
        return "req/s" if key.endswith("_rps") else "/s"
    if key.endswith("_mib"):
        return "MiB"
    if key.endswith("_fraction") or key.endswith("_rate"):
        return "%"
    if isinstance(key, str) and key.startswith(("max_", "n_")):
        return "int"
    return ""


def _plain(value: Any) -> Any:
    """Values yaml.safe_dump accepts: tuples as lists, numpy scalars as Python ones."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
