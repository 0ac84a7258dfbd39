"""The durable store of a sweep: a manifest and one line per finished run, appended as it finishes.

This module owns the output folder of ``stormsim sweep``:

- ``manifest.json``: what the sweep is (its file text, factors and their units,
  design, replications, seed, metrics), the stormsim version, the git revision and
  a digest of the sweep and base scenario files. Written once, atomically.
- ``runs.jsonl``: one JSON object per finished run (ok or failed), written and
  flushed to the operating system as each run finishes (fsynced at most every
  second and at the end). A kill -9 loses at most the runs in flight; a line cut
  short (a full disk, a machine crash) is skipped by the reader and ended by the next
  append.
- ``runs.csv``/``runs.parquet`` and the cell summaries are derived tables
  (``experiments.sweep_summary``), rewritten at the end of every invocation.

Resuming: the same sweep (same digest) in the same folder skips the runs already
in ``runs.jsonl``; a different sweep there is refused (``SweepStoreError``).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from pathlib import Path
from typing import Any, TextIO

from experiments.revision import git_revision
from experiments.run_files import write_atomic
from experiments.sweep_file import RunSpec, SweepError, SweepSpec
from sim.provenance import stormsim_version

RUNS_FILE = "runs.jsonl"
SYNC_EVERY_S = 1.0
MANIFEST_FILE = "manifest.json"
# summary keys that are not per-run figures (the scenario name, the errors mapping, provenance)
_SKIPPED_KEYS = ("scenario", "seed", "errors", "provenance")


class SweepStoreError(SweepError):
    """The output folder cannot take this sweep."""


def manifest_for(spec: SweepSpec, runs_total: int) -> dict[str, Any]:
    return {
        "name": spec.name, "description": spec.description, "sweep_path": spec.sweep_path,
        "sweep_text": spec.sweep_text, "digest": spec.digest(), "scenario": spec.scenario_arg,
        "scenario_path": spec.scenario_path, "variant": spec.variant, "set": list(spec.set_overrides),
        "factors": spec.factor_paths, "factor_units": {f.path: f.unit for f in spec.factors},
        "metrics": list(spec.metrics),
        "design": {"kind": spec.design, "points": spec.points, "seed": spec.design_seed},
        "replications": spec.replications, "seed": spec.seed, "runs_total": runs_total,
        "stormsim_version": stormsim_version(), "git_revision": git_revision(),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def row_for(run: RunSpec, summary: dict[str, Any] | None, wall_s: float, error: str = "") -> dict[str, Any]:
    """One line of ``runs.jsonl``: the run's identity, its factors and every summary KPI."""
    row: dict[str, Any] = {"run_key": run.run_key, "cell": run.cell, "replication": run.replication,
                           "seed": run.seed, "status": "ok" if summary is not None else "failed",
                           "error": error, "wall_s": round(wall_s, 4)}
    row.update(run.factors)
    if summary is not None:
        for key, value in summary.items():
            if key not in _SKIPPED_KEYS:
                row[key] = value
        for kind, count in summary.get("errors", {}).items():
            row[f"errors.{kind}"] = count
    return row


class SweepStore:
    """The output folder of one sweep."""

    def __init__(self, out_dir: Path | str) -> None:
        self.out_dir = Path(out_dir)
        self.runs_path = self.out_dir / RUNS_FILE
        self.manifest_path = self.out_dir / MANIFEST_FILE
        self._handle: TextIO | None = None
        self._synced_at = time.monotonic()

    def open(self, spec: SweepSpec, runs_total: int) -> dict[str, dict[str, Any]]:
        """Create or reopen the folder for ``spec``; the rows already finished, by run key."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SweepStoreError("--out", str(self.out_dir),
                                  f"{str(self.out_dir)!r} cannot be a folder ({exc.strerror or exc})") from None
        if self.manifest_path.exists():
            try:
                old = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise SweepStoreError("--out", str(self.out_dir),
                                      f"{self.manifest_path} is unreadable ({exc}); use another --out") from None
            if old.get("digest") != spec.digest():
                raise SweepStoreError("--out", str(self.out_dir),
                                      f"{self.out_dir} holds the results of a different sweep "
                                      f"({old.get('name')!r}, digest {old.get('digest')}; this one is "
                                      f"{spec.digest()}): use another --out, or delete the folder to start over")
        else:
            write_atomic(self.manifest_path, json.dumps(manifest_for(spec, runs_total), indent=2) + "\n")
        return {row["run_key"]: row for row in self.read_rows()}

    def read_rows(self) -> list[dict[str, Any]]:
        """Every complete line of ``runs.jsonl``; a line cut by a kill is skipped (later rows win)."""
        if not self.runs_path.exists():
            return []
        rows = []
        with self.runs_path.open("r", encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
        return rows

    def append(self, row: dict[str, Any]) -> None:
        """Append one finished run. It is in the operating system's hands when this returns, so
        killing the sweep (Ctrl-C, kill -9) cannot lose it; an fsync at most every
        ``SYNC_EVERY_S`` and at the end covers a machine crash too."""
        text = json.dumps(_json_safe(row), separators=(",", ":")) + "\n"
        handle = self._handle
        if handle is None:
            needs_newline = False
            if self.runs_path.exists() and self.runs_path.stat().st_size:
                with self.runs_path.open("rb") as old:
                    old.seek(-1, os.SEEK_END)
                    needs_newline = old.read(1) != b"\n"      # a line cut by a kill: end it first
            handle = self._handle = self.runs_path.open("a", encoding="utf-8")
            if needs_newline:
                handle.write("\n")
        handle.write(text)
        handle.flush()
        now = time.monotonic()
        if now - self._synced_at >= SYNC_EVERY_S:
            os.fsync(handle.fileno())
            self._synced_at = now

    def close(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


