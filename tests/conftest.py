"""Shared test helpers: a synthetic RunResult, small scenarios, and cached runs of the shipped ones.

- ``synthetic_run`` (fixture): the factory ``make_synthetic_run`` of a hand-made ~50 s run
  (no engine): a db_lock on checkout from 10 s to 30 s, fd exhaustion, an OOM kill and a
  restart. Figures, report and run-file tests build on it.
- ``small_scenario_data`` / ``small_scenario`` / ``write_scenario_yaml``: a tiny valid
  scenario (one service, one route, a few hundred requests) as data, as a ``Scenario``
  or as a YAML file, for tests that need a real run that costs next to nothing.
- ``SHIPPED_CASES``, ``load_shipped``, ``run_shipped``: every shipped scenario and
  variant; ``run_shipped`` caches its runs per test process, so the golden, story and
  determinism tests share them. Never mutate a cached result.
- ``comparable_summary``: a summary without the keys that may differ between identical
  runs (``wall_s``; provenance is kept, it is a function of the scenario and seed).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
import yaml

from experiments.catalog import shipped_scenarios
from sim.engine import run_scenario
from sim.result import ATTEMPT_COLUMNS, ERROR_CODE, REQUEST_COLUMNS, FaultWindow, Milestones, RunResult
from sim.scenario_loader import load_scenario, scenario_from_dict
from sim.schema import (
    ERROR_KINDS, ClientConfig, DatabaseConfig, FaultConfig, MemoryConfig, RouteConfig, Scenario,
    ServiceConfig, StepConfig, TableConfig,
)

NONDETERMINISTIC_SUMMARY_KEYS: tuple[str, ...] = ("wall_s",)
"""Summary keys that legitimately differ between two runs of the same scenario and seed."""


# ---------------------------------------------------------------- the synthetic run


def make_synthetic_run(duration_s: float = 50.0, sample_interval: float = 0.1, n_requests: int = 300,
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
        "breakers_open": np.where((t >= 12) & (t < 40), 2.0, 0.0),
        "breakers_half_open": np.where((t >= 40) & (t < 41), 1.0, 0.0),
        "retry_budget_left": np.where(storm > 0, 0.0, 40.0),
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


@pytest.fixture
def synthetic_run():
    """The factory ``make_synthetic_run(duration_s=50, sample_interval=0.1, n_requests=300, seed=7)``.

    Each call builds a fresh run, so a test may change what it gets.
    """
    return make_synthetic_run


# ---------------------------------------------------------------- small real scenarios


def small_scenario_data(**top: Any) -> dict[str, Any]:
    """A tiny valid scenario as plain data (what ``yaml.safe_load`` of a file gives).

    One service with one 2 ms route, one client at 50 req/s for 3 s. Keyword arguments
    replace top-level keys (``duration="5s"``, ``faults=[...]``, ``name=...``).
    """
    data: dict[str, Any] = {
        "name": "tiny",
        "description": "A tiny healthy service for tests.",
        "duration": "3s",
        "services": {"api": {
            "cpu": {"cores": 2},
            "routes": {"home": {"method": "GET", "steps": [{"cpu": "2ms"}]}},
        }},
        "clients": {"web": {
            "target": "api",
            "instances": 2,
            "load": {"rate_per_s": 50},
            "transport": {"rtt": "1ms", "client_timeout": "2s"},
        }},
    }
    data.update(copy.deepcopy(top))
    return data


def small_scenario(**top: Any) -> Scenario:
    """``small_scenario_data(**top)`` validated into a ``Scenario``."""
    return scenario_from_dict(small_scenario_data(**top))


def write_scenario_yaml(path: Path, data: dict[str, Any]) -> Path:
    """Write scenario ``data`` as a YAML file at ``path`` and return the path."""
    path = Path(path)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------- shipped scenarios


def _shipped_cases() -> list[tuple[str, str | None]]:
    cases: list[tuple[str, str | None]] = []
    for name, path in shipped_scenarios().items():
        cases.append((name, None))
        cases.extend((name, variant) for variant in load_scenario(path).variants)
    return cases


SHIPPED_CASES: list[tuple[str, str | None]] = _shipped_cases()
"""Every shipped scenario as (name, None), then each of its variants as (name, variant)."""


def case_id(name: str, variant: str | None) -> str:
    """``slowloris`` or ``slowloris@read-header-timeout``: the CLI's spelling of a case."""
    return name if variant is None else f"{name}@{variant}"


SHIPPED_IDS: list[str] = [case_id(*case) for case in SHIPPED_CASES]


def load_shipped(name: str, variant: str | None = None, overrides: Sequence[str] = ()) -> Scenario:
    """A shipped scenario by name, with a variant and ``--set``-style overrides applied."""
    return load_scenario(shipped_scenarios()[name], overrides=list(overrides), variant=variant)


@functools.lru_cache(maxsize=64)
def _cached_run(name: str, variant: str | None, seed: int | None, overrides: tuple[str, ...]) -> RunResult:
    return run_scenario(load_shipped(name, variant, overrides), seed=seed)


def run_shipped(name: str, variant: str | None = None, seed: int | None = None,
                overrides: Sequence[str] = ()) -> RunResult:
    """A run of a shipped scenario (default seed unless given), cached per test process.

    The result is shared: read it, never change it.
    """
    return _cached_run(name, variant, seed, tuple(overrides))


def comparable_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` without what may differ between identical runs: ``wall_s``, and the git
    revision, which only the CLI records (``experiments.revision``)."""
    out = {k: v for k, v in summary.items() if k not in NONDETERMINISTIC_SUMMARY_KEYS}
    if isinstance(out.get("provenance"), dict):
        out["provenance"] = {k: v for k, v in out["provenance"].items() if k != "git_revision"}
    return out
