"""Tune: one scenario, the settings people tune as widgets, KPIs against a pinned baseline.

A thin shell (design.md §1): the scenario comes from ``sim.scenario_loader`` (a shipped
file, NAME@VARIANT, or an upload), the widgets from ``dashboards.widgets`` (schema
driven), the runs from ``dashboards.runs`` (``sim.engine.run_scenario``, cached by the
scenario's complete YAML, seed and replication) and the chart from
``experiments.figures.timeseries_figure``.

Run standalone with ``streamlit run dashboards/tune_page.py``; ``main()`` draws the page.
"""

from __future__ import annotations

import hashlib
import shlex
import time
from typing import Any

import streamlit as st

from dashboards import common, runs, widgets
from experiments.catalog import DEFAULT_SCENARIO
from sim.scenario_checks import check_supported
from sim.scenario_loader import ScenarioError, dump_scenario_yaml

PAGE_TITLE = "stormsim: Tune"
KEY = "tune"                       # prefix of this page's session-state keys
STATE_REQUEST = f"{KEY}.request"   # the configuration whose results are shown
STATE_BASELINE = f"{KEY}.baseline"
STATE_GENERATION = f"{KEY}.generation"   # bumped by "Reset settings": fresh widget keys
STATE_TIMING = f"{KEY}.timing"     # the last update's timing (also shown as a caption)
METRIC_COLUMNS = 5


# ------------------------------------------------------------------ scenarios


def pick_scenario() -> tuple[str, str]:
    """The sidebar's scenario picker: (source id, the scenario as loaded, as YAML)."""
    options = runs.scenario_options()
    default = options.index(DEFAULT_SCENARIO) if DEFAULT_SCENARIO in options else 0
    option = st.sidebar.selectbox("Scenario", options, index=default, key=f"{KEY}.scenario",
                                  help="A shipped scenario (experiments/scenarios) or one of its variants.")
    upload = st.sidebar.file_uploader("Or upload a scenario YAML", type=["yaml", "yml"],
                                      key=f"{KEY}.upload",
                                      help="A complete scenario file (the YAML export below is one).")
    if upload is not None:
        data = upload.getvalue()
        scenario, problem = common.scenario_from_upload(data, upload.name)
        if scenario is not None:
            try:
                check_supported(scenario)   # valid, but more than this version of the model runs
            except ScenarioError as error:
                scenario, problem = None, f"{upload.name}: {error}"
        if scenario is not None:
            digest = hashlib.sha256(data).hexdigest()[:10]
            return f"upload:{upload.name}:{digest}", dump_scenario_yaml(scenario)
        with st.sidebar:
            common.show_error(problem or f"{upload.name}: not a scenario")
        st.sidebar.caption(f"Showing {option} instead.")
    return option, runs.shipped_yaml(option)


# ------------------------------------------------------------------ KPIs


def show_metrics(current: dict[str, runs.KpiStat], baseline: dict[str, runs.KpiStat]) -> None:
    stats = list(current.values())
    for start in range(0, len(stats), METRIC_COLUMNS):
        for column, stat in zip(st.columns(METRIC_COLUMNS), stats[start:start + METRIC_COLUMNS]):
            change = runs.delta(stat, baseline[stat.kpi.key])
            help_text = (f"{stat.kpi.note} " if stat.kpi.note else "") + \
                f"Baseline: {baseline[stat.kpi.key].text}. Summary key `{stat.kpi.key}` (docs/outputs.md)."
            if stat.range_text:
                help_text = f"Mean of {len(stat.values)} replications, range {stat.range_text}. " + help_text
            with column:
                st.metric(stat.kpi.label, stat.text, delta=change.text, delta_color=change.colour,
                          delta_arrow=change.arrow, help=help_text)


# ------------------------------------------------------------------ page


