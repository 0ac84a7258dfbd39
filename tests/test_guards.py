"""The runaway guards (design.md §4, ``limits``): events, entities and wall time.

A guard ends a storm early and says so (``truncated: true``, ``truncated_by``); the
truncated run still has a complete summary, judged up to where it stopped. The event
and entity guards are deterministic; the wall-time guard is not, and is off by default.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import comparable_summary, load_shipped, run_shipped
from experiments.cli import main
from sim.engine import run_scenario
from sim.outputs import OUTCOMES, SUMMARY_KEYS
from sim.schema import ERROR_KINDS

STORM = "seed-collapse"          # 60 s; the lock at 20 s, fds out at ~34 s, OOM kill at ~36 s
GUARDS = {
    # guard -> override that fires it during the storm (after the trigger, before the OOM kill)
    "events": "limits.max_events=100000",
    "entities": "limits.max_entities=2000",
    # 50 ms of wall clock: a 60 s storm takes ~1 s here, so this always fires before the end
    "wall_time": "limits.max_wall_time=50ms",
}

NUMBER_KEYS = ("duration_s", "offered_rps", "goodput_rps", "success_rate", "p50_ms", "p90_ms", "p99_ms",
               "p999_ms", "attempts_per_request", "max_server_connections", "max_accept_queue",
               "max_open_fds", "max_goroutines", "peak_memory_mib", "max_cpu_utilization",
               "wasted_work_fraction", "events", "wall_s")
COUNT_KEYS = ("incomplete", "crashes", "events", "max_server_connections", "max_accept_queue",
              "max_open_fds", "max_goroutines")


def _truncated_run(guard: str):
    if guard == "wall_time":    # not deterministic: never share it through the cache
        return run_scenario(load_shipped(STORM, overrides=[GUARDS[guard]]))
    return run_shipped(STORM, overrides=(GUARDS[guard],))


def assert_complete_summary(summary: dict) -> None:
    assert list(summary) == list(SUMMARY_KEYS)
    for key in NUMBER_KEYS:
        value = summary[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value) and value >= 0, (key, value)
    for key in COUNT_KEYS:
        assert isinstance(summary[key], int), (key, summary[key])
    assert 0.0 <= summary["success_rate"] <= 1.0
    assert set(summary["errors"]) == set(ERROR_KINDS)
    assert all(isinstance(n, int) and n >= 0 for n in summary["errors"].values())
    assert summary["outcome"] in OUTCOMES
    assert isinstance(summary["truncated"], bool) and isinstance(summary["crash_loop"], bool)
    assert isinstance(summary["provenance"], dict) and summary["provenance"]["seed"] == summary["seed"]
    json.dumps(summary, allow_nan=False)


@pytest.mark.parametrize("guard", list(GUARDS))
def test_guard_truncates_a_storm_and_says_which(guard):
    result = _truncated_run(guard)
    summary = result.summary
    duration_s = result.scenario.duration
    assert summary["truncated"] is True
    assert summary["truncated_by"] == guard
    assert result.milestones.truncated and result.milestones.truncated_by == guard
    end_at_s = result.milestones.end_at_s
    assert 0 < end_at_s < duration_s
    assert summary["duration_s"] == pytest.approx(end_at_s - result.scenario.warmup, abs=1e-6)
    assert summary["duration_s"] < duration_s
    assert_complete_summary(summary)
    # the records and series stop where the run stopped
    assert np.all(result.requests["arrival_at"] <= end_at_s)
    finished = np.isfinite(result.requests["end_at"])
    assert np.all(result.requests["end_at"][finished] <= end_at_s + 1e-9)
    assert result.levels["time_s"][-1] <= end_at_s + 1e-9
    assert result.windows["time_s"][-1] == pytest.approx(end_at_s)


@pytest.mark.parametrize("guard", ["events", "entities"])
def test_deterministic_guards_fire_during_the_storm(guard):
    summary = _truncated_run(guard).summary
    assert summary["trigger_at_s"] is not None
    end_s = summary["duration_s"]
    assert summary["trigger_at_s"] < end_s          # the storm had started ...
    assert summary["oom_killed_at_s"] is None or summary["oom_killed_at_s"] <= end_s
    if guard == "events":
        assert summary["events"] > 100_000
    else:
        # in-flight requests and connections grew past 2,000 only once the storm was on
        assert summary["incomplete"] > 0


@pytest.mark.parametrize("guard", ["events", "entities"])
def test_deterministic_guards_stop_at_the_same_instant_every_time(guard):
    first = _truncated_run(guard)
    again = run_scenario(load_shipped(STORM, overrides=[GUARDS[guard]]))
    assert again.milestones.end_at_s == first.milestones.end_at_s
    assert comparable_summary(again.summary) == comparable_summary(first.summary)
    for column in first.requests:
        np.testing.assert_array_equal(again.requests[column], first.requests[column], err_msg=column)


def test_tiny_guards_still_give_a_complete_summary():
    """Guards that fire at the very first check (no trigger yet, a handful of requests)."""
    for override, guard in (("limits.max_events=1000", "events"), ("limits.max_entities=50", "entities"),
                            ("limits.max_wall_time=1us", "wall_time")):
        result = run_scenario(load_shipped(STORM, overrides=["duration=5s", override]))
        summary = result.summary
        assert (summary["truncated"], summary["truncated_by"]) == (True, guard), override
        assert result.milestones.end_at_s < 5.0
        assert summary["outcome"] == "stable" and summary["collapse_at_s"] is None
        assert_complete_summary(summary)


def test_untruncated_run_says_so():
    summary = run_shipped(STORM).summary
    assert summary["truncated"] is False and summary["truncated_by"] is None
    assert summary["duration_s"] == 60.0


def test_max_wall_time_on_the_command_line_truncates(tmp_path, capsys):
    rc = main(["run", STORM, "--max-wall-time", "50ms", "--out", str(tmp_path / "out"), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["truncated"] is True and summary["truncated_by"] == "wall_time"
    assert summary["duration_s"] < 60.0
    assert_complete_summary(summary)
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["truncated_by"] == "wall_time"
