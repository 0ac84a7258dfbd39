"""`stormsim plot`: figures and the report of a sweep folder, latency CDFs and time series of runs.

    stormsim plot RESULTS [RESULTS ...] [--figure NAME] [--x PATH] [--y PATH] [--by PATH]
                  [--metric KEY] [--outcome collapse|metastable|crashed] [--level P]
                  [--format html|png|svg|pdf] [--out FILE]

RESULTS is a sweep output folder (``report``, the default, writes its report.html;
``heatmap``, ``lines``, ``collapse-map``, ``amplification``, ``wasted-work`` draw
one figure) or, for ``cdf`` and ``timeseries``, run folders as ``stormsim run``
writes them. A figure goes into the first RESULTS folder unless ``--out`` says
where. HTML always works; PNG, SVG and PDF need kaleido and a Chrome or Chromium.
Bad arguments and a failed export print one line and exit with status 2.

``experiments.cli`` wires it in with ``add_plot_parser(subparsers)`` and calls
``run_plot(args)`` for the ``plot`` command (``args.handler`` is set to it too).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from experiments.run_files import stage_file, write_atomic
from experiments.sweep_figures import (
    amplification_bars, collapse_map, heatmap, latency_cdfs, lines_ci, run_timeseries, wasted_work_bars,
)
from experiments.sweep_report import BAR_METRICS, render_sweep_report
from experiments.sweep_summary import (
    MANIFEST_FILE, OUTCOME_PROBABILITY, PROBABILITIES, SweepResults, SweepResultsError, load_sweep,
    summarize_groups,
)
from sim.result import FaultWindow, Milestones, RunResult
from sim.schema import Scenario

EXIT_OK = 0
EXIT_BAD_INPUT = 2
SWEEP_FIGURES: tuple[str, ...] = ("report", "heatmap", "lines", "collapse-map", "amplification", "wasted-work")
RUN_FIGURES: tuple[str, ...] = ("cdf", "timeseries")
FORMATS: tuple[str, ...] = ("html", "png", "svg", "pdf")
STATIC_WIDTH_PX = 1200
CHROME_FIX = ("run `make setup` (installs Debian's chromium) or `sudo apt-get install chromium`, "
              "or use --format html")
KALEIDO_FIX = "run `make setup` or `pip install 'kaleido>=1'`, or use --format html"


class PlotError(Exception):
    """A bad argument: one line naming the argument and the value, exit status 2."""


class ExportError(Exception):
    """A static export that could not be done: one line naming the fix, exit status 2."""


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one PlotError line (for ``main`` outside experiments.cli)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise PlotError(message)


# ------------------------------------------------------------------ the command


def add_plot_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``plot`` on an argparse subparsers object; return its parser."""
    p = subparsers.add_parser(
        "plot", help="draw a sweep's figures or report, or latency CDFs / time series of runs",
        description="Draw the figures of a sweep folder (default: its report.html), or latency CDFs "
                    "and time series of run folders. A figure goes into the first RESULTS folder "
                    "unless --out says where.")
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="a sweep output folder; for --figure cdf/timeseries, run folders of `stormsim run`")
    p.add_argument("--figure", choices=(*SWEEP_FIGURES, *RUN_FIGURES), default="report",
                   help="what to draw (default: report, the sweep's report.html)")
    p.add_argument("--x", default=None, metavar="PATH", help="factor on the x axis (default: the first factor)")
    p.add_argument("--y", default=None, metavar="PATH",
                   help="factor on the y axis of heatmap/collapse-map (default: the second factor)")
    p.add_argument("--by", default=None, metavar="PATH",
                   help="one line (lines) or bar colour (bars) per value of this factor (default: the second factor)")
    p.add_argument("--metric", default=None, metavar="KEY",
                   help="summary key to draw for heatmap/lines, e.g. p99_ms (default: the manifest's first metric)")
    p.add_argument("--outcome", choices=tuple(OUTCOME_PROBABILITY), default="collapse",
                   help="probability the collapse-map shows (default: collapse)")
    p.add_argument("--level", type=float, default=0.5, help="tipping-point level of the collapse-map (default 0.5)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="html (always works), png, svg or pdf (need kaleido and Chrome/Chromium); "
                        "default: from --out's suffix, else html")
    p.add_argument("--out", default=None, metavar="FILE", help="file to write (default: in the first RESULTS folder)")
    p.set_defaults(handler=run_plot)
    return p


