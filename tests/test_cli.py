"""The `stormsim` command line, end to end: `run`, `compare`, `scenarios`, and bad input.

Through ``experiments.cli.main([...])`` in this process, and through the installed
console script in a subprocess. Runs are shortened with ``--set duration=...`` and
write into ``tmp_path``.

Bad input must exit with status 2 and one line on stderr naming the dotted field and
the bad value, with no traceback, and must leave files already written untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import comparable_summary, small_scenario_data, write_scenario_yaml
from experiments.catalog import DEFAULT_SCENARIO, shipped_scenarios
from experiments.cli import main
from experiments.run_files import RUN_FILES
from sim.outputs import SUMMARY_KEYS

RUN_FILE_NAMES = sorted(RUN_FILES.values())
SHORT = ["--set", "duration=5s"]


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``stormsim argv`` in this process: (exit status, stdout, stderr)."""
    try:
        rc = main(argv)
    except SystemExit as exc:          # argparse's own errors
        rc = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def console_script() -> str:
    script = Path(sys.executable).with_name("stormsim")
    if script.exists():
        return str(script)
    found = shutil.which("stormsim")
    if found is None:
        pytest.skip("the stormsim console script is not installed")
    return found


def stormsim(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real console script in a subprocess."""
    return subprocess.run([console_script(), *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, "PYTHONHASHSEED": "0"})


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ run


def test_run_writes_every_file_and_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, stderr = cli(["run", DEFAULT_SCENARIO, *SHORT, "--out", str(out)], capsys)
    assert rc == 0, stderr
    assert stderr == ""                          # no progress bar when stderr is not a terminal
    assert sorted(p.name for p in out.iterdir()) == RUN_FILE_NAMES    # and no temporary files

    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == list(SUMMARY_KEYS)
    assert summary["scenario"] == DEFAULT_SCENARIO and summary["seed"] == 1
    assert summary["duration_s"] == 5.0
    timeseries = pd.read_csv(out / "timeseries.csv")
    assert timeseries.columns[0] == "time_s" and len(timeseries) >= 50
    requests = pd.read_parquet(out / "requests.parquet")
    attempts = pd.read_parquet(out / "attempts.parquet")
    assert len(requests) > 1000 and len(attempts) >= len(requests)
    assert {"arrival_at", "route", "error", "latency_ms"} <= set(requests.columns)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and DEFAULT_SCENARIO in html

    # the printed summary
    assert stdout.startswith(f"{DEFAULT_SCENARIO}  (seed 1, 5.0 s simulated")
    for text in ("outcome", "latency", "peaks", "milestones", str(out / "report.html")):
        assert text in stdout, text


def test_run_json_prints_one_json_document_with_every_summary_key(tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, stderr = cli(["run", DEFAULT_SCENARIO, *SHORT, "--seed", "3", "--out", str(out), "--json"], capsys)
    assert rc == 0, stderr
    summary = json.loads(stdout)              # fails on anything but exactly one document
    assert isinstance(summary, dict)
    assert list(summary) == list(SUMMARY_KEYS)
    assert summary["seed"] == 3 and summary["provenance"]["seed"] == 3
    assert summary == json.loads((out / "summary.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == RUN_FILE_NAMES


def test_run_default_out_folder_is_named_after_scenario_and_seed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, stdout, stderr = cli(["run", DEFAULT_SCENARIO, "--set", "duration=1s", "--seed", "2"], capsys)
    assert rc == 0, stderr
    folder = tmp_path / "out" / f"{DEFAULT_SCENARIO}-seed2"
    assert sorted(p.name for p in folder.iterdir()) == RUN_FILE_NAMES


def test_run_scenario_file_and_set_overrides(tmp_path, capsys):
    path = write_scenario_yaml(tmp_path / "tiny.yaml", small_scenario_data())
    out = tmp_path / "out"
    rc, stdout, stderr = cli(["run", str(path), "--set", "duration=2s", "--set", "clients.web.load.rate_per_s=100",
                              "--out", str(out), "--json"], capsys)
    assert rc == 0, stderr
    summary = json.loads(stdout)
    assert summary["scenario"] == "tiny" and summary["duration_s"] == 2.0
    assert 80 <= summary["offered_rps"] <= 120


def test_name_at_variant_runs_the_variant(tmp_path, capsys):
    args = ["--set", "duration=20s", "--json"]
    rc, plain_out, err = cli(["run", "slowloris", *args, "--out", str(tmp_path / "plain")], capsys)
    assert rc == 0, err
    rc, at_out, err = cli(["run", "slowloris@read-header-timeout", *args, "--out", str(tmp_path / "at")], capsys)
    assert rc == 0, err
    rc, flag_out, err = cli(["run", "slowloris", "--variant", "read-header-timeout", *args,
                             "--out", str(tmp_path / "flag")], capsys)
    assert rc == 0, err
    plain, at, flag = json.loads(plain_out), json.loads(at_out), json.loads(flag_out)
    assert at["scenario"] == flag["scenario"] == "slowloris@read-header-timeout"
    assert plain["scenario"] == "slowloris"
    assert comparable_summary(at) == comparable_summary(flag)
    assert at["max_goroutines"] < plain["max_goroutines"]     # ReadHeaderTimeout cuts the slow clients


def test_name_at_variant_names_the_default_out_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = cli(["run", "slowloris@read-header-timeout", "--set", "duration=1s"], capsys)
    assert rc == 0, err
    assert (tmp_path / "out" / "slowloris@read-header-timeout-seed1" / "summary.json").is_file()


# ------------------------------------------------------------------ compare and scenarios


def test_compare_prints_the_table_and_writes_the_comparison(tmp_path, capsys):
    root = tmp_path / "cmp"
    rc, stdout, stderr = cli(["compare", DEFAULT_SCENARIO, "slowloris@read-header-timeout", *SHORT,
                              "--jobs", "2", "--out", str(root)], capsys)
    assert rc == 0, stderr
    assert "running 2 scenarios on 2 worker process(es)" in stderr
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("scenario"))
    for column in ("outcome", "peak conns", "peak fds", "peak goroutines", "P99"):
        assert column in header
    rows = [line for line in lines if line.startswith((DEFAULT_SCENARIO + " ", "slowloris@"))]
    assert [row.split()[0] for row in rows] == [DEFAULT_SCENARIO, "slowloris@read-header-timeout"]
    assert str(root / "compare" / "comparison.html") in stdout

    html = (root / "compare" / "comparison.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "slowloris@read-header-timeout" in html
    summaries = json.loads((root / "compare" / "comparison.json").read_text())
    assert [s["scenario"] for s in summaries] == [DEFAULT_SCENARIO, "slowloris@read-header-timeout"]
    for summary in summaries:
        folder = root / f"{summary['scenario']}-seed{summary['seed']}"
        assert sorted(p.name for p in folder.iterdir()) == RUN_FILE_NAMES


def test_compare_json_prints_one_list_of_summaries(tmp_path, capsys):
    rc, stdout, stderr = cli(["compare", DEFAULT_SCENARIO, "seed-db-deadline", "--set", "duration=2s",
                              "--seed", "5", "--jobs", "1", "--out", str(tmp_path), "--json"], capsys)
    assert rc == 0, stderr
    summaries = json.loads(stdout)
    assert [s["scenario"] for s in summaries] == [DEFAULT_SCENARIO, "seed-db-deadline"]
    assert all(list(s) == list(SUMMARY_KEYS) and s["seed"] == 5 for s in summaries)


def test_scenarios_lists_the_shipped_ones(capsys):
    rc, stdout, stderr = cli(["scenarios"], capsys)
    assert rc == 0 and stderr == ""
    listed = {line.split()[1] if line.startswith("*") else line.split()[0] for line in stdout.splitlines()}
    assert set(shipped_scenarios()) <= listed
    assert "slowloris@read-header-timeout" in listed
    default_line = next(line for line in stdout.splitlines() if line.startswith("*"))
    assert default_line.split()[1] == DEFAULT_SCENARIO
    assert "(invalid" not in stdout


# ------------------------------------------------------------------ the console script


def test_console_script_run_json_and_scenarios(tmp_path):
    proc = stormsim("run", "seed-collapse", *SHORT, "--out", str(tmp_path / "out"), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert list(summary) == list(SUMMARY_KEYS) and summary["duration_s"] == 5.0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == RUN_FILE_NAMES
    listing = stormsim("scenarios")
    assert listing.returncode == 0
    assert all(name in listing.stdout for name in shipped_scenarios())


def test_console_script_rejects_bad_input_in_one_line(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"scenario": "an earlier run"}\n')
    before = snapshot(out)
    proc = stormsim("run", "seed-collapse", "--set", "clients.web.transport.client_timeout=-5s", "--out", str(out))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "clients.web.transport.client_timeout" in lines[0] and "-5s" in lines[0]
    assert snapshot(out) == before


# ------------------------------------------------------------------ bad input


def _unknown_key_file(tmp_path: Path) -> Path:
    data = small_scenario_data()
    data["services"]["api"]["server"] = {"read_timeuot": "2s"}
    return write_scenario_yaml(tmp_path / "unknown-key.yaml", data)


def _parsecs_file(tmp_path: Path) -> Path:
    data = small_scenario_data()
    data["clients"]["web"]["transport"]["client_timeout"] = "5 parsecs"
    return write_scenario_yaml(tmp_path / "parsecs.yaml", data)


def _wrong_type_file(tmp_path: Path) -> Path:
    data = small_scenario_data()
    data["services"]["api"]["fd_limit"] = "lots"
    return write_scenario_yaml(tmp_path / "wrong-type.yaml", data)


def _missing_base_file(tmp_path: Path) -> Path:
    return write_scenario_yaml(tmp_path / "orphan.yaml", {"extends": "no-such-base.yaml", "name": "orphan"})


# id -> (arguments after `run` or the command, with {tmp} for tmp_path; field path; bad value)
BAD_INPUT = {
    "unknown-key-in-file": (["run", "{unknown_key}"], "services.api.server.read_timeuot", "read_timeuot"),
    "unknown-key-set": (["run", "seed-collapse", "--set", "clients.web.transprot.rtt=1ms"],
                        "clients.web.transprot", "transprot"),
    "negative-timeout": (["run", "seed-collapse", "--set", "clients.web.transport.client_timeout=-5s"],
                         "clients.web.transport.client_timeout", "-5s"),
    "parsecs-set": (["run", "seed-collapse", "--set", "services.api.server.read_timeout=5 parsecs"],
                    "services.api.server.read_timeout", "5 parsecs"),
    "parsecs-duration": (["run", "seed-collapse", "--set", "duration=5 parsecs"], "duration", "5 parsecs"),
    "parsecs-in-file": (["run", "{parsecs}"], "clients.web.transport.client_timeout", "5 parsecs"),
    "wrong-type-set": (["run", "seed-collapse", "--set", "clients.web.instances=many"],
                       "clients.web.instances", "many"),
    "wrong-type-in-file": (["run", "{wrong_type}"], "services.api.fd_limit", "lots"),
    "wrong-type-bool": (["run", "seed-collapse", "--set", "record_requests=maybe"], "record_requests", "maybe"),
    "out-of-range": (["run", "seed-collapse", "--set", "clients.web.retry.max_attempts=0"],
                     "clients.web.retry.max_attempts", "0"),
    "bad-error-kind": (["run", "seed-collapse", "--set", "clients.web.retry.retry_on=[client_timeout, gremlins]"],
                       "clients.web.retry.retry_on.1", "gremlins"),
    "unknown-scenario": (["run", "no-such-scenario"], "scenario", "no-such-scenario"),
    "missing-file": (["run", "{tmp}/missing.yaml"], "scenario", "missing.yaml"),
    "missing-base-file": (["run", "{missing_base}"], "extends", "no-such-base.yaml"),
    "set-path-through-a-value": (["run", "seed-collapse", "--set", "clients.web.instances.count=3"],
                                 "clients.web.instances.count", "count"),
    "set-path-bad-index": (["run", "seed-collapse", "--set", "faults.7.at=1s"], "faults.7.at", "7"),
    "set-path-unknown-setting": (["run", "seed-collapse", "--set", "services.api.server.bogus=1"],
                                 "services.api.server.bogus", "bogus"),
    "set-without-equals": (["run", "seed-collapse", "--set", "services.api.fd_limit"],
                           "services.api.fd_limit", "services.api.fd_limit"),
    "unknown-variant-at": (["run", "slowloris@no-such-variant"], "variants", "no-such-variant"),
    "unknown-variant-flag": (["run", "slowloris", "--variant", "no-such-variant"], "variants", "no-such-variant"),
    "variant-of-scenario-without-variants": (["run", "seed-collapse@fast"], "variants", "fast"),
    "conflicting-variants": (["run", "slowloris@read-header-timeout", "--variant", "other"], "--variant", "other"),
    "max-wall-time-parsecs": (["run", "seed-collapse", "--max-wall-time", "5 parsecs"],
                              "--max-wall-time", "5 parsecs"),
    "max-wall-time-negative": (["run", "seed-collapse", "--max-wall-time=-1s"], "--max-wall-time", "-1s"),
    "max-wall-time-word": (["run", "seed-collapse", "--max-wall-time", "soon"], "--max-wall-time", "soon"),
    "compare-unknown-scenario": (["compare", "seed-collapse", "no-such-scenario", "--jobs", "1"],
                                 "scenario", "no-such-scenario"),
    "compare-negative-timeout": (["compare", "seed-collapse", "slowloris", "--set",
                                  "clients.web.transport.client_timeout=-5s"],
                                 "clients.web.transport.client_timeout", "-5s"),
    "compare-jobs-zero": (["compare", "seed-collapse", "--jobs", "0"], "--jobs", "0"),
}


def _argv(template: list[str], tmp_path: Path) -> list[str]:
    files = {"{unknown_key}": _unknown_key_file, "{parsecs}": _parsecs_file, "{wrong_type}": _wrong_type_file,
             "{missing_base}": _missing_base_file}
    argv = []
    for arg in template:
        if arg in files:
            arg = str(files[arg](tmp_path))
        argv.append(arg.replace("{tmp}", str(tmp_path)))
    return argv


def _earlier_output(tmp_path: Path, command: str) -> tuple[Path, dict[str, bytes]]:
    """An out folder holding files of an earlier run; returns (the --out value, snapshot)."""
    out = tmp_path / "out"
    run_dir = out if command == "run" else out / "seed-collapse-seed1"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text('{"scenario": "seed-collapse", "note": "an earlier run"}\n')
    (run_dir / "timeseries.csv").write_text("time_s,server_connections\n0.1,120\n")
    if command == "compare":
        (out / "compare").mkdir()
        (out / "compare" / "comparison.json").write_text("[]\n")
    return out, snapshot(out)


def assert_rejected(rc: int, stdout: str, stderr: str, field: str, value: str) -> None:
    assert rc == 2, f"exit status {rc}, stderr: {stderr}"
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert field in lines[0], f"{field!r} not named in: {lines[0]}"
    assert value in lines[0], f"{value!r} not shown in: {lines[0]}"
    assert stdout == ""


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_in_one_line_and_keeps_earlier_files(case, tmp_path, capsys, monkeypatch):
    template, field, value = BAD_INPUT[case]
    monkeypatch.chdir(tmp_path)
    out, before = _earlier_output(tmp_path, template[0])
    rc, stdout, stderr = cli([*_argv(template, tmp_path), "--out", str(out)], capsys)
    assert_rejected(rc, stdout, stderr, field, value)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out", *(p.name for p in tmp_path.glob("*.yaml"))])      # nothing written beside it either


# ------------------------------------------------------------------ fixed bugs, kept as regression tests


@pytest.mark.parametrize("command", ["run", "compare"])
def test_negative_seed_is_bad_input(command, tmp_path, capsys):
    out, before = _earlier_output(tmp_path, command)
    rc, stdout, stderr = cli([command, "seed-collapse", "--set", "duration=1s", "--seed", "-3",
                              *(["--jobs", "1"] if command == "compare" else []), "--out", str(out)], capsys)
    assert_rejected(rc, stdout, stderr, "--seed", "-3")
    assert snapshot(out) == before


@pytest.mark.parametrize("override, field", [
    ("services.api.routes.report.steps.0={call: nowhere}", "services.api.routes.report.steps.0.call"),
    ("edges.0={caller: api, callee: nowhere}", "edges.0.callee"),
])
def test_bad_topology_is_bad_input(override, field, tmp_path, capsys):
    out, before = _earlier_output(tmp_path, "run")
    rc, stdout, stderr = cli(["run", "seed-collapse", "--set", "duration=1s", "--set", override,
                              "--out", str(out)], capsys)
    assert_rejected(rc, stdout, stderr, field, "")
    assert snapshot(out) == before


@pytest.mark.parametrize("out_name", ["afile", "afile/sub"])
def test_out_that_is_a_file_is_bad_input(out_name, tmp_path, capsys):
    (tmp_path / "afile").write_text("keep me\n")
    rc, stdout, stderr = cli(["run", "seed-collapse", "--set", "duration=1s", "--out", str(tmp_path / out_name)],
                             capsys)
    assert_rejected(rc, stdout, stderr, "--out", "afile")
    assert (tmp_path / "afile").read_text() == "keep me\n"


@pytest.mark.parametrize("args, field, value", [
    (["--seed", "abc"], "--seed", "abc"),
    (["--max-wall-time", "-1s"], "--max-wall-time", "-1s"),
])
def test_argparse_errors_are_one_line(args, field, value, capsys):
    rc, stdout, stderr = cli(["run", "seed-collapse", *args], capsys)
    assert_rejected(rc, stdout, stderr, field, value)


def test_fault_after_the_end_of_a_short_run_is_not_shown_backwards(tmp_path, capsys):
    rc, stdout, stderr = cli(["run", "seed-collapse", *SHORT, "--out", str(tmp_path / "out")], capsys)
    assert rc == 0, stderr
    assert "20.00 s to 5.00 s" not in stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["trigger_at_s"] is None or summary["trigger_at_s"] <= summary["duration_s"]
