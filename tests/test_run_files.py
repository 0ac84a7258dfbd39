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
from sim.result import ERROR_CODE, REQUEST_COLUMNS, ATTEMPT_COLUMNS, FaultWindow, Milestones, RunResult
from sim.schema import (
    ClientConfig, DatabaseConfig, ERROR_KINDS, FaultConfig, MemoryConfig, RouteConfig, Scenario,
    ServiceConfig, StepConfig, TableConfig,
)


# ---------------------------------------------------------------- fixture
# (the same small fake run is built in test_figures.py and test_report.py)

def synthetic_run(duration_s: float = 50.0, sample_interval: float = 0.1, n_requests: int = 300,
                  seed: int = 7) -> RunResult:
    """~50 s, a db_lock on checkout from 10 s to 30 s, fd exhaustion, an OOM kill and a restart."""
    scenario = Scenario(
        name="lock-storm", description="A lock on orders <b>spreads</b> to browse.", seed=seed,
        duration=duration_s, sample_interval=sample_interval,
        services={"api": ServiceConfig(
            fd_limit=1024, memory=MemoryConfig(limit=256 * 1024 * 1024, restart_after=5.0),
            routes={"checkout": RouteConfig(steps=(StepConfig(query="orders.orders"),)),
                    "browse": RouteConfig(steps=(StepConfig(cpu=0.002),))})},
        databases={"orders": DatabaseConfig(tables={"orders": TableConfig()})},
        clients={"web": ClientConfig(target="api")},
        faults=(FaultConfig(kind="db_lock", at=10.0, duration=20.0, target="orders.orders"),),
    )
    rng = np.random.default_rng(seed)
    t = np.round(np.arange(0.0, duration_s, sample_interval), 9)
    n = len(t)
    storm = ((t >= 10) & (t < 30)).astype(float)
    dead = (t >= 25) & (t < 30)
    conns = np.where(dead, 0, 20 + 900 * storm * np.clip((t - 10) / 8, 0, 1))
    levels = {
        "time_s": t, "alive": (~dead).astype(float), "server_connections": conns,
        "accept_queue": np.where(conns >= 1000, 50.0, 0.0), "open_fds": np.minimum(conns + 6, 1024),
        "goroutines": 2 * conns + 5, "memory_mib": 32 + conns * 0.02,
        "cpu_utilization": np.clip(0.2 + 0.5 * storm + rng.normal(0, 0.02, n), 0, 1),
        "gc_fraction": 0.05 * storm, "inflight_requests": conns, "inflight.checkout": conns * 0.8,
        "inflight.browse": conns * 0.2, "db_in_use.orders": np.minimum(conns, 10.0),
        "db_waiters.orders": np.maximum(conns - 10, 0.0), "client_connections": conns + 3,
        "client_inflight": conns,
    }
    arr_u = rng.poisson(3, n).astype(float)
    arr_t = rng.poisson(3, n).astype(float)
    succ_u = np.where(storm > 0, np.floor(arr_u * 0.3), arr_u)
    succ_t = np.where(storm > 0, 0.0, arr_t)
    fails = (arr_u - succ_u) + (arr_t - succ_t)
    windows: dict[str, np.ndarray] = {
        "time_s": t, "arrivals": arr_u + arr_t, "successes": succ_u + succ_t, "failures": fails,
        "retries": np.floor(fails / 2), "arrivals_untouched": arr_u, "successes_untouched": succ_u,
        "arrivals_touched": arr_t, "successes_touched": succ_t,
        "p50_ms": 3 + 2000 * storm, "p99_ms": np.where(arr_u > 0, 10 + 9000 * storm, np.nan),
        "offered_untouched_rps": arr_u / sample_interval,
        "goodput_untouched_rps": succ_u / sample_interval,
    }
    for kind in ERROR_KINDS:
        windows[f"failures.{kind}"] = np.zeros(n)
    windows["failures.client_timeout"] = np.floor(fails * 0.7)
    windows["failures.conn_reset"] = fails - windows["failures.client_timeout"]

    requests = {name: np.zeros(n_requests, dtype=dtype) for name, dtype in REQUEST_COLUMNS.items()}
    requests["request_id"] = np.arange(n_requests)
    requests["client"][:] = 0
    requests["route"] = (np.arange(n_requests) % 2).astype(np.int32)
    requests["touched"] = requests["route"] == 0
    requests["arrival_at"] = np.sort(rng.uniform(0, duration_s, n_requests))
    requests["end_at"] = requests["arrival_at"] + rng.exponential(0.05, n_requests)
    requests["error"] = np.where(rng.random(n_requests) < 0.3, ERROR_CODE["client_timeout"], 0).astype(np.int8)
    requests["error"][-3:] = -1
    requests["end_at"][-3:] = np.nan
    requests["attempts"][:] = 1
    attempts = {name: np.zeros(n_requests, dtype=dtype) for name, dtype in ATTEMPT_COLUMNS.items()}
    attempts["request_id"] = requests["request_id"].copy()
    attempts["start_at"] = requests["arrival_at"].copy()
    attempts["end_at"] = requests["end_at"].copy()
    attempts["error"] = requests["error"].copy()
    attempts["new_conn"][::5] = True

    milestones = Milestones(
        trigger_at_s=10.0,
        faults=[FaultWindow("db_lock", 10.0, 30.0, "orders.orders", ("checkout",))],
        kills=[25.0], restarts=[30.0], fd_exhausted_at_s=18.0, oom_killed_at_s=25.0,
        end_at_s=duration_s, alive_at_end=True)
    summary = {
        "scenario": scenario.name, "seed": seed, "duration_s": duration_s, "offered_rps": 6.0,
        "goodput_rps": 4.1, "success_rate": 0.683, "p50_ms": 4.2, "p90_ms": 1500.0,
        "p99_ms": 9010.5, "p999_ms": 9900.0, "p99_success_ms": 12.5,
        "attempts_per_request": 1.4, "incomplete": 3,
        "errors": {"client_timeout": 80, "conn_reset": 15},
        "max_server_connections": 920, "max_accept_queue": 50, "max_open_fds": 926,
        "max_goroutines": 1845, "peak_memory_mib": 50.4, "max_cpu_utilization": 0.74,
        "wasted_work_fraction": 0.42, "trigger_at_s": 10.0, "collapse_at_s": 14.0,
        "collapse_time_s": 4.0, "recovered_at_s": 40.0, "outcome": "recovered", "crashes": 1,
        "crash_loop": False, "fd_exhausted_at_s": 18.0, "oom_killed_at_s": 25.0,
        "truncated": False, "truncated_by": None, "events": 123456, "wall_s": 1.25,
        "provenance": {"stormsim": "0.1.0", "git": "abc123", "scenario_hash": "deadbeef",
                       "seed": seed, "replication": 0},
    }
    return RunResult(
        scenario=scenario, seed=seed, replication=0, route_names=["checkout", "browse"],
        client_names=["web"], requests=requests, attempts=attempts, levels=levels,
        milestones=milestones, counters={"events": 123456.0}, wall_s=1.25,
        provenance=dict(summary["provenance"]), windows=windows, summary=summary)


