"""The self-contained HTML report of a sweep folder (``report.html`` beside its runs).

The page shows what was swept (the manifest), how the runs went (ok and failed,
with the failures' errors), the headline figures chosen by the number of factors
(two or more: a heatmap per metric over the first two factors and the collapse
map; one: each metric with its CI band and the collapse probability with its
Wilson band; both: retry amplification and wasted work) and the table of cells.
plotly.js is inlined once, so the page opens offline. ``render_sweep_report``
builds the page as a string; ``write_sweep_report`` writes it atomically.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from experiments.report import _page, figure_html, format_number, outcome_badge
from experiments.run_files import write_atomic
from experiments.sweep_figures import (
    amplification_bars, collapse_map, factor_label, format_value, heatmap, lines_ci, metric_label,
    ordered_values, wasted_work_bars,
)
from experiments.sweep_summary import PROBABILITIES, SweepResults, load_sweep, summarize_groups

REPORT_FILE = "report.html"
BAR_METRICS: tuple[str, ...] = ("attempts_per_request", "wasted_work_fraction")
MAX_FAILED_LISTED = 100
MAX_ERROR_CHARS = 400
OUTCOMES: tuple[str, ...] = ("stable", "recovered", "undecided", "metastable", "crashed")


def render_sweep_report(out_dir: Path | str, confidence: float = 0.95) -> str:
    """The report page of a sweep folder as a self-contained HTML string."""
    sweep = load_sweep(out_dir, confidence, extra_metrics=BAR_METRICS)
    name = str(sweep.manifest.get("name") or Path(out_dir).name)
    body = "\n".join([
        header_html(sweep),
        "<h2>Runs</h2>", status_html(sweep),
        "<h2>Headline figures</h2>", figures_html(headline_figures(sweep), confidence),
        "<h2>Cells</h2>", cells_table_html(sweep, confidence),
        sweep_text_html(sweep.manifest),
    ])
    return _page(f"stormsim sweep: {name}", body)


def write_sweep_report(out_dir: Path | str, confidence: float = 0.95) -> Path:
    """Write ``report.html`` into the sweep folder atomically; return its path."""
    return write_atomic(Path(out_dir) / REPORT_FILE, render_sweep_report(out_dir, confidence))


# ------------------------------------------------------------------ figures


def headline_figures(sweep: SweepResults) -> list[tuple[str, go.Figure | str]]:
    """(caption, figure) pairs for the page; a figure that cannot be drawn becomes a note."""
    factors = list(sweep.manifest["factors"])
    units = sweep.manifest.get("factor_units") or {}
    metrics = [m for m in sweep.manifest["metrics"] if f"{m}.mean" in sweep.cells.columns]
    if not _ok_count(sweep):
        return []
    out: list[tuple[str, go.Figure | str]] = []
    view = _view(sweep, factors[:2])
    pooled = f" (runs pooled over {', '.join(factors[2:])})" if len(factors) > 2 else ""
    if len(factors) >= 2:
        x, y = factors[:2]
        for metric in metrics:
            out.append((f"{metric_label(metric)} over {x} and {y}{pooled}",
                        _safe(heatmap, view, x, y, metric, units=units)))
        out.append((f"Collapse probability with the tipping point (P = 0.5){pooled}",
                    _safe(collapse_map, view, x, y, "collapse", 0.5, units=units)))
    elif len(factors) == 1:
        x = factors[0]
        for metric in metrics:
            out.append((f"{metric_label(metric)} against {x}", _safe(lines_ci, view, x, metric, units=units)))
        out.append(("Collapse probability (Wilson band)", _safe(lines_ci, view, x, "p_collapse", units=units)))
    by = factors[:2] or None
    if "attempts_per_request.mean" in view.columns:
        out.append((f"Retry amplification{pooled}", _safe(amplification_bars, view, by, units=units)))
    if "wasted_work_fraction.mean" in view.columns:
        out.append((f"Wasted work{pooled}", _safe(wasted_work_bars, view, by, units=units)))
    return out


def figures_html(figures: list[tuple[str, go.Figure | str]], confidence: float) -> str:
    if not figures:
        return '<p class="muted">No figures: no run has finished ok yet.</p>'
    parts = [f'<p class="muted">Bands and error bars: {confidence:.0%} confidence intervals (Student t for means, '
             "Wilson for probabilities) over the ok runs of each cell.</p>"]
    first = True
    for i, (caption, fig) in enumerate(figures):
        parts.append(f"<h3>{html.escape(caption)}</h3>")
        if isinstance(fig, str):
            parts.append(f'<p class="muted">Not drawn: {html.escape(fig)}</p>')
            continue
        parts.append(figure_html(fig, with_plotlyjs=first, div_id=f"sweep-figure-{i}"))
        first = False
    return "\n".join(parts)


def _view(sweep: SweepResults, keys: Sequence[str]) -> pd.DataFrame:
    """The cells, or with more than two factors the runs pooled over the first two."""
    factors = list(sweep.manifest["factors"])
    if len(factors) <= 2:
        return sweep.cells
    metrics = [c[: -len(".mean")] for c in sweep.cells.columns if c.endswith(".mean")]
    return summarize_groups(sweep.runs, list(keys), metrics)


def _safe(factory: Any, *args: Any, **kwargs: Any) -> go.Figure | str:
    try:
        return factory(*args, **kwargs)
    except ValueError as exc:
        return str(exc)


# ------------------------------------------------------------------ page parts


def header_html(sweep: SweepResults) -> str:
    m = sweep.manifest
    units = m.get("factor_units") or {}
    description = f'<p class="description">{html.escape(str(m["description"]))}</p>' if m.get("description") else ""
    factor_items = "".join(
        f"<li><code>{html.escape(factor_label(f, units))}</code>: {html.escape(_swept_values(sweep, f, units))}</li>"
        for f in m["factors"]) or "<li>none (replications only)</li>"
    meta = " &middot; ".join(f"{html.escape(label)} <code>{html.escape(str(value))}</code>" for label, value in (
        ("scenario", m.get("scenario", "n/a")), ("replications", m.get("replications", "n/a")),
        ("seed", m.get("seed", "n/a")), ("runs", m.get("runs_total", "n/a")),
        ("stormsim", m.get("stormsim_version", "n/a")), ("revision", m.get("git_revision") or "none recorded"),
        ("created", m.get("created_at", "n/a"))))
    design = json.dumps(m.get("design", {}), indent=2, sort_keys=False, default=str)
    return (f"<header><h1>Sweep: {html.escape(str(m.get('name') or sweep.out_dir.name))}</h1>{description}"
            f'<p class="meta">{meta}</p>'
            f'<p class="meta">folder <code>{html.escape(str(sweep.out_dir))}</code></p></header>\n'
            f"<h2>Factors</h2><ul>{factor_items}</ul>"
            f"<details><summary>Design</summary><pre>{html.escape(design)}</pre></details>")


def status_html(sweep: SweepResults) -> str:
    runs = sweep.runs
    status = runs["status"].astype("object") if "status" in runs else pd.Series(["ok"] * len(runs), dtype=object)
    n_ok, n_failed = int((status == "ok").sum()), int((status == "failed").sum())
    total = sweep.manifest.get("runs_total")
    finished = f"{len(runs):,} of {total:,} runs finished" if isinstance(total, int) else f"{len(runs):,} runs"
    parts = [f'<p>{finished}: <b>{n_ok:,} ok</b>, <b>{n_failed:,} failed</b>.</p>']
    if isinstance(total, int) and len(runs) < total:
        parts.append('<p class="muted">Fewer runs than planned: the sweep is still running or was interrupted.</p>')
    skipped = runs.attrs.get("skipped_lines", 0)
    if skipped:
        parts.append(f'<p class="muted">{skipped} line(s) of runs.jsonl did not parse and were skipped '
                     "(a run cut short while being written).</p>")
    if sweep.missing_metrics:
        parts.append('<p class="muted">Metrics of the manifest no run carries: '
                     f"{html.escape(', '.join(sweep.missing_metrics))}.</p>")
    parts.append(outcomes_html(runs, status))
    if n_failed:
        parts.append(failed_runs_html(runs[status == "failed"], list(sweep.manifest["factors"])))
    return "\n".join(parts)


def outcomes_html(runs: pd.DataFrame, status: pd.Series) -> str:
    if "outcome" not in runs or not (status == "ok").any():
        return ""
    counts = runs.loc[(status == "ok").to_numpy(), "outcome"].astype("object").value_counts()
    items = [f"{outcome_badge(o)} {int(counts[o]):,}" for o in (*OUTCOMES, *sorted(set(counts.index) - set(OUTCOMES)))
             if o in counts.index]
    return f'<p>Outcomes of the ok runs: {" &nbsp; ".join(items)}</p>'


def failed_runs_html(failed: pd.DataFrame, factors: list[str]) -> str:
    columns = [c for c in ("run_key", "cell", "replication", "seed", *factors) if c in failed.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (*columns, "error"))
    rows = []
    for _, row in failed.head(MAX_FAILED_LISTED).iterrows():
        error = str(row.get("error") or "")
        error = error if len(error) <= MAX_ERROR_CHARS else error[:MAX_ERROR_CHARS] + "..."
        cells = "".join(f"<td>{html.escape(_plain_text(row[c]))}</td>" for c in columns)
        rows.append(f"<tr>{cells}<td><code>{html.escape(error)}</code></td></tr>")
    more = len(failed) - MAX_FAILED_LISTED
    tail = f'<p class="muted">and {more:,} more failed runs (see runs.csv).</p>' if more > 0 else ""
    return f'<h3>Failed runs</h3><table class="failed"><tr>{head}</tr>{"".join(rows)}</table>{tail}'


def cells_table_html(sweep: SweepResults, confidence: float) -> str:
    cells = sweep.cells
    if cells.empty:
        return '<p class="muted">No cells yet.</p>'
    units = sweep.manifest.get("factor_units") or {}
    factors = list(sweep.manifest["factors"])
    metrics = [c[: -len(".mean")] for c in cells.columns if c.endswith(".mean")]
    heads = ["cell", *(factor_label(f, units) for f in factors), "ok / runs", *map(metric_label, metrics),
             *PROBABILITIES]
    rows = []
    for _, row in cells.iterrows():
        values = [format_value(row["cell"]), *(format_value(row[f], units.get(f, "")) for f in factors),
                  f"{int(row['n_ok'])} / {int(row['n_runs'])}",
                  *(_with_ci(row, f"{m}.mean", m) for m in metrics), *(_with_ci(row, p, p) for p in PROBABILITIES)]
        rows.append("<tr>" + "".join(f'<td class="num" style="white-space:nowrap">{html.escape(v)}</td>'
                                     for v in values) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    return (f'<p class="muted">Mean [{confidence:.0%} CI] over the ok runs of each cell; '
            "n/a where no ok run had a value. The same table is in cells.csv.</p>"
            f'<div style="overflow-x:auto"><table class="cells"><tr>{head}</tr>{"".join(rows)}</table></div>')


def sweep_text_html(manifest: dict[str, Any]) -> str:
    text = manifest.get("sweep_text")
    if not text:
        return ""
    source = html.escape(str(manifest.get("sweep_path") or "the sweep file"))
    return (f"<h2>Sweep definition</h2><details><summary>{source}</summary>"
            f"<pre>{html.escape(str(text))}</pre></details>")


# ------------------------------------------------------------------ helpers


def _ok_count(sweep: SweepResults) -> int:
    return int(pd.to_numeric(sweep.cells.get("n_ok", pd.Series(dtype=float)), errors="coerce").fillna(0).sum())


def _swept_values(sweep: SweepResults, factor: str, units: dict[str, str]) -> str:
    if factor not in sweep.cells.columns or sweep.cells.empty:
        return "no finished runs yet"
    values = ordered_values(sweep.cells[factor])
    return ", ".join(format_value(v, units.get(factor, "")) for v in values)


def _with_ci(row: pd.Series, column: str, metric: str) -> str:
    mean = _number(row.get(column))
    if mean is None:
        return "n/a"
    low, high = _number(row.get(f"{metric}.ci_low")), _number(row.get(f"{metric}.ci_high"))
    text = f"{mean:.3f}" if metric in PROBABILITIES else format_number(mean)
    if low is None or high is None:
        return text
    fmt = (lambda v: f"{v:.3f}") if metric in PROBABILITIES else format_number
    return f"{text} [{fmt(low)}, {fmt(high)}]"


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _plain_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)
