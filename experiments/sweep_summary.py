"""Reading a sweep's output folder and summarising its runs per cell.

A sweep folder (written by the sweep runner) holds ``manifest.json`` (what was
swept) and the finished runs: ``runs.jsonl`` while the sweep runs (one JSON
object per line, the last one possibly cut short by a kill) and
``runs.parquet``/``runs.csv`` once it has ended. This module reads them,
summarises every cell (one combination of factor values, several replications)
with Student-t intervals of the metric means and Wilson intervals of the
collapse, metastability and crash probabilities, and writes the tables back
atomically. Nothing here draws; ``experiments.sweep_figures`` does.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import stats

from experiments.run_files import stage_file

MANIFEST_FILE = "manifest.json"
RUNS_JSONL = "runs.jsonl"
RUNS_PARQUET = "runs.parquet"
RUNS_CSV = "runs.csv"
CELLS_CSV = "cells.csv"
CELLS_PARQUET = "cells.parquet"
REQUIRED_MANIFEST_KEYS: tuple[str, ...] = ("factors", "metrics")

RUN_COLUMNS: tuple[str, ...] = ("run_key", "cell", "replication", "seed", "status", "error", "wall_s")
COUNT_COLUMNS: tuple[str, ...] = ("n_runs", "n_ok", "n_failed")
CI_SUFFIXES: tuple[str, ...] = (".mean", ".ci_low", ".ci_high", ".n")

# probability column -> the ok runs it counts (its Wilson interval is over all ok runs)
PROBABILITIES: dict[str, str] = {
    "p_collapse": "runs whose untouched traffic collapsed (collapse_at_s not null)",
    "p_metastable": "runs whose outcome is metastable",
    "p_crashed": "runs whose outcome is crashed",
}
OUTCOME_PROBABILITY: dict[str, str] = {
    "collapse": "p_collapse", "metastable": "p_metastable", "crashed": "p_crashed",
}


class SweepResultsError(ValueError):
    """A folder that is not (or not yet) a readable sweep output."""


@dataclass(frozen=True)
class SweepResults:
    """A sweep folder read and summarised: the manifest, one row per run, one per cell."""

    out_dir: Path
    manifest: dict[str, Any]
    runs: pd.DataFrame
    cells: pd.DataFrame
    missing_metrics: tuple[str, ...] = ()   # manifest metrics no run row carries


# ------------------------------------------------------------------ reading


def read_manifest(out_dir: Path | str) -> dict[str, Any]:
    """The sweep's ``manifest.json`` as a dict; SweepResultsError if missing or broken."""
    folder = _existing_folder(out_dir)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise SweepResultsError(f"{str(folder)!r} is not a sweep output folder: it has no {MANIFEST_FILE}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SweepResultsError(f"{str(path)!r} is not readable JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise SweepResultsError(f"{str(path)!r} is not a JSON object")
    missing = [key for key in REQUIRED_MANIFEST_KEYS if key not in manifest]
    if missing:
        raise SweepResultsError(f"{str(path)!r} lacks {', '.join(missing)}")
    manifest.setdefault("factor_units", {})
    return manifest


def read_runs(out_dir: Path | str) -> pd.DataFrame:
    """One row per finished run: ``runs.parquet`` if it is current, else ``runs.jsonl``.

    ``runs.parquet`` is written when the sweep ends; a ``runs.jsonl`` modified
    after it (a resumed sweep) wins. Lines of the jsonl that do not parse (the
    last one after a kill -9) are skipped and counted in ``attrs["skipped_lines"]``.
    """
    folder = _existing_folder(out_dir)
    parquet, jsonl = folder / RUNS_PARQUET, folder / RUNS_JSONL
    if parquet.is_file() and not (jsonl.is_file() and jsonl.stat().st_mtime > parquet.stat().st_mtime):
        try:
            return pd.read_parquet(parquet)
        except Exception as exc:  # a parquet cut short: fall back to the jsonl if there is one
            if not jsonl.is_file():
                raise SweepResultsError(f"{str(parquet)!r} is not readable ({exc})") from None
    if jsonl.is_file():
        return read_runs_jsonl(jsonl)
    raise SweepResultsError(
        f"{str(folder)!r} is not a sweep output folder: it has neither {RUNS_PARQUET} nor {RUNS_JSONL}")


def read_runs_jsonl(path: Path | str) -> pd.DataFrame:
    """Rows of a ``runs.jsonl``, skipping lines that are not a JSON object."""
    rows: list[dict[str, Any]] = []
    skipped = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            if not isinstance(row, dict):
                skipped += 1
                continue
            rows.append(_flatten(row))
    frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=list(RUN_COLUMNS))
    if "run_key" in frame and len(frame):
        frame = frame.drop_duplicates("run_key", keep="last").reset_index(drop=True)
    frame.attrs["skipped_lines"] = skipped
    return frame


