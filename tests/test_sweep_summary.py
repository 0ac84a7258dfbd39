"""Tests of experiments.sweep_summary: intervals against scipy, per-cell summaries, reading sweep folders."""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments.sweep_summary import (
    SweepResultsError,
    load_sweep,
    read_manifest,
    read_runs,
    read_runs_jsonl,
    summarize_cells,
    summarize_groups,
    t_interval,
    wilson_interval,
    write_tables,
)

TIMEOUT = "clients.web.transport.client_timeout"
CONNS = "services.api.max_conns"


def _row(cell: int, rep: int, timeout: float, conns: int, *, status: str = "ok", **kpis):
    base = {"run_key": f"c{cell}-r{rep}", "cell": cell, "replication": rep, "seed": 100 + rep, "status": status,
            "error": "" if status == "ok" else "RuntimeError: boom", "wall_s": 0.5, TIMEOUT: timeout, CONNS: conns,
            "p99_ms": None, "collapse_time_s": None, "collapse_at_s": None, "outcome": None, "truncated": None}
    base.update(kpis)
    return base


@pytest.fixture
def runs() -> pd.DataFrame:
    """Two cells (given out of order): cell 1 collapses twice of three, cell 0 never; one failed run."""
    rows = [
        _row(1, 0, 10.0, 100, p99_ms=900.0, collapse_at_s=22.0, collapse_time_s=2.0, outcome="metastable",
             truncated=False),
        _row(1, 1, 10.0, 100, p99_ms=1100.0, collapse_at_s=25.0, collapse_time_s=5.0, outcome="crashed",
             truncated=True),
        _row(1, 2, 10.0, 100, p99_ms=1000.0, outcome="recovered", truncated=False),
        _row(1, 3, 10.0, 100, status="failed"),
        _row(0, 0, 1.0, 100, p99_ms=50.0, outcome="stable", truncated=False),
        _row(0, 1, 1.0, 100, p99_ms=50.0, outcome="stable", truncated=False),
    ]
    return pd.DataFrame(rows)


def _write_sweep(folder, rows, *, factors=(TIMEOUT, CONNS), tail: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"name": "t", "description": "", "factors": list(factors),
                "factor_units": {TIMEOUT: "s", CONNS: ""}, "metrics": ["p99_ms", "collapse_time_s"],
                "design": {"kind": "grid"}, "replications": 4, "seed": 1, "runs_total": 8}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with open(folder / "runs.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.write(tail)


# ------------------------------------------------------------------ t interval


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
@pytest.mark.parametrize("n", [2, 3, 10, 57])
def test_t_interval_matches_scipy(n, confidence):
    x = np.random.default_rng(n).lognormal(3.0, 1.0, n)
    mean, low, high = t_interval(x, confidence)
    ref_low, ref_high = stats.t.interval(confidence, n - 1, loc=np.mean(x), scale=stats.sem(x))
    assert mean == pytest.approx(np.mean(x))
    assert low == pytest.approx(ref_low, rel=1e-12)
    assert high == pytest.approx(ref_high, rel=1e-12)


def test_t_interval_leaves_out_nan_and_null():
    assert t_interval([1.0, float("nan"), None, 3.0, 5.0]) == pytest.approx(t_interval([1.0, 3.0, 5.0]))
    assert t_interval(pd.Series([2.0, None, 4.0])) == pytest.approx(t_interval([2.0, 4.0]))


def test_t_interval_edge_cases():
    assert all(math.isnan(v) for v in t_interval([]))
    assert all(math.isnan(v) for v in t_interval([None, float("nan")]))
    mean, low, high = t_interval([7.5])
    assert mean == 7.5 and math.isnan(low) and math.isnan(high)
    assert t_interval([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)
    assert t_interval([True, False, True, True])[0] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1.0, 2.0], confidence=1.0)


# ------------------------------------------------------------------ Wilson interval


def _wilson_by_hand(k: int, n: int, confidence: float) -> tuple[float, float]:
    z = stats.norm.ppf(1 - (1 - confidence) / 2)
    p = k / n
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(n) / (n + z * z) * math.sqrt(p * (1 - p) + z * z / (4 * n))
    return centre - half, centre + half


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (17, 40), (1, 200), (500, 1000)])
def test_wilson_matches_scipy_and_the_formula(k, n, confidence):
    p, low, high = wilson_interval(k, n, confidence)
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert p == pytest.approx(k / n)
    assert low == pytest.approx(ref.low, abs=1e-12)
    assert high == pytest.approx(ref.high, abs=1e-12)
    by_hand = _wilson_by_hand(k, n, confidence)
    assert (low, high) == pytest.approx((max(0.0, by_hand[0]), min(1.0, by_hand[1])), abs=1e-12)
    assert 0.0 <= low <= p <= high <= 1.0


