"""Sweeps: sweep files and their designs, the durable store, resuming, and executors.

The scenario is the tiny one of conftest (a 3 s healthy service), so a run costs
~0.1 s; the factors are its client timeout, retry count and offered rate.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import small_scenario_data, write_scenario_yaml
from experiments.cli import main
from experiments.sweep_file import SweepError, design_points, load_sweep, run_specs
from experiments.sweep_runner import run_sweep
from experiments.sweep_store import SweepStore, SweepStoreError

PROJECT = Path(__file__).resolve().parents[1]


def write_sweep(tmp_path: Path, **over) -> Path:
    write_scenario_yaml(tmp_path / "tiny.yaml", small_scenario_data(duration="2s"))
    data = {
        "name": "tiny-sweep",
        "scenario": "tiny.yaml",
        "factors": {
            "clients.web.transport.client_timeout": {"values": ["50ms", "1s"]},
            "clients.web.load.rate_per_s": {"range": {"from": 20, "to": 80, "n": 3}},
        },
        "replications": 2,
        "seed": 3,
        "metrics": ["goodput_rps", "p99_ms"],
    }
    data.update(over)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ------------------------------------------------------------------ designs


def test_grid_is_the_cartesian_product_in_file_order(tmp_path):
    spec = load_sweep(write_sweep(tmp_path))
    points = design_points(spec)
    assert points == [
        {"clients.web.transport.client_timeout": t, "clients.web.load.rate_per_s": r}
        for t in (0.05, 1.0) for r in (20.0, 50.0, 80.0)]
    runs = run_specs(spec)
    assert len(runs) == 12
    assert [(r.cell, r.replication) for r in runs[:3]] == [(0, 0), (0, 1), (1, 0)]
    # common random numbers: replication r of every cell has the same (seed, replication)
    assert {(r.seed, r.replication) for r in runs if r.cell == 4} == {(3, 0), (3, 1)}
    assert runs[0].overrides(spec) == ["clients.web.transport.client_timeout=50ms",
                                       "clients.web.load.rate_per_s=20.0"]


def test_log_range_and_integer_factors(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, factors={
        "clients.web.load.rate_per_s": {"range": {"from": 10, "to": 1000, "n": 3, "scale": "log"}},
        "clients.web.retry.max_attempts": {"range": {"from": 1, "to": 4, "n": 4}}}))
    rates = sorted({p["clients.web.load.rate_per_s"] for p in design_points(spec)})
    assert rates == pytest.approx([10.0, 100.0, 1000.0])
    attempts = sorted({p["clients.web.retry.max_attempts"] for p in design_points(spec)})
    assert attempts == [1, 2, 3, 4] and all(isinstance(a, int) for a in attempts)


@pytest.mark.parametrize("design", ["random", "lhs", "sobol"])
def test_sampled_designs_stay_in_bounds_and_are_reproducible(tmp_path, design):
    factors = {"clients.web.transport.client_timeout": {"range": {"from": "100ms", "to": "2s"}},
               "clients.web.load.rate_per_s": {"distribution": {"kind": "loguniform", "low": 10, "high": 100}},
               "clients.web.retry.max_attempts": {"values": [1, 2, 3]}}
    path = write_sweep(tmp_path, factors=factors, design={"kind": design, "points": 16, "seed": 5})
    points = design_points(load_sweep(path))
    assert len(points) == 16 and points == design_points(load_sweep(path))
    timeouts = np.array([p["clients.web.transport.client_timeout"] for p in points])
    rates = np.array([p["clients.web.load.rate_per_s"] for p in points])
    assert timeouts.min() >= 0.1 and timeouts.max() <= 2.0
    assert rates.min() >= 10 and rates.max() <= 100
    assert {p["clients.web.retry.max_attempts"] for p in points} <= {1, 2, 3}


def test_latin_hypercube_puts_one_point_in_every_stratum(tmp_path):
    factors = {"clients.web.load.rate_per_s": {"range": {"from": 0, "to": 100}},
               "clients.web.transport.client_timeout": {"range": {"from": "0s", "to": "10s"}}}
    points = design_points(load_sweep(write_sweep(tmp_path, factors=factors,
                                                  design={"kind": "lhs", "points": 10, "seed": 1})))
    for path, width in (("clients.web.load.rate_per_s", 10.0), ("clients.web.transport.client_timeout", 1.0)):
        strata = sorted(int(p[path] // width) for p in points)
        assert strata == list(range(10))


def test_sobol_points_are_balanced(tmp_path):
    factors = {"clients.web.load.rate_per_s": {"range": {"from": 0, "to": 1}}}
    points = design_points(load_sweep(write_sweep(tmp_path, factors=factors,
                                                  design={"kind": "sobol", "points": 32, "seed": 2})))
    values = np.array([p["clients.web.load.rate_per_s"] for p in points])
    assert np.histogram(values, bins=4, range=(0, 1))[0].tolist() == [8, 8, 8, 8]


@pytest.mark.parametrize(("over", "needle"), [
    ({"factors": {"clients.web.transport.client_timout": {"values": ["1s"]}}}, "did you mean client_timeout"),
    ({"factors": {"clients.web.transport.client_timeout": {"values": ["5 parsecs"]}}},
     "factors.clients.web.transport.client_timeout.values.0"),
    ({"factors": {"clients.web.transport.client_timeout": {"values": ["-1s"]}}}, "-1s"),
    ({"design": {"kind": "sobol", "points": 10}}, "power of two"),
    ({"design": {"kind": "mesh"}}, "design.kind"),
    ({"replications": 0}, "replications"),
    ({"metrics": ["goodput"]}, "metrics.0"),
    ({"scenario": "nope.yaml"}, "nope.yaml"),
    ({"colour": "blue"}, "colour"),
    ({"factors": {"clients.web.load.rate_per_s": {"range": {"from": 50, "to": 10}}}}, "range.to"),
    ({"factors": {"clients.web.load.rate_per_s": {"distribution": {"kind": "uniform", "low": 1, "high": 2}}}},
     "cannot be gridded"),
])
def test_bad_sweep_files_name_the_key_and_value(tmp_path, over, needle):
    with pytest.raises(SweepError) as info:
        load_sweep(write_sweep(tmp_path, **over))
    assert needle in str(info.value)


def test_bad_sweep_file_from_the_cli_is_one_line_and_exit_2(tmp_path, capsys):
    path = write_sweep(tmp_path, factors={"clients.web.transport.client_timeout": {"values": ["5 parsecs"]}})
    assert main(["sweep", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "5 parsecs" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------- store and resume


def _kpis(rows: list[dict]) -> dict[str, dict]:
    """Rows by run key without the wall-clock figures."""
    return {r["run_key"]: {k: v for k, v in r.items() if k not in ("wall_s",)} for r in rows}


def test_interrupted_sweep_resumes_without_redoing_finished_runs(tmp_path):
    spec = load_sweep(write_sweep(tmp_path))
    store = SweepStore(tmp_path / "out")
    seen: list[str] = []

    def interrupt_after_five(row: dict) -> None:
        seen.append(row["run_key"])
        if len(seen) == 5:
            raise KeyboardInterrupt
    first = run_sweep(spec, store, jobs=1, on_row=interrupt_after_five)
    assert first.interrupted and first.finished == 5
    assert len(store.read_rows()) == 5
    again: list[str] = []
    second = run_sweep(spec, store, jobs=1, on_row=lambda row: again.append(row["run_key"]))
    assert not second.interrupted and second.already_done == 5 and second.finished == 7
    assert not set(seen) & set(again)
    rows = store.read_rows()
    assert sorted(r["run_key"] for r in rows) == sorted(r.run_key for r in run_specs(spec))
    third = run_sweep(spec, store, jobs=1)
    assert third.finished == 0 and third.already_done == 12


def test_a_truncated_last_line_is_skipped_and_repaired(tmp_path):
    spec = load_sweep(write_sweep(tmp_path))
    store = SweepStore(tmp_path / "out")
    run_sweep(spec, store, jobs=1, on_row=lambda row: (_ for _ in ()).throw(KeyboardInterrupt))
    with store.runs_path.open("a") as handle:
        handle.write('{"run_key": "c00001-r000-cut", "cell": 1, "repl')      # what a kill -9 leaves
    assert len(store.read_rows()) == 1
    run_sweep(spec, store, jobs=1)
    rows = store.read_rows()
    assert len(rows) == 12 and len({r["run_key"] for r in rows}) == 12


def test_a_different_sweep_in_the_same_folder_is_refused(tmp_path):
    spec = load_sweep(write_sweep(tmp_path))
    store = SweepStore(tmp_path / "out")
    run_sweep(spec, store, jobs=1, on_row=lambda row: (_ for _ in ()).throw(KeyboardInterrupt))
    other = load_sweep(write_sweep(tmp_path, replications=3))
    with pytest.raises(SweepStoreError, match="different sweep"):
        run_sweep(other, store, jobs=1)


def test_a_run_that_raises_is_stored_as_failed_and_the_sweep_goes_on(tmp_path, monkeypatch):
    import sim.engine
    real = sim.engine.run_scenario

    def flaky(scenario, seed=None, replication=0, **kw):
        if replication == 1 and scenario.clients["web"].load.rate_per_s == 50.0:
            raise RuntimeError("injected failure")
        return real(scenario, seed=seed, replication=replication, **kw)
    monkeypatch.setattr(sim.engine, "run_scenario", flaky)
    spec = load_sweep(write_sweep(tmp_path))
    store = SweepStore(tmp_path / "out")
    outcome = run_sweep(spec, store, jobs=1)
    assert outcome.failed == 2 and outcome.ok == 10
    failed = [r for r in store.read_rows() if r["status"] == "failed"]
    assert {r["cell"] for r in failed} == {1, 4}
    assert all("RuntimeError: injected failure" in r["error"] for r in failed)
    monkeypatch.setattr(sim.engine, "run_scenario", real)
    again = run_sweep(spec, store, jobs=1)
    assert again.finished == 0                       # failed runs are finished runs ...
    retried = run_sweep(spec, store, jobs=1, retry_failed=True)
    assert retried.finished == 2 and retried.ok == 2   # ... unless asked to run them again


def test_results_are_identical_for_one_and_two_workers(tmp_path):
    spec = load_sweep(write_sweep(tmp_path))
    one, two = SweepStore(tmp_path / "one"), SweepStore(tmp_path / "two")
    run_sweep(spec, one, jobs=1)
    run_sweep(spec, two, jobs=2)
    assert _kpis(one.read_rows()) == _kpis(two.read_rows())
    rows = _kpis(one.read_rows())
    assert len(rows) == 12
    assert all(r["status"] == "ok" and r["goodput_rps"] > 0 for r in rows.values())


def test_results_are_identical_on_a_dask_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    spec = load_sweep(write_sweep(tmp_path))
    local = SweepStore(tmp_path / "local")
    run_sweep(spec, local, jobs=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster:
        dask = SweepStore(tmp_path / "dask")
        outcome = run_sweep(spec, dask, scheduler=cluster.scheduler_address)
    assert outcome.ok == 12
    assert _kpis(local.read_rows()) == _kpis(dask.read_rows())


def test_kill_9_loses_at_most_the_runs_in_flight(tmp_path):
    """A sweep process killed with SIGKILL mid-way keeps every run it had stored; the same
    command then finishes the rest, and every run ends up stored exactly once."""
    path = write_sweep(tmp_path, replications=4)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "experiments.cli", "sweep", str(path), "--out", str(out), "--jobs", "1"]
    proc = subprocess.Popen(cmd, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(PROJECT)})
    deadline = time.monotonic() + 60
    runs = out / "runs.jsonl"
    try:
        while time.monotonic() < deadline:
            if runs.exists() and len(runs.read_text().splitlines()) >= 4:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the sweep stored nothing within 60 s")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    stored_before = {json.loads(line)["run_key"] for line in runs.read_text().splitlines() if line.endswith("}")}
    assert 4 <= len(stored_before) < 24
    done = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(PROJECT)})
    assert done.returncode == 0, done.stderr
    rows = SweepStore(out).read_rows()
    assert len(rows) == 24 and len({r["run_key"] for r in rows}) == 24
    assert (out / "runs.parquet").exists() and (out / "report.html").exists()


def test_cli_exit_status_is_1_when_a_run_failed_and_the_count_is_printed(tmp_path, monkeypatch, capsys):
    import sim.engine
    real = sim.engine.run_scenario

    def flaky(scenario, seed=None, replication=0, **kw):
        if replication == 0 and scenario.clients["web"].load.rate_per_s == 80.0:
            raise RuntimeError("injected failure")
        return real(scenario, seed=seed, replication=replication, **kw)
    monkeypatch.setattr(sim.engine, "run_scenario", flaky)
    out = tmp_path / "out"
    assert main(["sweep", str(write_sweep(tmp_path)), "--out", str(out), "--jobs", "1"]) == 1
    printed = capsys.readouterr().out
    assert "12/12 runs stored" in printed and "2 failed" in printed
    runs = __import__("pandas").read_parquet(out / "runs.parquet")
    assert (runs["status"] == "failed").sum() == 2 and len(runs) == 12
    cells = __import__("pandas").read_csv(out / "cells.csv")
    assert cells["n_failed"].sum() == 2 and (out / "report.html").exists()
    monkeypatch.setattr(sim.engine, "run_scenario", real)
    assert main(["sweep", str(write_sweep(tmp_path)), "--out", str(out), "--jobs", "1", "--retry-failed"]) == 0
