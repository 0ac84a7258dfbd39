"""Sweep: one or two settings of a shipped scenario over a range, in the background; and tipping points.

A thin shell over ``experiments`` (design.md §1). The factors come from the Tune page's
list of settings (``dashboards.widgets.TUNABLE``, resolved against the scenario's first
client and service; its numeric ones, ranges in seconds for durations). The page writes a sweep file
(docs/experiments.md), validates it with ``experiments.sweep_file.load_sweep``, and
starts ``stormsim sweep FILE --out DIR --jobs N`` as a child process
(``dashboards.background``); the page never runs a simulation itself. While the sweep
runs, a fragment refreshes every second: the progress (runs stored in ``runs.jsonl``
against the manifest's total), a Cancel button, and the figures of
``experiments.sweep_figures`` drawn from the runs finished so far (the same figures
as ``stormsim plot``). The tipping-point finder runs ``stormsim boundary ... --json``
the same way and shows its bracket and points when done.

Files go under ``out/dashboard/`` (relative to the working folder, like the CLI's
``out/``): ``sweeps/<name>-<time>/`` holds the sweep file, the sweep's outputs and the
job's stdout/stderr; ``boundaries/<name>-<time>/`` a boundary search's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import yaml

from dashboards import background, common, widgets
from experiments.boundary import OUTCOMES, format_setting_value
from experiments.plot_cli import PlotError, _sweep_figure
from experiments.sweep_file import DEFAULT_METRICS, SweepError, load_sweep
from experiments.sweep_report import BAR_METRICS
from experiments.sweep_summary import PROBABILITIES, SweepResults, SweepResultsError
from experiments.sweep_summary import load_sweep as load_results
from sim.scenario_loader import ScenarioError, load_scenario, setting_annotation, setting_text
from sim.schema import Duration, Rate
from sim.units import format_duration

SWEEP_JOB = "sweep_job"
BOUNDARY_JOB = "boundary_job"
MAX_POINTS = 15                 # grid points per factor
MAX_REPLICATIONS = 50
REFRESH = "1s"
DEFAULT_JOBS = max(1, min(background.MAX_SWEEP_JOBS, os.cpu_count() or 1))


def dashboard_dir() -> Path:
    return Path.cwd() / "out" / "dashboard"


# ------------------------------------------------------------------ scenarios and their settings


@st.cache_data(show_spinner=False, max_entries=64)
def _variants(path: str, mtime_ns: int) -> list[str]:
    try:
        return list(load_scenario(path).variants)
    except ScenarioError:
        return []


def scenario_choices() -> dict[str, tuple[str, str | None]]:
    """``name`` and ``name@variant`` of every shipped scenario -> (file, variant)."""
    choices: dict[str, tuple[str, str | None]] = {}
    for name, path in common.shipped().items():
        path = Path(path).resolve()
        choices[name] = (str(path), None)
        for variant in _variants(str(path), path.stat().st_mtime_ns):
            choices[f"{name}@{variant}"] = (str(path), variant)
    return choices


def _kind(annotation: Any) -> str | None:
    """How a factor's range is entered: seconds, req/s, a whole number or a number (sizes: not offered)."""
    if annotation == Duration:
        return "duration"
    if annotation == Rate:
        return "rate"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    return None


def _unit(kind: str) -> str:
    return {"duration": "s", "rate": "req/s"}.get(kind, "")


@st.cache_data(show_spinner=False, max_entries=64)
def scenario_settings(path: str, mtime_ns: int, variant: str | None) -> list[dict[str, Any]]:
    """The numeric settings of the Tune page's list (``widgets.TUNABLE``, resolved against the
    scenario's first client and service) with their current values; plain data, so cached."""
    scenario = load_scenario(path, variant=variant)
    settings = []
    for group, dotted in widgets.resolve_paths(scenario):
        try:
            kind = _kind(setting_annotation(dotted))
            value = widgets.value_at(scenario, dotted)
        except (ScenarioError, AttributeError, IndexError, KeyError, TypeError):
            continue
        if kind is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        name = dotted.rsplit(".", 1)[-1]
        settings.append({"label": f"{group}: {widgets.LABELS.get(name, name.replace('_', ' '))}", "path": dotted,
                         "kind": kind, "unit": _unit(kind), "current": float(value)})
    return settings