def test_wilson_edge_cases():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    p, low, high = wilson_interval(0, 5)
    assert p == 0.0 and low == 0.0 and high > 0.0
    p, low, high = wilson_interval(5, 5)
    assert p == 1.0 and high == 1.0 and low < 1.0
    for bad in ((6, 5), (-1, 5), (0, -1)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)


# ------------------------------------------------------------------ per cell


def test_summarize_cells_counts_means_and_probabilities(runs):
    cells = summarize_cells(runs, [TIMEOUT, CONNS], ["p99_ms", "collapse_time_s", "truncated"])
    assert list(cells["cell"]) == [0, 1]
    assert list(cells.columns[:3]) == [TIMEOUT, CONNS, "cell"]
    c0, c1 = cells.iloc[0], cells.iloc[1]
    assert (c1[TIMEOUT], c1[CONNS]) == (10.0, 100)
    assert (c1["n_runs"], c1["n_ok"], c1["n_failed"]) == (4, 3, 1)
    assert (c0["n_runs"], c0["n_ok"], c0["n_failed"]) == (2, 2, 0)
    assert (c1["p99_ms.mean"], c1["p99_ms.ci_low"], c1["p99_ms.ci_high"]) == pytest.approx(
        t_interval([900.0, 1100.0, 1000.0]))
    assert c1["p99_ms.n"] == 3
    # collapse_time_s exists only for the two runs that collapsed
    assert c1["collapse_time_s.n"] == 2 and c1["collapse_time_s.mean"] == pytest.approx(3.5)
    assert c0["collapse_time_s.n"] == 0 and math.isnan(c0["collapse_time_s.mean"])
    # booleans count as 0/1
    assert c1["truncated.mean"] == pytest.approx(1 / 3)
    # constant values: a zero-width interval
    assert (c0["p99_ms.ci_low"], c0["p99_ms.ci_high"]) == (50.0, 50.0)
    # probabilities over the ok runs, with Wilson intervals
    assert (c1["p_collapse"], c1["p_collapse.ci_low"], c1["p_collapse.ci_high"]) == pytest.approx(
        wilson_interval(2, 3))
    assert c1["p_metastable"] == pytest.approx(1 / 3) and c1["p_crashed"] == pytest.approx(1 / 3)
    assert c0["p_collapse"] == 0.0 and c0["p_collapse.ci_high"] == pytest.approx(wilson_interval(0, 2)[2])


def test_summarize_cells_all_failed_cell_has_nan_probabilities(runs):
    runs = pd.concat([runs, pd.DataFrame([_row(2, 0, 30.0, 100, status="failed")])], ignore_index=True)
    cells = summarize_cells(runs, [TIMEOUT, CONNS], ["p99_ms"])
    c2 = cells.set_index("cell").loc[2]
    assert (c2["n_ok"], c2["n_failed"], c2["p99_ms.n"]) == (0, 1, 0)
    assert math.isnan(c2["p_collapse"]) and math.isnan(c2["p99_ms.mean"])


def test_summarize_cells_names_a_missing_factor_and_tolerates_a_missing_metric(runs):
    with pytest.raises(ValueError, match="'nope.factor'"):
        summarize_cells(runs, ["nope.factor"], ["p99_ms"])
    with pytest.raises(ValueError, match="'cell'"):
        summarize_cells(runs.drop(columns=["cell"]), [TIMEOUT], ["p99_ms"])
    # every run failed: the runner stored no KPI at all, the metric is there without values
    failed = pd.DataFrame([{k: v for k, v in _row(0, r, 1.0, 100, status="failed").items()
                            if k in ("run_key", "cell", "replication", "status", "error", TIMEOUT, CONNS)}
                           for r in range(2)])
    cells = summarize_cells(failed, [TIMEOUT, CONNS], ["p99_ms"])
    assert cells.loc[0, "n_failed"] == 2 and cells.loc[0, "p99_ms.n"] == 0
    assert math.isnan(cells.loc[0, "p99_ms.mean"]) and math.isnan(cells.loc[0, "p_collapse"])