# ------------------------------------------------------------------ tests

EXPECTED_FILES = sorted(RUN_FILES.values())


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_writes_every_file_and_they_parse_back(tmp_path):
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


def test_second_run_replaces_files_without_temp_files(tmp_path):
    run = synthetic_run()
    write_run_outputs(run, tmp_path)
    run.summary["goodput_rps"] = 99.0
    write_run_outputs(run, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == EXPECTED_FILES
    assert json.loads((tmp_path / "summary.json").read_text())["goodput_rps"] == 99.0


def test_failure_while_writing_changes_nothing(tmp_path, monkeypatch):
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


def test_failure_on_first_run_leaves_an_empty_folder(tmp_path, monkeypatch):
    def broken_parquet(self, path, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken_parquet)
    with pytest.raises(RuntimeError):
        write_run_outputs(synthetic_run(), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_failure_of_the_last_file_also_changes_nothing(tmp_path, monkeypatch):
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


def test_empty_windows_give_levels_only(tmp_path):
    run = synthetic_run()
    run.windows = {}
    paths = write_run_outputs(run, tmp_path)
    ts = pd.read_csv(paths["timeseries"])
    assert list(ts.columns) == list(run.levels)


def test_timeseries_join_tolerates_float_noise_and_gaps():
    run = synthetic_run(duration_s=1.0)
    run.windows = {key: value[1:] for key, value in run.windows.items()}     # one bucket fewer
    run.windows["time_s"] = run.windows["time_s"] + 1e-12                   # 0.30000000000000004
    frame = timeseries_frame(run)
    assert len(frame) == len(run.levels["time_s"])
    assert np.isnan(frame["arrivals"].iloc[0]) and not np.isnan(frame["arrivals"].iloc[1:]).any()


def test_summary_json_is_strict_json():
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


def test_empty_records(tmp_path):
    run = synthetic_run()
    run.requests = {name: np.zeros(0, dtype=dtype) for name, dtype in REQUEST_COLUMNS.items()}
    run.attempts = {name: np.zeros(0, dtype=dtype) for name, dtype in ATTEMPT_COLUMNS.items()}
    paths = write_run_outputs(run, tmp_path)
    assert len(pd.read_parquet(paths["requests"])) == 0
    assert "route" in pd.read_parquet(paths["attempts"]).columns


def test_route_index_out_of_range_is_an_error(tmp_path):
    run = synthetic_run()
    run.requests["route"][0] = 5
    with pytest.raises(ValueError, match="route index"):
        write_run_outputs(run, tmp_path)
    assert list(tmp_path.iterdir()) == []
