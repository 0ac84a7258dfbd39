"""The Compare page under AppTest, and the KPI helpers of dashboards.runs it shares with Tune."""

from __future__ import annotations

from pathlib import Path

import pickle

import pytest
from streamlit.testing.v1 import AppTest

from dashboards import runs
from dashboards.compare_page import DEFAULT_SELECTION

PAGE = str(Path(__file__).resolve().parents[1] / "dashboards" / "compare_page.py")


def test_default_selection_runs_and_shows_a_table_and_a_chart_then_another_selection():
    # one test, so the four runs happen once (a module fixture would run them on each xdist worker)
    page = AppTest.from_file(PAGE, default_timeout=90).run()
    assert not page.exception
    assert not page.error
    assert page.multiselect(key="compare.selection").value == list(DEFAULT_SELECTION)
    assert page.number_input(key="compare.seed").value == 1
    [table] = page.dataframe
    frame = table.value
    assert list(frame.columns) == ["KPI", *DEFAULT_SELECTION]
    assert list(frame["KPI"]) == [kpi.label for kpi in runs.COMPARE_KPIS]
    outcomes = dict(zip(frame.columns[1:], frame.iloc[0, 1:]))
    assert outcomes["seed-collapse"] == "crashed"
    assert outcomes["seed-db-deadline"] == "stable"
    assert len(page.get("plotly_chart")) == 1
    labels = {b.proto.label for b in page.get("download_button")}
    assert {"CSV", "HTML"} <= labels

    # fewer than two: a hint, no table; then two from the cache of the first run
    page.multiselect(key="compare.selection").set_value(["seed-collapse"])
    page.run()
    assert not page.exception
    assert not page.dataframe and not page.get("plotly_chart")
    assert any("two or more" in info.value for info in page.info)
    page.multiselect(key="compare.selection").set_value(["seed-collapse", "seed-db-deadline"])
    page.run()                        # both runs come from the cache
    assert list(page.dataframe[0].value.columns) == ["KPI", "seed-collapse", "seed-db-deadline"]


def test_cached_runs_are_slim_and_picklable():
    result = runs.run_cached(runs.shipped_yaml("seed-collapse"), 1, 0)
    assert all(len(column) == 0 for column in result.requests.values())
    assert all(len(column) == 0 for column in result.attempts.values())
    assert len(pickle.dumps(result)) < 1_000_000
    assert result.summary["outcome"] == "crashed"
    assert "time_s" in result.levels and "time_s" in result.windows


def test_kpi_aggregation_and_deltas(synthetic_run):
    one, other = synthetic_run(), synthetic_run()
    other.summary = dict(other.summary, p99_ms=5000.0, collapse_time_s=None, outcome="stable")
    both = runs.aggregate([one, other])
    assert both["p99_ms"].mean == pytest.approx((9010.5 + 5000.0) / 2)
    assert both["p99_ms"].range_text == "5,000 ms to 9,010 ms"
    assert both["collapse_time_s"].text == "4 s (1 of 2)"
    assert both["outcome"].text in ("recovered ×1, stable ×1", "stable ×1, recovered ×1")
    base = runs.aggregate([one])
    better = runs.aggregate([other])
    change = runs.delta(better["p99_ms"], base["p99_ms"])
    assert change.text == "-4,010 ms" and change.colour == "green" and change.arrow == "down"
    assert runs.delta(better["collapse_time_s"], base["collapse_time_s"]).text == "no collapse now"
    assert runs.delta(base["p99_ms"], base["p99_ms"]).text is None
    frame = runs.kpi_frame(better, base)
    assert list(frame.columns[:4]) == ["kpi", "key", "unit", "value"]
    raw = runs.comparison_frame([("a", one), ("b", other)], formatted=False)
    assert raw.loc[raw["key"] == "p99_ms", "b"].item() == 5000.0