def run_plot(args: argparse.Namespace) -> int:
    """Draw what ``args`` ask for, print the path written; 2 with one line on bad input or export failure."""
    try:
        path = make_plot(args)
    except PlotError as exc:
        print(f"stormsim: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ExportError as exc:
        print(f"stormsim: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(path)
    return EXIT_OK


def make_plot(args: argparse.Namespace) -> Path:
    """Build the figure (or report) and write it; PlotError/ExportError on failure."""
    fmt = output_format(args)
    folders = [Path(r) for r in args.results]
    if args.figure == "report":
        return _write_report(args, folders, fmt)
    if args.figure in RUN_FIGURES:
        fig, default_name = _run_figure(args, folders)
    else:
        fig, default_name = _sweep_figure(args, _one_sweep(args, folders))
    out = _out_path(args, folders[0] / f"{default_name}.{fmt}")
    return export_figure(fig, out, fmt)


def output_format(args: argparse.Namespace) -> str:
    """--format, else the suffix of --out when it is a known format, else html."""
    suffix = Path(args.out).suffix.lower().lstrip(".") if args.out else ""
    if args.format is None:
        return suffix if suffix in FORMATS else "html"
    if suffix in FORMATS and suffix != args.format:
        raise PlotError(f"--out: {args.out!r} ends in .{suffix} but --format is {args.format}")
    return args.format


# ------------------------------------------------------------------ sweep figures


def _write_report(args: argparse.Namespace, folders: list[Path], fmt: str) -> Path:
    if fmt != "html":
        raise PlotError(f"--format: {fmt} is not available for --figure report (an HTML page); "
                        "use --format html or pick a figure")
    sweep_dir = _single(folders, "report")
    try:
        page = render_sweep_report(sweep_dir)
    except SweepResultsError as exc:
        raise _not_a_sweep(sweep_dir, exc) from None
    out = _out_path(args, sweep_dir / "report.html")
    return write_atomic(out, page)


def _one_sweep(args: argparse.Namespace, folders: list[Path]) -> SweepResults:
    folder = _single(folders, args.figure)
    extra = [args.metric] if args.metric else []
    try:
        return load_sweep(folder, extra_metrics=[*extra, *BAR_METRICS])
    except SweepResultsError as exc:
        raise _not_a_sweep(folder, exc) from None


def _not_a_sweep(folder: Path, exc: SweepResultsError) -> PlotError:
    hint = "; it is a run folder: try --figure timeseries or cdf" if (folder / "summary.json").is_file() else ""
    return PlotError(f"RESULTS: {exc}{hint}")


def _sweep_figure(args: argparse.Namespace, sweep: SweepResults) -> tuple[go.Figure, str]:
    factors = list(sweep.manifest["factors"])
    units = sweep.manifest.get("factor_units") or {}
    for option in ("x", "y", "by"):
        value = getattr(args, option)
        if value is not None and value not in factors:
            raise PlotError(f"--{option}: {value!r} is not a factor of the sweep "
                            f"(factors: {', '.join(factors) or 'none'})")
    if not 0.0 < args.level < 1.0:
        raise PlotError(f"--level: {args.level:g} is not a probability strictly between 0 and 1")
    if sweep.runs.empty:
        raise PlotError(f"RESULTS: {str(sweep.out_dir)!r} has no finished runs yet")
    x = args.x or _first(factors, "--x", "the sweep has no factors")
    figure = args.figure
    if figure in ("heatmap", "collapse-map"):
        y = args.y or _first([f for f in factors if f != x], "--y",
                             f"--figure {figure} needs two factors and the sweep has only {x!r}; try --figure lines")
        if y == x:
            raise PlotError(f"--y: {y!r} is the same factor as --x")
        view = _view(sweep, [x, y])
        if figure == "collapse-map":
            fig = _figure(collapse_map, view, x, y, args.outcome, args.level, units=units)
            return fig, f"collapse-map-{args.outcome}"
        metric = _metric(args, sweep)
        return _figure(heatmap, view, x, y, metric, units=units), f"heatmap-{_file_part(metric)}"
    by = args.by if args.by is not None else next((f for f in factors if f != x), None)
    if by == x:
        raise PlotError(f"--by: {by!r} is the same factor as --x")
    view = _view(sweep, [x, *([by] if by else [])])
    if figure == "lines":
        metric = _metric(args, sweep)
        return _figure(lines_ci, view, x, metric, by, units=units), f"lines-{_file_part(metric)}"
    factory = amplification_bars if figure == "amplification" else wasted_work_bars
    return _figure(factory, view, [x, *([by] if by else [])], units=units), figure


def _metric(args: argparse.Namespace, sweep: SweepResults) -> str:
    metric = args.metric or _first(list(sweep.manifest["metrics"]), "--metric", "the manifest lists no metrics")
    if metric in PROBABILITIES:
        return metric
    if metric not in sweep.runs.columns:
        known = [m for m in sweep.manifest["metrics"] if m in sweep.runs.columns][:6]
        raise PlotError(f"--metric: {metric!r} is not a metric of the sweep's runs "
                        f"(e.g. {', '.join(known) or 'none'})")
    values = sweep.runs[metric]
    numbers = pd.to_numeric(values.map(lambda v: float(v) if isinstance(v, bool) else v), errors="coerce")
    if values.notna().any() and numbers.isna().all():
        raise PlotError(f"--metric: {metric!r} is not numeric (e.g. {values.dropna().iloc[0]!r})")
    return metric


def _view(sweep: SweepResults, keys: list[str]) -> pd.DataFrame:
    """The cells when ``keys`` are all the factors, else the runs pooled over ``keys``."""
    if sorted(keys) == sorted(sweep.manifest["factors"]):
        return sweep.cells
    metrics = [c[: -len(".mean")] for c in sweep.cells.columns if c.endswith(".mean")]
    return summarize_groups(sweep.runs, keys, metrics)


def _figure(factory: Any, *args: Any, **kwargs: Any) -> go.Figure:
    try:
        return factory(*args, **kwargs)
    except ValueError as exc:
        raise PlotError(str(exc)) from None


# ------------------------------------------------------------------ run figures


def _run_figure(args: argparse.Namespace, folders: list[Path]) -> tuple[go.Figure, str]:
    for folder in folders:
        if (folder / MANIFEST_FILE).is_file():
            raise PlotError(f"RESULTS: {str(folder)!r} is a sweep folder; --figure {args.figure} takes run "
                            "folders as `stormsim run` writes them")
    if args.figure == "timeseries":
        return run_timeseries(run_result_from_folder(_single(folders, "timeseries"))), "timeseries"
    return latency_cdfs(_latencies(folders)), "latency-cdf"


def _latencies(folders: list[Path]) -> dict[str, np.ndarray]:
    """Finished requests' latencies (ms) of each run folder, named by the folder."""
    named: dict[str, np.ndarray] = {}
    for folder in folders:
        path = _run_file(folder, "requests.parquet")
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise PlotError(f"RESULTS: {str(path)!r} is not readable ({exc})") from None
        if "latency_ms" in frame:   # NaN for unfinished requests: they count in the total
            latency = frame["latency_ms"].to_numpy(dtype=float)
        elif {"arrival_at", "end_at"} <= set(frame.columns):
            latency = (frame["end_at"] - frame["arrival_at"]).to_numpy(dtype=float) * 1000.0
        else:
            raise PlotError(f"RESULTS: {str(path)!r} has no latency_ms column")
        name = folder.resolve().name or str(folder)
        named[name if name not in named else f"{name} ({len(named) + 1})"] = latency
    return named


def run_result_from_folder(folder: Path | str) -> RunResult:
    """A RunResult good enough for ``timeseries_figure``, rebuilt from timeseries.csv and summary.json.

    The scenario itself is not in a run folder: services (fd and memory limit
    lines) are left out, and the faults show as one window from the trigger to
    the end of the faults.
    """
    folder = Path(folder)
    summary = _read_summary(_run_file(folder, "summary.json"))
    columns = _read_timeseries(_run_file(folder, "timeseries.csv"))
    time_s = columns.get("time_s", np.zeros(0))
    levels = {k: v for k, v in columns.items() if not k.startswith("window.")}
    windows = {**levels, **{k[len("window."):]: v for k, v in columns.items() if k.startswith("window.")}}
    end_s = float(np.nanmax(time_s)) if len(time_s) else 0.0
    steps = np.diff(time_s[np.isfinite(time_s)])
    sample_s = float(np.median(steps)) if len(steps) else 0.1
    provenance = summary.get("provenance") if isinstance(summary.get("provenance"), dict) else {}
    scenario = Scenario(name=str(summary.get("scenario") or folder.name), seed=int(summary.get("seed") or 0),
                        duration=max(end_s, sample_s), sample_interval=sample_s if sample_s > 0 else 0.1)
    return RunResult(
        scenario=scenario, seed=int(summary.get("seed") or 0), replication=int(provenance.get("replication") or 0),
        route_names=[], client_names=[], requests={}, attempts={}, levels=levels,
        milestones=_milestones(summary, end_s), counters={}, wall_s=float(summary.get("wall_s") or 0.0),
        provenance=provenance, windows=windows, summary=summary)


def _milestones(summary: dict[str, Any], end_s: float) -> Milestones:
    trigger, faults_end = summary.get("trigger_at_s"), summary.get("faults_end_at_s")
    faults = [FaultWindow("faults", float(trigger), float(faults_end), "", ())] \
        if trigger is not None and faults_end is not None else []
    oom = summary.get("oom_killed_at_s")
    return Milestones(
        trigger_at_s=trigger, faults=faults, kills=[float(oom)] if oom is not None else [],
        fd_exhausted_at_s=summary.get("fd_exhausted_at_s"), oom_killed_at_s=oom,
        truncated=bool(summary.get("truncated")), truncated_by=summary.get("truncated_by"), end_at_s=end_s)


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PlotError(f"RESULTS: {str(path)!r} is not readable JSON ({exc})") from None
    if not isinstance(summary, dict):
        raise PlotError(f"RESULTS: {str(path)!r} is not a JSON object")
    return summary


def _read_timeseries(path: Path) -> dict[str, np.ndarray]:
    try:
        frame = pd.read_csv(path)
    except Exception as exc:
        raise PlotError(f"RESULTS: {str(path)!r} is not a readable CSV ({exc})") from None
    return {c: pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float) for c in frame.columns}


def _run_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        what = "no such folder" if not folder.is_dir() else f"it has no {name}"
        raise PlotError(f"RESULTS: {str(folder)!r} is not a run folder as `stormsim run` writes it: {what}")
    return path


# ------------------------------------------------------------------ writing


def export_figure(fig: go.Figure, path: Path | str, fmt: str) -> Path:
    """Write ``fig`` as html (plotly.js inlined) or png/svg/pdf (kaleido), atomically; return the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlotError(f"--out: {str(path)!r} cannot be written ({exc.strerror or exc})") from None
    if fmt == "html":
        _replace(path, lambda p: fig.write_html(p, include_plotlyjs=True, full_html=True,
                                                config={"displaylogo": False, "responsive": True}))
        return path
    if not kaleido_installed():
        raise ExportError(f"{fmt.upper()} export needs the kaleido package: {KALEIDO_FIX}")
    width = fig.layout.width or STATIC_WIDTH_PX
    try:
        _replace(path, lambda p: fig.write_image(p, format=fmt, width=width))
    except Exception as exc:  # kaleido, Chrome or the renderer: one line, never a traceback
        raise ExportError(export_failure(fmt, exc)) from None
    return path


def kaleido_installed() -> bool:
    """Whether the kaleido package (plotly's static image exporter) can be imported."""
    return importlib.util.find_spec("kaleido") is not None


def export_failure(fmt: str, exc: BaseException) -> str:
    """The one-line message for a failed static export, naming the fix."""
    text = f"{type(exc).__name__} {exc}".lower()
    if "chrome" in text or "chromium" in text or "browser" in text:
        return f"{fmt.upper()} export needs Chrome or Chromium for kaleido: {CHROME_FIX}"
    if "kaleido" in text and ("install" in text or "required" in text):
        return f"{fmt.upper()} export needs the kaleido package: {KALEIDO_FIX}"
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    return (f"{fmt.upper()} export failed ({type(exc).__name__}: {first_line}); check kaleido and "
            f"Chrome/Chromium ({CHROME_FIX})")


def _replace(path: Path, write: Any) -> None:
    tmp = stage_file(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _out_path(args: argparse.Namespace, default: Path) -> Path:
    return Path(args.out) if args.out else default


# ------------------------------------------------------------------ helpers


def _single(folders: list[Path], figure: str) -> Path:
    if len(folders) != 1:
        raise PlotError(f"RESULTS: --figure {figure} takes one folder, got {len(folders)}: "
                        f"{', '.join(str(f) for f in folders)}")
    return folders[0]


def _first(values: list[str], option: str, why: str) -> str:
    if not values:
        raise PlotError(f"{option}: {why}")
    return values[0]


def _file_part(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)


def build_parser() -> argparse.ArgumentParser:
    """A ``stormsim`` parser with only the ``plot`` command (for ``main`` and the tests)."""
    parser = _OneLineParser(prog="stormsim")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_OneLineParser)
    add_plot_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``stormsim plot ...`` on its own: ``python -m experiments.plot_cli plot RESULTS ...``."""
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    except PlotError as exc:
        print(f"stormsim: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run_plot(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
