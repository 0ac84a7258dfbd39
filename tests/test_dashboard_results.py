"""The Results page (dashboards/results_page.py), driven by Streamlit's AppTest.

One tiny sweep (conftest's 2 s healthy service; 2 x 2 cells x 2 replications, ~0.1 s
a run) is run once through ``stormsim sweep`` in this process; the page opens its
folder, shows the manifest, the cells and every figure kind, filters the cells, and a
folder that is not a sweep output is one error line.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from streamlit.testing.v1 import AppTest

from conftest import small_scenario_data, write_scenario_yaml
from experiments.cli import main

PAGE = str(Path(__file__).resolve().parents[1] / "dashboards" / "results_page.py")
TIMEOUT = "clients.web.transport.client_timeout"
RATE = "clients.web.load.rate_per_s"


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """A finished sweep folder: 4 cells x 2 replications of the tiny scenario."""
    root = tmp_path_factory.mktemp("results")
    write_scenario_yaml(root / "tiny.yaml", small_scenario_data(duration="2s"))
    data = {"name": "tiny-results", "scenario": "tiny.yaml",
            "factors": {TIMEOUT: {"values": ["50ms", "1s"]}, RATE: {"range": {"from": 20, "to": 80, "n": 2}}},
            "replications": 2, "seed": 3, "metrics": ["goodput_rps", "p99_ms", "attempts_per_request"]}
    (root / "sweep.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    out = root / "out"
    assert main(["sweep", str(root / "sweep.yaml"), "--out", str(out), "--jobs", "1"]) == 0
    return out


def open_page(folder: str | Path | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    if folder is not None:
        at.text_input(key="results_folder").set_value(str(folder)).run()
    assert not at.exception, at.exception
    return at


def cells_table(at: AppTest) -> pd.DataFrame:
    tables = [d.value for d in at.dataframe if "cell" in d.value.columns]
    assert len(tables) == 1
    return tables[0]


def charts(at: AppTest) -> list:
    return list(at.get("plotly_chart"))


def select(at: AppTest, prefix: str):
    found = [w for w in at.selectbox if w.key and w.key.startswith(prefix)]
    assert len(found) == 1, [w.key for w in at.selectbox]
    return found[0]


def test_the_page_shows_the_manifest_the_cells_and_a_figure(sweep_dir):
    at = open_page(sweep_dir)
    assert not at.error
    assert [s.value for s in at.subheader] == ["tiny-results"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["runs stored"] == "8 / 8" and metrics["ok"] == "8"
    assert metrics["failed"] == "0" and metrics["cells"] == "4"
    cells = cells_table(at)
    assert len(cells) == 4 and {TIMEOUT, RATE, "goodput_rps.mean", "p_collapse"} <= set(cells.columns)
    (chart,) = charts(at)
    assert '"type":"heatmap"' in chart.proto.spec           # the default: a heatmap of the first metric
    assert any("stormsim plot" in c.value and "--figure heatmap" in c.value for c in at.code)
    assert {b.key for b in at.get("download_button")} >= {"results_cells_csv", "results_runs_csv"}


@pytest.mark.parametrize("figure", ["heatmap", "lines", "collapse-map", "amplification", "wasted-work"])
def test_every_figure_kind_draws(sweep_dir, figure):
    at = open_page(sweep_dir)
    select(at, "results_figure").set_value(figure).run()
    assert not at.exception and not at.error
    assert len(charts(at)) == 1
    assert any(f"--figure {figure}" in c.value for c in at.code)


def test_a_metric_and_the_axes_can_be_chosen(sweep_dir):
    at = open_page(sweep_dir)
    select(at, "results_figure").set_value("lines").run()
    select(at, "results_x").set_value(RATE).run()
    select(at, "results_metric").set_value("p99_ms").run()
    assert not at.exception and not at.error
    (chart,) = charts(at)
    assert "p99_ms" in chart.proto.spec
    assert any(f"--x {RATE} --by {TIMEOUT} --metric p99_ms" in c.value for c in at.code)


def test_filters_narrow_the_cells_and_the_figure(sweep_dir):
    at = open_page(sweep_dir)
    (timeout_filter,) = [m for m in at.multiselect if m.key.endswith(TIMEOUT)]
    timeout_filter.set_value([0.05]).run()
    assert not at.exception
    cells = cells_table(at)
    assert len(cells) == 2 and set(cells[TIMEOUT]) == {0.05}
    assert len(charts(at)) == 1                                   # a 1 x 2 heatmap still draws
    assert any("without the filter" in c.value for c in at.caption)
    [m for m in at.multiselect if m.key.endswith(TIMEOUT)][0].set_value([]).run()
    assert not at.exception and not at.error and not charts(at) and len(cells_table(at)) == 0
    assert any("No run matches the filters" in i.value for i in at.info)


@pytest.mark.parametrize("bad", ["does-not-exist", "empty", "not-json"])
def test_a_folder_that_is_not_a_sweep_output_is_one_error(tmp_path, bad):
    folder = tmp_path / bad
    if bad != "does-not-exist":
        folder.mkdir()
    if bad == "not-json":
        (folder / "manifest.json").write_text("{not json")
    at = open_page(folder)
    assert len(at.error) == 1 and len(at.error[0].value.splitlines()) == 1
    assert str(folder) in at.error[0].value
    assert not charts(at) and not at.dataframe


def test_the_default_folder_is_the_newest_sweep(sweep_dir, tmp_path, monkeypatch):
    older = tmp_path / "out" / "sweeps" / "older"
    newer = tmp_path / "out" / "dashboard" / "sweeps" / "newer"
    shutil.copytree(sweep_dir, older)
    shutil.copytree(sweep_dir, newer)
    for folder, stamp in ((older, 2_000_000_000), (newer, 1_000_000_000)):     # the CLI's is the newer
        for path in folder.iterdir():
            os.utime(path, (stamp, stamp))
    monkeypatch.chdir(tmp_path)
    at = open_page()
    assert at.text_input(key="results_folder").value == str(Path("out") / "sweeps" / "older")
    assert not at.error and len(cells_table(at)) == 4 and len(charts(at)) == 1


def test_no_sweep_yet_is_a_hint_not_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    at = open_page()
    assert at.text_input(key="results_folder").value == ""
    assert not at.error and any("stormsim sweep" in i.value for i in at.info)


def test_a_sweep_still_running_shows_the_runs_stored_so_far(sweep_dir, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(sweep_dir / "manifest.json", partial)
    lines = (sweep_dir / "runs.jsonl").read_text().splitlines()
    (partial / "runs.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])   # a line cut short
    assert json.loads((partial / "manifest.json").read_text())["runs_total"] == 8
    at = open_page(partial)
    assert not at.error
    assert {m.label: m.value for m in at.metric}["runs stored"] == "3 / 8"
    assert any("5 runs are not stored yet" in i.value for i in at.info)
    assert len(charts(at)) == 1