def load_sweep(out_dir: Path | str, confidence: float = 0.95,
               extra_metrics: Sequence[str] = ()) -> SweepResults:
    """Manifest, runs and per-cell summary of a sweep folder in one call.

    ``extra_metrics`` are summarised too when the runs carry them (e.g. for figures).
    """
    manifest = read_manifest(out_dir)
    runs = read_runs(out_dir)
    factors = list(manifest["factors"])
    if len(runs):
        for column in ("cell", *factors):
            if column not in runs.columns:
                raise SweepResultsError(f"the runs of {str(out_dir)!r} have no column {column!r}")
    wanted = list(dict.fromkeys([*manifest["metrics"], *extra_metrics]))
    metrics = [m for m in wanted if m in runs.columns]
    missing = tuple(m for m in manifest["metrics"] if m not in runs.columns)
    cells = summarize_cells(runs, factors, metrics, confidence) if len(runs) else empty_cells(factors, metrics)
    return SweepResults(Path(out_dir), manifest, runs, cells, missing)


# ------------------------------------------------------------------ intervals


def t_interval(values: Iterable[Any], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t confidence interval of the mean, NaNs and nulls left out.

    No values give NaNs; one value gives (x, nan, nan); equal values a zero-width interval.
    """
    _check_confidence(confidence)
    x = _numbers(values)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.mean(x))
    if n == 1:
        return mean, math.nan, math.nan
    sd = float(np.std(x, ddof=1))
    if sd == 0.0 or not math.isfinite(sd):
        return mean, mean, mean
    half = _t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """(p, low, high): Wilson score interval of a proportion; n = 0 gives NaNs."""
    _check_confidence(confidence)
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"wilson_interval: need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return math.nan, math.nan, math.nan
    z = _z_quantile(confidence)
    p = successes / n
    z2_n = z * z / n
    centre = (p + z2_n / 2.0) / (1.0 + z2_n)
    half = z * math.sqrt(p * (1.0 - p) / n + z2_n / (4.0 * n)) / (1.0 + z2_n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)      # exact bounds, not 1 - 1e-16
    high = 1.0 if successes == n else min(1.0, centre + half)
    return p, low, high


# ------------------------------------------------------------------ per cell


def empty_cells(factors: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """The columns of ``summarize_cells`` without rows."""
    return pd.DataFrame(columns=_cell_columns(list(factors), list(metrics), with_cell=True))


def summarize_cells(runs: pd.DataFrame, factors: Sequence[str], metrics: Sequence[str],
                    confidence: float = 0.95) -> pd.DataFrame:
    """One row per ``cell``: factor values, run counts, metric CIs and outcome probabilities.

    A metric no row carries (every run failed, so no KPI was stored) summarises as
    NaN with ``.n`` 0; a missing ``cell`` or factor column is a ValueError.
    """
    _require(runs, ["cell", *factors], "runs")
    if runs.empty:
        return empty_cells(factors, metrics)
    arrays = _RunArrays(runs, metrics)
    rows = []
    for cell, index in sorted(runs.groupby("cell", sort=True).indices.items()):
        first = runs.iloc[index[0]]
        rows.append({**{f: first[f] for f in factors}, "cell": cell, **arrays.summary(index, confidence)})
    return pd.DataFrame(rows, columns=_cell_columns(list(factors), list(metrics), with_cell=True))


def summarize_groups(runs: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str],
                     confidence: float = 0.95) -> pd.DataFrame:
    """Like ``summarize_cells``, but pooling the runs of every combination of ``keys``.

    The marginal view over some factors of a larger sweep (e.g. a heatmap over the
    first two of three factors): intervals come from the pooled runs, not from
    averaging cell intervals. Sorted by the key values.
    """
    _require(runs, keys, "runs")
    rows = []
    if len(runs):
        arrays = _RunArrays(runs, metrics)
        for values, index in runs.groupby(list(keys), sort=True, dropna=False).indices.items():
            values = values if isinstance(values, tuple) else (values,)
            rows.append({**dict(zip(keys, values)), **arrays.summary(index, confidence)})
    frame = pd.DataFrame(rows, columns=_cell_columns(list(keys), list(metrics), with_cell=False))
    return frame.sort_values(list(keys), kind="stable").reset_index(drop=True) if rows else frame


class _RunArrays:
    """The columns a summary needs, converted once: metrics as floats, ok and outcome flags."""

    def __init__(self, runs: pd.DataFrame, metrics: Sequence[str]) -> None:
        n = len(runs)
        status = runs["status"].astype("object").to_numpy() if "status" in runs else np.full(n, "ok", dtype=object)
        self.ok = status == "ok"
        self.metrics = {m: _numbers(runs[m]) if m in runs else np.full(n, np.nan) for m in metrics}
        outcome = runs["outcome"].astype("object").to_numpy() if "outcome" in runs else None
        self.hits: dict[str, np.ndarray | None] = {
            "p_collapse": runs["collapse_at_s"].notna().to_numpy() if "collapse_at_s" in runs else None,
            "p_metastable": outcome == "metastable" if outcome is not None else None,
            "p_crashed": outcome == "crashed" if outcome is not None else None,
        }

    def summary(self, index: np.ndarray, confidence: float) -> dict[str, Any]:
        """Counts, metric intervals and outcome probabilities of the runs at ``index``."""
        ok_index = index[self.ok[index]]
        n_ok = len(ok_index)
        row: dict[str, Any] = {"n_runs": len(index), "n_ok": n_ok, "n_failed": len(index) - n_ok}
        for metric, column in self.metrics.items():
            values = column[ok_index]
            mean, low, high = t_interval(values, confidence)
            row.update({f"{metric}.mean": mean, f"{metric}.ci_low": low, f"{metric}.ci_high": high,
                        f"{metric}.n": int(np.count_nonzero(~np.isnan(values)))})
        for name, flags in self.hits.items():
            hits = int(np.count_nonzero(flags[ok_index])) if flags is not None else None
            p, low, high = wilson_interval(hits, n_ok, confidence) if hits is not None else (math.nan,) * 3
            row.update({name: p, f"{name}.ci_low": low, f"{name}.ci_high": high})
        return row


def _cell_columns(keys: list[str], metrics: list[str], *, with_cell: bool) -> list[str]:
    columns = [*keys, *(["cell"] if with_cell else []), *COUNT_COLUMNS]
    for metric in metrics:
        columns += [f"{metric}{suffix}" for suffix in CI_SUFFIXES]
    for name in PROBABILITIES:
        columns += [name, f"{name}.ci_low", f"{name}.ci_high"]
    return columns


# ------------------------------------------------------------------ writing


def write_tables(out_dir: Path | str, runs: pd.DataFrame, cells: pd.DataFrame) -> dict[str, Path]:
    """Write runs.csv, runs.parquet, cells.csv and cells.parquet atomically; return their paths."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    writers: dict[str, Callable[[Path], None]] = {
        RUNS_CSV: lambda p: runs.to_csv(p, index=False),
        RUNS_PARQUET: lambda p: parquet_safe(runs).to_parquet(p, engine="pyarrow", index=False),
        CELLS_CSV: lambda p: cells.to_csv(p, index=False),
        CELLS_PARQUET: lambda p: parquet_safe(cells).to_parquet(p, engine="pyarrow", index=False),
    }
    written: dict[str, Path] = {}
    for name, write in writers.items():
        final = folder / name
        tmp = stage_file(final, write)
        try:
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        written[name] = final
    return written


def parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy parquet accepts: object columns mixing types (e.g. 3.0 and "3s") become strings."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype != object:
            continue
        kinds = {_kind(v) for v in out[column] if v is not None and not _is_nan(v)}
        if len(kinds) > 1:
            out[column] = out[column].map(lambda v: None if v is None or _is_nan(v) else str(v))
    return out


def _kind(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, float, np.number)):
        return "number"
    return type(value).__name__


# ------------------------------------------------------------------ helpers


def _existing_folder(out_dir: Path | str) -> Path:
    folder = Path(out_dir)
    if not folder.is_dir():
        raise SweepResultsError(f"{str(folder)!r} is not a sweep output folder: no such folder")
    return folder


def _require(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    for column in columns:
        if column not in frame.columns:
            raise ValueError(f"{what} has no column {column!r}")


def _numbers(values: Any) -> np.ndarray:
    """Values as floats: booleans as 0/1, nulls and text as NaN."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return values.astype("float64", copy=False)
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype="object")
    if series.dtype == object:
        series = series.map(lambda v: float(v) if isinstance(v, (bool, np.bool_)) else v)
    elif pd.api.types.is_bool_dtype(series.dtype):
        series = pd.Series(series.to_numpy(dtype="float64", na_value=np.nan))
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (``{"errors": {"eof": 1}}`` -> ``errors.eof``)."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


@functools.lru_cache(maxsize=1024)
def _t_quantile(confidence: float, dof: int) -> float:
    return float(stats.t.ppf(0.5 + confidence / 2.0, dof))


@functools.lru_cache(maxsize=64)
def _z_quantile(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
