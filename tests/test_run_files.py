"""Tests of experiments.run_files: the files of one run, written atomically."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from experiments import run_files
from experiments.run_files import (
    ERROR_LABELS,
    RUN_FILES,
    error_labels,
    timeseries_frame,
    write_atomic,
    write_run_outputs,
)
from sim.result import ATTEMPT_COLUMNS, ERROR_CODE, REQUEST_COLUMNS


# ------------------------------------------------------------------ tests
# (synthetic_run is the fixture in conftest.py: a factory of a small hand-made run)

EXPECTED_FILES = sorted(RUN_FILES.values())


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_writes_every_file_and_they_parse_back(tmp_path, synthetic_run):
    run = synthetic_run()
    out_dir = tmp_path / "runs" / "lock-storm" / "seed-7"          # created on the way
    paths = write_run_outputs(run, out_dir)
    assert set(paths) == {"summary", "timeseries", "requests", "attempts", "report"}
    assert all(p.parent == out_dir and p.is_file() for p in paths.values())
    assert sorted(p.name for p in out_dir.iterdir()) == EXPECTED_FILES     # no temp files

    summary = json.loads(paths["summary"].read_text())
    assert list(summary) == list(run.summary)                             # the summary's own order
    assert summary["errors"] == {"client_timeout": 80, "conn_reset": 15}
    assert summary["truncated_by"] is None
    assert paths["summary"].read_text().startswith('{\n  "scenario": "lock-storm"')   # indent 2

    ts = pd.read_csv(paths["timeseries"])
    assert ts.columns[0] == "time_s"
    assert len(ts) == len(run.levels["time_s"])
    for column in ("server_connections", "open_fds", "db_waiters.orders", "arrivals", "p99_ms",
                   "failures.client_timeout", "goodput_untouched_rps"):
        assert column in ts.columns
    np.testing.assert_allclose(ts["open_fds"], run.levels["open_fds"])
    np.testing.assert_allclose(ts["successes_untouched"], run.windows["successes_untouched"])

    requests = pd.read_parquet(paths["requests"])
    assert len(requests) == 300
    assert set(requests["route"].astype(str)) == {"checkout", "browse"}
    assert set(requests["client"].astype(str)) == {"web"}
    assert set(requests["error"].astype(str)) == {"success", "client_timeout", "incomplete"}
    assert (requests["route"].astype(str) == np.where(run.requests["route"] == 0, "checkout", "browse")).all()
    assert requests["latency_ms"].isna().sum() == 3

    attempts = pd.read_parquet(paths["attempts"])
    assert len(attempts) == 300
    assert list(attempts.columns[:3]) == ["request_id", "route", "client"]
    assert set(attempts["error"].astype(str)) <= set(ERROR_LABELS)
    assert attempts["new_conn"].dtype == bool

    html = paths["report"].read_text()
    assert "plotly.js v" in html and '<script src="http' not in html


def test_second_run_replaces_files_without_temp_files(tmp_path, synthetic_run):
    run = synthetic_run()
    write_run_outputs(run, tmp_path)
    run.summary["goodput_rps"] = 99.0
    write_run_outputs(run, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == EXPECTED_FILES
    assert json.loads((tmp_path / "summary.json").read_text())["goodput_rps"] == 99.0


def test_failure_while_writing_changes_nothing(tmp_path, monkeypatch, synthetic_run):
    run = synthetic_run()
    write_run_outputs(run, tmp_path)
    before = _snapshot(tmp_path)

    run.summary["goodput_rps"] = 123.0
    run.levels["open_fds"] = run.levels["open_fds"] + 1

    def broken_parquet(self, path, *args, **kwargs):
        with open(path, "wb") as f:          # a half-written file, then the crash
            f.write(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken_parquet)
    with pytest.raises(OSError, match="disk full"):
        write_run_outputs(run, tmp_path)
    assert _snapshot(tmp_path) == before            # summary.json and the rest untouched, no temp files


def test_failure_on_first_run_leaves_an_empty_folder(tmp_path, monkeypatch, synthetic_run):
    def broken_parquet(self, path, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken_parquet)
    with pytest.raises(RuntimeError):
        write_run_outputs(synthetic_run(), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_failure_of_the_last_file_also_changes_nothing(tmp_path, monkeypatch, synthetic_run):
    run = synthetic_run()
    write_run_outputs(run, tmp_path)
    before = _snapshot(tmp_path)
    monkeypatch.setattr(run_files, "summary_json", lambda summary: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(ValueError):
        write_run_outputs(run, tmp_path)
    assert _snapshot(tmp_path) == before


def test_write_atomic(tmp_path):
    target = tmp_path / "a.txt"
    write_atomic(target, "first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert oct(os.stat(target).st_mode & 0o777) == oct(run_files.FILE_MODE)


def test_write_atomic_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    write_atomic(target, "old")

    def failing_replace(src, dst):
        raise OSError("cross-device")

    monkeypatch.setattr(run_files.os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_empty_windows_give_levels_only(tmp_path, synthetic_run):
    run = synthetic_run()
    run.windows = {}
    paths = write_run_outputs(run, tmp_path)
    ts = pd.read_csv(paths["timeseries"])
    assert list(ts.columns) == list(run.levels)


def test_timeseries_join_tolerates_float_noise_and_gaps(synthetic_run):
    run = synthetic_run(duration_s=1.0)
    run.windows = {key: value[1:] for key, value in run.windows.items()}     # one bucket fewer
    run.windows["time_s"] = run.windows["time_s"] + 1e-12                   # 0.30000000000000004
    frame = timeseries_frame(run)
    assert len(frame) == len(run.levels["time_s"])
    assert np.isnan(frame["arrivals"].iloc[0]) and not np.isnan(frame["arrivals"].iloc[1:]).any()


def test_summary_json_is_strict_json(synthetic_run):
    run = synthetic_run()
    run.summary.update(p99_success_ms=float("nan"), max_open_fds=np.int64(5), peak_memory_mib=np.float32(1.5),
                       crash_loop=np.bool_(True), extra=(1, 2))
    decoded = json.loads(run_files.summary_json(run.summary))
    assert decoded["p99_success_ms"] is None and decoded["max_open_fds"] == 5
    assert decoded["crash_loop"] is True and decoded["extra"] == [1, 2] and decoded["peak_memory_mib"] == 1.5


def test_error_labels():
    codes = np.array([0, -1, ERROR_CODE["eof"], ERROR_CODE["http_5xx"]], dtype=np.int8)
    assert list(error_labels(codes)) == ["success", "incomplete", "eof", "http_5xx"]
    with pytest.raises(ValueError, match="unknown error codes"):
        error_labels(np.array([42]))


def test_empty_records(tmp_path, synthetic_run):
    run = synthetic_run()
    run.requests = {name: np.zeros(0, dtype=dtype) for name, dtype in REQUEST_COLUMNS.items()}
    run.attempts = {name: np.zeros(0, dtype=dtype) for name, dtype in ATTEMPT_COLUMNS.items()}
    paths = write_run_outputs(run, tmp_path)
    assert len(pd.read_parquet(paths["requests"])) == 0
    assert "route" in pd.read_parquet(paths["attempts"]).columns


def test_route_index_out_of_range_is_an_error(tmp_path, synthetic_run):
    run = synthetic_run()
    run.requests["route"][0] = 5
    with pytest.raises(ValueError, match="route index"):
        write_run_outputs(run, tmp_path)
    assert list(tmp_path.iterdir()) == []