def value_text(setting: dict[str, Any], value: float) -> str:
    """A value for people: ``2s``, ``450 req/s``, ``3``."""
    kind = setting["kind"]
    if kind == "duration":
        return format_duration(float(value))
    if kind == "int":
        return str(int(round(value)))
    text = f"{float(value):.6g}"
    return f"{text} req/s" if kind == "rate" else text


def default_range(setting: dict[str, Any]) -> tuple[float, float]:
    c, kind = setting["current"], setting["kind"]
    if kind == "int":
        c = int(round(c))
        if c <= 0:
            return 1, 10
        low = max(1, c // 2)
        return low, max(2 * c, low + 3)
    if c <= 0:
        return (1.0, 10.0) if kind == "duration" else (0.1, 1.0)
    return c / 2.0, 2.0 * c


def sweep_value(setting: dict[str, Any], value: float) -> Any:
    """A range end as the sweep file writes it: ``2.5s`` for durations, numbers otherwise."""
    if setting["kind"] == "duration":
        return setting_text(Duration, float(value))
    if setting["kind"] == "int":
        return int(round(value))
    return float(value)


def sweep_data(name: str, scenario_path: str, variant: str | None, factors: list[dict[str, Any]],
               replications: int, seed: int, description: str = "") -> dict[str, Any]:
    """A sweep file (docs/experiments.md) as data: the base scenario by its absolute path."""
    data: dict[str, Any] = {"name": name, "description": description, "scenario": scenario_path}
    if variant:
        data["variant"] = variant
    data["factors"] = {
        f["setting"]["path"]: {"range": {"from": sweep_value(f["setting"], f["from"]),
                                         "to": sweep_value(f["setting"], f["to"]),
                                         "n": int(f["n"]), "scale": f["scale"]}}
        for f in factors}
    data["replications"] = int(replications)
    data["seed"] = int(seed)
    return data


def new_folder(parent: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = parent / f"{name}-{stamp}"
    n = 2
    while folder.exists():
        folder = parent / f"{name}-{stamp}-{n}"
        n += 1
    folder.mkdir(parents=True)
    return folder


def _short(path: str) -> str:
    return path.rsplit(".", 1)[-1]


# ------------------------------------------------------------------ figures (the CLI's, via plot_cli)


def sweep_figure(results: SweepResults, figure: str, x: str, y: str | None = None, by: str | None = None,
                 metric: str | None = None, outcome: str = "collapse", level: float = 0.5) -> go.Figure:
    """The figure ``stormsim plot --figure FIGURE ...`` draws; PlotError with one line otherwise."""
    args = argparse.Namespace(figure=figure, x=x, y=y, by=by, metric=metric, outcome=outcome, level=level)
    return _sweep_figure(args, results)[0]


def live_figures(job: background.Job, metric: str) -> tuple[SweepResults | None, list[tuple[str, go.Figure]]]:
    """The chosen metric and the collapse probability over the factors, from the runs stored so far."""
    try:
        results = load_results(job.out_dir, extra_metrics=[m for m in (metric, *BAR_METRICS) if m not in PROBABILITIES])
    except SweepResultsError:
        return None, []
    if results.runs.empty:
        return results, []
    factors = list(results.manifest["factors"])
    figures: list[tuple[str, go.Figure]] = []
    try:
        if len(factors) >= 2:
            figures.append((f"heatmap-{metric}", sweep_figure(results, "heatmap", factors[0], factors[1], metric=metric)))
            figures.append(("collapse-map", sweep_figure(results, "collapse-map", factors[0], factors[1])))
        else:
            figures.append((f"lines-{metric}", sweep_figure(results, "lines", factors[0], metric=metric)))
            figures.append(("p-collapse", sweep_figure(results, "lines", factors[0], metric="p_collapse")))
    except PlotError as exc:
        st.warning(str(exc), icon="⚠️")
    return results, figures


# ------------------------------------------------------------------ the sweep form


def factor_inputs(i: int, settings: list[dict[str, Any]], choice: str, default_path: str) -> dict[str, Any]:
    by_path = {s["path"]: s for s in settings}
    paths = list(by_path)
    index = paths.index(default_path) if default_path in by_path else min(i, len(paths) - 1)
    path = st.selectbox(f"Factor {i + 1}", paths, index=index, key=f"sweep_f{i}_setting:{choice}",
                        format_func=lambda p: f"{by_path[p]['label']}: now {value_text(by_path[p], by_path[p]['current'])}"
                                              f"  ({p})")
    setting = by_path[path]
    low, high = default_range(setting)
    unit = f" ({setting['unit']})" if setting["unit"] else ""
    integer = setting["kind"] == "int"
    cols = st.columns([2, 2, 1, 2])
    key = f"{i}:{choice}:{path}"
    number = dict(step=1, min_value=0) if integer else dict(step=None, min_value=0.0, format="%g")
    with cols[0]:
        start = st.number_input(f"from{unit}", value=int(low) if integer else float(low), key=f"sweep_from:{key}", **number)
    with cols[1]:
        stop = st.number_input(f"to{unit}", value=int(high) if integer else float(high), key=f"sweep_to:{key}", **number)
    with cols[2]:
        n = st.number_input("points", min_value=2, max_value=MAX_POINTS, value=4, step=1, key=f"sweep_n:{key}")
    with cols[3]:
        scale = st.radio("scale", ["linear", "log"], horizontal=True, key=f"sweep_scale:{key}")
    return {"setting": setting, "from": start, "to": stop, "n": int(n), "scale": scale}


def start_sweep(choice: str, scenario_path: str, variant: str | None, factors: list[dict[str, Any]],
                replications: int, seed: int, jobs: int) -> None:
    name = common.safe_name(f"{choice}-" + "-x-".join(_short(f["setting"]["path"]) for f in factors))
    folder = new_folder(dashboard_dir() / "sweeps", name)
    described = ", ".join(f"{f['setting']['label']} from {value_text(f['setting'], f['from'])} to "
                          f"{value_text(f['setting'], f['to'])} ({f['n']} points, {f['scale']})" for f in factors)
    data = sweep_data(folder.name, scenario_path, variant, factors, replications, seed,
                      description=f"Dashboard sweep of {choice}: {described}.")
    sweep_file = folder / background.SWEEP_FILE
    sweep_file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    try:
        load_sweep(sweep_file)                  # every problem in one line, before anything starts
        job = background.start_sweep(sweep_file, folder, jobs)
    except (SweepError, background.JobError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        common.show_error(str(exc))
        return
    st.session_state[SWEEP_JOB] = job
    st.rerun()                  # the form again, its Start button disabled while the sweep runs


def sweep_status(job: background.Job, status: background.JobStatus, progress: background.SweepProgress) -> None:
    elapsed = f"{status.elapsed_s:.0f} s"
    if status.running:
        label = progress.text if status.state == "running" else f"cancelling ({progress.text})"
        st.progress(progress.fraction, text=f"{label}; {elapsed}")
    elif status.state == "finished":
        st.success(f"Sweep finished: {progress.done}/{progress.total} runs, {progress.failed} failed, in {elapsed}"
                   + (f"; {status.detail}" if status.detail else ""), icon="✅")
    elif status.state in ("cancelled", "timed out"):
        st.warning(f"Sweep {status.detail}: {progress.done}/{progress.total or '?'} runs stored.", icon="⏹️")
    else:
        show_failure("Sweep", job, status)


def show_failure(what: str, job: background.Job, status: background.JobStatus) -> None:
    """One error line; the tail of stderr below it when there is more than that line."""
    first = status.detail.splitlines()[0] if status.detail else "no result"
    common.show_error(f"{what} failed: {first}")
    log = background.tail(job.stderr, background.TAIL_LINES)
    if len(log.splitlines()) > 1:
        st.code(log, language=None)


def sweep_view(live: bool) -> None:
    """Progress, Cancel and the figures so far (a fragment re-runs it every second while the job runs)."""
    job: background.Job | None = st.session_state.get(SWEEP_JOB)
    if job is None:
        return
    status = background.poll(job)
    if live and not status.running:
        st.rerun()              # the whole page: exports appear, the refresh stops
    progress = background.sweep_progress(job)
    sweep_status(job, status, progress)
    if status.state == "running":
        if st.button("Cancel", key="sweep_cancel", icon="⏹️"):
            background.cancel(job, wait=False)
            st.rerun()
    metric = st.session_state.get("sweep_metric") or DEFAULT_METRICS[0]
    results, figures = live_figures(job, metric)
    if results is not None and results.runs.empty and status.running:
        st.info("The figures appear as the first runs finish.")
    for name, fig in figures:
        st.plotly_chart(fig, key=f"sweep_fig_{name.split('-')[0]}", width="stretch")
    if not status.running:
        sweep_exports(job, results, figures)


def sweep_exports(job: background.Job, results: SweepResults | None, figures: list[tuple[str, go.Figure]]) -> None:
    st.markdown("**Export**")
    text = Path(job.sweep_file).read_text(encoding="utf-8") if Path(job.sweep_file).is_file() else ""
    st.caption(f"Output folder: `{job.folder}` (open it on the Results page). Rerun from the command line "
               "(`--out` to the same folder resumes it; without, it writes `out/sweeps/<name>/`):")
    st.code(f"stormsim sweep {job.sweep_file}", language="bash")
    cols = st.columns(2)
    with cols[0]:
        st.download_button("Sweep YAML", data=text.encode("utf-8"), file_name=f"{Path(job.folder).name}.yaml",
                           mime="application/x-yaml", key="sweep_yaml_download")
    with cols[1]:
        if results is not None and not results.cells.empty:
            common.table_download(results.cells, f"{Path(job.folder).name}-cells", key="sweep_cells_csv",
                                  label="Cells CSV")
    if figures and st.toggle("Figure files (HTML, PNG, SVG)", key="sweep_figure_files"):
        for name, fig in figures:
            st.caption(name)
            common.figure_downloads(fig, f"{Path(job.folder).name}-{name}", key=f"sweep_dl_{name.split('-')[0]}")


# ------------------------------------------------------------------ tipping points


def start_boundary(choice: str, scenario_path: str, variant: str | None, setting: dict[str, Any], lo: float,
                   hi: float, reps: int, seed: int, jobs: int, outcome: str, level: float) -> None:
    if not lo < hi:
        common.show_error(f"lo: {value_text(setting, lo)} is not below hi {value_text(setting, hi)}")
        return
    annotation = setting_annotation(setting["path"])
    folder = new_folder(dashboard_dir() / "boundaries", common.safe_name(f"{choice}-{_short(setting['path'])}"))
    scenario = scenario_path + (f"@{variant}" if variant else "")
    try:
        job = background.start_boundary(scenario, setting["path"], format_setting_value(annotation, lo),
                                        format_setting_value(annotation, hi), folder, reps=reps, seed=seed,
                                        jobs=jobs, outcome=outcome, level=level)
    except background.JobError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        common.show_error(str(exc))
        return
    st.session_state[BOUNDARY_JOB] = job
    st.rerun()


def points_table(result: dict[str, Any]) -> pd.DataFrame:
    rows = [{"value": p.get("text"), "runs": p.get("runs"), "hits": p.get("hits"), "p": p.get("p"),
             "ci_low": (p.get("ci") or [None, None])[0], "ci_high": (p.get("ci") or [None, None])[1],
             "judged": p.get("side")} for p in result.get("points", [])]
    return pd.DataFrame(rows, columns=["value", "runs", "hits", "p", "ci_low", "ci_high", "judged"])


def boundary_view(live: bool) -> None:
    job: background.Job | None = st.session_state.get(BOUNDARY_JOB)
    if job is None:
        return
    status = background.poll(job)
    if live and not status.running:
        st.rerun()
    elapsed = f"{status.elapsed_s:.0f} s"
    if status.running:
        st.info(f"Searching ({'cancelling, ' if status.state == 'cancelling' else ''}{elapsed}): each line is a "
                "point judged by its Wilson interval.", icon="⏳")
        log = background.tail(job.stderr, background.TAIL_LINES)
        if log:
            st.code(log, language=None)
        if status.state == "running" and st.button("Cancel search", key="boundary_cancel", icon="⏹️"):
            background.cancel(job, wait=False)
            st.rerun()
        return
    if status.state in ("cancelled", "timed out"):
        st.warning(f"Tipping-point search {status.detail}.", icon="⏹️")
        return
    result = background.boundary_result(job) if status.state == "finished" else None
    if result is None:
        show_failure("Tipping-point search", job, status)
        return
    message = str(result.get("message", ""))
    (st.success if result.get("status") == "crossing" else st.info)(message, icon="🎯")
    bracket = result.get("bracket")
    cols = st.columns(3)
    cols[0].metric("bracket", f"{bracket['lo_text']} to {bracket['hi_text']}" if bracket else "none")
    cols[1].metric("runs", f"{result.get('total_runs', 0)}")
    cols[2].metric("wall time", f"{float(result.get('wall_s', 0.0)):.1f} s")
    table = points_table(result)
    st.dataframe(table, hide_index=True, key="boundary_points")
    st.caption("Rerun from the command line:")
    st.code(job.cli_command, language="bash")
    cols = st.columns(2)
    with cols[0]:
        st.download_button("Result JSON", data=Path(job.result_file).read_bytes(), file_name=f"{Path(job.folder).name}.json",
                           mime="application/json", key="boundary_json_download")
    with cols[1]:
        common.table_download(table, f"{Path(job.folder).name}-points", key="boundary_points_csv", label="Points CSV")


# ------------------------------------------------------------------ the page


def _attach_running(key: str, kind: str) -> None:
    """A job this server runs but this session does not know (a reloaded page): show it again."""
    if st.session_state.get(key) is None:
        running = background.running_jobs(kind)
        if running:
            st.session_state[key] = running[0]


def main() -> None:
    st.title("Sweep")
    st.caption("Vary one or two settings of a scenario over a range, with replications on common random numbers; "
               "the sweep runs in the background (`stormsim sweep`), and its figures fill in as runs finish.")
    _attach_running(SWEEP_JOB, "sweep")
    _attach_running(BOUNDARY_JOB, "boundary")
    choices = scenario_choices()
    if not choices:
        common.show_error("No shipped scenarios found (experiments/scenarios/).")
        return
    names = list(choices)
    choice = st.selectbox("Base scenario", names, key="sweep_scenario",
                          index=names.index("policy-storm") if "policy-storm" in names else 0)
    scenario_path, variant = choices[choice]
    try:
        settings = scenario_settings(scenario_path, Path(scenario_path).stat().st_mtime_ns, variant)
    except ScenarioError as exc:
        common.show_error(str(exc))
        return
    if not settings:
        common.show_error(f"{choice} has no numeric setting to sweep here.")
        return
    paths = [s["path"] for s in settings]
    timeout_path = next((p for p in paths if p.endswith("transport.client_timeout")), paths[0])
    attempts_path = next((p for p in paths if p.endswith("retry.max_attempts")), paths[min(1, len(paths) - 1)])

    sweep_job: background.Job | None = st.session_state.get(SWEEP_JOB)
    sweep_running = sweep_job is not None and background.poll(sweep_job).running
    with st.container(border=True):
        n_factors = st.radio("Factors", [1, 2], index=1, horizontal=True, key="sweep_n_factors")
        factors = [factor_inputs(0, settings, choice, timeout_path)]
        if n_factors == 2:
            factors.append(factor_inputs(1, settings, choice, attempts_path))
        cols = st.columns(3)
        with cols[0]:
            reps = st.number_input("replications", min_value=1, max_value=MAX_REPLICATIONS, value=3, step=1,
                                   key="sweep_reps")
        with cols[1]:
            seed = st.number_input("seed", min_value=0, value=1, step=1, key="sweep_seed")
        with cols[2]:
            jobs = st.number_input("worker processes", min_value=1, max_value=background.MAX_SWEEP_JOBS,
                                   value=DEFAULT_JOBS, step=1, key="sweep_jobs")
        planned = int(reps)
        for f in factors:
            planned *= f["n"]
        same = len(factors) == 2 and factors[0]["setting"]["path"] == factors[1]["setting"]["path"]
        st.caption(f"About {planned} runs (fewer when an integer setting's points coincide).")
        if same:
            st.warning("Pick two different settings.", icon="⚠️")
        start = st.button("Start sweep", key="sweep_start", type="primary", icon="▶️",
                          disabled=sweep_running or same)
    if start and not sweep_running and not same:
        start_sweep(choice, scenario_path, variant, factors, int(reps), int(seed), int(jobs))
        sweep_job = st.session_state.get(SWEEP_JOB)
        sweep_running = sweep_job is not None and background.poll(sweep_job).running

    metrics = list(DEFAULT_METRICS) + list(PROBABILITIES)
    st.selectbox("Metric of the figures", metrics, key="sweep_metric")
    st.fragment(sweep_view, run_every=REFRESH if sweep_running else None)(sweep_running)

    st.divider()
    st.subheader("Tipping point")
    st.caption("Bisect one setting for the value where the probability of an outcome crosses a level, with "
               "replications at each point judged by Wilson intervals (`stormsim boundary`).")
    boundary_job: background.Job | None = st.session_state.get(BOUNDARY_JOB)
    boundary_running = boundary_job is not None and background.poll(boundary_job).running
    with st.container(border=True):
        by_path = {s["path"]: s for s in settings}
        rate_path = next((p for p in paths if p.endswith("load.rate_per_s")), paths[0])
        path = st.selectbox("Setting", paths, index=paths.index(rate_path), key=f"boundary_setting:{choice}",
                            format_func=lambda p: f"{by_path[p]['label']}: now {value_text(by_path[p], by_path[p]['current'])}"
                                                  f"  ({p})")
        setting = by_path[path]
        low, high = default_range(setting)
        unit = f" ({setting['unit']})" if setting["unit"] else ""
        integer = setting["kind"] == "int"
        number = dict(step=1, min_value=0) if integer else dict(step=None, min_value=0.0, format="%g")
        key = f"{choice}:{path}"
        cols = st.columns(2)
        with cols[0]:
            lo = st.number_input(f"lo{unit}", value=int(low) if integer else float(low), key=f"boundary_lo:{key}", **number)
        with cols[1]:
            hi = st.number_input(f"hi{unit}", value=int(high) if integer else float(high), key=f"boundary_hi:{key}", **number)
        cols = st.columns(5)
        with cols[0]:
            b_reps = st.number_input("replications per batch", min_value=1, max_value=MAX_REPLICATIONS, value=3,
                                     step=1, key="boundary_reps")
        with cols[1]:
            b_seed = st.number_input("seed", min_value=0, value=1, step=1, key="boundary_seed")
        with cols[2]:
            b_jobs = st.number_input("worker processes", min_value=1, max_value=background.MAX_SWEEP_JOBS,
                                     value=DEFAULT_JOBS, step=1, key="boundary_jobs")
        with cols[3]:
            outcome = st.selectbox("outcome", OUTCOMES, key="boundary_outcome")
        with cols[4]:
            level = st.number_input("level", min_value=0.05, max_value=0.95, value=0.5, step=0.05,
                                    key="boundary_level")
        find = st.button("Find tipping point", key="boundary_start", icon="🎯", disabled=boundary_running)
    if find and not boundary_running:
        start_boundary(choice, scenario_path, variant, setting, float(lo), float(hi), int(b_reps), int(b_seed),
                       int(b_jobs), outcome, float(level))
        boundary_job = st.session_state.get(BOUNDARY_JOB)
        boundary_running = boundary_job is not None and background.poll(boundary_job).running
    st.fragment(boundary_view, run_every=REFRESH if boundary_running else None)(boundary_running)


if __name__ == "__main__":
    main()
