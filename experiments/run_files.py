"""The files one run leaves on disk, and how they are written safely.

This module owns a run's output folder: ``summary.json`` (the summary in its own
key order), ``timeseries.csv`` (sampled levels joined with the per-window series
on ``time_s``), ``requests.parquet`` and ``attempts.parquet`` (the records with
route, client and error names instead of codes), ``report.html`` and, for a
service-graph run, ``services.csv`` and ``edges.csv`` (one row per service and
per edge, from the summary). It also owns
atomic writing: each file goes to a temporary name in the destination folder and
is moved into place with ``os.replace``. ``write_run_outputs`` stages every file
before it replaces any, so a run that fails while writing leaves the previous
files of that folder exactly as they were, and no temporary file behind.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.graph_outputs import EDGE_KEYS, SERVICE_KEYS, client_targets
from sim.outputs import is_graph_run
from sim.result import ERROR_NAME, INCOMPLETE, SUCCESS, RunResult
from sim.schema import ERROR_KINDS

RUN_FILES: dict[str, str] = {
    # key of write_run_outputs' answer -> file name; summary.json is replaced last,
    # so its presence (and mtime) says the other files of the folder are complete.
    "timeseries": "timeseries.csv",
    "requests": "requests.parquet",
    "attempts": "attempts.parquet",
    "report": "report.html",
    "summary": "summary.json",
}
GRAPH_RUN_FILES: dict[str, str] = {
    # only for a service-graph run (sim.outputs.is_graph_run): one row per service, per edge
    "services": "services.csv",
    "edges": "edges.csv",
}
ERROR_LABELS: tuple[str, ...] = ("success", "incomplete", *ERROR_KINDS)
"""Categories of the ``error`` column of the parquet files, in a fixed order."""
TIME_DECIMALS = 9     # time_s of levels and windows are matched after rounding to 1 ns
FILE_MODE = 0o644


# ------------------------------------------------------------------ atomic writes


def stage_file(path: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a fresh temporary path beside ``path``; return that path.

    The temporary file is removed if ``write`` fails. The caller moves it into
    place with ``os.replace(tmp, path)`` (or discards it).
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path: Path | str, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; return the path."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = stage_file(path, lambda p: p.write_bytes(payload))
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------ file contents


def summary_json(summary: dict[str, Any]) -> str:
    """The summary as strict JSON in its own key order (NaN and inf become null)."""
    return json.dumps(_jsonable(summary), indent=2, sort_keys=False, allow_nan=False) + "\n"


def timeseries_frame(result: RunResult) -> pd.DataFrame:
    """Levels and per-window series side by side, one row per ``time_s``.

    An outer join: a time present in only one of them keeps NaN in the other's
    columns. A window series whose name clashes with a level gets ``window.`` in
    front of it.
    """
    levels = _frame(result.levels)
    windows = _frame(result.windows)
    if windows.empty:
        return levels
    if levels.empty:
        return windows
    clashes = (set(levels.columns) & set(windows.columns)) - {"time_s"}
    windows = windows.rename(columns={c: f"window.{c}" for c in clashes})
    levels["time_s"] = levels["time_s"].round(TIME_DECIMALS)
    windows["time_s"] = windows["time_s"].round(TIME_DECIMALS)
    joined = levels.merge(windows, on="time_s", how="outer", sort=True)
    return joined.reset_index(drop=True)


def error_labels(codes: np.ndarray) -> pd.Categorical:
    """Record error codes as names: ``success``, ``incomplete`` or the error kind."""
    names = {SUCCESS: "success", INCOMPLETE: "incomplete", **ERROR_NAME}
    labels = pd.Series(np.asarray(codes, dtype=np.int64)).map(names)
    unknown = labels.isna()
    if unknown.any():
        bad = sorted(set(np.asarray(codes)[unknown.to_numpy()].tolist()))
        raise ValueError(f"unknown error codes in records: {bad}")
    return pd.Categorical(labels, categories=list(ERROR_LABELS))


def requests_frame(result: RunResult) -> pd.DataFrame:
    """Per-request records with names instead of indexes, plus ``latency_ms`` (NaN if incomplete).

    In a service-graph run a ``service`` column (the service the request was sent to) follows
    ``client``, and ``route`` names a route of that service."""
    records = result.requests
    frame = pd.DataFrame({name: np.asarray(col) for name, col in records.items()})
    graph = is_graph_run(result) and "client" in frame
    if graph:
        services = list(result.scenario.services)
        targets = client_targets(result)
        client_codes = frame["client"].to_numpy(dtype=np.int64)
        _names(frame["client"], result.client_names, "client")        # range check
        service_codes = np.array([services.index(t) for t in targets], dtype=np.int64)[client_codes] \
            if len(client_codes) else np.zeros(0, np.int64)
        if "route" in frame:
            frame["route"] = _service_routes(result, service_codes, frame["route"].to_numpy(dtype=np.int64))
        frame.insert(frame.columns.get_loc("client") + 1, "service",
                     pd.Categorical.from_codes(service_codes, categories=services))
    if "client" in frame:
        frame["client"] = _names(frame["client"], result.client_names, "client")
    if "route" in frame and not graph:
        frame["route"] = _names(frame["route"], result.route_names, "route")
    if "error" in frame:
        frame["error"] = error_labels(frame["error"].to_numpy())
    if "arrival_at" in frame and "end_at" in frame:
        frame["latency_ms"] = (frame["end_at"] - frame["arrival_at"]) * 1000.0
    return frame


def attempts_frame(result: RunResult, requests: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-attempt records with the error name and their request's route and client."""
    frame = pd.DataFrame({name: np.asarray(col) for name, col in result.attempts.items()})
    if "error" in frame:
        frame["error"] = error_labels(frame["error"].to_numpy())
    if "start_at" in frame and "end_at" in frame:
        frame["duration_ms"] = (frame["end_at"] - frame["start_at"]) * 1000.0
    requests = requests_frame(result) if requests is None else requests
    owners = [c for c in ("route", "client", "service") if c in requests]
    if "request_id" in frame and "request_id" in requests and owners:
        lookup = requests[["request_id", *owners]].drop_duplicates("request_id")
        position = frame.columns.get_loc("request_id") + 1
        merged = frame[["request_id"]].merge(lookup, on="request_id", how="left")
        for offset, column in enumerate(owners):
            frame.insert(position + offset, column, merged[column].to_numpy())
    return frame


