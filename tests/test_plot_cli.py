"""Tests of `stormsim plot` (experiments.plot_cli) on a tiny fake sweep folder and a synthetic run folder."""

from __future__ import annotations

import argparse
import json
import shutil

import plotly.graph_objects as go
import pytest

from experiments import plot_cli
from experiments.plot_cli import add_plot_parser, main, run_plot
from experiments.run_files import write_run_outputs

TIMEOUT = "clients.web.transport.client_timeout"
CONNS = "services.api.max_conns"
HONOURS = "services.api.routes.report.honours_context"
HAS_CHROME = any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome", "chrome"))


def _fake_sweep(folder, factors=(TIMEOUT, CONNS)) -> None:
    """manifest.json and runs.jsonl as the runner writes them, with a run cut short at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": "timeout-vs-conns", "description": "Client timeout against max_conns.",
        "sweep_path": "sweeps/t.yaml", "sweep_text": "name: timeout-vs-conns\n", "scenario": "seed-collapse",
        "factors": list(factors), "factor_units": {TIMEOUT: "s", CONNS: "", HONOURS: ""},
        "metrics": ["p99_ms", "collapse_time_s"], "design": {"kind": "grid"}, "replications": 2, "seed": 1,
        "runs_total": 9, "stormsim_version": "0.1.0", "git_revision": None, "created_at": "2025-01-01T00:00:00Z",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    lines, cell = [], 0
    for conns in (100, 400):
        for timeout in (1.0, 5.0, 30.0):
            for rep in range(2):
                collapsed = timeout * conns >= 2000 or (rep == 1 and timeout * conns >= 500)
                row = {"run_key": f"{cell}-{rep}", "cell": cell, "replication": rep, "seed": rep, "status": "ok",
                       "error": "", "wall_s": 0.3, TIMEOUT: timeout, CONNS: conns,
                       "p99_ms": 100.0 * timeout + rep, "collapse_at_s": 21.0 if collapsed else None,
                       "collapse_time_s": 1.0 + rep if collapsed else None,
                       "outcome": "metastable" if collapsed else "stable", "truncated": False,
                       "attempts_per_request": 1.0 + 0.1 * rep, "wasted_work_fraction": 0.01 * (rep + 1)}
                lines.append(json.dumps({k: v for k, v in row.items() if k in factors or k not in (TIMEOUT, CONNS)}))
            cell += 1
    lines.append(json.dumps({"run_key": "0-2", "cell": 0, "replication": 2, "seed": 2, "status": "failed",
                             "error": "RuntimeError: boom", "wall_s": 0.1, TIMEOUT: 1.0, CONNS: 100,
                             "p99_ms": None, "collapse_at_s": None, "outcome": None}))
    (folder / "runs.jsonl").write_text("\n".join(lines) + '\n{"run_key": "5-1", "cell": 5, "sta')


@pytest.fixture
def sweep(tmp_path):
    folder = tmp_path / "sweep"
    _fake_sweep(folder)
    return folder


def _plot(capsys, *argv):
    code = main(["plot", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def _one_line_error(capsys, *argv) -> str:
    code, out, err = _plot(capsys, *argv)
    assert code == 2, (out, err)
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and out == ""
    return err


# ------------------------------------------------------------------ html


def test_default_report_writes_report_html(sweep, capsys):
    code, out, err = _plot(capsys, sweep)
    assert code == 0, err
    assert out == str(sweep / "report.html")
    page = (sweep / "report.html").read_text()
    assert page.count("plotly.js v") == 1                    # plotly.js inlined once
    assert "timeout-vs-conns" in page and "RuntimeError: boom" in page
    assert "Collapse probability" in page and "Retry amplification" in page
    assert "Not drawn" not in page
    assert "12 ok" in page and "1 failed" in page


def test_report_of_a_one_factor_sweep(tmp_path, capsys):
    folder = tmp_path / "one"
    _fake_sweep(folder, factors=(TIMEOUT,))
    # one factor: the runs of both max_conns values fall into the same cells
    rows = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()[:-1]]
    for row in rows:
        row["cell"] = {1.0: 0, 5.0: 1, 30.0: 2}[row[TIMEOUT]]
        row["run_key"] = f"{row['run_key']}-{row.get(CONNS, '')}-{row['replication']}-{row['p99_ms']}"
    (folder / "runs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code, out, err = _plot(capsys, folder)
    assert code == 0, err
    page = (folder / "report.html").read_text()
    assert "Collapse probability (Wilson band)" in page and "Not drawn" not in page


def test_report_of_a_three_factor_sweep_pools_over_the_third(tmp_path, capsys):
    folder = tmp_path / "three"
    _fake_sweep(folder, factors=(TIMEOUT, CONNS, HONOURS))
    rows = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()[:-1]]
    doubled = []
    for honours in (False, True):      # each cell again with the boolean factor flipped
        for row in rows:
            doubled.append({**row, HONOURS: honours, "cell": row["cell"] + (100 if honours else 0),
                            "run_key": f"{row['run_key']}-{honours}"})
    (folder / "runs.jsonl").write_text("\n".join(json.dumps(r) for r in doubled) + "\n")
    code, out, err = _plot(capsys, folder)
    assert code == 0, err
    page = (folder / "report.html").read_text()
    assert f"(runs pooled over {HONOURS})" in page and "Not drawn" not in page
    assert "false" in page and "true" in page           # the boolean factor's values in the table
    code, out, err = _plot(capsys, folder, "--figure", "lines", "--x", HONOURS, "--by", TIMEOUT)
    assert code == 0, err


def test_report_of_a_sweep_without_finished_runs(tmp_path, capsys):
    folder = tmp_path / "fresh"
    _fake_sweep(folder)
    (folder / "runs.jsonl").write_text("")
    code, out, err = _plot(capsys, folder)
    assert code == 0, err
    page = (folder / "report.html").read_text()
    assert "0 of 9 runs finished" in page and "plotly.js v" not in page
    err = _one_line_error(capsys, folder, "--figure", "heatmap")
    assert "has no finished runs yet" in err


@pytest.mark.parametrize("argv,name", [
    (["--figure", "heatmap"], "heatmap-p99_ms.html"),
    (["--figure", "heatmap", "--metric", "collapse_time_s", "--x", CONNS, "--y", TIMEOUT],
     "heatmap-collapse_time_s.html"),
    (["--figure", "lines"], "lines-p99_ms.html"),
    (["--figure", "lines", "--metric", "p_collapse", "--by", CONNS], "lines-p_collapse.html"),
    (["--figure", "collapse-map", "--outcome", "metastable", "--level", "0.25"], "collapse-map-metastable.html"),
    (["--figure", "amplification"], "amplification.html"),
    (["--figure", "wasted-work", "--x", CONNS], "wasted-work.html"),
])
def test_sweep_figures_as_html(sweep, capsys, argv, name):
    code, out, err = _plot(capsys, sweep, *argv)
    assert code == 0, err
    assert out == str(sweep / name)
    text = (sweep / name).read_text()
    assert text.count("plotly.js v") == 1 and "<html>" in text.lower()


def test_lines_over_one_factor_of_two_pools_the_other(sweep, capsys, tmp_path):
    code, out, err = _plot(capsys, sweep, "--figure", "lines", "--x", CONNS, "--out", tmp_path / "l.html")
    assert code == 0, err
    assert (tmp_path / "l.html").is_file()


def test_run_folders_cdf_and_timeseries(tmp_path, capsys, synthetic_run):
    runs = [tmp_path / "run-a", tmp_path / "run-b"]
    for seed, folder in enumerate(runs, start=1):
        write_run_outputs(synthetic_run(seed=seed), folder)
    code, out, err = _plot(capsys, *runs, "--figure", "cdf")
    assert code == 0, err
    assert out == str(runs[0] / "latency-cdf.html")
    page = (runs[0] / "latency-cdf.html").read_text()
    assert "run-a" in page and "run-b" in page
    code, out, err = _plot(capsys, runs[1], "--figure", "timeseries", "--out", tmp_path / "ts.html")
    assert code == 0, err
    assert (tmp_path / "ts.html").read_text().count("plotly.js v") == 1


def test_run_result_from_folder(tmp_path, synthetic_run):
    result = synthetic_run()
    write_run_outputs(result, tmp_path)
    rebuilt = plot_cli.run_result_from_folder(tmp_path)
    assert rebuilt.scenario.name == result.scenario.name
    assert rebuilt.scenario.sample_interval == pytest.approx(result.scenario.sample_interval)
    assert rebuilt.summary == json.loads((tmp_path / "summary.json").read_text())
    assert len(rebuilt.levels["server_connections"]) == len(result.levels["server_connections"])


# ------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize("argv,needle", [
    (["--figure", "heatmap", "--metric", "p98_ms"], "--metric: 'p98_ms'"),
    (["--figure", "heatmap", "--metric", "outcome"], "--metric: 'outcome' is not numeric"),
    (["--figure", "heatmap", "--x", "clients.web.nope"], "--x: 'clients.web.nope' is not a factor"),
    (["--figure", "lines", "--by", "bogus"], "--by: 'bogus' is not a factor"),
    (["--figure", "heatmap", "--x", TIMEOUT, "--y", TIMEOUT], f"--y: '{TIMEOUT}' is the same factor"),
    (["--figure", "collapse-map", "--level", "1.5"], "--level: 1.5"),
    (["--figure", "collapse-map", "--outcome", "sad"], "argument --outcome: invalid choice: 'sad'"),
    (["--figure", "pie"], "argument --figure: invalid choice: 'pie'"),
    (["--level", "half"], "argument --level: invalid float value: 'half'"),
    (["--format", "png"], "--format: png is not available for --figure report"),
    (["--figure", "heatmap", "--out", "x.png", "--format", "svg"], "--out: 'x.png' ends in .png"),
    (["--figure", "cdf"], "is a sweep folder"),
])
def test_bad_arguments_exit_2_with_one_line(sweep, capsys, argv, needle):
    err = _one_line_error(capsys, sweep, *argv)
    assert err.startswith("stormsim: error: ") and needle in err


def test_not_a_sweep_folder(tmp_path, capsys, synthetic_run):
    err = _one_line_error(capsys, tmp_path / "nowhere")
    assert "RESULTS" in err and str(tmp_path / "nowhere") in err and "no such folder" in err
    write_run_outputs(synthetic_run(), tmp_path / "run")
    err = _one_line_error(capsys, tmp_path / "run", "--figure", "heatmap")
    assert "no manifest.json" in err and "run folder" in err
    err = _one_line_error(capsys, tmp_path, "--figure", "cdf")
    assert "requests.parquet" in err


def test_heatmap_of_a_one_factor_sweep_names_the_missing_y(tmp_path, capsys):
    _fake_sweep(tmp_path / "one", factors=(TIMEOUT,))
    err = _one_line_error(capsys, tmp_path / "one", "--figure", "heatmap")
    assert "--y:" in err and "try --figure lines" in err


def test_two_sweep_folders_are_refused(sweep, capsys):
    err = _one_line_error(capsys, sweep, sweep, "--figure", "heatmap")
    assert "takes one folder, got 2" in err


# ------------------------------------------------------------------ static export


@pytest.mark.skipif(not HAS_CHROME, reason="no Chrome or Chromium for kaleido")
def test_png_export(sweep, capsys, tmp_path):
    out_png = tmp_path / "figs" / "map.png"
    code, out, err = _plot(capsys, sweep, "--figure", "collapse-map", "--out", out_png)
    assert code == 0, err
    assert out == str(out_png)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out_png.parent.iterdir()) == ["map.png"]      # no temp file left


@pytest.mark.parametrize("error,needle", [
    (RuntimeError("Kaleido requires Google Chrome to be installed."), "PNG export needs Chrome or Chromium"),
    (OSError("renderer died"), "PNG export failed (OSError: renderer died)"),
])
def test_export_failure_is_one_line(sweep, capsys, monkeypatch, tmp_path, error, needle):
    def fail(self, *args, **kwargs):
        raise error
    monkeypatch.setattr(go.Figure, "write_image", fail)
    figs = tmp_path / "figs"
    err = _one_line_error(capsys, sweep, "--figure", "heatmap", "--format", "png", "--out", figs / "h.png")
    assert err.startswith("stormsim: ") and needle in err and "--format html" in err
    assert list(figs.iterdir()) == []                                            # nothing half-written


def test_missing_kaleido_is_one_line(sweep, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(plot_cli, "kaleido_installed", lambda: False)
    err = _one_line_error(capsys, sweep, "--figure", "lines", "--out", tmp_path / "l.svg")
    assert "SVG export needs the kaleido package" in err and "--format html" in err


# ------------------------------------------------------------------ wiring


def test_add_plot_parser_registers_plot_on_any_subparsers(sweep, capsys):
    root = argparse.ArgumentParser(prog="stormsim")
    sub = root.add_subparsers(dest="command", required=True)
    add_plot_parser(sub)
    args = root.parse_args(["plot", str(sweep), "--figure", "amplification"])
    assert args.command == "plot" and args.handler is run_plot
    assert (args.x, args.y, args.by, args.metric, args.outcome, args.level, args.format, args.out) == (
        None, None, None, None, "collapse", 0.5, None, None)
    assert run_plot(args) == 0
    assert capsys.readouterr().out.strip() == str(sweep / "amplification.html")