def test_summarize_groups_pools_runs_over_the_other_factors(runs):
    more = runs.copy()
    more["cell"] += 10
    more[CONNS] = 200
    more["run_key"] += "-b"
    both = pd.concat([runs, more], ignore_index=True)
    pooled = summarize_groups(both, [TIMEOUT], ["p99_ms"])
    assert list(pooled[TIMEOUT]) == [1.0, 10.0]
    row = pooled.iloc[1]
    assert (row["n_runs"], row["n_ok"]) == (8, 6)
    assert (row["p99_ms.mean"], row["p99_ms.ci_low"], row["p99_ms.ci_high"]) == pytest.approx(
        t_interval([900.0, 1100.0, 1000.0] * 2))
    assert row["p_collapse"] == pytest.approx(4 / 6)


# ------------------------------------------------------------------ reading and writing


def test_read_runs_skips_a_truncated_last_line(tmp_path, runs):
    rows = runs.replace({np.nan: None}).to_dict("records")
    _write_sweep(tmp_path, rows, tail='{"run_key": "c9-r0", "cell": 9, "status": "o')
    read = read_runs(tmp_path)
    assert len(read) == len(rows)
    assert read.attrs["skipped_lines"] == 1
    assert set(read["run_key"]) == {r["run_key"] for r in rows}
    cells = load_sweep(tmp_path).cells
    assert list(cells["cell"]) == [0, 1]


def test_read_runs_jsonl_flattens_nested_errors_and_keeps_the_last_duplicate(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps({"run_key": "a", "cell": 0, "p99_ms": 1.0, "errors": {"eof": 2}}) + "\n"
                    + "\n" + json.dumps({"run_key": "a", "cell": 0, "p99_ms": 2.0, "errors": {"eof": 3}}) + "\n"
                    + "[1, 2]\n")
    frame = read_runs_jsonl(path)
    assert len(frame) == 1 and frame.loc[0, "p99_ms"] == 2.0 and frame.loc[0, "errors.eof"] == 3
    assert frame.attrs["skipped_lines"] == 1


def test_read_runs_prefers_a_current_parquet(tmp_path, runs):
    _write_sweep(tmp_path, runs.head(2).replace({np.nan: None}).to_dict("records"))
    old = time.time() - 60
    os.utime(tmp_path / "runs.jsonl", (old, old))
    runs.to_parquet(tmp_path / "runs.parquet", index=False)
    assert len(read_runs(tmp_path)) == len(runs)
    # a resumed sweep appended to the jsonl after the parquet was written: the jsonl wins
    new = time.time() + 60
    os.utime(tmp_path / "runs.jsonl", (new, new))
    assert len(read_runs(tmp_path)) == 2


def test_not_a_sweep_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SweepResultsError, match="no such folder"):
        read_manifest(tmp_path / "missing")
    with pytest.raises(SweepResultsError, match=r"not a sweep output folder: it has no manifest\.json"):
        read_manifest(tmp_path)
    assert str(tmp_path) in str(pytest.raises(SweepResultsError, read_manifest, tmp_path).value)
    with pytest.raises(SweepResultsError, match="neither runs.parquet nor runs.jsonl"):
        read_runs(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(SweepResultsError, match="not readable JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(SweepResultsError, match="lacks factors, metrics"):
        read_manifest(tmp_path)


def test_load_sweep_of_a_sweep_without_finished_runs(tmp_path):
    _write_sweep(tmp_path, [])
    sweep = load_sweep(tmp_path)
    assert sweep.runs.empty and sweep.cells.empty
    assert TIMEOUT in sweep.cells.columns and "p_collapse" in sweep.cells.columns


def test_write_tables_round_trips_atomically(tmp_path, runs):
    runs = runs.copy()
    runs["mixed"] = [1.0, "3s", None, 2, "x", 4.5]      # a factor mixing numbers and text
    cells = summarize_cells(runs, [TIMEOUT, CONNS], ["p99_ms"])
    written = write_tables(tmp_path, runs, cells)
    assert sorted(p.name for p in written.values()) == ["cells.csv", "cells.parquet", "runs.csv", "runs.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written.values())
    back = pd.read_parquet(tmp_path / "cells.parquet")
    pd.testing.assert_frame_equal(back, cells, check_dtype=False)
    assert len(pd.read_parquet(tmp_path / "runs.parquet")) == len(runs)
    assert list(pd.read_csv(tmp_path / "cells.csv")["cell"]) == [0, 1]