def services_frame(result: RunResult) -> pd.DataFrame:
    """One row per service: ``summary["services"]`` (docs/outputs.md, *Service graphs*), the
    error counts as ``errors.<kind>`` columns (every kind, 0 when none)."""
    return _graph_table(result.summary.get("services") or {}, "service", SERVICE_KEYS)


def edges_frame(result: RunResult) -> pd.DataFrame:
    """One row per edge ``caller->callee``: ``summary["edges"]``, errors as ``errors.<kind>``."""
    return _graph_table(result.summary.get("edges") or {}, "edge", EDGE_KEYS)


def _graph_table(rows: dict[str, dict[str, Any]], first: str, keys: tuple[str, ...]) -> pd.DataFrame:
    records = []
    for name, row in rows.items():
        record: dict[str, Any] = {first: name}
        for key in keys:
            value = row.get(key)
            if key == "errors":
                for kind in ERROR_KINDS:
                    record[f"errors.{kind}"] = int((value or {}).get(kind, 0))
            elif isinstance(value, list):
                record[key] = " ".join(str(v) for v in value)
            else:
                record[key] = value
        records.append(record)
    columns = [first] + [c for key in keys for c in
                         ([f"errors.{kind}" for kind in ERROR_KINDS] if key == "errors" else [key])]
    return pd.DataFrame.from_records(records, columns=columns)


def _service_routes(result: RunResult, service_codes: np.ndarray, routes: np.ndarray) -> pd.Categorical:
    """Route names per request in a graph run: the route of the service it was sent to."""
    per_service = [list(cfg.routes) for cfg in result.scenario.services.values()]
    names = sorted({r for routes_of in per_service for r in routes_of})
    code_of = [np.array([names.index(r) for r in routes_of] or [0], dtype=np.int64) for routes_of in per_service]
    out = np.zeros(len(routes), dtype=np.int64)
    for s, table in enumerate(code_of):
        mine = service_codes == s
        if not mine.any():
            continue
        r = routes[mine]
        if r.min() < 0 or r.max() >= len(per_service[s]):
            raise ValueError(f"route index out of range of the routes of service {list(result.scenario.services)[s]!r}")
        out[mine] = table[r]
    return pd.Categorical.from_codes(out, categories=names)


# ------------------------------------------------------------------ the run folder


def write_run_outputs(result: RunResult, out_dir: Path | str) -> dict[str, Path]:
    """Write every file of one run into ``out_dir`` (created if needed); return their paths.

    All files are staged first and replaced afterwards, ``summary.json`` last: a
    failure anywhere before the replacement changes nothing in ``out_dir``.
    """
    # report.py imports write_atomic from this module, so it is imported here, late.
    from experiments.report import render_report_html

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    requests = requests_frame(result)
    graph = is_graph_run(result) and "services" in result.summary
    files = {**RUN_FILES}
    if graph:   # before summary.json, which is replaced last
        files = {**{k: v for k, v in RUN_FILES.items() if k != "summary"}, **GRAPH_RUN_FILES,
                 "summary": RUN_FILES["summary"]}
    writers: dict[str, Callable[[Path], None]] = {
        "timeseries": lambda p: timeseries_frame(result).to_csv(p, index=False),
        "requests": lambda p: requests.to_parquet(p, engine="pyarrow", index=False),
        "attempts": lambda p: attempts_frame(result, requests).to_parquet(p, engine="pyarrow", index=False),
        "report": lambda p: p.write_text(render_report_html(result), encoding="utf-8"),
        "summary": lambda p: p.write_text(summary_json(result.summary), encoding="utf-8"),
        "services": lambda p: services_frame(result).to_csv(p, index=False),
        "edges": lambda p: edges_frame(result).to_csv(p, index=False),
    }
    staged: list[tuple[Path, Path]] = []
    try:
        for key, name in files.items():
            final = out_dir / name
            staged.append((stage_file(final, writers[key]), final))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in staged:
        if final.name == RUN_FILES["summary"] and not graph:
            for stale in GRAPH_RUN_FILES.values():      # left by a graph run written here before
                (out_dir / stale).unlink(missing_ok=True)
        os.replace(tmp, final)
    return {key: out_dir / name for key, name in files.items()}


# ------------------------------------------------------------------ helpers


def _frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    if not columns:
        return pd.DataFrame()
    frame = pd.DataFrame({name: np.asarray(col) for name, col in columns.items()})
    if "time_s" in frame:
        frame = frame[["time_s", *[c for c in frame.columns if c != "time_s"]]]
    return frame


def _names(indexes: pd.Series, names: list[str], what: str) -> pd.Categorical:
    codes = indexes.to_numpy(dtype=np.int64)
    if len(codes) and (codes.min() < 0 or codes.max() >= len(names)):
        raise ValueError(f"{what} index out of range of {what}_names ({len(names)} names)")
    return pd.Categorical.from_codes(codes, categories=list(names))


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays, tuples, paths and dataclasses converted."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)
