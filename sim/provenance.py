"""Provenance of a run: stormsim version, scenario hash, seed and replication.

The git revision of the checkout is added by the layer that writes files
(``experiments.revision``), since reading the repository is I/O the model does not do.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata

from sim.scenario_loader import dump_scenario_yaml
from sim.schema import Scenario


@functools.lru_cache(maxsize=1)
def stormsim_version() -> str:
    try:
        return metadata.version("stormsim")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        return "0+unknown"


def scenario_hash(scenario: Scenario) -> str:
    return hashlib.sha256(dump_scenario_yaml(scenario).encode("utf-8")).hexdigest()[:16]


def provenance(scenario: Scenario, seed: int, replication: int) -> dict:
    return {
        "stormsim_version": stormsim_version(),
        "git_revision": None,
        "scenario_hash": scenario_hash(scenario),
        "seed": seed,
        "replication": replication,
    }
