"""Tests of experiments.report: self-contained HTML pages for one run and for a comparison."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from experiments import report
from experiments.report import (
    format_kpi,
    render_report_html,
    untouched_goodput_rps,
    write_comparison_html,
    write_report_html,
)


# ------------------------------------------------------------------ tests
# (synthetic_run is the fixture in conftest.py: a factory of a small hand-made run)

PLOTLY_JS_BANNER = re.compile(r"\* plotly\.js v\d+\.\d+\.\d+")


def _assert_self_contained(text: str) -> None:
    assert len(PLOTLY_JS_BANNER.findall(text)) == 1, "plotly.js must be inlined exactly once"
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, flags=re.I)
    assert '<script src="http' not in text
    assert not re.search(r"<link[^>]*href\s*=\s*[\"']https?:", text, flags=re.I)


def _without_scripts(text: str) -> str:
    return re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)


def test_report_is_self_contained_and_complete(tmp_path, synthetic_run):
    run = synthetic_run()
    path = write_report_html(run, tmp_path / "report.html")
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    _assert_self_contained(text)
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    page = _without_scripts(text)
    # header
    assert "<h1>lock-storm" in page
    assert "A lock on orders &lt;b&gt;spreads&lt;/b&gt; to browse." in page   # escaped
    assert 'class="badge outcome-recovered"' in page
    assert "seed <code>7</code>" in page and "deadbeef" in page
    # every summary key appears in the KPI table, with units
    for key in run.summary:
        assert f'<td class="key">{key}</td>' in page, key
    assert "9,010 ms" in page and "68.3 %" in page and "50.4 MiB" in page and "1.4 &times;" in page
    assert "6 req/s" in page
    # errors as a small table
    assert '<table class="inner errors"><tr><td>client_timeout</td><td class="num">80</td>' in page
    # milestones
    for text_ in ("fault db_lock", "trigger</b> at 10.000 s", "collapse</b> at 14.000 s",
                  "fd exhausted</b> at 18.000 s", "OOM kill</b> at 25.000 s", "restart</b> at 30.000 s",
                  "recovered</b> at 40.000 s"):
        assert text_ in page, text_
    # the figure and the scenario
    assert 'id="timeseries"' in page
    assert "<details><summary>Scenario as YAML</summary><pre>" in page
    assert "fd_limit: 1024" in page
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_truncation_and_crash_loop_are_listed(synthetic_run):
    run = synthetic_run()
    run.milestones = dataclasses.replace(run.milestones, truncated=True, truncated_by="wall_time",
                                         end_at_s=44.0, kills=[25.0, 33.0], restarts=[30.0])
    run.summary.update(truncated=True, truncated_by="wall_time", crash_loop=True, outcome="undecided")
    page = _without_scripts(render_report_html(run))
    assert "truncated (wall_time)</b> at 44.000 s" in page
    assert "guard <code>wall_time</code>" in page
    assert "crash loop" in page and "OOM kill 2" in page
    assert 'class="badge outcome-undecided"' in page


def test_report_without_summary_or_windows_still_renders(synthetic_run):
    run = synthetic_run()
    run.summary = {}
    run.windows = {}
    run.provenance = {}
    text = render_report_html(run)
    _assert_self_contained(text)
    assert "No summary" in text and 'class="badge outcome-unknown"' in text


def test_scenario_yaml_falls_back_to_a_plain_dump(monkeypatch, synthetic_run):
    import builtins
    real_import = builtins.__import__

    def no_loader(name, *args, **kwargs):
        if name == "sim.scenario_loader":
            raise ImportError("not written yet")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_loader)
    text = report.scenario_yaml(synthetic_run())
    assert "fd_limit: 1024" in text and "limit: 268435456" in text   # bytes, tuples as lists
    assert "name: lock-storm" in text


@pytest.mark.parametrize("value, unit, expected", [
    (None, "at", "never"), (None, "ms", "n/a"), (0.5, "%", "50 %"), (1234.5678, "ms", "1,235 ms"),
    (3.25, "s", "3.25 s"), (True, "bool", "yes"), (12, "int", "12"), ({"a": 1}, "", "<code>1</code>"),
    (float("nan"), "ms", "n/a"), (np.int64(7), "int", "7"), (np.float64(12.34), "MiB", "12.3 MiB"),
])
def test_format_kpi(value, unit, expected):
    assert expected in format_kpi(value, unit)


def test_untouched_goodput_from_windows(synthetic_run):
    run = synthetic_run()
    expected = run.windows["successes_untouched"][run.windows["time_s"] > 0].sum() / 50.0
    assert untouched_goodput_rps(run) == pytest.approx(expected)
    run.windows = {}
    assert untouched_goodput_rps(run) is None
    run.summary["goodput_untouched_rps"] = 2.5
    assert untouched_goodput_rps(run) == 2.5


def test_untouched_goodput_judges_all_traffic_when_everything_was_touched(synthetic_run):
    run = synthetic_run()
    run.windows["arrivals_untouched"] = np.zeros_like(run.windows["arrivals_untouched"])
    run.windows["successes_untouched"] = np.zeros_like(run.windows["successes_untouched"])
    expected = run.windows["successes"][run.windows["time_s"] > 0].sum() / 50.0
    assert untouched_goodput_rps(run) == pytest.approx(expected)


def test_comparison_page(tmp_path, synthetic_run):
    a, b = synthetic_run(seed=1), synthetic_run(seed=2)
    b.summary.update(outcome="metastable", collapse_time_s=None, max_open_fds=1024)
    path = write_comparison_html([("baseline", a), ("no retries", b)], tmp_path / "cmp.html")
    text = path.read_text(encoding="utf-8")
    _assert_self_contained(text)
    page = _without_scripts(text)
    table = page[page.index('<table class="comparison">'):page.index("</table>")]
    assert table.count("<tr>") == 3                       # header + one row per run
    for header in ("Outcome", "Time to collapse", "Max server connections", "Max open fds",
                   "Max goroutines", "Peak memory", "P99 latency", "Untouched goodput from the trigger"):
        assert f"<th>{header}</th>" in table
    assert "baseline" in table and "no retries" in table
    assert "outcome-recovered" in table and "outcome-metastable" in table
    assert "1,024" in table and "req/s" in table and "4 s" in table
    assert 'id="comparison"' in page
    assert [p.name for p in tmp_path.iterdir()] == ["cmp.html"]
