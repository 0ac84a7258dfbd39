"""The validation report: ``validation.json`` (every check, machine-readable) and ``validation.html``.

The page follows experiments/report.py's style (system font, plain tables, plotly figures with
plotly.js inlined once, so it opens offline): a header with the verdict and provenance, the
summary per section, the known limitations with their reasons and repros, then one section
per family of checks with what is compared, the reference and its source, the estimate with
its confidence interval, the status and the family's figure.
"""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from experiments.validation import figures
from experiments.validation.checks import SECTIONS
from experiments.validation.queueing import FAMILIES

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px auto;
       max-width: 1500px; padding: 0 16px; color: #222; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; } h3 { margin-top: 26px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 10px; color: #fff; font-weight: 600;
         font-size: 0.85em; }
.meta { color: #555; font-size: 0.9em; } .meta code { background: #f4f4f4; padding: 0 4px; }
table { border-collapse: collapse; font-size: 0.86em; margin: 8px 0; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #fafafa; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.id { font-family: monospace; font-size: 0.9em; color: #555; }
.explain { color: #333; max-width: 1100px; } details { margin: 10px 0; } summary { cursor: pointer; font-weight: 600; }
.muted { color: #888; } .limitation { border-left: 4px solid #9e6a00; padding: 4px 12px; background: #fff8e6; }
"""

EXPLAIN = {
    "queueing": (
        "Each point is a stormsim scenario built to be a textbook queue (no network time, connections reused, "
        "no retries, GC off), run for R replications at a fixed seed. The estimate is the mean over the "
        "replications of the statistic over the requests that arrived in [10%, 98%] of the run; the interval is a "
        "two-sided Student-t 99% interval; a check passes when the closed form lies inside it. The mapping of "
        "each kind of queue to stormsim settings is in docs/validation.md and experiments/validation/queueing.py."),
    "conservation": (
        "Every shipped scenario (and, in the full suite, every variant) runs at its own seed, shortened, then "
        "drained: its arrivals stop and the run goes on until the work in flight has ended. An observer records "
        "every handler, pool connection hold and pool wait, and at every sample applies the documented accounting "
        "rules to the live objects. Little's law is checked pointwise (the sampled level equals the number of "
        "intervals in progress at every sample) and reported as L against lambda W."),
    "monotonicity": (
        "Properties that provably hold in the stated configurations (the proof is in "
        "experiments/validation/monotonicity.py), checked per request over drawn configurations, each at a "
        "ladder of settings with the same seed."),
    "semantics": (
        "The Go behaviours of semantics.md that the model implements, as exact event timelines of small "
        "deterministic scenarios, and the policies' reference numbers: the unit tests, run here by pytest, "
        "each with the sources its docstring cites."),
    "convergence": (
        "How the estimate of a storm's P99 and time to collapse, and of the M/M/1 P99, settle as replications are "
        "added, with the 95% half-width a sweep would report: read off how many replications a sweep needs."),
}


def write_report(report: dict[str, Any], out_dir: Path | str) -> tuple[Path, Path]:
    """``validation.json``, ``validation.html`` and the small ``validation-summary.json`` (the one
    docs/ keeps) in ``out_dir``; returns the paths of the first two."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = _write_atomic(out / "validation.json", json.dumps(report, indent=1, allow_nan=False) + "\n")
    _write_atomic(out / "validation-summary.json", json.dumps(summary_of(report), indent=1, allow_nan=False) + "\n")
    html_path = _write_atomic(out / "validation.html", render_html(report))
    return json_path, html_path


def summary_of(report: dict[str, Any]) -> dict[str, Any]:
    """The report without the bulk: the summary, the known limitations, every analytic check's
    numbers, the failing checks, and the other checks counted by family."""
    keep = ("id", "status", "estimate", "ci_low", "ci_high", "reference_value", "relative_error", "replications",
            "n_per_replication")
    families: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c in report["checks"]:
        families[f"{c['section']}: {c['family']}"][c["status"]] += 1
    return {
        "suite": report["suite"], "started_at": report["started_at"], "wall_s": report["wall_s"],
        "jobs": report["jobs"], "confidence": report["confidence"], "provenance": report["provenance"],
        "summary": report["summary"], "known_limitations": report["known_limitations"],
        "families": {k: dict(v) for k, v in families.items()},
        "analytic": [{k: c.get(k) for k in keep} for c in report["checks"] if c.get("analytic")],
        "not_passing": [{k: c.get(k) for k in ("id", "status", "detail", "limitation")}
                        for c in report["checks"] if c["status"] in ("fail", "error", "known_limitation")],
    }


def _write_atomic(path: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _badge(status: str) -> str:
    colour = figures.STATUS_COLOURS.get(status, "#555")
    return f'<span class="badge" style="background:{colour}">{html.escape(status.replace("_", " "))}</span>'


def _num(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return '<span class="muted">-</span>'
    if isinstance(x, (int,)) and not isinstance(x, bool):
        return f"{x:,}"
    x = float(x)
    return f"{x:.4g}"


class _Figures:
    def __init__(self) -> None:
        self.first = True
        self.n = 0

    def html(self, fig: go.Figure) -> str:
        self.n += 1
        out = fig.to_html(full_html=False, include_plotlyjs=self.first, div_id=f"fig-{self.n}",
                          config={"displaylogo": False, "responsive": True})
        self.first = False
        return out


def render_html(report: dict[str, Any]) -> str:
    s = report["summary"]
    checks = report["checks"]
    figs = _Figures()
    verdict = "pass" if s["ok"] else "fail"
    prov = report["provenance"]
    worst = s.get("max_relative_error")
    parts = [
        f"<h1>stormsim validation ({html.escape(report['suite'])}) {_badge(verdict)}</h1>",
        f'<p class="meta">{s["checks"]} checks: {s["passed"]} pass, {s["known_limitations"]} known limitations, '
        f'{s["failed"]} fail, {s["errors"]} errors; plus {s["info"]} measurements. Started '
        f'{html.escape(report["started_at"])}, {report["wall_s"]:.0f} s wall on {report["jobs"]} worker process(es). '
        f'stormsim <code>{html.escape(str(prov["stormsim_version"]))}</code>, git '
        f'<code>{html.escape(str(prov["git_revision"]))}</code>, Python {html.escape(prov["python"])}, '
        f'numpy {html.escape(prov["numpy"])}, SimPy {html.escape(prov["simpy"])}.</p>',
    ]
    if worst:
        parts.append(f'<p class="meta">Analytic checks: {s["analytic_checks"]} at {100 * report["confidence"]:.0f}% '
                     f'confidence each (about {s["expected_chance_misses"]:g} would miss by chance with a correct '
                     f'engine; the seeds are fixed, so a result repeats). Largest relative error '
                     f'{100 * worst["value"]:.2f}% (<code>{html.escape(worst["check"])}</code>: '
                     f'{_num(worst["estimate"])} vs {_num(worst["reference"])}).</p>')
    # summary per section
    rows = "".join(
        f"<tr><td>{html.escape(SECTIONS[sec])}</td>" + "".join(
            f'<td class="num">{counts.get(st, 0)}</td>' for st in ("pass", "known_limitation", "fail", "error", "info"))
        + "</tr>" for sec, counts in s["by_section"].items() if counts)
    parts.append("<table><tr><th>section</th><th>pass</th><th>known limitation</th><th>fail</th><th>error</th>"
                 f"<th>info</th></tr>{rows}</table>")
    # known limitations
    if report["known_limitations"]:
        parts.append("<h2>Known limitations</h2>")
        for key, lim in report["known_limitations"].items():
            parts.append(f'<div class="limitation"><p><b>{html.escape(key)}</b>: {html.escape(lim["reason"])}</p>'
                         f'<p>Repro: {html.escape(lim["repro"])}. Where: {html.escape(lim["owner"])}. Checks: '
                         + ", ".join(f"<code>{html.escape(i)}</code>" for i in lim["checks"]) + "</p></div>")
    failing = [c for c in checks if c["status"] in ("fail", "error")]
    if failing:
        parts.append("<h2>Failures</h2>" + _table(failing))
    by_section: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in checks:
        by_section[c["section"]].append(c)
    for sec, title in SECTIONS.items():
        items = by_section.get(sec, [])
        if not items:
            continue
        parts.append(f'<h2 id="{sec}">{html.escape(title)}</h2><p class="explain">{html.escape(EXPLAIN[sec])}</p>')
        parts.append(_section(sec, items, figs))
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>stormsim validation</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")


def _section(sec: str, items: list[dict[str, Any]], figs: _Figures) -> str:
    out = []
    families: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in items:
        families[c["family"]].append(c)
    if sec == "queueing":
        order = list(FAMILIES)
        for family, group in sorted(families.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99):
            group = [c for c in group if c.get("params", {}).get("kind")]
            if not group:
                continue
            out.append(f"<h3>{html.escape(family)}</h3>")
            formula, source = FAMILIES.get(family, (group[0]["reference"], group[0]["source"]))
            out.append(f'<p class="explain">Reference: <code>{html.escape(formula)}</code> ({html.escape(source)}).</p>')
            out.append(figs.html(figures.queueing_figure(family, group)))
            out.append(_table(group, analytic=True))
    elif sec == "conservation":
        out.append(figs.html(figures.status_matrix_figure(items)))
        little = [c for c in items if ".little." in c["id"]]
        if little:
            out.append(figs.html(figures.little_figure(little)))
        for family, group in families.items():
            out.append(f"<details><summary>{html.escape(family)}: {len(group)} checks</summary>{_table(group)}</details>")
    elif sec == "monotonicity":
        out.append(figs.html(figures.monotonicity_figure(items)))
        out.append(_table(items))
    elif sec == "semantics":
        out.append(figs.html(figures.semantics_figure(items)))
        for family, group in families.items():
            n_ok = sum(1 for c in group if c["status"] == "pass")
            out.append(f"<details><summary>{html.escape(family)}: {n_ok} of {len(group)} pass</summary>"
                       + _semantics_table(group) + "</details>")
    elif sec == "convergence":
        out.append(figs.html(figures.convergence_figure(items)))
        out.append(_table(items))
    return "\n".join(out)


def _table(items: list[dict[str, Any]], analytic: bool = False) -> str:
    head = ("<tr><th>check</th><th>status</th><th>compared</th><th>reference</th>"
            + ("<th>estimate</th><th>99% CI</th><th>closed form</th><th>rel. error</th><th>R</th><th>n / rep.</th>"
               if analytic else "<th>result</th>") + "<th>source</th></tr>")
    rows = []
    for c in items:
        cells = [f'<td class="id">{html.escape(c["id"])}</td>', f"<td>{_badge(c['status'])}</td>",
                 f"<td>{html.escape(c['compared'])}</td>", f"<td>{html.escape(c['reference'])}</td>"]
        if analytic:
            ci = (f"[{_num(c['ci_low'])}, {_num(c['ci_high'])}]" if c.get("ci_low") is not None else "-")
            rel = f"{100 * c['relative_error']:.2f}%" if c.get("relative_error") is not None else "-"
            cells += [f'<td class="num">{_num(c["estimate"])}</td>', f'<td class="num">{ci}</td>',
                      f'<td class="num">{_num(c["reference_value"])}</td>', f'<td class="num">{rel}</td>',
                      f'<td class="num">{_num(c["replications"])}</td>',
                      f'<td class="num">{_num(c["n_per_replication"])}</td>']
        else:
            text = c.get("detail") or ""
            if c.get("limitation"):
                text += f" [known limitation: {c['limitation']}]"
            cells.append(f"<td>{html.escape(text)}</td>")
        cells.append(f"<td>{html.escape(c['source'])}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _semantics_table(items: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<tr><td class="id">{html.escape(c["title"])}</td><td>{_badge(c["status"])}</td>'
        f'<td>{html.escape(c["reference"])}{("<br><b>" + html.escape(c["detail"]) + "</b>") if c["detail"] else ""}</td>'
        f'<td>{html.escape(c["source"])}</td></tr>' for c in items)
    return f"<table><tr><th>test</th><th>status</th><th>what it checks (docstring)</th><th>source</th></tr>{rows}</table>"
