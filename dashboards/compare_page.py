"""Compare: two or more shipped configurations on one seed, KPIs side by side and overlaid.

A thin shell (design.md §1): each configuration is a shipped scenario or NAME@VARIANT
loaded by ``sim.scenario_loader``, run by ``dashboards.runs.run_cached`` (cached per
scenario YAML and seed; one seed for all = common random numbers), tabulated with the
KPIs of ``dashboards.runs.COMPARE_KPIS`` and drawn with
``experiments.figures.comparison_figure``.

Run standalone with ``streamlit run dashboards/compare_page.py``; ``main()`` draws the page.
"""

from __future__ import annotations

import time

import streamlit as st

from dashboards import common, runs

PAGE_TITLE = "stormsim: Compare"
KEY = "compare"
DEFAULT_SELECTION: tuple[str, ...] = ("seed-collapse", "seed-server-timeouts", "seed-db-deadline",
                                      "seed-client-timeout")
DEFAULT_SEED = 1
STATE_TIMING = f"{KEY}.timing"


def main() -> None:
    started = time.perf_counter()
    st.set_page_config(page_title=PAGE_TITLE, layout="wide")
    st.title("Compare configurations")
    options = runs.scenario_options()
    chosen = st.multiselect(
        "Configurations", options, default=[name for name in DEFAULT_SELECTION if name in options],
        key=f"{KEY}.selection",
        help="Shipped scenarios and their variants (NAME@VARIANT); two or more.")
    seed = int(st.number_input("Seed", min_value=0, value=DEFAULT_SEED, step=1, key=f"{KEY}.seed",
                               help="One seed for every configuration: common random numbers, so the "
                                    "differences come from the settings, not the draws."))
    if len(chosen) < 2:
        st.info("Pick two or more configurations.")
        return

    labelled = tuple((label, runs.shipped_yaml(label)) for label in chosen)
    progress = st.progress(0.0, text="Running...")
    try:
        results = []
        for i, (label, text) in enumerate(labelled):
            progress.progress(i / len(labelled), text=f"Running {label} ({i + 1} of {len(labelled)})...")
            results.append((label, runs.run_cached(text, seed, 0)))
        progress.empty()
        with st.spinner("Drawing..."):
            figure = runs.comparison_cached(labelled, seed)
    except Exception as exc:  # noqa: BLE001 - the page shows why, the picker stays usable
        progress.empty()
        common.show_error(f"The run failed: {type(exc).__name__}: {exc}")
        return

    st.subheader("Key results")
    st.caption(f"Seed {seed}, one run per configuration. Untouched goodput: successes of requests no fault "
               "acted on, per second from the trigger to the end.")
    table = runs.comparison_frame(results)
    st.dataframe(table, hide_index=True, key=f"{KEY}.table")
    st.subheader("Time series")
    st.plotly_chart(figure, theme=None, key=f"{KEY}.chart", config={"displaylogo": False})
    total_s = time.perf_counter() - started
    st.session_state[STATE_TIMING] = {"total_s": total_s}
    st.caption(f"Updated in {total_s:.2f} s (runs and figures come from the cache when seen before).")

    st.subheader("Export")
    name = f"compare-seed{seed}"
    left, right = st.columns([1, 2])
    with left:
        st.caption("KPI table")
        common.table_download(runs.comparison_frame(results, formatted=False), f"{name}-kpis",
                              key=f"{KEY}.export.csv")
    with right:
        images = st.toggle("PNG and SVG too", value=False, key=f"{KEY}.images",
                           help="kaleido renders them with Chromium: a few seconds per new chart.")
        st.caption("Chart")
        common.figure_downloads(figure, name, key=f"{KEY}.export.figure",
                                formats=("html", "png", "svg") if images else ("html",))


if __name__ == "__main__":
    main()
