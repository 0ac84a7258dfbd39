"""Provenance of a run: stormsim version, git revision (if any) and scenario hash."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

from sim.scenario_loader import dump_scenario_yaml
from sim.schema import Scenario


@functools.lru_cache(maxsize=1)
def stormsim_version() -> str:
    try:
        return metadata.version("stormsim")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        return "0+unknown"


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The checkout's HEAD (with '+dirty' when it has changes), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def scenario_hash(scenario: Scenario) -> str:
    return hashlib.sha256(dump_scenario_yaml(scenario).encode("utf-8")).hexdigest()[:16]


def provenance(scenario: Scenario, seed: int, replication: int) -> dict:
    return {
        "stormsim_version": stormsim_version(),
        "git_revision": git_revision(),
        "scenario_hash": scenario_hash(scenario),
        "seed": seed,
        "replication": replication,
    }