def main() -> None:
    started = time.perf_counter()
    st.set_page_config(page_title=PAGE_TITLE, layout="wide")
    st.title("Tune a scenario")

    source, base_yaml = pick_scenario()
    base = runs.scenario_from_yaml(base_yaml)
    seed = int(st.sidebar.number_input("Seed", min_value=0, value=int(base.seed), step=1, key=f"{KEY}.seed",
                                       help="Random-number seed; the baseline runs on the same seed "
                                            "(common random numbers)."))
    replications = int(st.sidebar.number_input(
        "Replications", min_value=1, max_value=runs.MAX_REPLICATIONS, value=1, step=1,
        key=f"{KEY}.replications",
        help="Runs per configuration (replications 0..R-1 of the seed); the KPIs show their mean "
             "and, in the tooltip, their range. The chart shows replication 0."))
    auto = st.sidebar.toggle("Run on every change", value=True, key=f"{KEY}.auto",
                             help="Off: change several settings, then press Run.")
    buttons = st.sidebar.columns(2)
    run_clicked = buttons[0].button("Run", type="primary", key=f"{KEY}.run", width="stretch")
    pin_clicked = buttons[1].button("Pin as baseline", key=f"{KEY}.pin", width="stretch",
                                    help="Compare the next runs with the configuration shown now.")
    buttons = st.sidebar.columns(2)
    if buttons[0].button("Reset baseline", key=f"{KEY}.unpin", width="stretch",
                         help="Back to the scenario as loaded."):
        st.session_state.pop(STATE_BASELINE, None)
    if buttons[1].button("Reset settings", key=f"{KEY}.reset", width="stretch",
                         help="Every widget back to the scenario's value."):
        st.session_state[STATE_GENERATION] = st.session_state.get(STATE_GENERATION, 0) + 1

    st.sidebar.subheader("Settings")
    generation = st.session_state.get(STATE_GENERATION, 0)
    items, values = widgets.render_all(base, key_prefix=f"{KEY}.w{generation}:{source}", container=st.sidebar)
    texts = widgets.overrides(items, values)
    try:
        tuned = widgets.with_overrides(base, texts)
    except ScenarioError as error:
        common.show_error(str(error))
        return
    request = {"source": source, "yaml": dump_scenario_yaml(tuned), "seed": seed,
               "replications": replications, "overrides": texts}
    shown = st.session_state.get(STATE_REQUEST)
    if auto or run_clicked or shown is None or shown["source"] != source:
        shown = st.session_state[STATE_REQUEST] = request
    baseline = st.session_state.get(STATE_BASELINE)
    if pin_clicked:
        baseline = st.session_state[STATE_BASELINE] = {"source": source, "yaml": shown["yaml"],
                                                       "label": "pinned: " + (", ".join(shown["overrides"])
                                                                              or "the scenario as loaded")}
    if baseline is None or baseline["source"] != source:
        baseline = {"source": source, "yaml": base_yaml, "label": "the scenario as loaded"}

    description = " ".join(base.description.split())
    st.caption(f"**{source}**" + (f": {description}" if description else ""))
    if shown is not request and shown != request:
        st.info("The settings changed since the last run: press **Run** to see them.")

    try:
        with st.spinner("Running the simulation..."):
            run_started = time.perf_counter()
            current_runs = runs.run_replications(shown["yaml"], shown["seed"], shown["replications"])
            baseline_runs = runs.run_replications(baseline["yaml"], shown["seed"], shown["replications"])
            run_s = time.perf_counter() - run_started
    except Exception as exc:  # noqa: BLE001 - the page shows why, the sidebar stays usable
        common.show_error(f"The run failed: {type(exc).__name__}: {exc}")
        return
    current = runs.aggregate(current_runs)
    base_stats = runs.aggregate(baseline_runs)

    st.subheader("Key results")
    reps = shown["replications"]
    st.caption(f"Seed {shown['seed']}" + (f", mean of {reps} replications" if reps > 1 else "")
               + f". Changes against the baseline: {baseline['label']}.")
    show_metrics(current, base_stats)
    timing = st.empty()

    st.subheader("Time series")
    figure_started = time.perf_counter()
    figure = runs.timeseries_cached(shown["yaml"], shown["seed"], 0)
    st.plotly_chart(figure, theme=None, key=f"{KEY}.chart", config={"displaylogo": False})
    figure_s = time.perf_counter() - figure_started
    total_s = time.perf_counter() - started
    st.session_state[STATE_TIMING] = {"total_s": total_s, "run_s": run_s, "figure_s": figure_s}
    timing.caption(f"Updated in {total_s:.2f} s after the last change (simulation {run_s:.2f} s, "
                   f"chart {figure_s:.2f} s; an unchanged configuration comes from the cache).")

    show_changes(shown)
    show_exports(shown, figure, current, base_stats)


def show_changes(shown: dict[str, Any]) -> None:
    """The changes from the scenario as loaded, as the command line that runs the same configuration."""
    texts = shown["overrides"]
    with st.expander(f"Changes from the scenario as loaded ({len(texts)})", expanded=False):
        scenario = "FILE.yaml" if shown["source"].startswith("upload:") else shown["source"]
        lines = [f"stormsim run {scenario} --seed {shown['seed']}"]
        lines += [f"  --set {shlex.quote(text)}" for text in texts]
        st.code(" \\\n".join(lines), language="bash")
        if not texts:
            st.caption("None: the scenario as loaded.")


def show_exports(shown: dict[str, Any], figure: Any, current: dict[str, runs.KpiStat],
                 baseline: dict[str, runs.KpiStat]) -> None:
    st.subheader("Export")
    scenario = runs.scenario_from_yaml(shown["yaml"])
    source = shown["source"]
    name = source.split(":", 1)[1].rsplit(":", 1)[0].rsplit(".", 1)[0] if source.startswith("upload:") else source
    if shown["overrides"]:
        name += "-tuned"
    left, middle, right = st.columns([1, 1, 2])
    with left:
        st.caption("Configuration (`stormsim run FILE` accepts it)")
        common.scenario_download(scenario, key=f"{KEY}.export.yaml")
    with middle:
        st.caption("KPIs")
        common.table_download(runs.kpi_frame(current, baseline), f"{name}-kpis", key=f"{KEY}.export.csv")
    with right:
        images = st.toggle("PNG and SVG too", value=False, key=f"{KEY}.images",
                           help="kaleido renders them with Chromium: a few seconds per new chart.")
        st.caption("Chart")
        common.figure_downloads(figure, f"{name}-seed{shown['seed']}", key=f"{KEY}.export.figure",
                                formats=("html", "png", "svg") if images else ("html",))


if __name__ == "__main__":
    main()
