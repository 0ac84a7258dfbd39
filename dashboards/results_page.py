"""Results: open a sweep's output folder, see its manifest, its cells and any of its figures.

A thin shell over ``experiments.sweep_summary`` (read the manifest and the runs,
summarise the cells) and ``experiments.plot_cli`` / ``experiments.sweep_figures`` (the
figures ``stormsim plot`` draws, pooled the same way over factors not shown). A
folder that is not a sweep's output is one error line. The folder may belong to a
sweep still running: the runs stored so far are shown.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboards import common
from experiments.plot_cli import PlotError, _sweep_figure
from experiments.sweep_figures import factor_label, format_value, is_numeric, ordered_values
from experiments.sweep_report import BAR_METRICS
from experiments.sweep_summary import (
    MANIFEST_FILE, OUTCOME_PROBABILITY, PROBABILITIES, SweepResults, SweepResultsError, load_sweep,
)

FIGURES = {"heatmap": "Heatmap of a metric", "lines": "Metric against a factor (CI band)",
           "collapse-map": "Outcome probability map", "amplification": "Retry amplification",
           "wasted-work": "Wasted work"}
TWO_FACTOR_FIGURES = ("heatmap", "collapse-map")
MAX_LISTED_VALUES = 12          # a factor with more distinct values is filtered by a range slider
FOLDER_KEY = "results_folder"


def sweep_roots() -> list[Path]:
    """Where sweep folders are looked for: the CLI's ``out/sweeps`` and the Sweep page's."""
    return [Path("out") / "sweeps", Path("out") / "dashboard" / "sweeps"]


def newest_sweep_folder() -> str:
    """The most recently written sweep folder under ``sweep_roots()`` ('' when there is none)."""
    found: list[tuple[float, str]] = []
    for root in sweep_roots():
        if not root.is_dir():
            continue
        for folder in root.iterdir():
            manifest = folder / MANIFEST_FILE
            if manifest.is_file():
                stamps = [p.stat().st_mtime for p in folder.iterdir() if p.is_file()]
                found.append((max(stamps), str(folder)))
    return max(found)[1] if found else ""


def _stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    try:
        return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size)
                            for p in folder.iterdir() if p.is_file()))
    except OSError:
        return ()


@st.cache_data(show_spinner=False, max_entries=16)
def read_sweep(folder: str, stamp: tuple) -> SweepResults:
    """Manifest, runs and cells of a folder (cached until one of its files changes)."""
    return load_sweep(folder, extra_metrics=BAR_METRICS)


def status_counts(results: SweepResults) -> dict[str, int]:
    runs = results.runs
    status = runs["status"] if "status" in runs else pd.Series(dtype=object)
    total = int(results.manifest.get("runs_total") or 0)
    ok = int((status == "ok").sum())
    failed = int(len(runs) - ok)
    counts = {"stored": len(runs), "ok": ok, "failed": failed}
    if total:
        counts["total"] = total
        counts["missing"] = max(0, total - len(runs))
    return counts


def manifest_view(results: SweepResults) -> None:
    m = results.manifest
    units = m.get("factor_units") or {}
    st.subheader(str(m.get("name") or results.out_dir.name))
    if m.get("description"):
        st.caption(str(m["description"]))
    design = m.get("design") or {}
    design_text = str(design.get("kind", "grid"))
    if design_text != "grid":
        design_text += f", {design.get('points')} points, design seed {design.get('seed')}"
    scenario = str(m.get("scenario", ""))
    if m.get("variant") and "@" not in scenario:
        scenario += f" (variant {m['variant']})"
    rows = [("scenario", scenario), ("factors", "; ".join(factor_label(f, units) for f in m["factors"])),
            ("design", design_text), ("replications", str(m.get("replications", ""))),
            ("seed", str(m.get("seed", ""))), ("metrics", ", ".join(m.get("metrics", [])))]
    if m.get("set"):
        rows.append(("set", ", ".join(m["set"])))
    rows += [("created", str(m.get("created_at", ""))),
             ("stormsim", f"{m.get('stormsim_version', '?')} (git {m.get('git_revision') or 'unknown'})")]
    st.dataframe(pd.DataFrame(rows, columns=["", "value"]), hide_index=True, key="results_manifest")
    counts = status_counts(results)
    cols = st.columns(4)
    cols[0].metric("runs stored", f"{counts['stored']}" + (f" / {counts['total']}" if "total" in counts else ""))
    cols[1].metric("ok", counts["ok"])
    cols[2].metric("failed", counts["failed"])
    cols[3].metric("cells", len(results.cells))
    if counts.get("missing"):
        st.info(f"{counts['missing']} runs are not stored yet: the sweep is running, or was interrupted "
                f"(`stormsim sweep` with the same file and `--out` resumes it).", icon="ℹ️")
    if results.missing_metrics:
        st.caption(f"Metrics no run carries: {', '.join(results.missing_metrics)}.")


def filters(results: SweepResults, key: str) -> dict[str, Any]:
    """One filter per factor: the values kept (a list), or a (low, high) range for many values."""
    units = results.manifest.get("factor_units") or {}
    chosen: dict[str, Any] = {}
    factors = list(results.manifest["factors"])
    if results.cells.empty:
        return chosen
    cols = st.columns(min(len(factors), 3) or 1)
    for i, factor in enumerate(factors):
        values = ordered_values(results.cells[factor])
        label = factor_label(factor, units)
        unit = units.get(factor, "")
        with cols[i % len(cols)]:
            if is_numeric(values) and len(values) > MAX_LISTED_VALUES:
                low, high = float(min(values)), float(max(values))
                chosen[factor] = st.slider(label, low, high, (low, high), key=f"results_filter:{key}:{factor}")
            else:
                chosen[factor] = st.multiselect(label, values, default=values, key=f"results_filter:{key}:{factor}",
                                                format_func=lambda v, u=unit: format_value(v, u))
    return chosen


def apply_filters(results: SweepResults, chosen: dict[str, Any]) -> SweepResults:
    runs, cells = results.runs, results.cells
    for factor, keep in chosen.items():
        if isinstance(keep, tuple):
            low, high = keep
            runs = runs[pd.to_numeric(runs[factor], errors="coerce").between(low, high)]
            cells = cells[pd.to_numeric(cells[factor], errors="coerce").between(low, high)]
        else:
            runs = runs[runs[factor].isin(keep)]
            cells = cells[cells[factor].isin(keep)]
    return dataclasses.replace(results, runs=runs.reset_index(drop=True), cells=cells.reset_index(drop=True))


def figure_controls(results: SweepResults, key: str) -> dict[str, Any]:
    factors = list(results.manifest["factors"])
    units = results.manifest.get("factor_units") or {}
    kinds = [k for k in FIGURES if len(factors) >= 2 or k not in TWO_FACTOR_FIGURES]
    metrics = [m for m in results.manifest["metrics"] if m in results.runs.columns] or list(results.manifest["metrics"])
    label = lambda f: factor_label(f, units)  # noqa: E731
    cols = st.columns(4)
    with cols[0]:
        figure = st.selectbox("Figure", kinds, format_func=lambda k: FIGURES[k], key=f"results_figure:{key}")
    with cols[1]:
        x = st.selectbox("x", factors, format_func=label, key=f"results_x:{key}")
    others = [f for f in factors if f != x]
    choice: dict[str, Any] = {"figure": figure, "x": x, "y": None, "by": None, "metric": None,
                              "outcome": "collapse", "level": 0.5}
    with cols[2]:
        if figure in TWO_FACTOR_FIGURES:
            choice["y"] = st.selectbox("y", others, format_func=label, key=f"results_y:{key}")
        elif others:
            choice["by"] = st.selectbox("by (one line or colour per value)", others, format_func=label,
                                        key=f"results_by:{key}")
    with cols[3]:
        if figure in ("heatmap", "lines"):
            choice["metric"] = st.selectbox("metric", [*metrics, *PROBABILITIES], key=f"results_metric:{key}")
        elif figure == "collapse-map":
            choice["outcome"] = st.selectbox("outcome", list(OUTCOME_PROBABILITY), key=f"results_outcome:{key}")
            choice["level"] = st.slider("tipping level", 0.05, 0.95, 0.5, 0.05, key=f"results_level:{key}")
    return choice


def draw(results: SweepResults, choice: dict[str, Any]) -> go.Figure:
    """The figure ``stormsim plot`` draws for these choices; PlotError (one line) when it cannot."""
    fig, _name = _sweep_figure(argparse.Namespace(**choice), results)
    return fig


def plot_command(folder: str, choice: dict[str, Any]) -> str:
    args = ["stormsim", "plot", folder, "--figure", choice["figure"], "--x", choice["x"]]
    for option in ("y", "by", "metric"):
        if choice.get(option):
            args += [f"--{option}", str(choice[option])]
    if choice["figure"] == "collapse-map":
        args += ["--outcome", choice["outcome"], "--level", f"{choice['level']:g}"]
    return shlex.join(args)


def main() -> None:
    st.title("Results")
    st.caption("Open a sweep's output folder (`stormsim sweep` or the Sweep page): its manifest, the summary of "
               "every cell with confidence intervals, and its figures.")
    if FOLDER_KEY not in st.session_state:
        st.session_state[FOLDER_KEY] = newest_sweep_folder()
    folder = st.text_input("Sweep output folder", key=FOLDER_KEY,
                           help="A folder with manifest.json and runs.jsonl; default: the newest under "
                                "out/sweeps/ or out/dashboard/sweeps/.").strip()
    if not folder:
        st.info("No sweep folder yet: run `stormsim sweep` or use the Sweep page, then give its output folder.",
                icon="ℹ️")
        return
    try:
        results = read_sweep(folder, _stamp(Path(folder)))
    except SweepResultsError as exc:
        common.show_error(str(exc))
        return
    key = common.safe_name(str(Path(folder).resolve()))
    manifest_view(results)

    st.markdown("**Cells**: one row per design point; `.mean`/`.ci_low`/`.ci_high` are a 95% t interval of "
                "the mean over the cell's ok runs, `p_*` Wilson intervals.")
    chosen = filters(results, key)
    shown = apply_filters(results, chosen)
    filtered = len(shown.cells) < len(results.cells)
    st.dataframe(shown.cells, hide_index=True, key="results_cells")
    name = common.safe_name(str(results.manifest.get("name") or Path(folder).name))
    cols = st.columns(2)
    with cols[0]:
        common.table_download(shown.cells, f"{name}-cells", key="results_cells_csv", label="Cells CSV")
    with cols[1]:
        common.table_download(shown.runs, f"{name}-runs", key="results_runs_csv", label="Runs CSV")

    st.markdown("**Figure**")
    if results.runs.empty:
        st.info("No run is stored yet.", icon="ℹ️")
        return
    choice = figure_controls(results, key)
    if shown.runs.empty:
        st.info("No run matches the filters above.", icon="ℹ️")
        return
    try:
        fig = draw(shown, choice)
    except PlotError as exc:
        common.show_error(str(exc))
        return
    st.plotly_chart(fig, key="results_figure_chart")
    caption = "The same figure from the command line"
    if filtered:
        caption += " (without the filter above, which the figure here follows)"
    st.caption(caption + ":")
    st.code(plot_command(folder, choice), language="bash")
    if st.toggle("Figure files (HTML, PNG, SVG)", key="results_figure_files"):
        figure_name = f"{name}-{choice['figure']}" + (f"-{choice['metric']}" if choice.get("metric") else "")
        common.figure_downloads(fig, figure_name, key="results_dl")


if __name__ == "__main__":
    main()
